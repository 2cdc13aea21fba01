"""The ``prefect`` plugin: run recipes on Prefect — flows, retried and timed stages, schedules.

    runner: {use: prefect, retries: 2, retry_delay_seconds: 10, timeout_seconds: 3600,
             stages: {train: {timeout_seconds: 7200}, deploy: {retries: 0}},
             task_runner: process, max_workers: 2}      # a train step's candidates, side by side

    crispml server start [--port 4200] [--database-url ...] | status | stop
    crispml schedule recipe.yaml --cron "0 3 * * *" [--name nightly] [--set k=v] [--replace] [--monitor]
    crispml schedules [--json]
    crispml schedules pause|resume|run|delete NAME

One crispml run is one Prefect flow run; each stage is one task run. Prefect's state lives in
``.crispml/prefect`` (``PREFECT_HOME``); telemetry is off. See ``docs/plugins/prefect.md``.

This module only declares: Prefect is imported when a run or a command needs it, never when
crispml loads its plugins.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from crispml import Backend, Declaration, hookimpl
from crispml_prefect._options import PrefectOptions, StageOptions

if TYPE_CHECKING:
    import click

    from crispml import RunPlan

__version__ = "0.1.0"
__all__ = ["PrefectOptions", "StageOptions"]


@hookimpl
def crispml_declare() -> Declaration:
    return Declaration(
        runner=PrefectOptions,
        backends=(Backend("prefect", "prefect", extra="prefect"),),
        description="Run recipes as Prefect flows: stages as retried, timed tasks; schedules on a Prefect server.",
    )


@hookimpl
def crispml_environment(project_dir: Path) -> dict[str, str]:
    """``PREFECT_HOME`` in ``.crispml/prefect``, Prefect's telemetry off, crispml's loggers in
    Prefect's run logs: set by the core before anything imports Prefect."""
    from crispml_prefect._env import environment

    return environment(project_dir)


@hookimpl
def crispml_execute(plan: RunPlan, options: PrefectOptions) -> str:
    from crispml_prefect._runner import execute

    return execute(plan, options)


@hookimpl
def crispml_register_commands(cli: click.Group) -> None:
    from crispml_prefect._cli import add_commands

    add_commands(cli)
