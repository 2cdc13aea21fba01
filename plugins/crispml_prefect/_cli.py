"""``crispml server``, ``crispml schedule`` and ``crispml schedules``.

Every input is checked (the recipe included) before anything reaches Prefect; Prefect is imported
inside the commands' bodies only.
"""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

import crispml
from crispml import UsageError


def add_commands(cli: click.Group) -> None:
    for command in (server, schedule, schedules):
        cli.add_command(command)


def _project() -> Path:
    from crispml import find_project

    return find_project()


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, default=str))


# -- server ---------------------------------------------------------------------------------


@click.group()
def server() -> None:
    """The project's Prefect server (schedules need one): start, status, stop."""


@server.command("start")
@click.option("--port", type=click.IntRange(1, 65535), default=4200, show_default=True, help="Port on 127.0.0.1.")
@click.option(
    "--database-url",
    default=None,
    metavar="URL",
    help="e.g. postgresql+asyncpg://user@host/db (default: SQLite in .crispml/prefect).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(1, 3600),
    default=180,
    show_default=True,
    help="Seconds to wait for it to answer.",
)
def server_start(port: int, database_url: str | None, timeout: float) -> None:
    """Start `prefect server` on 127.0.0.1 for this project (no-op when it is running)."""
    from crispml_prefect import _schedules, _server

    project = _project()
    record = _server.start(project, port=port, database_url=database_url, timeout=timeout)
    verb = "already running" if record.get("already_running") else "started"
    click.echo(f"prefect server {verb}: {record['ui_url']} (api {record['api_url']}, pid {record['pid']})")
    if _schedules.read(project)["schedules"]:
        _schedules.ensure_serving(project)


@server.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def server_status(as_json: bool) -> None:
    """Is the project's Prefect server running, and where."""
    from crispml_prefect import _schedules, _server

    project = _project()
    info = _server.status(project)
    proc, _ = _schedules.serving(project)
    info["serving"] = proc is not None
    if as_json:
        _echo_json(info)
        return
    if info["status"] == "stopped":
        click.echo("prefect server: stopped (crispml server start)")
        return
    click.echo(
        f"prefect server: {info['status']} at {info['ui_url']} (pid {info['pid']}, database {info['database']}); "
        f"schedules {'served' if info['serving'] else 'not served'}"
    )


@server.command("stop")
def server_stop() -> None:
    """Stop the project's Prefect server and the process serving its schedules."""
    from crispml_prefect import _schedules, _server

    project = _project()
    served = _schedules.stop_serving(project)
    stopped = _server.stop(project)
    click.echo(
        ("prefect server stopped" if stopped else "prefect server was not running")
        + (" (schedules no longer served; crispml server start serves them again)" if served else "")
    )


# -- schedule -------------------------------------------------------------------------------


def _api_for_schedules(project: Path, api_url: str | None) -> str:
    """``--api-url``, else the managed server if up, else ``$PREFECT_API_URL``, else start one."""
    from crispml_prefect import _env, _server

    if api_url:
        if not _env.healthy(api_url, timeout=10):
            raise RuntimeError(f"no Prefect API answers at {api_url} (waited 10 s)")
        return api_url
    url, kind = _env.choose_api(project)
    if url and kind == "env":
        if not _env.healthy(url, timeout=10):
            raise RuntimeError(f"no Prefect API answers at PREFECT_API_URL={url} (waited 10 s)")
        return url
    if url:
        return url
    click.echo("starting the project's prefect server (crispml server start)…", err=True)
    return str(_server.start(project)["api_url"])


@click.command()
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.option("--cron", default=None, metavar="EXPR", help="A cron expression, e.g. '0 3 * * *'.")
@click.option("--interval", default=None, metavar="DURATION", help="e.g. 30m, 1h, 90s (at least 60 s).")
@click.option("--name", default=None, help="The schedule's name (default: the recipe's name).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a recipe field (repeatable).")
@click.option("--replace", is_flag=True, help="Overwrite a schedule of the same name.")
@click.option("--api-url", default=None, metavar="URL", help="A Prefect API elsewhere (default: the project's server).")
@click.option(
    "--work-pool", default=None, metavar="NAME", help="Run on an existing work pool's workers instead of serving here."
)
@click.option("--monitor", is_flag=True, help="Schedule `crispml monitor RECIPE` (its monitor step) instead of a run.")
def schedule(
    recipe: str,
    cron: str | None,
    interval: str | None,
    name: str | None,
    overrides: tuple[str, ...],
    replace: bool,
    api_url: str | None,
    work_pool: str | None,
    monitor: bool,
) -> None:
    """Run RECIPE on a schedule: a Prefect deployment, served from this machine. With --monitor,
    its monitor step (`crispml monitor`); a retrain it starts is a subflow."""
    import crispml
    from crispml_prefect import _schedules
    from crispml_prefect._when import check_cron, describe_interval, parse_interval

    if (cron is None) == (interval is None):
        raise UsageError("give exactly one of --cron EXPR or --interval DURATION")
    cron_text = check_cron(cron) if cron is not None else None
    seconds = parse_interval(interval) if interval is not None else None
    resolved = crispml.check(recipe, overrides=list(overrides))
    recipe_name = resolved.recipe.name
    if monitor:
        _check_monitor(resolved)
    name = _schedules.check_name(name or recipe_name)
    project = _project()
    record = _schedules.read(project)
    if name in record["schedules"] and not replace:
        raise UsageError(f"schedule '{name}' exists (crispml schedule … --replace overwrites it)")
    if record["schedules"] and api_url and record.get("api_url") not in (None, api_url):
        raise UsageError(f"this project's schedules live on {record['api_url']}: schedule there, or delete them first")
    api = _api_for_schedules(project, api_url or record.get("api_url") if record["schedules"] else api_url)
    entry = {
        "recipe": str(Path(recipe).resolve()),
        "recipe_name": recipe_name,
        "overrides": list(overrides),
        "cron": cron_text,
        "interval": seconds,
        "paused": False,
        "work_pool": work_pool,
        "mode": "monitor" if monitor else "run",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if work_pool:
        with _schedules.client(project, api) as client:
            _schedules.check_work_pool(client, work_pool)
    with _schedules.lock(project):
        from crispml_prefect._env import prefect_settings

        with prefect_settings(project, api_url=api, heartbeat=True):
            deployment_id = _schedules.deployment(project, name, entry).apply(work_pool_name=work_pool)
        record = _schedules.read(project)
        record["api_url"] = api
        record["schedules"][name] = {**entry, "deployment_id": str(deployment_id)}
        _schedules.write(project, record)
        _schedules.ensure_serving(project)
    when = f"cron '{cron_text}'" if cron_text else describe_interval(float(seconds or 0))
    where = f"run by work pool '{work_pool}'s workers" if work_pool else "served from this machine"
    what = f"crispml monitor {recipe}" if monitor else recipe
    click.echo(f"scheduled '{name}': {what} {when} (deployment crispml/{name} on {api}, {where})")


def _check_monitor(resolved: Any) -> None:
    """A monitor schedule's recipe has a monitor step, and its retrain recipe checks (the
    monitor's ``retrain.set`` applied): refused here, before anything reaches Prefect."""
    step = resolved.step("monitor")
    if step is None:
        where = f"{resolved.recipe.source}: " if resolved.recipe.source else ""
        raise UsageError(f"--monitor: {where}the recipe has no monitor step (add 'monitor: {{use: ...}}')")
    policy = step.options.retrain_policy()
    if policy is not None:
        crispml.retrain_recipe(resolved.recipe, policy, resolved.plugins)


# -- schedules ------------------------------------------------------------------------------


def _rows(project: Path) -> list[dict[str, Any]]:
    from crispml_prefect import _schedules
    from crispml_prefect._when import describe_interval

    record = _schedules.read(project)
    rows = []
    if not record["schedules"]:
        return rows
    with _schedules.client(project, str(record["api_url"])) as api:
        for name, entry in sorted(record["schedules"].items()):
            dep = _schedules.deployment_of(api, name)
            nxt = last = None
            if dep is not None:
                upcoming = _schedules.flow_runs(api, dep.id, scheduled=True)
                latest = _schedules.flow_runs(api, dep.id, scheduled=False)
                nxt = upcoming[0] if upcoming else None
                last = latest[0] if latest else None
            rows.append(
                {
                    "name": name,
                    "recipe": entry["recipe"],
                    "kind": _schedules.kind(entry),
                    "schedule": f"cron {entry['cron']}" if entry.get("cron") else describe_interval(entry["interval"]),
                    "paused": bool(dep.paused) if dep is not None else bool(entry.get("paused")),
                    "next_run": nxt.expected_start_time.isoformat() if nxt and nxt.expected_start_time else None,
                    "last_run": last.start_time.isoformat() if last and last.start_time else None,
                    "last_state": last.state.name if last and last.state else None,
                    "run_id": last.name if last else None,
                    "deployment_id": str(dep.id) if dep is not None else None,
                    "work_pool": entry.get("work_pool"),
                    "missing": dep is None,
                }
            )
    return rows


@click.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_context
def schedules(ctx: click.Context, as_json: bool) -> None:
    """List schedules (name, kind, recipe, schedule, next/last run, run id, paused); pause|resume|run|delete NAME."""
    if ctx.invoked_subcommand is not None:
        return
    rows = _rows(_project())
    if as_json:
        _echo_json(rows)
        return
    if not rows:
        click.echo("no schedules (crispml schedule RECIPE --cron EXPR | --interval DURATION)")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    for column in ("name", "kind", "recipe", "schedule", "next run", "last run", "state", "run id", "paused"):
        table.add_column(column)
    for r in rows:
        table.add_row(
            r["name"],
            r["kind"],
            Path(r["recipe"]).name,
            r["schedule"],
            (r["next_run"] or "-")[:19].replace("T", " "),
            (r["last_run"] or "-")[:19].replace("T", " "),
            r["last_state"] or ("missing on the server" if r["missing"] else "-"),
            r["run_id"] or "-",
            "yes" if r["paused"] else "no",
        )
    console = Console(highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(highlight=False, width=160)
    console.print(table)


def _deployment_id(project: Path, name: str) -> tuple[str, Any]:
    from crispml_prefect import _schedules

    _schedules.require(project, name)
    record = _schedules.read(project)
    return str(record["api_url"]), name


def _set_paused(name: str, paused: bool) -> None:
    from crispml_prefect import _schedules

    project = _project()
    api_url, _ = _deployment_id(project, name)
    with _schedules.lock(project), _schedules.client(project, api_url) as api:
        dep = _schedules.deployment_of(api, name)
        if dep is None:
            raise RuntimeError(f"deployment crispml/{name} is missing on {api_url} (crispml schedule … --replace)")
        if paused:
            api.pause_deployment(dep.id)
        else:
            api.resume_deployment(dep.id)
        record = _schedules.read(project)
        record["schedules"][name]["paused"] = paused
        _schedules.write(project, record)
    click.echo(f"schedule '{name}' {'paused' if paused else 'resumed'}")


@schedules.command("pause")
@click.argument("name")
def schedules_pause(name: str) -> None:
    """Stop scheduling new runs of NAME (runs in progress finish)."""
    _set_paused(name, True)


@schedules.command("resume")
@click.argument("name")
def schedules_resume(name: str) -> None:
    """Schedule runs of NAME again."""
    _set_paused(name, False)


@schedules.command("run")
@click.argument("name")
@click.option("--wait", "wait", type=click.FloatRange(0, 86400), default=0, help="Seconds to wait for the run to end.")
def schedules_run(name: str, wait: float) -> None:
    """Run NAME now (a flow run of its deployment), outside its schedule."""
    from crispml_prefect import _schedules

    project = _project()
    api_url, _ = _deployment_id(project, name)
    if not _schedules.require(project, name).get("work_pool") and not _schedules.serving(project)[0]:
        _schedules.ensure_serving(project)
    with _schedules.client(project, api_url) as api:
        dep = _schedules.deployment_of(api, name)
        if dep is None:
            raise RuntimeError(f"deployment crispml/{name} is missing on {api_url} (crispml schedule … --replace)")
        flow_run = api.create_flow_run_from_deployment(dep.id)
        click.echo(f"started flow run {flow_run.id} of schedule '{name}'")
        if not wait:
            return
        deadline = time.monotonic() + wait
        while True:
            current = api.read_flow_run(flow_run.id)
            if current.state is not None and current.state.is_final():
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"flow run {flow_run.id} did not end within {wait:g} s (it goes on)")
            time.sleep(1)
    message = f": {current.state.message}" if current.state.message else ""
    click.echo(f"flow run {current.name} ended {current.state.name}{message}")
    if current.state.type.value != "COMPLETED" or current.state.name == "Rejected":
        raise SystemExit(1 if current.state.name != "Rejected" else 3)


@schedules.command("delete")
@click.argument("name")
def schedules_delete(name: str) -> None:
    """Delete NAME's deployment and its scheduled runs; runs already made stay in the run store."""
    from crispml_prefect import _schedules

    project = _project()
    api_url, _ = _deployment_id(project, name)
    with _schedules.lock(project):
        with _schedules.client(project, api_url) as api:
            dep = _schedules.deployment_of(api, name)
            if dep is not None:
                api.delete_deployment(dep.id)
        record = _schedules.read(project)
        record["schedules"].pop(name, None)
        if not record["schedules"]:
            record["api_url"] = None
        _schedules.write(project, record)
        _schedules.ensure_serving(project)
    click.echo(f"schedule '{name}' deleted")
