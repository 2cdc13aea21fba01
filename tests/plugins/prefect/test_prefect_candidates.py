"""Training candidates on the ``prefect`` runner: Prefect tasks on Prefect's own task runners
(processes, threads, a Dask cluster), with real scikit-learn, against a real Prefect API.

The same recipe runs under ``local`` (candidates in order, in-process) and under each task
runner with the cache off (so every candidate really trains in a worker); the choice, every
candidate's metrics and the handed-on model must be the same.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

import crispml

CHURN = Path(__file__).resolve().parents[3] / "examples" / "quickstart" / "data" / "churn.csv"

FOREST = {
    "use": "sklearn",
    "estimator": "sklearn.ensemble.RandomForestClassifier",
    "params": {"random_state": 0, "n_jobs": 1},
    "grid": {"params.max_depth": [2, 6], "params.n_estimators": [10, 30]},
    "select": "roc_auc",
}


def write(project: Path, runner: Any, name: str = "recipe.yaml", train: dict[str, Any] | None = None) -> Path:
    recipe = {
        "name": "forest",
        "split": {"test_size": 0.25, "seed": 42, "stratify": "churned"},
        "load": {"use": "files", "path": str(CHURN), "target": "churned"},
        "train": train or FOREST,
        "evaluate": {"use": "sklearn", "metrics": ["roc_auc", "accuracy"], "plots": False},
        "runner": runner,
    }
    path = project / name
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def picked(result: Any) -> tuple[int | None, list[dict[str, float]], dict[str, Any], dict[str, float]]:
    record = result.manifest.stage("train")
    return (
        record.selected,
        [c.metrics for c in record.candidates],
        result["model"].params,
        result["evaluation"].metrics,
    )


def candidate_tasks(client: Any, result: Any) -> dict[str, Any]:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.sorting import TaskRunSort

    flow_run_id = result.manifest.links["prefect_flow_run_id"]
    runs = client.read_task_runs(
        flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
        limit=50,
        sort=TaskRunSort.EXPECTED_START_TIME_ASC,  # sent explicitly: null gets HTTP 422 (see prefect.md)
    )
    return {t.name: t for t in runs if t.name.startswith("train-")}


@pytest.fixture
def local(project: Path) -> Any:
    result = crispml.run(write(project, "local", "local.yaml"), project=project, use_cache=False)
    assert result.status == "succeeded", result.error
    assert [c.status for c in result.manifest.stage("train").candidates] == ["succeeded"] * 4
    return result


def test_four_candidates_on_processes_pick_what_local_picks(
    project: Path, local: Any, prefect_api: str, prefect_client: Any
) -> None:
    runner = {"use": "prefect", "task_runner": "process", "max_workers": 2}
    result = crispml.run(write(project, runner), project=project, use_cache=False)
    assert result.status == "succeeded", result.error
    assert [c.status for c in result.manifest.stage("train").candidates] == ["succeeded"] * 4
    assert picked(result) == picked(local)
    tasks = candidate_tasks(prefect_client, result)
    assert sorted(tasks) == ["train-1", "train-2", "train-3", "train-4"]
    assert all(t.state.type.value == "COMPLETED" for t in tasks.values())
    # They ran in other processes: each candidate's model was stored by its worker.
    for index in range(1, 5):
        assert (result.run_dir / "stages" / "candidates" / f"train-{index}" / "train.pkl").is_file()


def test_threads_pick_the_same_and_a_failed_candidate_fails_its_task_and_the_run(
    project: Path, local: Any, prefect_api: str, prefect_client: Any
) -> None:
    runner = {"use": "prefect", "task_runner": "thread", "max_workers": 2}
    result = crispml.run(write(project, runner), project=project, use_cache=False)
    assert result.status == "succeeded", result.error
    assert picked(result) == picked(local)

    knn = {
        "use": "sklearn",
        "estimator": "sklearn.neighbors.KNeighborsClassifier",
        "candidates": [{"params.n_neighbors": 15}, {"params.n_neighbors": 100_000}],
        "select": "roc_auc",
    }
    failed = crispml.run(write(project, runner, "knn.yaml", train=knn), project=project)
    assert failed.status == "failed" and failed.exit_code == 1
    error = str(failed.manifest.error)
    assert "\n" not in error
    assert "1 of 2 candidates failed; candidate 2 (params.n_neighbors=100000): ValueError" in error
    tasks = candidate_tasks(prefect_client, failed)
    assert tasks["train-1"].state.type.value == "COMPLETED"
    assert tasks["train-2"].state.type.value == "FAILED"
    assert "n_neighbors" in str(tasks["train-2"].state.message)
    flow_run = prefect_client.read_flow_run(failed.manifest.links["prefect_flow_run_id"])
    assert flow_run.state.type.value == "FAILED" and flow_run.state.message == error


def test_dask_a_cluster_at_an_address_and_a_local_one_pick_the_same(
    project: Path, local: Any, prefect_api: str
) -> None:
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        runner = {"use": "prefect", "task_runner": "dask", "address": cluster.scheduler_address}
        result = crispml.run(write(project, runner), project=project, use_cache=False)
    assert result.status == "succeeded", result.error
    assert [c.status for c in result.manifest.stage("train").candidates] == ["succeeded"] * 4
    assert picked(result) == picked(local)

    # No address: a LocalCluster of max_workers processes, started and stopped by the run.
    runner = {"use": "prefect", "task_runner": "dask", "max_workers": 1}
    own = crispml.run(write(project, runner, "own.yaml"), project=project, use_cache=False)
    assert own.status == "succeeded", own.error
    assert [c.status for c in own.manifest.stage("train").candidates] == ["succeeded"] * 4
    assert picked(own) == picked(local)


@pytest.mark.parametrize(
    ("runner", "expected"),
    [
        ({"task_runner": "proces"}, "runner.task_runner: expected 'thread', 'process' or 'dask'"),
        ({"max_workers": 0}, "runner.max_workers: expected greater than or equal to 1"),
        ({"address": "tcp://127.0.0.1:8786"}, "address is for task_runner: dask"),
        ({"task_runner": "dask", "address": "127.0.0.1:8786"}, "expected a Dask scheduler address"),
    ],
)
def test_bad_task_runner_options_are_one_line_recipe_errors(
    runner: dict[str, Any], expected: str, project: Path, cli: Callable[..., Any]
) -> None:
    recipe = write(project, {"use": "prefect", **runner})
    done = cli("check", str(recipe), timeout=120)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "recipe.yaml" in lines[0] and expected in lines[0], done.stderr
    assert "Traceback" not in done.stderr
