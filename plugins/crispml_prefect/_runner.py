"""The ``prefect`` runner: one crispml run is one Prefect flow run, each stage one task run.

The flow run is named by the crispml run id and tagged ``crispml`` and ``recipe:<name>``; each task
run is named by its stage. Results stay in crispml's run store: tasks persist nothing and Prefect's
input-hash cache is off (crispml's cache sees code; Prefect's would not). A task retries a stage
that raised — never a ``UsageError`` (retrying a user's mistake cannot help) and never a gate that
said no (a rejection returns normally). A stage past its ``timeout_seconds`` is interrupted by
Prefect in the stage's own code (SIGALRM in the main thread), so plugins' cleanup runs, and is
recorded ``failed``: the run can be resumed.

Final states say what crispml decided: ``Completed`` for a succeeded run, ``Completed`` named
``Rejected`` for a rejected one, ``Failed`` with the one-line error for a failed one; a stage reused
from the cache ends ``Completed`` named ``Cached``.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crispml import StageError, UsageError
from crispml_prefect._env import choose_api, healthy, prefect_settings
from crispml_prefect._options import PrefectOptions, StageOptions

if TYPE_CHECKING:
    from crispml import RunPlan

FLOW_NAME = "crispml"
LINK = "prefect_flow_run_id"
UI_LINK = "prefect_flow_run_url"

log = logging.getLogger("crispml.prefect")


def one_line(value: object) -> str:
    return " ".join(str(value).split()) or type(value).__name__


def _is_usage_error(exc: BaseException | None) -> bool:
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, UsageError):
            return True
        exc = getattr(exc, "cause", None) or exc.__cause__
        seen += 1
    return False


def _retry_condition(stage: str, opts: StageOptions) -> Any:
    """A ``retry_condition_fn`` for ``stage``: no retry for a ``UsageError``; says why it retries."""
    attempts = (opts.retries or 0) + 1
    delay = opts.retry_delay_seconds or 0

    def retry_condition(task: Any, task_run: Any, state: Any) -> bool:
        error = state.data if isinstance(state.data, BaseException) else None
        if _is_usage_error(error):
            log.warning("stage %s failed with a usage error: not retried: %s", stage, one_line(error))
            return False
        attempt = max(int(getattr(task_run, "run_count", 1) or 1), 1)
        cause = getattr(error, "cause", error)
        reason = f"{type(cause).__name__}: {one_line(cause)}" if cause is not None else one_line(state.message)
        log.warning("stage %s failed (attempt %d/%d): %s; retrying in %g s", stage, attempt, attempts, reason, delay)
        return True

    return retry_condition


def _record_interrupt(plan: RunPlan, stage: str, seconds: float | None, started: float) -> None:
    """Prefect's timeout raised ``CancelledError`` (a ``BaseException``) inside the stage, which the
    plan does not catch: record the stage ``failed`` with a ``TimeoutError`` so that the run ends
    failed and can be resumed."""
    record = plan.manifest.stage(stage)
    step = plan.resolved.step(stage)
    plugin = step.plugin if step else "?"
    cause = TimeoutError(f"stage exceeded timeout_seconds={seconds:g}" if seconds else "stage was interrupted")
    error = StageError(stage, plugin, cause)
    duration = round(time.perf_counter() - started, 4)
    record.status, record.duration, record.error = "failed", duration, str(error)
    record.pid = record.host = record.thread = None
    if record.attempts and record.attempts[-1].error is None:
        record.attempts[-1].duration, record.attempts[-1].error = duration, str(error)
    plan.error = error
    plan.save()
    plan.fire("crispml_on_stage_error", stage=stage, plugin=plugin, error=cause, context=plan.context)


def _stage_task(plan: RunPlan, stage: str, opts: StageOptions, options: PrefectOptions) -> Any:
    from prefect import task
    from prefect.cache_policies import NO_CACHE
    from prefect.states import Completed

    step = plan.resolved.step(stage)
    run_jobs = None
    if step is not None and step.candidates:
        from crispml_prefect._candidates import run_jobs as candidate_jobs

        run_jobs = candidate_jobs(options)

    def run_stage() -> Any:
        started = time.perf_counter()
        try:
            status = plan.run_stage(stage, run_jobs=run_jobs)
        except Exception:
            raise
        except BaseException:
            if _timed_out():
                _record_interrupt(plan, stage, opts.timeout_seconds, started)
            raise
        if status == "cached":
            return Completed(name="Cached", message=f"{stage}: reused from crispml's cache")
        if status == "rejected":
            return Completed(name="Rejected", message=one_line(plan.rejection))
        if status == "skipped":
            return Completed(name="Skipped", message=f"{stage}: skipped")
        return Completed(message=f"{stage}: {status}")

    return task(
        run_stage,
        name=stage,
        task_run_name=stage,
        retries=opts.retries or 0,
        retry_delay_seconds=opts.retry_delay_seconds or 0,
        timeout_seconds=opts.timeout_seconds,
        retry_condition_fn=_retry_condition(stage, opts),
        persist_result=False,
        cache_policy=NO_CACHE,
        log_prints=False,
    )


def _timed_out() -> bool:
    """Is the exception being handled Prefect's cancellation (its timeouts raise it)?"""
    exc = sys.exc_info()[1]
    from prefect._internal.concurrency.cancellation import CancelledError

    return isinstance(exc, CancelledError)


def run_stages(plan: RunPlan, options: PrefectOptions) -> Any:
    """Run the plan's stages as tasks of the current flow run; return the flow's final state.

    The tasks carry no tags: tags are the flow run's. A tagged task run first takes a slot of each
    tag's concurrency limit from the API (a lease per task): 0.75 s per stage here, for nothing.
    """
    from prefect.context import TagsContext

    with TagsContext(current_tags=set()):
        return _run_stages(plan, options)


def _run_stages(plan: RunPlan, options: PrefectOptions) -> Any:
    from prefect.states import Completed, Failed

    for stage in plan.stage_names:
        if plan.ended:
            break
        state = _stage_task(plan, stage, options.for_stage(stage), options)(return_state=True)
        if state.is_failed() and plan.error is None and plan.manifest.stage(stage).status != "failed":
            # The task failed outside the stage's code (Prefect itself, its API): the run
            # cannot go on as if the stage had run.
            plan.error = RuntimeError(f"stage {stage}: Prefect task run ended {state.name}: {one_line(state.message)}")
            break
    status = plan.finish()
    if status == "failed":
        return Failed(message=one_line(plan.manifest.error or plan.error))
    if status == "rejected":
        return Completed(name="Rejected", message=one_line(plan.manifest.rejection))
    return Completed(message="succeeded")


def _close_earlier(flow_run_id: str, now: Any) -> None:
    """A resumed run gets a new flow run; the one its killed process left ``Running`` is marked
    ``Crashed`` (naming its successor), so Prefect's UI does not show it running forever."""
    from prefect.client.orchestration import get_client
    from prefect.states import Crashed

    try:
        with get_client(sync_client=True) as client:
            old = client.read_flow_run(flow_run_id)
            if old.state is not None and not old.state.is_final():
                message = f"its process ended without finishing; the crispml run resumed as flow run {now}"
                client.set_flow_run_state(flow_run_id, Crashed(message=message), force=True)
    except Exception as exc:  # the earlier flow run may live on another API: never fail the run
        log.debug("could not close earlier flow run %s: %s", flow_run_id, exc)


def _rename_flow_run(flow_run_id: Any, run_id: str) -> None:
    """A scheduled flow run gets a generated name; name it by the crispml run it holds."""
    from prefect.client.orchestration import get_client

    try:
        with get_client(sync_client=True) as client:
            client.update_flow_run(flow_run_id, name=run_id)
    except Exception as exc:  # a name is a convenience: the manifest links the run anyway
        log.warning("could not name flow run %s %s: %s", flow_run_id, run_id, one_line(exc))


def _flush_logs() -> None:
    """Send the run's logs now, while the API (perhaps a temporary one) is still there."""
    from prefect.logging.handlers import APILogWorker

    try:
        APILogWorker.drain_all(timeout=5)
    except Exception as exc:  # logs are worth less than the run's outcome
        log.debug("could not flush Prefect logs: %s", exc)


def link_flow_run(plan: RunPlan, flow_run_id: Any, api_url: str | None) -> None:
    """Record the flow run in the manifest (``links``) and, with a server, its page in the UI."""
    plan.context.links[LINK] = str(flow_run_id)
    ui = ui_url(api_url, flow_run_id)
    if ui:
        plan.context.links[UI_LINK] = ui
        log.info("flow run %s", ui)
    plan.save()


def ui_url(api_url: str | None, flow_run_id: Any) -> str | None:
    if not api_url:
        return None
    base = api_url.rstrip("/").removesuffix("/api")
    return f"{base}/runs/flow-run/{flow_run_id}"


def execute(plan: RunPlan, options: PrefectOptions) -> str:
    """Run ``plan`` as a Prefect flow run (or, inside one already, as its tasks)."""
    project = Path(plan.context.project_dir)
    if "prefect" in sys.modules:
        from prefect.context import FlowRunContext

        current = FlowRunContext.get()
        if current is not None and current.flow_run is not None:
            # A scheduled flow (crispml_prefect._flow) created this run inside itself: its
            # stages are that flow run's tasks, on the API it already talks to.
            from prefect.settings import PREFECT_API_URL

            link_flow_run(plan, current.flow_run.id, PREFECT_API_URL.value())
            _rename_flow_run(current.flow_run.id, plan.context.run_id)
            run_stages(plan, options)
            return plan.finish()
    try:
        return _in_new_flow_run(plan, options, project)
    except Exception as exc:
        if plan.error is not None:
            raise
        raise RuntimeError(f"runner 'prefect': {type(exc).__name__}: {one_line(exc)}") from exc


def _in_new_flow_run(plan: RunPlan, options: PrefectOptions, project: Path) -> str:
    api_url, kind = choose_api(project)
    if api_url and kind == "env" and not healthy(api_url, timeout=10):
        # Prefect's client would retry for minutes; a run should say at once what is wrong.
        raise RuntimeError(f"no Prefect API answers at PREFECT_API_URL={api_url} (waited 10 s)")
    heartbeat = options.heartbeat if options.heartbeat is not None else kind != "ephemeral"
    with prefect_settings(project, api_url=api_url, heartbeat=heartbeat):
        if kind == "ephemeral":
            log.info("no Prefect server: using a temporary API (10-25 s to start; `crispml server start` keeps one)")
        from prefect import flow, tags
        from prefect.context import FlowRunContext

        earlier = plan.context.links.get(LINK)

        def crispml() -> Any:
            ctx = FlowRunContext.get()
            if ctx is not None and ctx.flow_run is not None:
                link_flow_run(plan, ctx.flow_run.id, api_url)
                if earlier:
                    _close_earlier(earlier, ctx.flow_run.id)
            return run_stages(plan, options)

        run_flow = flow(
            crispml,
            name=FLOW_NAME,
            flow_run_name=plan.context.run_id,
            persist_result=False,
            validate_parameters=False,
            log_prints=False,
        )
        with tags(FLOW_NAME, f"recipe:{plan.resolved.recipe.name}"):
            state = run_flow(return_state=True)
        _flush_logs()
    if plan.manifest.status == "running" and not plan.ended:
        # The flow run ended before the plan did (Prefect crashed or was cancelled): a failure.
        plan.error = RuntimeError(f"Prefect flow run ended {state.name}: {one_line(state.message)}")
    return plan.finish()
