"""The quickstart example end to end, as a user runs it: the CLI, then the Python API."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
from suite_helpers import CRISPML, free_port, run_cli

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def quickstart(tmp_path: Path) -> Iterator[Path]:
    """A copy of the quickstart; whatever it deploys is undeployed afterwards."""
    target = tmp_path / "quickstart"
    shutil.copytree(REPO / "examples" / "quickstart", target, ignore=shutil.ignore_patterns(".crispml"))
    yield target
    _cli(target, "undeploy", "churn")


def _env(cwd: Path) -> dict[str, str]:
    return {**os.environ, "COLUMNS": "200", "CRISPML_PROJECT": str(cwd)}


_cli = partial(run_cli, timeout=600)  # a run trains and serves: minutes on a loaded machine


def test_quickstart_recipe_from_the_command_line(quickstart: Path) -> None:
    port = f"deploy.port={free_port()}"
    first = _cli(quickstart, "run", "recipe.yaml", "--set", port)
    assert first.returncode == 0, first.stderr
    assert "run succeeded" in first.stderr
    runs = json.loads(_cli(quickstart, "runs", "--json").stdout)
    assert len(runs) == 1 and runs[0]["status"] == "succeeded"
    assert set(runs[0]["stages"]) == {"load", "validate", "train", "evaluate", "register", "deploy"}
    manifest = json.loads(_cli(quickstart, "show", runs[0]["run_id"], "--json").stdout)
    evaluate = next(s for s in manifest["stages"] if s["name"] == "evaluate")
    assert evaluate["summary"]["metrics"]["roc_auc"] >= 0.75
    assert "roc_auc >= 0.75" in evaluate["gates"]
    assert "evaluate" in _cli(quickstart, "show", runs[0]["run_id"]).stdout

    # The served champion answers, and names the run and data it came from.
    predicted = subprocess.run(
        [sys.executable, "predict.py"],
        cwd=quickstart,
        capture_output=True,
        text=True,
        timeout=120,
        env=_env(quickstart),
    )
    assert predicted.returncode == 0, predicted.stderr
    assert "served by churn/1" in predicted.stdout and runs[0]["run_id"] in predicted.stdout

    second = _cli(quickstart, "run", "recipe.yaml", "--set", port)
    assert second.returncode == 0, second.stderr
    statuses = json.loads(_cli(quickstart, "runs", "--json").stdout)[0]["stages"]
    assert statuses["train"] == "cached" and statuses["evaluate"] == "cached"

    rejected = _cli(quickstart, "run", "recipe.yaml", "--set", port, "--set", "evaluate.gate.roc_auc=>= 0.999")
    assert rejected.returncode == 3, rejected.stderr
    assert "run rejected" in rejected.stderr and "roc_auc" in rejected.stderr
    statuses = json.loads(_cli(quickstart, "runs", "--json").stdout)[0]["stages"]
    assert statuses["register"] == statuses["deploy"] == "skipped"
    deployments = json.loads(_cli(quickstart, "deployments", "--json").stdout)
    assert [(d["name"], d["model"], d["status"]) for d in deployments] == [("churn", "churn/1", "up")]


def test_quickstart_python_api(quickstart: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "run.py", "--set", f"deploy.port={free_port()}"],
        cwd=quickstart,
        capture_output=True,
        text=True,
        timeout=600,
        env=_env(quickstart),
    )
    assert proc.returncode == 0, proc.stderr
    assert ": succeeded" in proc.stdout and "roc_auc=" in proc.stdout
    assert "deploy    succeeded" in proc.stdout
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


# Variables a developer's shell or the test suite may set that would hide a backend writing home.
_HIDING = ("XDG_", "MPL", "MLFLOW_", "BENTOML_", "GX_", "PREFECT_", "DO_NOT_TRACK")


def test_quickstart_leaves_home_empty(quickstart: Path, tmp_path: Path) -> None:
    """`make quickstart`'s steps (run with deploy, the Python API, a prediction, undeploy) with an empty
    $HOME and none of the variables that keep backends out of it: crispml must set them itself,
    for its own process and for the servers it starts."""
    import psutil

    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(_HIDING)}
    env.update(HOME=str(home), COLUMNS="200", CRISPML_PROJECT=str(quickstart))
    port = f"deploy.port={free_port()}"

    def step(*command: str) -> None:
        done = subprocess.run(command, cwd=quickstart, capture_output=True, text=True, timeout=600, env=env)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]

    step(CRISPML, "run", "recipe.yaml", "--set", port)
    record = json.loads((quickstart / ".crispml" / "deployments" / "churn" / "deployment.json").read_text())
    store = str(quickstart / ".crispml")
    for pid in (record["backend"]["pid"], record["proxy"]["pid"]):
        served = psutil.Process(pid).environ()
        assert served["DO_NOT_TRACK"] in ("1", "true") and served["MLFLOW_DISABLE_TELEMETRY"] == "true"
        assert served["BENTOML_DO_NOT_TRACK"].lower() == "true"
        for name in ("XDG_CONFIG_HOME", "XDG_CACHE_HOME", "BENTOML_HOME"):
            assert served[name].startswith(store), (name, served[name])
    step(sys.executable, "run.py", "--set", port)
    step(sys.executable, "predict.py")
    step(CRISPML, "undeploy", "churn")
    assert sorted(str(p.relative_to(home)) for p in home.rglob("*")) == []
    assert (quickstart / ".crispml" / "matplotlib").is_dir(), "the evaluation's plots ran"
