"""Starting a release's ``bentoml serve`` process and waiting until it is ready.

Every process the plugin starts gets :func:`backend_env`: BentoML's state under the project's
``.crispml/bentoml``, telemetry off. The backend runs in its own session (process group), so
stopping the group stops BentoML's workers too (``_state.stop_group``).
"""

from __future__ import annotations

import contextlib
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


def start_backend(
    project: Path, release: Path, host: str, warm: WarmLauncher | None = None
) -> tuple[subprocess.Popen[bytes], int]:
    """``bentoml serve`` for ``release`` on a free private port (via ``_launch``): in ``warm``,
    the launcher started before the resolve, when there is one, else in a new process."""
    port = _state.free_port(host if host != "0.0.0.0" else "127.0.0.1")
    if warm is not None:
        proc = warm.adopt(release, host, port)
        if proc is not None:
            return proc, port
    with (release / "server.log").open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "crispml_bentoml._launch", str(release), host, str(port)],
            stdin=subprocess.PIPE,  # the tether: see _tether
            stdout=log,
            stderr=subprocess.STDOUT,
            env=backend_env(project),
            cwd=release,
            start_new_session=True,
        )
    return proc, port


class WarmLauncher:
    """A backend launcher started before the model is resolved: it imports BentoML and what the
    service needs while the registry plugin resolves (``_launch``, "Warm start"), then serves
    the release it is given. Whoever starts one ends it: :meth:`adopt` hands it a release (it
    is then a backend like any other), :meth:`discard` lets it exit."""

    def __init__(self, project: Path) -> None:
        where = _state.deployments_dir(project)
        where.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = subprocess.Popen(
            [sys.executable, "-m", "crispml_bentoml._launch"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=backend_env(project),
            cwd=where,
            start_new_session=True,
        )

    def adopt(self, release: Path, host: str, port: int) -> subprocess.Popen[bytes] | None:
        """The launcher, now serving ``release``; ``None`` if it is gone (then start another)."""
        proc, self.proc = self.proc, None
        if proc is None or proc.stdin is None or proc.poll() is not None:
            return None
        try:
            proc.stdin.write(f"{release} {host} {port}\n".encode())
            proc.stdin.flush()  # the pipe stays open: the tether (_tether.keep closes it)
        except OSError:  # it died meanwhile
            _state.stop_group(proc.pid)
            return None
        return proc

    def discard(self) -> None:
        """End an unadopted launcher: an empty line, then its process group if it lingers."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        with contextlib.suppress(OSError):
            if proc.stdin is not None:
                proc.stdin.close()
        try:
            proc.wait(timeout=2.0)
        except subprocess.TimeoutExpired:
            _state.stop_group(proc.pid)


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
