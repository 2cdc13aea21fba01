"""The quickstart example end to end, as a user runs it: the CLI, then the Python API."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CRISPML = str(Path(sys.executable).with_name("crispml"))


@pytest.fixture
def quickstart(tmp_path: Path) -> Path:
    target = tmp_path / "quickstart"
    shutil.copytree(REPO / "examples" / "quickstart", target, ignore=shutil.ignore_patterns(".crispml"))
    return target


def _cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CRISPML, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "COLUMNS": "200", "CRISPML_PROJECT": str(cwd)},
    )


def test_quickstart_recipe_from_the_command_line(quickstart: Path) -> None:
    first = _cli(quickstart, "run", "recipe.yaml")
    assert first.returncode == 0, first.stderr
    assert "run succeeded" in first.stderr
    runs = json.loads(_cli(quickstart, "runs", "--json").stdout)
    assert len(runs) == 1 and runs[0]["status"] == "succeeded"
    manifest = json.loads(_cli(quickstart, "show", runs[0]["run_id"], "--json").stdout)
    evaluate = next(s for s in manifest["stages"] if s["name"] == "evaluate")
    assert evaluate["summary"]["metrics"]["roc_auc"] >= 0.75
    assert "roc_auc >= 0.75" in evaluate["gates"]
    assert "evaluate" in _cli(quickstart, "show", runs[0]["run_id"]).stdout

    second = _cli(quickstart, "run", "recipe.yaml")
    assert second.returncode == 0
    statuses = json.loads(_cli(quickstart, "runs", "--json").stdout)[0]["stages"]
    assert set(statuses.values()) <= {"cached", "succeeded"}
    assert statuses["train"] == "cached" and statuses["evaluate"] == "cached"

    rejected = _cli(quickstart, "run", "recipe.yaml", "--set", "evaluate.gate.roc_auc=>= 0.999")
    assert rejected.returncode == 3, rejected.stderr
    assert "run rejected" in rejected.stderr and "roc_auc" in rejected.stderr


def test_quickstart_python_api(quickstart: Path) -> None:
    proc = subprocess.run([sys.executable, "run.py"], cwd=quickstart, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert ": succeeded" in proc.stdout and "roc_auc=" in proc.stdout
    assert (quickstart / ".crispml" / "runs").is_dir()


def test_every_command_has_help() -> None:
    for command in ("plugins", "run", "check", "runs", "show", "resume", "recipes", "init"):
        proc = _cli(REPO, command, "--help")
        assert proc.returncode == 0 and "Usage: crispml " + command in proc.stdout


def test_check_runs_nothing(quickstart: Path) -> None:
    proc = _cli(quickstart, "check", "recipe.yaml")
    assert proc.returncode == 0, proc.stderr
    assert "ok" in proc.stdout and "train (sklearn)" in proc.stdout
    assert not (quickstart / ".crispml").exists()


def test_ready_made_recipes_are_listed_copied_and_run(tmp_path: Path) -> None:
    listed = _cli(tmp_path, "recipes")
    assert listed.returncode == 0 and "churn-classification" in listed.stdout
    made = _cli(tmp_path, "init", "churn-classification", "mine")
    assert made.returncode == 0, made.stderr
    ran = _cli(tmp_path, "run", "mine/recipe.yaml")
    assert ran.returncode == 0, ran.stderr
    again = _cli(tmp_path, "init", "churn-classification", "mine")
    assert again.returncode == 2 and "already exists" in again.stderr
    unknown = _cli(tmp_path, "init", "nope", "other")
    assert unknown.returncode == 2 and "available: churn-classification" in unknown.stderr
