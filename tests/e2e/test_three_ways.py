"""One recipe driven the three ways docs/three-ways.md shows — the command line, the Python API,
a Prefect schedule on a real Prefect server — by running the scripts that page includes
(examples/three_ways/). Each way trains again (the cache is emptied between them) and must find
the same train fingerprint and the same metrics."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from suite_helpers import free_port

REPO = Path(__file__).resolve().parents[2]
WAYS = REPO / "examples" / "three_ways"
BIN = Path(sys.executable).parent

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]  # ~7 min on a loaded 2-core machine


def _manifests(project: Path) -> list[dict[str, Any]]:
    found = [json.loads(p.read_text()) for p in (project / ".crispml" / "runs").glob("*/manifest.json")]
    return sorted(found, key=lambda m: m["started"])


def _stage(manifest: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in manifest["stages"] if s["name"] == name)


def test_one_recipe_three_ways(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    project = tmp_path / "my-churn"
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "HOME": str(home),
        "COLUMNS": "200",
        "CRISPML_PROJECT": str(project),
        "PORT": str(free_port()),
        "PREFECT_PORT": str(free_port()),
    }
    env.pop("PREFECT_API_URL", None)  # the project's own server, not one from the environment

    def way(*command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=1500, env=env)
        assert done.returncode == 0, f"{command}: " + done.stdout[-3000:] + done.stderr[-3000:]
        return done

    try:
        cli = way("bash", str(WAYS / "cli.sh"), cwd=tmp_path)
        assert "churn-watched" in cli.stdout and "champion" in cli.stdout
        shutil.rmtree(project / ".crispml" / "cache")  # the next way trains again

        api = way(sys.executable, str(WAYS / "api.py"), cwd=project)
        assert ": succeeded" in api.stdout and "predictions: [" in api.stdout
        shutil.rmtree(project / ".crispml" / "cache")

        scheduled = way("bash", str(WAYS / "schedule.sh"), cwd=project)
        assert "ended Completed" in scheduled.stdout, scheduled.stdout
    finally:
        subprocess.run([str(BIN / "crispml"), "undeploy", "churn-watched"], cwd=project, env=env, capture_output=True)
        subprocess.run([str(BIN / "crispml"), "server", "stop"], cwd=project, env=env, capture_output=True)

    runs = [m for m in _manifests(project) if any(s["name"] == "train" for s in m["stages"])]
    assert len(runs) == 3, [m["run_id"] for m in runs]  # monitor runs aside: one training run per way
    first, second, third = runs
    assert first["recipe"]["runner"]["use"] == "local" and second["recipe"]["runner"]["use"] == "local"
    assert third["recipe"]["runner"]["use"] == "prefect" and third["links"].get("prefect_flow_run_id")
    assert len({m["run_id"] for m in (first, second, third)}) == 3
    for manifest in (first, second, third):
        assert manifest["status"] == "succeeded", manifest["run_id"]
        assert _stage(manifest, "train")["status"] == "succeeded"  # trained, not taken from the cache
    fingerprints = {_stage(m, "train")["fingerprint"] for m in (first, second, third)}
    assert len(fingerprints) == 1, fingerprints
    metrics = [_stage(m, "evaluate")["summary"]["metrics"] for m in (first, second, third)]
    assert metrics[0] == metrics[1] == metrics[2] and metrics[0]["roc_auc"] >= 0.75
    assert first["data"]["fingerprint"] == second["data"]["fingerprint"] == third["data"]["fingerprint"]
