"""The core stays ruff- and mypy-clean (STYLE: readable code, type hints on every public function)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def test_ruff_is_clean_on_core_and_plugins() -> None:
    proc = subprocess.run(
        [str(BIN / "ruff"), "check", "core", "plugins", "tests", "examples", "benchmarks"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy_strict_is_clean_on_core() -> None:
    proc = subprocess.run([str(BIN / "mypy"), "core/crispml"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
