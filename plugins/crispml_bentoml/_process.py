"""Starting a release's ``bentoml serve`` process and waiting until it is ready.

Every process the plugin starts gets :func:`backend_env`: BentoML's state under the project's
``.crispml/bentoml``, telemetry off. The backend runs in its own session (process group), so
stopping the group stops BentoML's workers too (``_state.stop_group``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from crispml_bentoml import _state


def backend_env(project: Path) -> dict[str, str]:
    """The environment of every BentoML process crispml starts: state in the project, no telemetry."""
    env = dict(os.environ)
    env.update(
        {
            "BENTOML_HOME": str(_state.bentoml_home(project)),
            "BENTOML_DO_NOT_TRACK": "True",
            "DO_NOT_TRACK": "1",
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "MLFLOW_ENABLE_TELEMETRY": "false",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def probe_host(host: str) -> str:
    """Where to reach a server listening on ``host`` from this machine."""
    return "127.0.0.1" if host in ("0.0.0.0", "") else host


def start_backend(project: Path, release: Path, host: str) -> tuple[subprocess.Popen[bytes], int]:
    """``bentoml serve`` for ``release`` on a free private port (via ``_launch``)."""
    port = _state.free_port(host if host != "0.0.0.0" else "127.0.0.1")
    with (release / "server.log").open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "crispml_bentoml._launch", str(release), host, str(port)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=backend_env(project),
            cwd=release,
            start_new_session=True,
        )
    return proc, port


def wait_ready(proc: subprocess.Popen[bytes], url: str, timeout: float, log: Path) -> str | None:
    """``None`` once ``/readyz`` answers 200; else why not."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return f"the new server exited with code {proc.returncode} before it was ready: {tail(log)}"
        answer = _state.http_get(f"{url}/readyz", timeout=1.0)
        if answer is not None and answer[0] == 200:
            return None
        time.sleep(0.1)
    return f"the new server did not answer /readyz within {timeout:g} s (log: {log})"


def release_of(backend: dict[str, Any]) -> Path | None:
    release = backend.get("release")
    return Path(release) if release else None


def stop_backend(backend: dict[str, Any]) -> None:
    """Stop a recorded backend — if its pid is still the process that was started (else only the
    processes still working in its release folder)."""
    _state.stop_group(
        backend.get("pid"), folder=release_of(backend), marker=_state.BACKEND_MARKER, ident=backend.get("ident")
    )


def tail(path: Path, lines: int = 6) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text[-lines:])
