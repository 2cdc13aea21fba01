"""The ``local`` runner: every stage in order, in this process (a train step's candidates too,
one after the other: the plan's default when a runner passes no ``run_jobs``). The default."""

from __future__ import annotations

from typing import TYPE_CHECKING

from crispml._markers import hookimpl
from crispml.declarations import Declaration, Options
from crispml.errors import StageError

if TYPE_CHECKING:
    from crispml.plan import RunPlan


class LocalOptions(Options):
    """The local runner takes no options."""


@hookimpl
def crispml_declare() -> Declaration:
    return Declaration(runner=LocalOptions, description="Run stages in order, in-process.")


@hookimpl
def crispml_execute(plan: RunPlan) -> str:
    for name in plan.stage_names:
        try:
            plan.run_stage(name)
        except StageError:
            break  # the plan recorded it; remaining stages end up "skipped"
    return plan.finish()
