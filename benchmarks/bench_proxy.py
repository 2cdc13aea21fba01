"""The deployment proxy's own cost: CPU per forwarded request, against a trivial backend.

    .venv/bin/python benchmarks/bench_proxy.py [--requests 3000] [PROXY.py ...]

Each ``PROXY.py`` (default: the plugin's ``_proxy.py``; an older one for comparison, e.g.
``git show fb48863^:plugins/crispml_bentoml/_proxy.py > /tmp/proxy_httpx.py``) is started in
front of a backend that answers a fixed JSON body (uvicorn, no model), loaded from this process
with 8 kept-alive connections; the figure is the proxy process's CPU seconds per request, which
the machine's other load hardly moves. Recorded in docs/performance.md (## BentoML).
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
BACKEND = """
import json
BODY = json.dumps({"predictions": [1], "probabilities": [{"0": 0.3, "1": 0.7}], "model": {"name": "churn"}}).encode()
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    headers = [(b"content-type", b"application/json"), (b"x-crispml-model", b"churn/1")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": BODY})
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait(port: int) -> None:
    for _ in range(600):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def load(port: int, requests: int, connections: int = 8) -> float:
    body = json.dumps({"records": [{"tenure_months": 3}]}).encode()

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for _ in range(requests // connections):
            conn.request("POST", "/predict", body=body, headers={"content-type": "application/json"})
            resp = conn.getresponse()
            resp.read()
            assert resp.status == 200, resp.status
        conn.close()

    threads = [threading.Thread(target=worker) for _ in range(connections)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - started


def cpu(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def main(args: argparse.Namespace) -> None:
    proxies = args.proxies or [str(REPO / "plugins" / "crispml_bentoml" / "_proxy.py")]
    with tempfile.TemporaryDirectory(prefix="bench-proxy-") as tmp:
        folder = Path(tmp)
        (folder / "backend.py").write_text(BACKEND)
        bport = free_port()
        backend = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "backend:app", "--port", str(bport), "--log-level", "warning"],
            cwd=folder,
        )
        try:
            wait(bport)
            (folder / "upstream.json").write_text(json.dumps({"port": bport}))
            for proxy_file in proxies:
                pport = free_port()
                proxy = subprocess.Popen([sys.executable, proxy_file, str(folder), "127.0.0.1", str(pport)])
                try:
                    wait(pport)
                    load(pport, 200)
                    before = cpu(proxy.pid)
                    seconds = load(pport, args.requests)
                    per = (cpu(proxy.pid) - before) / args.requests
                    print(
                        f"{proxy_file}: proxy CPU {per * 1000:.3f} ms per forwarded request "
                        f"({args.requests / seconds:.0f} req/s)"
                    )
                finally:
                    proxy.terminate()
                    proxy.wait(timeout=30)
        finally:
            backend.terminate()
            backend.wait(timeout=30)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("proxies", nargs="*")
    parser.add_argument("--requests", type=int, default=3000)
    main(parser.parse_args())
