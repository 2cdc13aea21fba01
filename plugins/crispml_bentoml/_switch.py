"""The switch: the deployment's proxy on the public port, pointed from one backend to the next.

The proxy (``_proxy``) reads ``upstream.json`` in the deployment's folder; a deploy rewrites it
and waits until the proxy reports the new upstream, then drains and stops the old backend. A
switch that is not confirmed is undone (:func:`restore`), so the public port never serves a
backend that did not pass the smoke gate.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from crispml_bentoml import _state
from crispml_bentoml._process import backend_env


def start_proxy(project: Path, name: str, host: str, port: int, max_body: int) -> subprocess.Popen[bytes]:
    folder = _state.folder(project, name)
    with (folder / "proxy.log").open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "crispml_bentoml._proxy", str(folder), host, str(port), str(max_body)],
            stdin=subprocess.PIPE,  # the tether: see _tether
            stdout=log,
            stderr=subprocess.STDOUT,
            env=backend_env(project),
            cwd=folder,
            start_new_session=True,
        )


def proxy_status(url: str) -> dict[str, Any] | None:
    answer = _state.http_get(f"{url}/-/crispml/proxy", timeout=2.0)
    if answer is None or answer[0] != 200:
        return None
    try:
        value = json.loads(answer[1])
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def wait_switched(url: str, backend_port: int, proc: subprocess.Popen[bytes] | None, timeout: float) -> str | None:
    """``None`` once the proxy at ``url`` forwards to ``backend_port``; else why not."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return f"the proxy exited with code {proc.returncode}"
        status = proxy_status(url)
        if status is not None and (status.get("upstream") or {}).get("port") == backend_port:
            return None
        time.sleep(0.05)
    return f"the proxy at {url} did not switch within {timeout:g} s"


def drain(url: str, old_port: int, timeout: float) -> None:
    """Wait until the proxy has no request in flight to ``old_port`` (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = proxy_status(url)
        if status is None or str(old_port) not in (status.get("inflight") or {}):
            return
        time.sleep(0.05)


def restore(upstream: Path, previous: bytes | None) -> None:
    """Point the proxy back where it was before a switch that did not complete (atomically, as a
    new file, so the proxy sees a change even within one mtime tick)."""
    if previous is None:
        with contextlib.suppress(FileNotFoundError):
            upstream.unlink()
        return
    staging = upstream.with_name(f".{upstream.name}.restore")
    staging.write_bytes(previous)
    os.replace(staging, upstream)
