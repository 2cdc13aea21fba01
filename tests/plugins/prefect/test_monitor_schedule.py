"""``crispml schedule recipe.yaml --monitor``: a schedule of ``crispml monitor`` on a real
``prefect server`` and a real serve process; the retrain a drifting monitor starts is a subflow
of the monitor's flow run. Evidently, scikit-learn and the run store are real too."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from suite_helpers import free_port

QUICK = Path(__file__).resolve().parents[3] / "examples" / "quickstart"


def write_monitored(project: Path) -> Path:
    shutil.copytree(QUICK / "data", project / "data", dirs_exist_ok=True)
    shifted = pd.read_csv(project / "data" / "churn.csv").drop(columns="churned").sample(400, random_state=3)
    shifted["tenure_months"] *= 3
    shifted["monthly_charges"] += 100
    shifted["total_charges"] += 5000
    shifted["support_calls"] += 5
    shifted["contract"] = "month-to-month"
    shifted.to_csv(project / "shifted.csv", index=False)
    recipe = {
        "name": "churn-watched",
        "split": {"test_size": 0.25, "seed": 42, "stratify": "churned"},
        "load": {"use": "files", "path": "data/churn.csv", "target": "churned"},
        "train": {"use": "sklearn", "params": {"max_iter": 500}},
        "evaluate": {"use": "sklearn", "metrics": ["roc_auc"], "plots": False},
        "monitor": {
            "use": "evidently",
            "batch": "shifted.csv",
            "min_rows": 50,
            "on_drift": "retrain",
            "retrain": {"set": ["train.params.C=0.5"]},
        },
    }
    path = project / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def manifests(project: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in (project / ".crispml" / "runs").glob("*/manifest.json")]


def test_monitor_needs_a_monitor_step_before_prefect_is_asked(project: Path, cli: Callable[..., Any]) -> None:
    recipe = write_monitored(project)
    body = yaml.safe_load(recipe.read_text())
    del body["monitor"]
    plain = project / "plain.yaml"
    plain.write_text(yaml.safe_dump(body))
    done = cli("schedule", str(plain), "--monitor", "--interval", "1h", timeout=120)
    assert done.returncode == 2 and "--monitor: " in done.stderr and "has no monitor step" in done.stderr
    body = yaml.safe_load(recipe.read_text())
    body["monitor"]["retrain"]["set"] = ["load.nope=1"]
    broken = project / "broken.yaml"
    broken.write_text(yaml.safe_dump(body))
    done = cli("schedule", str(broken), "--monitor", "--interval", "1h", timeout=120)
    assert done.returncode == 2 and "monitor.retrain.set" in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert not (project / ".crispml" / "prefect").exists()


@pytest.mark.slow
def test_a_monitor_schedule_runs_crispml_monitor_and_its_retrain_is_a_subflow(
    project: Path, cli: Callable[..., Any]
) -> None:
    recipe = write_monitored(project)
    trained = cli("run", str(recipe), timeout=600)  # the reference: the monitor step is left out
    assert trained.returncode == 0, trained.stdout + trained.stderr
    port = free_port()
    env = {"PREFECT_API_URL": None}  # the managed server, not the session's API
    try:
        started = cli("server", "start", "--port", str(port), timeout=300)
        assert started.returncode == 0, started.stderr
        api_url = f"http://127.0.0.1:{port}/api"
        done = cli("schedule", str(recipe), "--monitor", "--interval", "1h", "--name", "watch", env=env)
        assert done.returncode == 0, done.stderr
        assert "scheduled 'watch': crispml monitor" in done.stdout
        rows = {r["name"]: r for r in json.loads(cli("schedules", "--json").stdout)}
        assert rows["watch"]["kind"] == "monitor" and rows["watch"]["schedule"] == "every 1h"
        assert " monitor " in cli("schedules").stdout

        ran = cli("schedules", "run", "watch", "--wait", "600", timeout=700)
        assert ran.returncode == 0, ran.stdout + ran.stderr
        assert "ended Completed" in ran.stdout and "→ retrain" in ran.stdout
        flow_run_id = ran.stdout.split("started flow run ")[1].split()[0]

        runs = manifests(project)
        monitor = [m for m in runs if m.get("kind") == "monitor"]
        assert len(monitor) == 1 and monitor[0]["links"]["prefect_flow_run_id"] == flow_run_id
        assert [s["name"] for s in monitor[0]["stages"]] == ["monitor"]
        assert monitor[0]["recipe"]["runner"]["use"] == "prefect"
        retrain = next(m for m in runs if m["run_id"] == monitor[0]["links"]["retrain_run"])
        assert retrain["status"] == "succeeded" and retrain["trigger"]["monitor_run"] == monitor[0]["run_id"]
        assert retrain["recipe"]["train"]["params"]["C"] == 0.5

        from crispml_prefect import _schedules

        with _schedules.client(project, api_url) as api:
            parent = api.read_flow_run(flow_run_id)
            assert parent.name == monitor[0]["run_id"] and parent.state.name == "Completed"
            sub = api.read_flow_run(retrain["links"]["prefect_flow_run_id"])
            assert sub.name == retrain["run_id"] and sub.state.name == "Completed"
            assert sub.parent_task_run_id is not None, "the retrain is a subflow"
            assert api.read_task_run(sub.parent_task_run_id).flow_run_id == parent.id
            from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, TaskRunFilter
            from prefect.client.schemas.sorting import TaskRunSort

            tasks = api.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[sub.id])),
                task_run_filter=TaskRunFilter(),
                sort=TaskRunSort.EXPECTED_START_TIME_DESC,
                limit=50,
                offset=0,
            )
            assert {t.name for t in tasks} == {"load", "train", "evaluate"}
    finally:
        stopped = cli("server", "stop")
    assert stopped.returncode == 0
