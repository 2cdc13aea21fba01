"""The ``prefect`` runner against Prefect's real engine and a real API (no mocks).

Recipes use ``steps``, a small plugin module written into each project (like a user's own code):
a table loader, a trainer that can fail N times, raise a ``UsageError`` or sleep, and an evaluator
whose score a gate tests. Each outcome is run under ``local`` and under ``prefect`` and the two
manifests compared; the flow and task runs are read back with Prefect's client.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import crispml

from prefect_steps import retrying, write_recipe

CRISPML = str(Path(sys.executable).with_name("crispml"))

_VOLATILE = {"run_id", "started", "ended", "duration", "pid", "links", "environment", "recipe_file", "plugins"}
_VOLATILE |= {"recipe_hash", "use_cache"}  # the recipes differ in their runner (and the cache is off)


def comparable(manifest: dict[str, Any]) -> dict[str, Any]:
    """A manifest without what differs between any two runs (ids, times) or names the runner."""
    manifest = manifest.to_dict() if hasattr(manifest, "to_dict") else manifest
    out = {k: v for k, v in manifest.items() if k not in _VOLATILE}
    out["recipe"] = {k: v for k, v in manifest["recipe"].items() if k != "runner"}
    out["stages"] = [
        {k: v for k, v in s.items() if k not in ("started", "duration", "attempts")} for s in manifest["stages"]
    ]
    return out


def flow_run_of(client: Any, manifest: dict[str, Any]) -> Any:
    return client.read_flow_run(manifest["links"]["prefect_flow_run_id"])


def task_runs_of(client: Any, flow_run_id: Any) -> dict[str, Any]:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.sorting import TaskRunSort

    runs = client.read_task_runs(
        flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
        limit=50,
        sort=TaskRunSort.EXPECTED_START_TIME_ASC,
    )
    return {t.name: t for t in runs}


def logs_of(client: Any, flow_run_id: Any) -> list[str]:
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.client.schemas.sorting import LogSort

    logs = client.read_logs(
        log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])),
        limit=200,
        offset=0,
        sort=LogSort.TIMESTAMP_ASC,
    )
    return [entry.message for entry in logs]


CASES = {
    "succeeded": ({}, "Completed", 0),
    "rejected": ({"evaluate": {"score": 0.1}}, "Rejected", 3),
    "failed": ({"train": {"fail_times": 5}}, "Failed", 1),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_outcomes_manifests_and_states_match_local(
    case: str, project: Path, prefect_api: str, prefect_client: Any
) -> None:
    steps, flow_state, exit_code = CASES[case]
    local = crispml.run(write_recipe(project, runner="local", name="local.yaml", **steps), project=project)
    (project / "train-attempts").unlink(missing_ok=True)
    ran = crispml.run(write_recipe(project, **steps), project=project, use_cache=False)

    assert ran.status == local.status == case
    assert ran.exit_code == local.exit_code == exit_code
    assert comparable(local.manifest) == comparable(ran.manifest)
    stored = json.loads((ran.run_dir / "manifest.json").read_text())
    assert stored["links"]["prefect_flow_run_id"] == ran.manifest["links"]["prefect_flow_run_id"]

    flow_run = flow_run_of(prefect_client, stored)
    assert flow_run.name == ran.run_id
    assert set(flow_run.tags) >= {"crispml", "recipe:flaky"}
    assert flow_run.state.type.value == ("FAILED" if case == "failed" else "COMPLETED")
    assert flow_run.state.name == flow_state
    if case == "failed":
        assert flow_run.state.message == stored["error"]
        assert "\n" not in flow_run.state.message and "stage 'train' (plugin 'steps')" in stored["error"]
    tasks = task_runs_of(prefect_client, flow_run.id)
    expected = {"succeeded": ["load", "train", "evaluate"], "rejected": ["load", "train", "evaluate"]}
    assert sorted(tasks) == sorted(expected.get(case, ["load", "train"]))
    assert tasks["load"].state.name == "Completed"
    if case == "rejected":
        assert tasks["evaluate"].state.name == "Rejected"
    if case == "failed":
        assert tasks["train"].state.type.value == "FAILED"


def test_a_cached_stage_is_a_cached_task(project: Path, prefect_api: str, prefect_client: Any) -> None:
    recipe = write_recipe(project)
    first = crispml.run(recipe, project=project)
    again = crispml.run(recipe, project=project)
    assert first.status == again.status == "succeeded"
    assert again.stage_status == {"load": "cached", "train": "cached", "evaluate": "cached"}
    tasks = task_runs_of(prefect_client, flow_run_of(prefect_client, again.manifest).id)
    assert {n: t.state.name for n, t in tasks.items()} == {"load": "Cached", "train": "Cached", "evaluate": "Cached"}
    assert all(t.state.type.value == "COMPLETED" for t in tasks.values())


def test_a_stage_failing_twice_succeeds_on_its_third_attempt(
    project: Path, prefect_api: str, prefect_client: Any
) -> None:
    recipe = write_recipe(project, runner=retrying(2), train={"fail_times": 2})
    result = crispml.run(recipe, project=project)
    assert result.status == "succeeded", result.manifest["error"]
    assert (project / "train-attempts").read_text() == "3"
    train = next(s for s in result.manifest["stages"] if s["name"] == "train")
    assert train["status"] == "succeeded" and not train.get("error")
    assert len(train["attempts"]) == 3
    flow_run = flow_run_of(prefect_client, result.manifest)
    task = task_runs_of(prefect_client, flow_run.id)["train"]
    assert task.run_count == 3 and task.state.name == "Completed"
    # crispml's own lines reach the flow run's logs in Prefect (PREFECT_LOGGING_EXTRA_LOGGERS).
    messages = logs_of(prefect_client, flow_run.id)
    assert "stage train failed (attempt 1/3): RuntimeError: flaky backend, attempt 1; retrying in 0 s" in messages
    assert "stage train failed (attempt 2/3): RuntimeError: flaky backend, attempt 2; retrying in 0 s" in messages


def test_retries_run_out_and_the_run_fails_with_the_last_error(project: Path, prefect_api: str) -> None:
    recipe = write_recipe(project, runner=retrying(1), train={"fail_times": 9})
    result = crispml.run(recipe, project=project)
    assert result.status == "failed"
    assert (project / "train-attempts").read_text() == "2"
    assert "flaky backend, attempt 2" in result.manifest["error"]
    assert result.stage_status == {"load": "succeeded", "train": "failed", "evaluate": "skipped"}


def test_a_usage_error_is_never_retried(project: Path, prefect_api: str, prefect_client: Any) -> None:
    recipe = write_recipe(project, runner=retrying(3), train={"usage_error": True})
    result = crispml.run(recipe, project=project)
    assert result.status == "failed"
    assert (project / "train-attempts").read_text() == "1"
    task = task_runs_of(prefect_client, flow_run_of(prefect_client, result.manifest).id)["train"]
    assert task.run_count == 1 and task.state.type.value == "FAILED"


def test_per_stage_options_override_the_runner_defaults(project: Path, prefect_api: str) -> None:
    runner = {"use": "prefect", "retries": 3, "retry_delay_seconds": 0, "stages": {"train": {"retries": 0}}}
    result = crispml.run(write_recipe(project, runner=runner, train={"fail_times": 1}), project=project)
    assert result.status == "failed"
    assert (project / "train-attempts").read_text() == "1"


@pytest.mark.parametrize(
    ("runner", "field", "expected"),
    [
        ({"use": "prefect", "retires": 2}, "runner.retires", "unknown option (did you mean 'retries'?"),
        ({"use": "prefect", "stages": {"trian": {"retries": 1}}}, "runner.stages", "no stage 'trian' in this recipe"),
        ({"use": "prefect", "stages": {"train": {"timeout": 5}}}, "runner.stages.train.timeout", "unknown option"),
        ({"use": "prefect", "retries": -1}, "runner.retries", "greater than or equal to 0"),
        ({"use": "prefect", "timeout_seconds": 0}, "runner.timeout_seconds", "greater than 0"),
    ],
)
def test_bad_runner_options_are_recipe_errors(
    runner: dict[str, Any],
    field: str,
    expected: str,
    project: Path,
    cli: Callable[..., Any],
) -> None:
    recipe = write_recipe(project, runner=runner)
    done = cli("run", str(recipe), timeout=120)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "recipe.yaml:" in lines[0] and field in lines[0] and expected in lines[0]
    assert "Traceback" not in done.stderr
    assert not (project / ".crispml").exists()


def test_a_stage_past_its_timeout_fails_and_resume_completes(
    project: Path, prefect_api: str, cli: Callable[..., Any], home: Path
) -> None:
    runner = {"use": "prefect", "timeout_seconds": 60, "stages": {"train": {"timeout_seconds": 2}}}
    recipe = write_recipe(project, runner=runner, train={"sleep": 60})
    done = cli("run", str(recipe))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    run_id = next((project / ".crispml" / "runs").iterdir()).name
    manifest = json.loads((project / ".crispml" / "runs" / run_id / "manifest.json").read_text())
    assert manifest["status"] == "failed"
    train = next(s for s in manifest["stages"] if s["name"] == "train")
    assert train["status"] == "failed" and "TimeoutError" in train["error"] and "timeout_seconds=2" in train["error"]
    assert train["duration"] < 30
    assert (project / "cleanup-ran").read_text() == "yes"  # the plugin's finally: ran
    (project / "fast").write_text("")
    resumed = cli("resume", run_id)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    manifest = json.loads((project / ".crispml" / "runs" / run_id / "manifest.json").read_text())
    assert manifest["status"] == "succeeded"
    statuses = {s["name"]: s["status"] for s in manifest["stages"]}
    assert statuses == dict.fromkeys(("load", "train", "evaluate"), "succeeded")
    assert manifest["resumes"] == 1
    assert not any(home.iterdir()), sorted(p.name for p in home.iterdir())
    assert (project / ".crispml" / "prefect").is_dir()


def _wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def _manifest(project: Path) -> dict[str, Any]:
    runs = list((project / ".crispml" / "runs").glob("*/manifest.json"))
    return json.loads(runs[0].read_text()) if runs else {}


def test_a_run_killed_inside_a_stage_resumes_under_the_same_id(
    project: Path, prefect_api: str, prefect_client: Any, cli: Callable[..., Any], cli_env: dict[str, str]
) -> None:
    recipe = write_recipe(project, train={"sleep": 120})
    proc = subprocess.Popen(
        [CRISPML, "run", str(recipe)], cwd=project, env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:

        def train_running() -> bool:
            stages = {s["name"]: s["status"] for s in _manifest(project).get("stages", [])}
            return stages.get("train") == "running"

        _wait_for(train_running, 180, "the train stage to start")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()
    killed = _manifest(project)
    assert killed["status"] == "running"
    first_flow_run = killed["links"]["prefect_flow_run_id"]
    (project / "fast").write_text("")
    resumed = cli("resume", killed["run_id"])
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    done = _manifest(project)
    assert done["run_id"] == killed["run_id"] and done["status"] == "succeeded"
    assert {s["name"]: s["status"] for s in done["stages"]} == dict.fromkeys(("load", "train", "evaluate"), "succeeded")
    assert done["links"]["prefect_flow_run_id"] != first_flow_run
    # The killed process's flow run no longer claims to be running.
    old = prefect_client.read_flow_run(first_flow_run)
    assert old.state.type.value == "CRASHED", old.state
    assert done["links"]["prefect_flow_run_id"] in old.state.message


@pytest.mark.slow
def test_the_ephemeral_api_keeps_its_state_in_the_project(project: Path, cli: Callable[..., Any], home: Path) -> None:
    recipe = write_recipe(project)
    done = cli("run", str(recipe), env={"PREFECT_API_URL": None}, timeout=400)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "using a temporary API" in done.stderr
    manifest = _manifest(project)
    assert manifest["status"] == "succeeded" and manifest["links"]["prefect_flow_run_id"]
    assert "prefect_flow_run_url" not in manifest["links"]  # no server stays up to show it
    assert (project / ".crispml" / "prefect" / "prefect.db").is_file()
    assert not any(home.iterdir()), sorted(p.name for p in home.iterdir())
    assert "Traceback" not in done.stderr and "INFO" not in done.stderr


def test_a_silent_api_fails_the_run_in_one_line(project: Path, cli: Callable[..., Any]) -> None:
    from suite_helpers import free_port

    recipe = write_recipe(project)
    silent = f"http://127.0.0.1:{free_port()}/api"
    t0 = time.monotonic()
    done = cli("run", str(recipe), env={"PREFECT_API_URL": silent}, timeout=120)
    assert done.returncode == 1, done.stderr
    assert time.monotonic() - t0 < 60
    assert "Traceback" not in done.stderr
    manifest = _manifest(project)
    assert manifest["status"] == "failed"
    assert manifest["error"] == (
        f"runner 'prefect': RuntimeError: no Prefect API answers at PREFECT_API_URL={silent} (waited 10 s)"
    )
    assert {s["status"] for s in manifest["stages"]} == {"skipped"}
    sched = cli("schedule", str(recipe), "--interval", "1h", "--api-url", silent, timeout=120)
    assert sched.returncode == 1
    assert sched.stderr.strip() == (
        f"crispml: error: RuntimeError: no Prefect API answers at {silent} (waited 10 s) "
        "(CRISPML_DEBUG=1 shows the traceback)"
    )


def test_crispml_log_lines_outside_a_flow_run_do_not_warn_after_a_prefect_run(project: Path, prefect_api: str) -> None:
    """Prefect sends crispml's loggers to its run logs (``PREFECT_LOGGING_EXTRA_LOGGERS``). After a
    Prefect run, the same process (a notebook, an app) logs outside any flow run: a local run, a
    plugin's line. Prefect's API handler then warns by default ("attempted to send logs to the API
    without a flow run id") — once per line, an error where warnings are errors. Found when a
    feast test ran after a prefect test in one process."""
    recipe = write_recipe(project)
    code = (
        "import logging, sys, warnings\n"
        "import crispml\n"
        "warnings.simplefilter('error')\n"
        f"first = crispml.run({str(recipe)!r}, project={str(project)!r})\n"
        "logging.getLogger('crispml.someplugin').warning('a plugin line outside any flow run')\n"
        f"local = crispml.run({str(recipe)!r}, project={str(project)!r}, overrides=['runner=local'])\n"
        "print(first.status, local.status, first.manifest['links'].get('prefect_flow_run_id') is not None)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "CRISPML_PROJECT": str(project)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["succeeded", "succeeded", "True"], proc.stdout
    assert "without a flow run id" not in proc.stderr
