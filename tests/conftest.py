"""Shared test helpers.

* ``project``: a fresh project folder (its own ``.crispml/``), the cwd for the test.
* ``require_service``: in ``tests/services.py`` (importable from every folder).
* ``crispml_cli(*args)``: the real ``crispml`` command in a subprocess.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from services import require_service, service_answers  # noqa: F401  (re-exported)

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "examples" / "quickstart"
CRISPML = str(Path(sys.executable).with_name("crispml"))

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
        full_env = {**os.environ, "COLUMNS": "200", "CRISPML_PROJECT": str(project), **(env or {})}
        return subprocess.run(
            [CRISPML, *args], cwd=project, capture_output=True, text=True, timeout=timeout, env=full_env
        )

    return run


@pytest.fixture(scope="session")
def churn_csv() -> Path:
    return QUICKSTART / "data" / "churn.csv"
