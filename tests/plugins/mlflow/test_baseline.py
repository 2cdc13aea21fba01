"""``evaluate.baseline: champion``: the register gate compares the challenger with the champion
scored on the same test rows, not with the metric the champion was registered with (measured on
the data of its own day). Real MLflow (embedded), real scikit-learn; synthetic worlds that move."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

import crispml

ROWS = 1200


def world(seed: int, rule: str, noise: float) -> pd.DataFrame:
    """Two numeric features and a category; churn follows ``rule`` (x1 or x2) plus noise."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "x1": rng.normal(size=ROWS),
            "x2": rng.normal(size=ROWS),
            "plan": rng.choice(["basic", "plus", "pro"], size=ROWS),
        }
    )
    frame["churned"] = ((frame[rule] + noise * rng.normal(size=ROWS)) > 0).astype(int)
    return frame


def recipe(project: Path, data: str, *, baseline: bool = True, **train: Any) -> Path:
    evaluate: dict[str, Any] = {"use": "sklearn", "metrics": ["roc_auc", "accuracy"], "plots": False}
    if baseline:
        evaluate["baseline"] = "champion"
    body = {
        "name": "moving-world",
        "split": {"test_size": 0.3, "seed": 7, "stratify": "churned"},
        "load": {"use": "files", "path": data, "target": "churned"},
        "train": {"use": "sklearn", "params": {"max_iter": 500}, **train},
        "evaluate": evaluate,
        "register": {"use": "mlflow", "model_name": "world", "compare_on": "roc_auc"},
    }
    path = project / "recipe.yaml"
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


def stored_roc_auc(project: Path, version: str) -> float:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{project / '.crispml' / 'mlflow.db'}")
    return float(client.get_model_version("world", version).tags["crispml.metric.roc_auc"])


def champion(project: Path) -> str:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{project / '.crispml' / 'mlflow.db'}")
    return str(client.get_model_version_by_alias("world", "champion").version)


@pytest.fixture
def first(mlflow_project: Path, caplog: pytest.LogCaptureFixture) -> Path:
    """Version 1, champion, trained on a world where x1 explains churn (little noise)."""
    world(1, "x1", 0.3).to_csv(mlflow_project / "old.csv", index=False)
    with caplog.at_level(logging.INFO, logger="crispml"):
        result = crispml.run(recipe(mlflow_project, "old.csv"), project=mlflow_project)
    assert result.status == "succeeded", result.manifest
    assert result["model_version"].promoted and result["model_version"].version == "1"
    # No champion yet: nothing to score, said in the run's log; no champion_* metric invented.
    assert not [m for m in result["evaluation"].metrics if m.startswith("champion_")]
    assert "no champion of 'world' to score" in caplog.text and "compared with nothing" in caplog.text
    return mlflow_project


def test_a_challenger_better_on_new_data_is_promoted_though_below_the_stored_metric(first: Path) -> None:
    # The world moved: x2 explains churn now, noisily. The challenger learns it, but scores less
    # than the champion's stored roc_auc (measured on the easy old world); the champion, on the
    # same new test rows, scores about chance.
    world(2, "x2", 1.0).to_csv(first / "new.csv", index=False)
    result = crispml.run(recipe(first, "new.csv"), project=first)
    metrics = result["evaluation"].metrics
    stored = stored_roc_auc(first, "1")
    assert metrics["champion_version"] == 1.0
    assert metrics["champion_roc_auc"] < metrics["roc_auc"] < stored, (metrics, stored)
    assert "champion_accuracy" in metrics
    assert result.status == "succeeded", result.manifest
    version = result["model_version"]
    assert version.promoted and champion(first) == "2"
    assert version.metrics["champion_roc_auc"] == metrics["champion_roc_auc"]  # what the gate compared
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{first / '.crispml' / 'mlflow.db'}")
    reason = client.get_model_version("world", "2").tags["crispml.promotion_reason"]
    assert "beats champion version 1's" in reason and "on the same test rows" in reason


def test_a_challenger_worse_on_new_data_is_rejected_though_above_the_stored_metric(first: Path) -> None:
    # The new world is labelled by the champion itself (no noise): on its test rows the champion
    # is perfect, and no challenger can beat it — yet the challenger's roc_auc there beats the
    # champion's stored one (old world, noisier labels), so the stored tag would have promoted it.
    new = world(3, "x1", 0.0).drop(columns="churned")
    new["churned"] = crispml.load_model("world@champion", project=first).predict(new).astype(int)
    new.to_csv(first / "new.csv", index=False)
    result = crispml.run(recipe(first, "new.csv", params={"max_iter": 500, "C": 0.01}), project=first)
    metrics = result["evaluation"].metrics
    stored = stored_roc_auc(first, "1")
    assert stored < metrics["roc_auc"] <= metrics["champion_roc_auc"], (metrics, stored)
    assert result.status == "rejected"
    assert "does not beat champion version 1's" in result.manifest["rejection"]
    assert "on the same test rows" in result.manifest["rejection"]
    assert champion(first) == "1"


def test_without_baseline_the_stored_metric_decides(first: Path) -> None:
    # The same move as above without ``baseline``: the gate compares with the stored metric,
    # and the challenger that is better on the new data is rejected — what baseline fixes.
    world(2, "x2", 1.0).to_csv(first / "new.csv", index=False)
    result = crispml.run(recipe(first, "new.csv", baseline=False), project=first)
    assert "champion_roc_auc" not in result["evaluation"].metrics
    assert result.status == "rejected" and champion(first) == "1"
    assert "on the same test rows" not in result.manifest["rejection"]


def test_a_champion_promoted_after_the_evaluation_is_not_compared_with_its_predecessors_score() -> None:
    from types import SimpleNamespace

    from crispml import Evaluation
    from crispml_mlflow._register import _measured

    evaluation = Evaluation(metrics={"roc_auc": 0.8, "champion_roc_auc": 0.6, "champion_version": 1.0})
    assert _measured(evaluation, "roc_auc", SimpleNamespace(version="1")) == 0.6
    assert _measured(evaluation, "roc_auc", SimpleNamespace(version="2")) is None  # not the one measured
    assert _measured(evaluation, "accuracy", SimpleNamespace(version="1")) is None
    assert _measured(None, "roc_auc", SimpleNamespace(version="1")) is None


def test_baseline_without_a_model_name_is_one_line(mlflow_project: Path) -> None:
    world(1, "x1", 0.3).to_csv(mlflow_project / "old.csv", index=False)
    path = recipe(mlflow_project, "old.csv")
    body = yaml.safe_load(path.read_text())
    del body["register"]
    path.write_text(yaml.safe_dump(body))
    result = crispml.run(path, project=mlflow_project)
    assert result.status == "failed"
    assert "evaluate.baseline: champion needs the registered model's name" in str(result.manifest["error"])
