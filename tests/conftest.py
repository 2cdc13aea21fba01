"""Shared test helpers.

* ``project``: a fresh project folder (its own ``.crispml/``), the cwd for the test.
* ``require_service``: in ``tests/services.py`` (importable from every folder).
* ``crispml_cli(*args)``: the real ``crispml`` command in a subprocess (``suite_helpers.run_cli``).
* ``free_port``, ``run_cli``, ``CRISPML``: in ``tests/suite_helpers.py`` (importable from every folder).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from services import require_service, service_answers  # noqa: F401  (re-exported)
from suite_helpers import run_cli

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "examples" / "quickstart"

# Nothing a test starts may phone home or write into the home directory.
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")
os.environ.setdefault("MLFLOW_ENABLE_TELEMETRY", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("MPLBACKEND", "Agg")


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
        return run_cli(project, *args, timeout=timeout, env=env)

    return run


@pytest.fixture(scope="session")
def churn_csv() -> Path:
    return QUICKSTART / "data" / "churn.csv"
