"""A scheduled ``crispml monitor`` (``crispml schedule recipe.yaml --monitor``), inside a flow run.

The monitor run's one stage is a task of the scheduled flow run (renamed to the monitor run's
id, like any run's). A retrain it starts is a **subflow** of it, ``crispml-retrain`` (renamed to
the retrain run's id), whose stages are that subflow's tasks: Prefect's UI shows the monitor and
the retrain it caused as one tree, and the retrain's outcome as the subflow's state. The
guards (``after``, ``cooldown``, one retrain at a time) are the core's, applied before the
subflow starts.

Final state of the monitor's flow run, from ``crispml monitor``'s exit code: 0 ``Completed``
(no drift, or a new champion), 3 ``Completed`` named ``Rejected`` (drift not retrained, a window
failing the suite, a challenger rejected), 1 ``Failed``; the message is the command's line.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import crispml
from crispml_prefect._runner import one_line

RETRAIN_FLOW = "crispml-retrain"


def _state_of(status: str, message: str) -> Any:
    from prefect.states import Completed, Failed

    if status == "failed":
        return Failed(message=one_line(message))
    if status == "rejected":
        return Completed(name="Rejected", message=one_line(message))
    return Completed(message=one_line(message))


def retrain_as_subflow(start: Callable[[], crispml.RunResult]) -> crispml.RunResult:
    """Run ``start`` (the core's retrain) as a subflow of the current flow run."""
    from prefect import flow

    done: list[crispml.RunResult] = []

    def retrain() -> Any:
        result = start()
        done.append(result)
        outcome = result.manifest.get("rejection") or result.manifest.get("error") or result.status
        return _state_of(result.status, str(outcome))

    subflow = flow(retrain, name=RETRAIN_FLOW, persist_result=False, validate_parameters=False, log_prints=False)
    state = subflow(return_state=True)
    if not done:
        raise RuntimeError(f"the retrain subflow ended {state.name} before the retrain ran: {one_line(state.message)}")
    return done[0]


def monitor_in_flow(recipe: str, project: Path, overrides: list[str]) -> Any:
    parsed = crispml.Recipe.from_yaml(recipe, overrides=overrides)
    if parsed.runner.use != "prefect":
        overrides = [*overrides, "runner.use=prefect"]
    result = crispml.monitor(recipe, overrides=overrides, project=project, retrain_wrapper=retrain_as_subflow)
    status = {0: "succeeded", 3: "rejected"}.get(result.exit_code, "failed")
    return _state_of(status, result.line())
