"""Fixtures for the prefect plugin's tests: Prefect's real engine and a real API server.

* ``prefect_api``: one Prefect API server for the session (the app Prefect's ephemeral mode runs,
  on SQLite in a session folder), exported as ``PREFECT_API_URL`` so that in-process runs and
  ``crispml`` subprocesses share it: starting an API costs 10-25 s per process.
* ``prefect_client``: a synchronous Prefect client on that API, to read flow and task runs back.
* ``cli``: the real ``crispml`` command in the test's project, ``HOME`` an empty folder.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from suite_helpers import free_port, run_cli

os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["DO_NOT_TRACK"] = "true"


def wait_healthy(api_url: str, proc: subprocess.Popen[Any], log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"Prefect API exited: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{api_url}/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"Prefect API not healthy within {timeout} s: {log.read_text()[-2000:]}")
        time.sleep(0.5)


def stop(proc: subprocess.Popen[Any]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    import importlib.util

    spec = importlib.util.find_spec("prefect")
    assert spec is not None and spec.origin is not None
    folder = tmp_path_factory.mktemp("prefect-api")
    # Whatever imports Prefect in this process first (a client, a run) finds its home here, not
    # in ~/.prefect; the runner points each run at its project's own .crispml/prefect. Set, not
    # defaulted: an earlier test in this process (a feast check, say) left PREFECT_HOME naming
    # its own project's .crispml/prefect (the core's environment, by design), which may not exist.
    os.environ["PREFECT_HOME"] = str(folder / "client")
    port = free_port()
    log = folder / "server.log"
    env = {
        **os.environ,
        "HOME": str(folder),
        "PREFECT_HOME": str(folder / "prefect"),
        "PREFECT_UI_ENABLED": "0",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "true",
    }
    env.pop("PREFECT_API_URL", None)
    with log.open("w") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--app-dir",
                str(Path(spec.origin).parent.parent),
                "--factory",
                "prefect.server.api.server:create_app",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--log-level",
                "error",
                "--lifespan",
                "on",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    api_url = f"http://127.0.0.1:{port}/api"
    previous = os.environ.get("PREFECT_API_URL")
    try:
        wait_healthy(api_url, proc, log)
        os.environ["PREFECT_API_URL"] = api_url
        yield api_url
    finally:
        if previous is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = previous
        stop(proc)


@pytest.fixture
def prefect_client(prefect_api: str) -> Iterator[Any]:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: prefect_api}), get_client(sync_client=True) as client:
        yield client


@pytest.fixture
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty ``HOME`` for the commands a test runs: it must stay empty of Prefect's state."""
    return tmp_path_factory.mktemp("home")


@pytest.fixture
def cli_env(project: Path, home: Path) -> dict[str, str]:
    """The environment of the commands a test runs (``PREFECT_HOME`` left to the runner)."""
    env = {
        **os.environ,
        "COLUMNS": "200",
        "CRISPML_PROJECT": str(project),
        "HOME": str(home),
        "MPLCONFIGDIR": str(project / ".mpl"),
    }
    env.pop("PREFECT_HOME", None)
    return env


@pytest.fixture
def cli(project: Path, cli_env: dict[str, str]) -> Callable[..., subprocess.CompletedProcess[str]]:
    def run(
        *args: str, timeout: float = 300, env: dict[str, str | None] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """``env`` adds variables; a ``None`` value removes one."""
        return run_cli(project, *args, timeout=timeout, base_env=cli_env, env=env)

    return run
