"""Schedules: each one a Prefect deployment of ``crispml_flow``, served by one managed process.

    .crispml/prefect/schedules.json   crispml's record: name → recipe, overrides, cron|interval,
                                      paused; and the API the deployments live on
    .crispml/prefect/serve.json       the serve process: pid, start time, what it serves
    .crispml/prefect/serve.log        its output

The serve process runs ``prefect.serve(*deployments, pause_on_shutdown=False)``: with Prefect's
default, every restart of it (a new schedule, a reboot) would pause the users' schedules, and
they stay paused across a server restart. It restarts whenever the set of schedules changes. The
record is crispml's truth: a restart re-applies each deployment with its recorded ``paused``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from crispml import UsageError, atomic_write_json, file_lock
from crispml_prefect._env import prefect_home
from crispml_prefect._server import process_of, stop_tree

FLOW = "crispml"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
SERVE_MARKER = "crispml_prefect._serve"


def record_path(project: Path) -> Path:
    return prefect_home(project) / "schedules.json"


def serve_path(project: Path) -> Path:
    return prefect_home(project) / "serve.json"


def read(project: Path) -> dict[str, Any]:
    try:
        value = json.loads(record_path(project).read_text())
    except (OSError, ValueError):
        return {"api_url": None, "schedules": {}}
    if not isinstance(value, dict) or not isinstance(value.get("schedules"), dict):
        return {"api_url": None, "schedules": {}}
    return value


def write(project: Path, record: dict[str, Any]) -> None:
    atomic_write_json(record_path(project), record)


def lock(project: Path) -> Any:
    return file_lock(prefect_home(project) / ".schedules.lock")


def check_name(name: str) -> str:
    if not NAME.match(name):
        raise UsageError(
            f"invalid schedule name {name!r}: use letters, digits, '.', '-' or '_' (at most 63, starting with a "
            "letter or digit)"
        )
    return name


def require(project: Path, name: str) -> dict[str, Any]:
    record = read(project)
    entry = record["schedules"].get(name)
    if entry is None:
        known = ", ".join(sorted(record["schedules"])) or "none"
        raise UsageError(f"no schedule '{name}' (schedules: {known})")
    return dict(entry)


def kind(entry: dict[str, Any]) -> str:
    """``run`` (the recipe) or ``monitor`` (``crispml monitor``: ``schedule --monitor``)."""
    return "monitor" if entry.get("mode") == "monitor" else "run"


def deployment(project: Path, name: str, entry: dict[str, Any]) -> Any:
    """The Prefect deployment for one recorded schedule (built offline; ``apply`` sends it)."""
    from prefect.deployments.runner import EntrypointType

    from crispml_prefect._flow import crispml_flow

    when: dict[str, Any] = (
        {"cron": entry["cron"]} if entry.get("cron") else {"interval": timedelta(seconds=float(entry["interval"]))}
    )
    pool: dict[str, Any] = {}
    if entry.get("work_pool"):
        # Run by the pool's workers (`prefect worker start --pool NAME`), in the project folder.
        pool = {"work_pool_name": entry["work_pool"], "job_variables": {"working_dir": str(project)}}
    return crispml_flow.to_deployment(
        name=name,
        **when,
        **pool,
        paused=bool(entry.get("paused")),
        parameters={
            "recipe": entry["recipe"],
            "project": str(project),
            "overrides": list(entry.get("overrides") or []),
            "mode": kind(entry),
        },
        concurrency_limit=1,
        entrypoint_type=EntrypointType.MODULE_PATH,
        tags=["crispml", f"recipe:{entry['recipe_name']}", f"schedule:{name}", f"kind:{kind(entry)}"],
        description=f"crispml {'monitor of ' if kind(entry) == 'monitor' else ''}recipe {entry['recipe']} "
        f"({entry['recipe_name']})",
    )


def served(record: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The schedules the project's serve process runs (those on a work pool have its workers)."""
    return {n: e for n, e in record["schedules"].items() if not e.get("work_pool")}


def digest(record: dict[str, Any]) -> str:
    """What the serve process serves: it restarts when this changes (pauses aside)."""
    material = {
        "api_url": record.get("api_url"),
        "schedules": {
            n: {k: v for k, v in e.items() if k not in ("paused", "created")} for n, e in served(record).items()
        },
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:16]


def serving(project: Path) -> tuple[Any, dict[str, Any] | None]:
    try:
        state = json.loads(serve_path(project).read_text())
    except (OSError, ValueError):
        return None, None
    return process_of(state), state


def ensure_serving(project: Path, *, restart: bool = False) -> dict[str, Any] | None:
    """Run one serve process for the recorded schedules (restart it when they changed)."""
    record = read(project)
    proc, state = serving(project)
    if not served(record):
        if proc is not None:
            stop_tree(proc)
        serve_path(project).unlink(missing_ok=True)
        return None
    wanted = digest(record)
    if proc is not None and state and state.get("digest") == wanted and not restart:
        return state
    if proc is not None:
        stop_tree(proc)
    home = prefect_home(project)
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": str(record["api_url"]),
        "CRISPML_PROJECT": str(project),
        "DO_NOT_TRACK": "true",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_EXTRA_LOGGERS": "crispml",
    }
    with (home / "serve.log").open("ab") as log:
        child = subprocess.Popen(
            [sys.executable, "-m", SERVE_MARKER, str(project)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=project,
            start_new_session=True,
        )
    import psutil

    state = {
        "pid": child.pid,
        "create_time": psutil.Process(child.pid).create_time(),
        "digest": wanted,
        "api_url": record["api_url"],
        "started": time.time(),
    }
    atomic_write_json(serve_path(project), state)
    return state


def stop_serving(project: Path) -> bool:
    proc, _ = serving(project)
    if proc is not None:
        stop_tree(proc)
    serve_path(project).unlink(missing_ok=True)
    return proc is not None


def client(project: Path, api_url: str) -> Any:
    """A synchronous client on ``api_url`` (a context manager), Prefect's home in the project."""
    from crispml_prefect._env import healthy, managed_api_url, prepare_environment

    if not healthy(api_url, timeout=10):
        # Prefect's client would retry for minutes before saying so.
        hint = "crispml server start" if managed_api_url(project) is None else "is it running?"
        raise RuntimeError(f"no Prefect API answers at {api_url} (waited 10 s; {hint})")
    prepare_environment(project)
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    class _Client:
        def __enter__(self) -> Any:
            self._settings = temporary_settings(updates={PREFECT_API_URL: api_url})
            self._settings.__enter__()
            self._client = get_client(sync_client=True)
            return self._client.__enter__()

        def __exit__(self, *exc: Any) -> None:
            try:
                self._client.__exit__(*exc)
            finally:
                self._settings.__exit__(*exc)

    return _Client()


def check_work_pool(api: Any, pool: str) -> None:
    """A ``UsageError`` naming the pools there are when ``pool`` does not exist on the API."""
    from prefect.exceptions import ObjectNotFound

    try:
        api.read_work_pool(pool)
    except ObjectNotFound:
        pools = sorted(p.name for p in api.read_work_pools(limit=200, offset=0))
        known = ", ".join(pools) or "none"
        raise UsageError(
            f"no work pool '{pool}' (work pools: {known}; "
            f"create one with: prefect work-pool create {pool} --type process)"
        ) from None


def deployment_of(api: Any, name: str) -> Any:
    from prefect.exceptions import ObjectNotFound

    try:
        return api.read_deployment_by_name(f"{FLOW}/{name}")
    except ObjectNotFound:
        return None


def flow_runs(api: Any, deployment_id: Any, *, scheduled: bool, limit: int = 1) -> list[Any]:
    """Flow runs of a deployment: the next scheduled ones, or the latest that started.

    ``limit`` and ``sort`` are always passed: with fastapi 0.154 the defaults go out as null and
    the server answers HTTP 422."""
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort

    if scheduled:
        states = FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED]))
        sort = FlowRunSort.EXPECTED_START_TIME_ASC
    else:
        states = FlowRunFilterState(type=FlowRunFilterStateType(not_any_=[StateType.SCHEDULED]))
        sort = FlowRunSort.EXPECTED_START_TIME_DESC
    return list(
        api.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
            flow_run_filter=FlowRunFilter(state=states),
            sort=sort,
            limit=limit,
            offset=0,
        )
    )
