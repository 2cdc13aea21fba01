"""Shared test helpers.

* ``project``: a fresh project folder (its own ``.crispml/``), the cwd for the test.
* ``require_service(host, port, what)``: skip with a reason when a service does not answer —
  and fail instead under ``CI=true``, where a skipped service test would hide a gap.
* ``crispml_cli(*args)``: the real ``crispml`` command in a subprocess.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "examples" / "quickstart"
CRISPML = str(Path(sys.executable).with_name("crispml"))

# Nothing a test starts may phone home or write into the home directory.
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")
os.environ.setdefault("MLFLOW_ENABLE_TELEMETRY", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("MPLBACKEND", "Agg")


def service_answers(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def require_service(host: str, port: int, what: str) -> None:
    """Skip (or, under CI=true, fail) when ``what`` does not answer on ``host:port``."""
    if service_answers(host, port):
        return
    reason = f"{what} does not answer on {host}:{port}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: a service test may not skip)")
    pytest.skip(reason)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh project folder, made the current directory."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CRISPML_PROJECT", raising=False)
    yield tmp_path


@pytest.fixture
def crispml_cli(project: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run the real ``crispml`` command in the project folder."""

    def run(*args: str, timeout: float = 300, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        full_env = {**os.environ, "COLUMNS": "200", "CRISPML_PROJECT": str(project), **(env or {})}
        return subprocess.run(
            [CRISPML, *args], cwd=project, capture_output=True, text=True, timeout=timeout, env=full_env
        )

    return run


@pytest.fixture(scope="session")
def churn_csv() -> Path:
    return QUICKSTART / "data" / "churn.csv"
