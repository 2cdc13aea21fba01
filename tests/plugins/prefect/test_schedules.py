"""``crispml server``, ``crispml schedule`` and ``crispml schedules`` against a real ``prefect
server`` (SQLite in the test project) and a real serve process. Bad inputs need no server: they
are refused before anything reaches Prefect.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from services import require_service
from suite_helpers import free_port

from prefect_steps import write_recipe

PREFECT = str(Path(sys.executable).with_name("prefect"))


def test_bad_schedule_inputs_are_one_line_usage_errors(project: Path, cli: Callable[..., Any]) -> None:
    recipe = write_recipe(project)
    cases = [
        (["--cron", "61 * * * *"], "not a cron expression: minute 61 out of range"),
        (["--cron", "0 3 * *"], "has 4 fields, expected 5"),
        (["--cron", "0 25 * * *"], "hour 25 out of range"),
        (["--cron", "0 3 * * mon-xyz"], "day of week 'xyz' is not a number"),
        (["--cron", "0 3 * * *", "--interval", "1h"], "give exactly one of --cron EXPR or --interval DURATION"),
        ([], "give exactly one of --cron EXPR or --interval DURATION"),
        (["--interval", "30s"], "is under 60 s"),
        (["--interval", "soon"], "expected a duration such as 90s, 30m, 1h or 2d"),
        (["--interval", "1h", "--name", "no spaces"], "invalid schedule name"),
        (["--interval", "1h", "--set", "train.nope=1"], "--set: train.nope: unknown option"),
    ]
    for args, expected in cases:
        done = cli("schedule", str(recipe), *args, timeout=120)
        assert done.returncode == 2, (args, done.stderr)
        assert expected in done.stderr, (args, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    bad = project / "bad.yaml"
    bad.write_text(yaml.safe_dump({**yaml.safe_load(recipe.read_text()), "runner": {"use": "prefect", "retry": 1}}))
    done = cli("schedule", str(bad), "--interval", "1h", timeout=120)
    assert done.returncode == 2 and "bad.yaml:" in done.stderr and "runner.retry" in done.stderr
    done = cli("schedules", "pause", "nightly", timeout=120)
    assert done.returncode == 2 and "no schedule 'nightly' (schedules: none)" in done.stderr
    assert not (project / ".crispml").exists()


def test_server_refuses_a_port_in_use(project: Path, cli: Callable[..., Any]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = cli("server", "start", "--port", str(port), timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip() == f"crispml: error: port {port} is in use (crispml server start --port N)"
    assert cli("server", "status").stdout.startswith("prefect server: stopped")


def _flow_runs(cli: Callable[..., Any]) -> dict[str, Any]:
    rows = json.loads(cli("schedules", "--json").stdout)
    return {r["name"]: r for r in rows}


def _count_runs(project: Path, api_url: str, deployment_id: str) -> int:
    from crispml_prefect import _schedules

    with _schedules.client(project, api_url) as api:
        from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
        from prefect.client.schemas.sorting import FlowRunSort

        return len(
            api.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
                sort=FlowRunSort.ID_DESC,
                limit=200,
            )
        )


def _manifests(project: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in (project / ".crispml" / "runs").glob("*/manifest.json")]


def _ui_retry(project: Path, api_url: str, flow_run_id: str, timeout: float = 300) -> None:
    """What Prefect's UI does for "Retry": the flow run goes back to ``AwaitingRetry``; the serve
    process runs it again under the same id. Waits until it has ended."""
    from prefect.states import AwaitingRetry

    from crispml_prefect import _schedules

    with _schedules.client(project, api_url) as api:
        api.set_flow_run_state(flow_run_id, AwaitingRetry(), force=True)
        deadline = time.monotonic() + timeout
        while True:
            state = api.read_flow_run(flow_run_id).state
            if state is not None and state.is_final():
                assert state.type.value == "COMPLETED", state
                return
            assert time.monotonic() < deadline, f"the retried flow run did not end: {state}"
            time.sleep(1)


def _schedule_on_a_work_pool(
    project: Path, cli: Callable[..., Any], recipe: Path, api_url: str, env: dict[str, Any]
) -> None:
    """Past one machine: a deployment on an existing work pool, run by a real ``prefect worker``
    (Prefect's own process, as it would run on another machine with the project reachable)."""
    worker_home = project.parent / f"{project.name}-worker"
    worker_home.mkdir()
    worker_env = {**os.environ, "PREFECT_API_URL": api_url, "PREFECT_HOME": str(worker_home), "HOME": str(worker_home)}
    subprocess.run(
        [PREFECT, "work-pool", "create", "far-pool", "--type", "process"],
        env=worker_env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    missing = cli("schedule", str(recipe), "--interval", "1h", "--name", "far", "--work-pool", "nopool", env=env)
    assert missing.returncode == 2 and "no work pool 'nopool' (work pools: far-pool;" in missing.stderr
    made = cli("schedule", str(recipe), "--interval", "1h", "--name", "far", "--work-pool", "far-pool", env=env)
    assert made.returncode == 0 and "run by work pool 'far-pool'" in made.stdout, made.stderr
    assert _flow_runs(cli)["far"]["work_pool"] == "far-pool"
    log = (worker_home / "worker.log").open("w")
    worker = subprocess.Popen(
        [PREFECT, "worker", "start", "--pool", "far-pool"],
        env=worker_env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        ran = cli("schedules", "run", "far", "--wait", "300", timeout=400)
        assert ran.returncode == 0, ran.stdout + ran.stderr + (worker_home / "worker.log").read_text()[-3000:]
        flow_run_id = ran.stdout.split("started flow run ")[1].split()[0]
        linked = [m for m in _manifests(project) if m["links"].get("prefect_flow_run_id") == flow_run_id]
        assert len(linked) == 1 and linked[0]["status"] == "succeeded"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
        log.close()
    assert cli("schedules", "delete", "far").returncode == 0


@pytest.mark.slow
def test_a_schedule_on_a_managed_server_runs_pauses_and_survives_a_serve_restart(
    project: Path, cli: Callable[..., Any], home: Path
) -> None:
    import psutil

    recipe = write_recipe(project)
    port = free_port()
    try:
        started = cli("server", "start", "--port", str(port), timeout=300)
        assert started.returncode == 0, started.stderr
        api_url = f"http://127.0.0.1:{port}/api"
        again = cli("server", "start", "--port", str(port))
        assert again.returncode == 0 and "already running" in again.stdout
        status = json.loads(cli("server", "status", "--json").stdout)
        assert status["status"] == "running" and status["api_url"] == api_url
        server_pid = status["pid"]

        env = {"PREFECT_API_URL": None}  # the managed server, not the session's API

        # A flow run retried from Prefect's UI resumes the crispml run it started.
        flaky = write_recipe(project, name="flaky.yaml", train={"fail_times": 1})
        assert cli("schedule", str(flaky), "--cron", "0 4 * * *", "--name", "flaky", env=env).returncode == 0
        failed = cli("schedules", "run", "flaky", "--wait", "300", timeout=400)
        assert failed.returncode == 1, failed.stdout + failed.stderr
        assert "ended Failed" in failed.stdout and "flaky backend, attempt 1" in failed.stdout
        retried_id = failed.stdout.split("started flow run ")[1].split()[0]
        first = [m for m in _manifests(project) if m["links"].get("prefect_flow_run_id") == retried_id]
        assert len(first) == 1 and first[0]["status"] == "failed"
        _ui_retry(project, api_url, retried_id)
        again = [m for m in _manifests(project) if m["links"].get("prefect_flow_run_id") == retried_id]
        assert [m["run_id"] for m in again] == [first[0]["run_id"]]
        assert again[0]["status"] == "succeeded" and again[0]["resumes"] == 1
        assert cli("schedules", "delete", "flaky").returncode == 0
        done = cli("schedule", str(recipe), "--interval", "60", "--name", "nightly", env=env)
        assert done.returncode == 0, done.stderr
        assert "scheduled 'nightly'" in done.stdout
        dup = cli("schedule", str(recipe), "--interval", "60", "--name", "nightly", env=env)
        assert dup.returncode == 2 and "schedule 'nightly' exists" in dup.stderr
        typo = cli("schedules", "pause", "nightl")
        assert typo.returncode == 2 and typo.stderr.strip().endswith("no schedule 'nightl' (schedules: nightly)")

        ran = cli("schedules", "run", "nightly", "--wait", "300", timeout=400)
        assert ran.returncode == 0, ran.stdout + ran.stderr
        assert "ended Completed" in ran.stdout
        flow_run_id = ran.stdout.split("started flow run ")[1].split()[0]
        linked = [m for m in _manifests(project) if m["links"].get("prefect_flow_run_id") == flow_run_id]
        assert len(linked) == 1 and linked[0]["status"] == "succeeded"
        assert linked[0]["recipe"]["runner"]["use"] == "prefect"
        assert linked[0]["links"]["prefect_flow_run_url"].startswith(f"http://127.0.0.1:{port}/runs/flow-run/")
        assert f"flow run {linked[0]['run_id']} ended" in ran.stdout  # named by the crispml run id

        rows = _flow_runs(cli)
        assert rows["nightly"]["paused"] is False and rows["nightly"]["schedule"] == "every 1m"

        # A second schedule restarts the serve process; the first stays active (not paused).
        serve_before = json.loads((project / ".crispml" / "prefect" / "serve.json").read_text())["pid"]
        other = cli("schedule", str(recipe), "--cron", "0 3 * * *", "--name", "other", env=env)
        assert other.returncode == 0, other.stderr
        serve_after = json.loads((project / ".crispml" / "prefect" / "serve.json").read_text())["pid"]
        assert serve_after != serve_before and not psutil.pid_exists(serve_before)
        rows = _flow_runs(cli)
        assert rows["nightly"]["paused"] is False and rows["other"]["schedule"] == "cron 0 3 * * *"

        paused = cli("schedules", "pause", "nightly")
        assert paused.returncode == 0, paused.stderr
        rows = _flow_runs(cli)
        assert rows["nightly"]["paused"] is True and rows["nightly"]["next_run"] is None
        deployment_id = rows["nightly"]["deployment_id"]
        before = _count_runs(project, api_url, deployment_id)
        time.sleep(75)  # past the interval and a scheduler loop
        assert _count_runs(project, api_url, deployment_id) == before

        deleted = cli("schedules", "delete", "other")
        assert deleted.returncode == 0 and "other" not in _flow_runs(cli)

        _schedule_on_a_work_pool(project, cli, recipe, api_url, env)
    finally:
        stopped = cli("server", "stop")
    assert stopped.returncode == 0
    assert not psutil.pid_exists(server_pid) or psutil.Process(server_pid).status() == psutil.STATUS_ZOMBIE
    assert cli("server", "status").stdout.startswith("prefect server: stopped")
    listed = cli("schedules")  # the schedules are recorded, their server is gone: one line, exit 1
    assert listed.returncode == 1 and len(listed.stderr.strip().splitlines()) == 1
    assert f"no Prefect API answers at {api_url} (waited 10 s; crispml server start)" in listed.stderr
    assert not any(home.iterdir()), sorted(p.name for p in home.iterdir())


@pytest.mark.slow
@pytest.mark.services
def test_a_schedule_on_a_server_backed_by_postgresql(project: Path, cli: Callable[..., Any], home: Path) -> None:
    require_service("127.0.0.1", 5432, "PostgreSQL")
    import psycopg2

    admin = None
    for user in ("postgres", "root"):
        try:
            admin = psycopg2.connect(host="127.0.0.1", port=5432, user=user, dbname="test")
            break
        except psycopg2.Error:
            continue
    assert admin is not None, "PostgreSQL answers but accepts neither user postgres nor root"
    admin.autocommit = True
    database = f"crispml_prefect_{secrets.token_hex(4)}"
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{database}"')
    user = admin.info.user
    url = f"postgresql+asyncpg://{user}@127.0.0.1:5432/{database}"
    recipe = write_recipe(project)
    port = free_port()
    try:
        started = cli("server", "start", "--port", str(port), "--database-url", url, timeout=300)
        assert started.returncode == 0, started.stderr
        status = json.loads(cli("server", "status", "--json").stdout)
        assert status["status"] == "running" and database in status["database"]
        env = {"PREFECT_API_URL": None}
        assert cli("schedule", str(recipe), "--interval", "60", "--name", "nightly", env=env).returncode == 0
        ran = cli("schedules", "run", "nightly", "--wait", "300", timeout=400)
        assert ran.returncode == 0, ran.stdout + ran.stderr
        flow_run_id = ran.stdout.split("started flow run ")[1].split()[0]
        linked = [m for m in _manifests(project) if m["links"].get("prefect_flow_run_id") == flow_run_id]
        assert len(linked) == 1 and linked[0]["status"] == "succeeded"
        with admin.cursor() as cur:
            cur.execute(
                "SELECT count(*) FROM pg_stat_database WHERE datname = %s",
                (database,),
            )
            assert cur.fetchone() == (1,)
        conn = psycopg2.connect(host="127.0.0.1", port=5432, user=user, dbname=database)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT name FROM deployment")
                assert ("nightly",) in cur.fetchall()  # the deployment lives in PostgreSQL
        finally:
            conn.close()
        assert not (project / ".crispml" / "prefect" / "prefect.db").exists()
    finally:
        cli("server", "stop")
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        admin.close()
    assert not any(home.iterdir()), sorted(p.name for p in home.iterdir())
