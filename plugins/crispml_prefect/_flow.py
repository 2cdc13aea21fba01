"""The flow a schedule runs: ``crispml_prefect._flow:crispml_flow`` (a module path, not a file).

It creates its crispml run **inside** the flow run, so a run started from Prefect's UI or by the
scheduler is a whole crispml run (Kedro built its state outside the flow, and UI re-runs broke:
kedro#1775). Its stages are this flow run's tasks (the ``prefect`` runner sees it is inside a flow
run); the flow run is renamed to the crispml run id. A flow run retried from the UI resumes the
crispml run it started, rather than starting a new one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow
from prefect.context import FlowRunContext
from prefect.states import Completed, Failed

import crispml
from crispml_prefect._runner import LINK, one_line


def _run_of_flow_run(project: Path, flow_run_id: str) -> dict[str, Any] | None:
    """The crispml run an earlier attempt of this flow run started (a UI retry), if any."""
    for manifest in crispml.RunStore(project).list_runs():
        if (manifest.get("links") or {}).get(LINK) == flow_run_id:
            return manifest
    return None


@flow(name="crispml", persist_result=False, log_prints=False)
def crispml_flow(recipe: str, project: str, overrides: list[str] | None = None, mode: str = "run") -> Any:
    """Run (or, on a retry of this flow run, resume) a crispml recipe in ``project``; with
    ``mode="monitor"``, its monitor step (``crispml monitor``), a retrain being a subflow."""
    if mode not in ("run", "monitor"):
        raise crispml.UsageError(f"mode {mode!r} is not supported (expected 'run' or 'monitor')")
    folder = Path(project)
    overrides = list(overrides or [])
    if mode == "monitor":
        from crispml_prefect._monitor_flow import monitor_in_flow

        return monitor_in_flow(recipe, folder, overrides)
    context = FlowRunContext.get()
    flow_run_id = str(context.flow_run.id) if context and context.flow_run else ""
    earlier = _run_of_flow_run(folder, flow_run_id) if flow_run_id else None
    if earlier is not None and earlier["status"] in ("succeeded", "rejected"):
        result_status, error, rejection = earlier["status"], earlier.get("error"), earlier.get("rejection")
    else:
        if earlier is not None:
            result = crispml.resume(earlier["run_id"], project=folder)
        else:
            parsed = crispml.Recipe.from_yaml(recipe, overrides=overrides)
            if parsed.runner.use != "prefect":
                overrides.append("runner.use=prefect")
            result = crispml.run(recipe, overrides=overrides, project=folder)
        result_status, error, rejection = result.status, result.manifest.get("error"), result.manifest.get("rejection")
    if result_status == "failed":
        return Failed(message=one_line(error))
    if result_status == "rejected":
        return Completed(name="Rejected", message=one_line(rejection))
    return Completed(message="succeeded")
