"""Training candidates with real scikit-learn: a grid and a list of estimators, checked with the
recipe (the sklearn step's own validators see every candidate), each candidate's files apart."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from crispml import run

CHURN = Path(__file__).resolve().parents[3] / "examples" / "quickstart" / "data" / "churn.csv"


def write(project: Path, train: dict[str, Any], metrics: list[str] | None = None) -> Path:
    recipe = {
        "name": "churn-search",
        "split": {"test_size": 0.25, "seed": 0, "stratify": "churned"},
        "load": {"use": "files", "path": str(CHURN), "target": "churned"},
        "train": {"use": "sklearn", **train},
        "evaluate": {"use": "sklearn", "metrics": metrics or ["roc_auc", "accuracy"]},
    }
    path = project / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def test_estimators_compete_and_each_candidate_keeps_its_own_plots(project: Path) -> None:
    train = {
        "candidates": [
            {"estimator": "sklearn.dummy.DummyClassifier"},
            {"estimator": "sklearn.linear_model.LogisticRegression", "params": {"max_iter": 500}},
        ],
        "select": "roc_auc",
    }
    result = run(write(project, train), project=project)
    assert result.status == "succeeded", result.error
    record = result.manifest.stage("train")
    dummy, logistic = record.candidates
    assert dummy.metrics["roc_auc"] == pytest.approx(0.5)  # a constant guess
    assert logistic.metrics["roc_auc"] > 0.7
    assert record.selected == 2 and result["model"].params["estimator"].endswith("LogisticRegression")
    assert result["evaluation"].metrics == pytest.approx(logistic.metrics)
    for index in (1, 2):
        png = result.run_dir / "artifacts" / "candidates" / f"train-{index}" / "evaluate" / "roc_curve.png"
        assert png.read_bytes()[:4] == b"\x89PNG"
    # The run's own evaluate folder holds the winner's plots.
    winner = result.run_dir / "artifacts" / "candidates" / "train-2" / "evaluate" / "roc_curve.png"
    assert (result.run_dir / "artifacts" / "evaluate" / "roc_curve.png").read_bytes() == winner.read_bytes()


BAD = [
    (
        {"grid": {"paramz.max_depth": [2]}, "select": "roc_auc"},
        "train.grid.paramz.max_depth: 'paramz' is no option of plugin 'sklearn' for this step (did you mean 'params'?",
    ),
    (
        {"estimator": "sklearn.ensemble.RandomForestClassifier", "grid": {"params.max_dept": [2]}, "select": "roc_auc"},
        "candidate 1 (params.max_dept=2): train.params: RandomForestClassifier has no parameter(s): max_dept",
    ),
    (
        {"grid": {"params.C": [-1.0]}, "select": "roc_auc"},
        "candidate 1 (params.C=-1.0): train.params: The 'C' parameter of LogisticRegression must be",
    ),
    (
        {"grid": {"params.C": [1.0]}, "select": "f1"},
        "train.select: metric 'f1' is not computed by the evaluate step (it computes: roc_auc, accuracy)",
    ),
    (
        {"grid": {"params.C": list(range(1, 10)), "params.max_iter": list(range(100, 900, 100))}, "select": "roc_auc"},
        "train.grid: 72 candidates; a step tries at most 64 (max_candidates)",
    ),
    (
        {"grid": {"params.C": [1.0]}, "candidates": [{"params.C": 2.0}], "select": "roc_auc"},
        "train.candidates: give either grid: or candidates:, not both",
    ),
    (
        {"candidates": [{"estimator": "sklearn.ensemble.RandomForestClassifer"}], "select": "roc_auc"},
        "candidate 1 (estimator='sklearn.ensemble.RandomForestClassifer'): train.estimator: cannot import estimator",
    ),
]


@pytest.mark.parametrize(("train", "expected"), BAD)
def test_bad_candidates_are_one_line_recipe_errors_at_check(
    train: dict[str, Any], expected: str, project: Path, crispml_cli: Callable[..., Any]
) -> None:
    recipe = write(project, train)
    done = crispml_cli("run", str(recipe))
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert f"{recipe}:" in lines[0] and expected in lines[0], lines[0]
    assert "Traceback" not in done.stderr
    assert not (project / ".crispml" / "runs").exists()  # nothing ran


def test_run_and_show_print_every_candidate_and_the_winner(project: Path, crispml_cli: Callable[..., Any]) -> None:
    recipe = write(project, {"params": {"max_iter": 500}, "grid": {"params.C": [0.001, 1.0]}, "select": "roc_auc"})
    checked = crispml_cli("check", str(recipe))
    assert checked.returncode == 0 and "train (sklearn, 2 candidates)" in checked.stdout, checked.stderr
    done = crispml_cli("run", str(recipe))
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if "train-" in line]
    assert len(lines) == 2 and "params.C=0.001: roc_auc=" in lines[0] and "params.C=1.0: roc_auc=" in lines[1]
    run_dir = next((project / ".crispml" / "runs").iterdir())
    train = next(s for s in json.loads((run_dir / "manifest.json").read_text())["stages"] if s["name"] == "train")
    winner = train["selected"]
    assert [line.endswith("← selected") for line in lines] == [winner == 1, winner == 2]
    shown = crispml_cli("show", run_dir.name)
    assert shown.returncode == 0, shown.stderr
    rows = [line for line in shown.stdout.splitlines() if "train-" in line]
    assert len(rows) == 2 and [("← selected" in row) for row in rows] == [winner == 1, winner == 2]
