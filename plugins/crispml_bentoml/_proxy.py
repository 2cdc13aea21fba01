"""The stable front of a deployment: ``python -m crispml_bentoml._proxy STATE_DIR HOST PORT``.

A small HTTP reverse proxy (uvicorn + aiohttp's client, both installed with BentoML) that owns the
deployment's public port for its whole life and forwards each request to the backend named in
``STATE_DIR/upstream.json`` — a ``bentoml serve`` process on a private port. A switch to a new
model version is an atomic rewrite of that file, done only after the new backend passed the
smoke gate; the proxy re-reads it (by mtime) on each request, so:

* the public port never closes: no client ever sees a refused connection;
* requests already in flight finish on the old backend, new ones go to the new one;
* ``GET /-/crispml/proxy`` reports the current upstream and the requests in flight per backend,
  which is how crispml knows the old backend is drained before it stops it.

Bodies larger than ``max_body_bytes`` get 413 here, before a backend reads them.

Cost per request matters (the proxy shares the machine's cores with the backend): uvicorn runs on
uvloop and httptools when they are installed, the backend is reached over a pool of kept-alive
connections, and aiohttp's client replaced httpx, which cost more CPU
per forwarded request (docs/performance.md, ## BentoML).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "host",
}
DROPPED = {"x-crispml-smoke"}
"""Only crispml's smoke gate may mark a request as its own (so the service does not log it), and
the gate talks to a backend directly: from a client, through the public port, the mark is dropped."""
HOP_BY_HOP_B = {h.encode() for h in HOP_BY_HOP}
DROPPED_B = {h.encode() for h in DROPPED}
STATUS_PATH = "/-/crispml/proxy"


class Upstream:
    """The backend ``upstream.json`` names, re-read whenever the file changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.seen: tuple[int, int, int] | None = None
        self.value: dict[str, Any] = {}

    def current(self) -> dict[str, Any]:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return self.value
        # Every write is an atomic replace (a new inode): a rewrite within one coarse mtime tick
        # (e.g. a failed switch put back at once) is still seen.
        key = (st.st_mtime_ns, st.st_ino, st.st_size)
        if key != self.seen:
            try:
                self.value = json.loads(self.path.read_text())
                self.seen = key
            except (OSError, ValueError):
                pass  # mid-replace on an odd filesystem: keep the last good value
        return self.value


class Proxy:
    def __init__(self, state_dir: Path, max_body_bytes: int) -> None:
        self.upstream = Upstream(state_dir / "upstream.json")
        self.max_body = max_body_bytes
        self.inflight: Counter[int] = Counter()
        self.client: aiohttp.ClientSession | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        if scope["path"] == STATUS_PATH and scope["method"] == "GET":
            up = self.upstream.current()
            await _reply(
                send,
                200,
                {"upstream": up, "inflight": {str(k): v for k, v in self.inflight.items()}, "pid": os.getpid()},
            )
            return
        raw = scope["headers"]
        declared = next((v for k, v in raw if k.lower() == b"content-length"), None)
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            await _reply(
                send, 413, {"error": f"request body too large: {declared.decode()} bytes (limit {self.max_body} bytes)"}
            )
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > self.max_body:
                await _reply(send, 413, {"error": f"request body too large (limit {self.max_body} bytes)"})
                return
            if not message.get("more_body", False):
                break
        # Choose the backend and count the request against it with no await in between: the
        # status endpoint never reports a drained backend that is about to receive a request.
        up = self.upstream.current()
        port = up.get("port")
        if not port:
            await _reply(send, 503, {"error": "no backend is serving this deployment"})
            return
        self.inflight[port] += 1
        try:
            assert self.client is not None
            query = scope.get("query_string", b"").decode("latin-1")
            url = f"http://127.0.0.1:{port}{scope['path']}" + (f"?{query}" if query else "")
            forward = [
                (k.decode("latin-1"), v.decode("latin-1"))
                for k, v in raw
                if k.lower() not in HOP_BY_HOP_B and k.lower() not in DROPPED_B
            ]
            client = scope.get("client")
            if client:
                forward.append(("x-forwarded-for", str(client[0])))
            try:
                async with self.client.request(scope["method"], url, headers=forward, data=bytes(body)) as response:
                    content = await response.read()
                    status = response.status
                    answer = response.raw_headers
            except (aiohttp.ClientError, TimeoutError) as exc:
                await _reply(send, 502, {"error": f"the backend on port {port} did not answer: {exc!r}"})
                return
        finally:
            self.inflight[port] -= 1
            if self.inflight[port] <= 0:
                del self.inflight[port]
        out = [(k, v) for k, v in answer if k.lower() not in HOP_BY_HOP_B and k.lower() != b"content-encoding"]
        out.append((b"content-length", str(len(content)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": out})
        await send({"type": "http.response.body", "body": content})

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.client = aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(limit=256, keepalive_timeout=30),
                    timeout=aiohttp.ClientTimeout(total=120.0, connect=5.0),
                    trust_env=False,  # never route loopback traffic through a configured proxy
                    auto_decompress=False,  # bodies pass through as the backend sent them
                    # forward the client's headers, nothing of aiohttp's own (no content-type
                    # where the client sent none: the backend refuses that itself)
                    skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
                )
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.client is not None:
                    await self.client.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _reply(send: Any, status: int, value: dict[str, Any]) -> None:
    body = json.dumps(value).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def main(argv: list[str]) -> None:
    import uvicorn

    from crispml_bentoml import _tether

    _tether.watch()  # a deploy killed before its switch takes this proxy with it
    state_dir, host, port = Path(argv[0]), argv[1], int(argv[2])
    max_body = int(argv[3]) if len(argv) > 3 else 4 * 1024 * 1024
    app = Proxy(state_dir, max_body)
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", lifespan="on", access_log=False, timeout_graceful_shutdown=30
    )
    server = uvicorn.Server(config)
    asyncio.run(server.serve())
    sys.exit(0 if server.started else 3)


if __name__ == "__main__":
    main(sys.argv[1:])
