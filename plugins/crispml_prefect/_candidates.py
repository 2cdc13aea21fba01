"""A train step's candidates as Prefect tasks, on Prefect's own task runners.

The plan hands the runner picklable jobs (:class:`crispml.CandidateJob`); each becomes a task run
named ``train-<n>`` (a child of the stage's task run) on ``ThreadPoolTaskRunner``,
``ProcessPoolTaskRunner`` (spawned processes: each imports crispml, the plugins and the backend
once) or prefect-dask's ``DaskTaskRunner`` (a ``LocalCluster``, or a running scheduler at
``address``). A worker runs :func:`crispml.run_candidate`: it reads the run's recipe and the
dataset from the run store, so nothing but the job and its small outcome crosses processes.

Imported only when a recipe with candidates runs on the prefect runner: it imports Prefect.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from prefect import task
from prefect.cache_policies import NO_CACHE

import crispml
from crispml import CandidateJob, CandidateOutcome

if TYPE_CHECKING:
    from crispml_prefect._options import PrefectOptions


class CandidateFailed(Exception):
    """A candidate's one-line error, raised so that its task run ends ``Failed`` with it."""


@task(name="candidate", persist_result=False, cache_policy=NO_CACHE, log_prints=False)
def candidate(job: CandidateJob) -> CandidateOutcome:
    """Train and evaluate one candidate wherever the task runner put this task."""
    outcome = crispml.run_candidate(job)
    if outcome.status == "failed":
        raise CandidateFailed(outcome.error)
    return outcome


def task_runner(options: PrefectOptions) -> Any:
    """The Prefect task runner ``options`` name (not started)."""
    workers = options.max_workers or os.cpu_count() or 1
    if options.task_runner == "process":
        from prefect.task_runners import ProcessPoolTaskRunner

        return ProcessPoolTaskRunner(max_workers=workers)
    if options.task_runner == "dask":
        try:
            from prefect_dask import DaskTaskRunner
        except ImportError as exc:
            raise crispml.UsageError(
                f"task_runner: dask needs prefect-dask and distributed: pip install 'crispml[prefect]' ({exc})"
            ) from None
        if options.address:
            return DaskTaskRunner(address=options.address)
        # No dashboard: it would take port 8787 (and nothing here looks at it).
        cluster = {"n_workers": workers, "threads_per_worker": 1, "processes": True, "dashboard_address": None}
        return DaskTaskRunner(cluster_class="distributed.LocalCluster", cluster_kwargs=cluster)
    from prefect.task_runners import ThreadPoolTaskRunner

    return ThreadPoolTaskRunner(max_workers=workers)


def run_jobs(options: PrefectOptions) -> Any:
    """A ``run_jobs`` for ``plan.run_stage``: every job submitted at once, the outcomes in order.
    A task that failed (its candidate's error, or the task runner's) is a failed outcome."""

    def run(jobs: list[CandidateJob]) -> list[CandidateOutcome]:
        runner = task_runner(options)
        with runner:
            futures = [
                runner.submit(candidate.with_options(task_run_name=job.name), parameters={"job": job}) for job in jobs
            ]
            outcomes = []
            for job, future in zip(jobs, futures, strict=True):
                try:
                    outcomes.append(future.result())
                except Exception as exc:
                    error = str(exc) if isinstance(exc, CandidateFailed) else f"{type(exc).__name__}: {exc}"
                    outcomes.append(CandidateOutcome.failed(job, crispml.one_line(error)))
        return outcomes

    return run
