"""``crispml reproduce RUN`` on the quickstart: reproduces as recorded, names a changed data file
and a changed seed, never registers or deploys, and refuses an unknown run in one line."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
from suite_helpers import free_port, run_cli

REPO = Path(__file__).resolve().parents[2]


_cli = partial(run_cli, timeout=600)  # a run trains and serves: minutes on a loaded machine


@pytest.fixture
def quickstart(tmp_path: Path) -> Iterator[Path]:
    target = tmp_path / "quickstart"
    shutil.copytree(REPO / "examples" / "quickstart", target, ignore=shutil.ignore_patterns(".crispml"))
    yield target
    _cli(target, "undeploy", "churn")


def _evaluate_metrics(cwd: Path, run_id: str) -> dict[str, float]:
    manifest = json.loads(_cli(cwd, "show", run_id, "--json").stdout)
    return next(s for s in manifest["stages"] if s["name"] == "evaluate")["summary"]["metrics"]


@pytest.mark.slow
def test_reproduce_the_quickstart(quickstart: Path) -> None:
    first = _cli(quickstart, "run", "recipe.yaml", "--set", f"deploy.port={free_port()}")
    assert first.returncode == 0, first.stderr
    run_id = json.loads(_cli(quickstart, "runs", "--json").stdout)[0]["run_id"]
    recorded = _evaluate_metrics(quickstart, run_id)
    manifest = json.loads((quickstart / ".crispml" / "runs" / run_id / "manifest.json").read_text())
    load = next(s for s in manifest["stages"] if s["name"] == "load")
    assert list(load["files"]) == [str((quickstart / "data" / "churn.csv").resolve())]

    # As recorded: every metric equal, register and deploy skipped and said so.
    same = _cli(quickstart, "reproduce", run_id)
    assert same.returncode == 0, same.stdout + same.stderr
    assert f"run {run_id}: reproduced" in same.stdout
    assert "skipped: register, deploy" in same.stdout
    assert "roc_auc" in same.stdout and "differs" not in same.stdout
    report = json.loads(_cli(quickstart, "reproduce", run_id, "--json").stdout)
    assert report["status"] == "reproduced" and report["differences"] == [] and report["missing"] == []
    # LogisticRegression leaves random_state unset, but its solver is deterministic: the model
    # trained again answers exactly as the recorded one, so no tolerance is granted.
    assert report["tolerance"] == 0 and "answers exactly as the recorded one" in report["tolerance_reason"]
    evaluated = {m["metric"]: m for m in report["metrics"] if m["stage"] == "evaluate"}
    assert set(evaluated) == set(recorded)
    assert all(m["reproduced"] == recorded[name] for name, m in evaluated.items())  # bit for bit
    reproduction = json.loads(_cli(quickstart, "show", report["reproduction_run_id"], "--json").stdout)
    assert reproduction["reproduces"] == run_id
    assert {s["name"] for s in reproduction["stages"]} == {"load", "validate", "train", "evaluate"}
    assert all(s["status"] == "succeeded" for s in reproduction["stages"])  # no cache: really re-run
    models = json.loads(_cli(quickstart, "models", "--json").stdout)
    assert [[v["version"] for v in m["versions"]] for m in models] == [["1"]]  # nothing registered
    deployments = json.loads(_cli(quickstart, "deployments", "--json").stdout)
    assert [(d["name"], d["model"]) for d in deployments] == [("churn", "churn/1")]

    # Another seed through --set: the split moves, the metrics differ (exit 3, with the table).
    reseeded = _cli(quickstart, "reproduce", run_id, "--set", "split.seed=7")
    assert reseeded.returncode == 3, reseeded.stdout + reseeded.stderr
    assert "recipe: --set split.seed=7" in reseeded.stdout
    assert "differs" in reseeded.stdout and f"run {run_id}: differs" in reseeded.stdout

    # A data edit: the file is named with both fingerprints.
    data = quickstart / "data" / "churn.csv"
    lines = data.read_text().splitlines()
    lines[1:201] = [line.rsplit(",", 1)[0] + "," + ("0" if line.endswith(",1") else "1") for line in lines[1:201]]
    data.write_text("\n".join(lines) + "\n")
    edited = json.loads(_cli(quickstart, "reproduce", run_id, "--json").stdout)
    changed = [d for d in edited["differences"] if d.startswith("data/churn.csv changed: fingerprint ")]
    assert changed and load["files"][str(data.resolve())][:8] in changed[0], edited["differences"]
    assert edited["status"] == "differs"

    # A missing data file: cannot be reproduced here (exit 2), nothing re-run.
    data.unlink()
    gone = _cli(quickstart, "reproduce", run_id)
    assert gone.returncode == 2, gone.stdout + gone.stderr
    assert gone.stdout.startswith("missing: ") and "data/churn.csv" in gone.stdout
    assert f"run {run_id} cannot be reproduced here" in gone.stdout


def test_reproduce_an_unknown_run(tmp_path: Path) -> None:
    (tmp_path / ".crispml").mkdir()
    unknown = _cli(tmp_path, "reproduce", "20990101-000000-abcdef")
    assert unknown.returncode == 2
    assert unknown.stdout == ""
    assert unknown.stderr.count("\n") == 1 and "not found" in unknown.stderr and "Traceback" not in unknown.stderr
