"""The ready-made recipes as a user meets them: `crispml recipes`, `crispml init NAME DIR`, then
`crispml run DIR/recipe.yaml` end to end (trained, gated, registered, served) on free ports, and
the served model answering a request with the right shape for its task."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from suite_helpers import free_port, run_cli

REPO = Path(__file__).resolve().parents[2]
RECIPES = REPO / "recipes"
pytestmark = pytest.mark.slow

NEW = ("delivery-time-regression", "ticket-priority-multiclass", "retrain-on-drift")


_cli = partial(run_cli, timeout=900)  # a run trains and serves: minutes on a loaded machine


def _predict(url: str, records: list[dict[str, Any]]) -> dict[str, Any]:
    request = urllib.request.Request(
        url + "/predict", data=json.dumps({"records": records}).encode(), headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.load(response)  # type: ignore[no-any-return]


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Path]:
    (tmp_path / ".crispml").mkdir()
    yield tmp_path
    for row in json.loads(_cli(tmp_path, "deployments", "--json").stdout or "[]"):
        _cli(tmp_path, "undeploy", row["name"])


def _init_and_run(project: Path, name: str) -> tuple[Path, str]:
    made = _cli(project, "init", name, "mine")
    assert made.returncode == 0, made.stderr
    ran = _cli(project, "run", "mine/recipe.yaml", "--set", f"deploy.port={free_port()}")
    assert ran.returncode == 0, ran.stdout[-2000:] + ran.stderr[-3000:]
    deployments = json.loads(_cli(project, "deployments", "--json").stdout)
    assert len(deployments) == 1 and deployments[0]["status"] == "up"
    return project / "mine", str(deployments[0]["url"])


def _rows(folder: Path, target: str, n: int) -> list[dict[str, Any]]:
    import pandas as pd

    frame = pd.read_csv(next((folder / "data").glob("*.csv")))
    return json.loads(frame.drop(columns=[target]).tail(n).to_json(orient="records"))  # type: ignore[no-any-return]


def test_every_recipe_is_listed_documented_and_its_data_regenerates(tmp_path: Path) -> None:
    listed = _cli(tmp_path, "recipes")
    assert listed.returncode == 0
    for name in ("churn-classification", *NEW):
        assert name in listed.stdout
        text = (RECIPES / name / "recipe.yaml").read_text()
        assert text.startswith("# A ready-made recipe") and f"crispml init {name} " in text, name
    for name in NEW:
        # The shipped data is what make_data.py writes: deterministic, nothing downloaded.
        shipped = next((RECIPES / name / "data").glob("*.csv"))
        again = tmp_path / f"{name}.csv"
        made = subprocess.run(
            [sys.executable, str(RECIPES / name / "make_data.py"), "--out", str(again)], capture_output=True, text=True
        )
        assert made.returncode == 0, made.stderr
        assert again.read_bytes() == shipped.read_bytes(), name


def test_regression_recipe_trains_gates_and_serves_numbers(project: Path) -> None:
    folder, url = _init_and_run(project, "delivery-time-regression")
    run = json.loads(_cli(project, "runs", "--json").stdout)[0]
    manifest = json.loads(_cli(project, "show", run["run_id"], "--json").stdout)
    metrics = next(s for s in manifest["stages"] if s["name"] == "evaluate")["summary"]["metrics"]
    assert metrics["r2"] >= 0.6 and metrics["neg_root_mean_squared_error"] < 0
    assert "artifacts" not in next(s for s in manifest["stages"] if s["name"] == "evaluate")["summary"]  # no plots
    model = json.loads(_cli(project, "models", "--json").stdout)[0]
    assert model["name"] == "delivery-time" and model["aliases"]["champion"] == "1"
    answer = _predict(url, _rows(folder, "delivery_minutes", 3))
    assert len(answer["predictions"]) == 3
    assert all(isinstance(p, float) and 5 <= p <= 200 for p in answer["predictions"])
    assert "probabilities" not in answer  # a regressor has none
    assert answer["model"]["name"] == "delivery-time"


def test_multiclass_recipe_serves_string_classes_with_probabilities(project: Path) -> None:
    folder, url = _init_and_run(project, "ticket-priority-multiclass")
    run = json.loads(_cli(project, "runs", "--json").stdout)[0]
    manifest = json.loads(_cli(project, "show", run["run_id"], "--json").stdout)
    metrics = next(s for s in manifest["stages"] if s["name"] == "evaluate")["summary"]["metrics"]
    assert metrics["f1_macro"] >= 0.6 and 0.5 < metrics["roc_auc_ovr"] <= 1
    plots = next(s for s in manifest["stages"] if s["name"] == "evaluate")["summary"]["artifacts"]
    assert plots == ["confusion_matrix.png"]  # a ROC curve is drawn for binary classifiers only
    answer = _predict(url, _rows(folder, "priority", 20))
    classes = {"low", "medium", "high", "urgent"}
    assert set(answer["predictions"]) <= classes and len(answer["predictions"]) == 20
    assert len(set(answer["predictions"])) >= 2  # the last 20 tickets are not all one class
    for predicted, probabilities in zip(answer["predictions"], answer["probabilities"], strict=True):
        assert set(probabilities) == classes
        assert abs(sum(probabilities.values()) - 1) < 1e-6
        assert max(probabilities, key=probabilities.get) == predicted


def test_retrain_on_drift_recipe_serves_and_its_monitor_sees_drift(project: Path) -> None:
    folder, url = _init_and_run(project, "retrain-on-drift")
    assert "schedule recipe.yaml --cron" in (folder / "recipe.yaml").read_text()
    assert len(_predict(url, _rows(folder, "churned", 2))["predictions"]) == 2
    quiet = _cli(project, "monitor", "mine/recipe.yaml")
    assert quiet.returncode == 0, quiet.stderr  # two requests: too few to tell, said so
    shifted = subprocess.run(
        [sys.executable, "make_data.py", "--shift", "--out", "data/shifted.csv"], cwd=folder, capture_output=True
    )
    assert shifted.returncode == 0
    batch = str(folder / "data" / "shifted.csv")
    drift = _cli(project, "monitor", "mine/recipe.yaml", "--batch", batch, "--no-retrain", "--json")
    assert drift.returncode == 3, drift.stdout + drift.stderr
    assert json.loads(drift.stdout)["report"]["drift_detected"] is True


def test_init_refuses_an_unknown_name_and_an_existing_recipe(tmp_path: Path) -> None:
    unknown = _cli(tmp_path, "init", "no-such-recipe", ".")
    assert unknown.returncode == 2 and unknown.stderr.count("\n") == 1
    assert all(name in unknown.stderr for name in ("churn-classification", *NEW))
    assert not (tmp_path / "recipe.yaml").exists()
    (tmp_path / "recipe.yaml").write_text("name: mine\n")
    taken = _cli(tmp_path, "init", "delivery-time-regression", ".")
    assert taken.returncode == 2 and "already exists" in taken.stderr
    assert (tmp_path / "recipe.yaml").read_text() == "name: mine\n"
    assert not (tmp_path / "data").exists()  # nothing half-copied
