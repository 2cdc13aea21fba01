"""What a runner needs besides ``crispml.run``: start a run, run one stage of it anywhere, finish it.

``crispml.run`` hands a runner's ``crispml_execute`` a started :class:`~crispml.RunPlan`; the
runner may call ``plan.run_stage(name)`` in-process, or have other processes (a worker, a
Prefect task, a ``crispml run-stage RUN STAGE`` command) call :func:`run_stage` on the same run,
then return ``plan.finish()``. A flow that starts runs itself (a schedule) uses
:func:`start_run` and :func:`finish_run` around the same :func:`run_stage` calls.

Each stage reads its inputs from the run store, so it may run in any process on the machine,
be retried, or run side by side with the stages it does not need (``plan.needs(name)``).

A train step with candidates hands the runner its jobs (``plan.run_stage("train",
run_jobs=...)``); the runner runs each with :func:`run_candidate` wherever it likes and
returns the outcomes.
"""

from __future__ import annotations

import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from crispml.candidates import CandidateJob, CandidateOutcome
from crispml.errors import UsageError, one_line
from crispml.manifest import Manifest
from crispml.plan import ENDED, RunJobs, RunPlan, open_plan, running_elsewhere
from crispml.plugins import Plugins
from crispml.recipe import Recipe
from crispml.resolve import on_path
from crispml.runs import (
    RunResult,
    _as_recipe,
    _new_plan,
    _plugins,
    _recipe_dir,
    stored_plan,
    stored_recipe,
)
from crispml.store import RunStore, find_project


def start_run(
    recipe: Recipe | str | Path,
    *,
    overrides: list[str] | None = None,
    use_cache: bool = True,
    project: str | Path | None = None,
    plugins: Plugins | None = None,
    extra_plugins: dict[str, object] | None = None,
) -> str:
    """Check a recipe and start a run of it without running any stage; return the run's id.

    The manifest is written (every stage ``pending``) and observers hear ``crispml_before_run``.
    Run the stages with :func:`run_stage` (here or in other processes), then :func:`finish_run`.
    Arguments as for :func:`crispml.run`.
    """
    recipe = _as_recipe(recipe, overrides)
    with on_path(_recipe_dir(recipe)):
        plan = _new_plan(recipe, overrides, use_cache, project, _plugins(plugins, extra_plugins))
        plan.start()
    return plan.context.run_id


def _open(project: str | Path | None, run_id: str) -> tuple[RunStore, Manifest]:
    store = RunStore(Path(project).resolve() if project else find_project())
    return store, store.read_manifest(run_id)


def run_stage(
    project: str | Path | None,
    run_id: str,
    stage: str,
    *,
    plugins: Plugins | None = None,
    extra_plugins: dict[str, object] | None = None,
    run_jobs: RunJobs | None = None,
) -> str:
    """Run one stage of a started run, in this process; return its status.

    A train step with candidates hands its jobs to ``run_jobs`` (default: run here, in order).

    Its inputs are read from the run store, its result is stored there and its record in the
    manifest updated (under the run's lock, so stages in other processes lose nothing). A stage
    already done returns its status without running again; a failed one runs again (a retry,
    recorded as another attempt); a stage after a rejection, or whose needed stages failed, is
    ``skipped``.

    :raises StageError: the stage failed (its record says so; the run goes on until finished).
    :raises UsageError: unknown run or stage, a run that already ended, a needed stage that has
        not run yet, or the same stage running in another live process now.
    """
    store, manifest = _open(project, run_id)
    names = [r.name for r in manifest.stages]
    if stage not in names:
        raise UsageError(f"run '{run_id}' has no stage '{stage}' (its stages: {', '.join(names)})")
    if manifest.status in ENDED:
        raise UsageError(f"run '{run_id}' already ended {manifest.status}: its stages cannot run again")
    recipe = stored_recipe(run_id, manifest, "run stage by stage")
    with on_path(Path(manifest.recipe_dir)):
        plan = stored_plan(run_id, manifest, recipe, store, _plugins(plugins, extra_plugins), resumed=False)
        return plan.run_stage(stage, run_jobs=run_jobs)


def finish_run(
    project: str | Path | None,
    run_id: str,
    *,
    plugins: Plugins | None = None,
    extra_plugins: dict[str, object] | None = None,
) -> RunResult:
    """Finish a run started with :func:`start_run`: stages that never ran end ``skipped``, the
    outcome is written and observers hear ``crispml_after_run``. A run that already ended is
    returned as it is.

    :raises UsageError: unknown run, or a stage still running in another live process.
    """
    from crispml.runs import result_of

    store, manifest = _open(project, run_id)
    if manifest.status in ENDED:
        return RunResult(run_id, manifest.status, {}, manifest, store.run_dir(run_id))
    busy = [r for r in manifest.stages if r.status == "running" and running_elsewhere(r)]
    if busy:
        raise UsageError(
            f"stage '{busy[0].name}' of run '{run_id}' is still running (pid {busy[0].pid}): "
            "finish the run when it has ended"
        )
    recipe = stored_recipe(run_id, manifest, "finished")
    with on_path(Path(manifest.recipe_dir)):
        plan = stored_plan(run_id, manifest, recipe, store, _plugins(plugins, extra_plugins), resumed=False)
        # The run's duration counts from its start, in whichever process that was.
        started = datetime.fromisoformat(manifest.started)
        plan._t0 = time.perf_counter() - (datetime.now(UTC) - started).total_seconds()
        return result_of(plan, plan.finish())


_PLANS: dict[tuple[str, str], RunPlan] = {}
_PLANS_LOCK = threading.Lock()
_KEEP = 4  # plans a long-lived worker (a Dask cluster's) keeps, newest runs first


def run_candidate(
    job: CandidateJob,
    *,
    plugins: Plugins | None = None,
    extra_plugins: dict[str, object] | None = None,
) -> CandidateOutcome:
    """Train and evaluate one candidate of a started run, in this process: what a runner's
    worker (a process, a thread, a Dask worker) calls with a job the plan handed out.

    The run's recipe is read from the run store and checked once per process; the dataset is
    read from the job's path. Never raises: a failure is the outcome's one-line ``error``.
    """
    try:
        key = (job.project_dir, job.run_id)
        plan = open_plan(*key)
        if plan is None:
            with _PLANS_LOCK:
                plan = _PLANS.get(key)
                if plan is None:
                    store, manifest = _open(job.project_dir, job.run_id)
                    recipe = stored_recipe(job.run_id, manifest, "trained")
                    # Stays on the path (not ``on_path``): jobs run in several threads of a
                    # worker at once, and one leaving must not unplug the others' imports.
                    if manifest.recipe_dir not in sys.path:
                        sys.path.insert(0, manifest.recipe_dir)
                    plan = stored_plan(
                        job.run_id, manifest, recipe, store, _plugins(plugins, extra_plugins), resumed=False
                    )
                    while len(_PLANS) >= _KEEP:
                        _PLANS.pop(next(iter(_PLANS)))
                    _PLANS[key] = plan
        return plan.run_job(job)
    except Exception as exc:
        return CandidateOutcome.failed(job, f"{type(exc).__name__}: {one_line(exc)}")
