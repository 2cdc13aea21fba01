"""Training candidates tracked in real MLflow (SQLite): one nested run per candidate under the
crispml run's MLflow run, as MLflow's own searches log them; the winner is registered."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import crispml

GRID = {"params.C": [0.001, 1.0, 100.0]}


def _children(c: Any, parent: Any) -> dict[int, Any]:
    runs = c.search_runs([parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    return {int(r.data.tags["crispml.candidate"]): r for r in runs}


def _client(project: Path) -> Any:
    from mlflow import MlflowClient

    uri = f"sqlite:///{project / '.crispml' / 'mlflow.db'}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def test_candidates_are_nested_runs_and_the_best_is_registered(
    mlflow_project: Path, write_recipe: Callable[..., Path]
) -> None:
    train = {
        "use": "sklearn",
        "estimator": "sklearn.linear_model.LogisticRegression",
        "params": {"max_iter": 500},
        "grid": GRID,
        "select": "roc_auc",
    }
    register = {"use": "mlflow", "model_name": "churn-grid"}
    result = crispml.run(write_recipe(tracking=["mlflow"], train=train, register=register))
    assert result.status == "succeeded", result.error
    record = result.manifest.stage("train")
    scores = {c.index: c.metrics["roc_auc"] for c in record.candidates}
    assert record.selected == max(scores, key=lambda i: scores[i])

    c = _client(mlflow_project)
    parent = c.get_run(result.manifest.links["mlflow_run_id"])
    children = _children(c, parent)
    assert sorted(children) == [1, 2, 3]
    for index, child in children.items():
        assert child.info.status == "FINISHED"
        assert child.info.run_name == f"{result.run_id}/train-{index}"
        assert child.data.metrics["roc_auc"] == pytest.approx(scores[index])
        assert child.data.params["params.C"] == str(GRID["params.C"][index - 1])
        assert child.data.params["params.max_iter"] == "500"
        assert child.data.tags["crispml.selected"] == str(index == record.selected).lower()
        assert child.data.tags["crispml.run_id"] == result.run_id
    # The parent's metrics and registered model are the winner's.
    assert parent.data.metrics["roc_auc"] == pytest.approx(scores[record.selected])
    version = result["model_version"]
    assert c.get_model_version("churn-grid", version.version).run_id == parent.info.run_id
    assert result["model"].params["C"] == GRID["params.C"][record.selected - 1]

    # A second run reuses every candidate, and nests its own runs under its own MLflow run.
    again = crispml.run(write_recipe(tracking=["mlflow"], train=train, register=register))
    assert [x.status for x in again.manifest.stage("train").candidates] == ["cached"] * 3
    other = c.get_run(again.manifest.links["mlflow_run_id"])
    assert sorted(_children(c, other)) == [1, 2, 3]
    assert sorted(_children(c, parent)) == [1, 2, 3]


def test_a_failed_candidate_is_a_failed_nested_run_and_registers_nothing(
    mlflow_project: Path, write_recipe: Callable[..., Path]
) -> None:
    # More neighbours than training rows: a valid option, so only using the model finds out.
    train = {
        "use": "sklearn",
        "estimator": "sklearn.neighbors.KNeighborsClassifier",
        "candidates": [{"params.n_neighbors": 15}, {"params.n_neighbors": 100_000}],
        "select": "roc_auc",
    }
    register = {"use": "mlflow", "model_name": "churn-broken"}
    evaluate = {"use": "sklearn", "metrics": ["roc_auc"]}
    result = crispml.run(write_recipe(tracking=["mlflow"], train=train, evaluate=evaluate, register=register))
    assert result.status == "failed"
    error = str(result.manifest.error)
    assert "\n" not in error
    assert "1 of 2 candidates failed; candidate 2 (params.n_neighbors=100000): ValueError: " in error
    record = result.manifest.stage("train")
    assert [x.status for x in record.candidates] == ["succeeded", "failed"]
    assert str(record.candidates[1].error).startswith("ValueError: ")
    c = _client(mlflow_project)
    parent = c.get_run(result.manifest.links["mlflow_run_id"])
    children = _children(c, parent)
    assert children[1].info.status == "FINISHED" and children[2].info.status == "FAILED"
    assert "n_neighbors" in children[2].data.tags["crispml.error"]
    assert c.search_registered_models(filter_string="name = 'churn-broken'") == []
