"""A run plan: executes one stage at a time for whichever runner drives it.

The plan owns everything a run means besides ordering — the cache, the gates, the event hooks,
the run store and its manifest — so that a runner (in-process, or Prefect tasks with retries)
only decides when and where ``plan.run_stage(name)`` is called.

A stage's status is one of ``succeeded``, ``cached``, ``rejected``, ``failed``, ``skipped``
(``pending`` until it ran, ``running`` while it does). The run's is ``running``, then
``succeeded``, ``rejected`` (a gate said no: nothing downstream ran) or ``failed`` (an error; the
run can be resumed).

A stage is a unit addressed by (run, stage): its inputs come from this plan's memory or, when
another process produced them, from the run store. A failed stage may be run again (a retry):
its record keeps every attempt. Several processes may run stages of one run at once, so every
change to the manifest is a read-modify-write of the stored file under the run's lock (see
:meth:`RunPlan._update`); the in-memory ``manifest`` is the copy last written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pickle
import shutil
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, TypeVar

from crispml._process import ProcessIdentity
from crispml._redact import reveal
from crispml._version import __version__
from crispml.candidates import CandidateError, CandidateJob, CandidateOutcome, best
from crispml.context import RunContext
from crispml.environment import environment
from crispml.errors import PluginError, StageError, UsageError, one_line
from crispml.fingerprint import (
    code_dependencies,
    hash_file,
    hash_json,
    keyed_hash_json,
    module_source_hash,
    unchanged,
)
from crispml.gates import check_gates
from crispml.manifest import Attempt, CandidateRecord, Manifest, StageRecord
from crispml.plugins import imported_with, module_of
from crispml.resolve import Resolved, ResolvedStep
from crispml.results import Dataset, Result
from crispml.split import apply_split
from crispml.stages import BY_NAME, PRODUCER, needs
from crispml.store import file_lock, project_key

DONE = ("succeeded", "cached")
ENDED = ("succeeded", "rejected", "failed")

_T = TypeVar("_T")

RunJobs = Callable[[list[CandidateJob]], list[CandidateOutcome]]
"""How a runner runs a stage's candidate jobs: it returns one outcome per job, in any order
(``plan.run_stage("train", run_jobs=...)``); without one, the plan runs them in order here."""

_OPEN: dict[tuple[str, str], RunPlan] = {}
"""Plans running candidates in this process, by (project, run): a job run in a thread of the
same process uses its run's plan instead of checking the recipe again."""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class RunPlan:
    """One run of a resolved recipe. Create through :func:`crispml.run`, not directly."""

    def __init__(
        self,
        resolved: Resolved,
        context: RunContext,
        *,
        use_cache: bool = True,
        manifest: Manifest | None = None,
        overrides: list[str] | None = None,
    ) -> None:
        self.resolved = resolved
        self.context = context
        self.plugins = resolved.plugins
        self.store = context.store
        self.use_cache = use_cache
        self.results: dict[str, Result] = {}
        self.fingerprints: dict[str, str] = {}
        self.files: dict[str, dict[str, str]] = {}
        """Per stage, the external files its cache key hashed (recorded for ``crispml reproduce``)."""
        self.error: BaseException | None = None
        self.rejection: str | None = None
        self._t0 = time.perf_counter()
        self._excluded = [
            n
            for n in self.plugins.names()
            if self.plugins.declaration(n).tracker is not None and n not in resolved.trackers
        ]
        self.manifest = manifest if manifest is not None else self._new_manifest(overrides or [])

    # -- manifest ------------------------------------------------------------------------

    def _new_manifest(self, overrides: list[str]) -> Manifest:
        r = self.resolved
        used = {s.plugin for s in r.steps} | set(r.trackers) | {r.runner}
        recipe = self.context.secrets.recipe(r.recipe.to_dict())
        return Manifest.load(
            {
                "run_id": self.context.run_id,
                "recipe_name": r.recipe.name,
                "status": "running",
                "started": _now(),
                "ended": None,
                "duration": None,
                "pid": os.getpid(),
                "pid_created": ProcessIdentity.current().created,
                "host": socket.gethostname(),
                "recipe": recipe,
                "recipe_file": str(r.recipe.source.resolve()) if r.recipe.source else None,
                "recipe_dir": str(r.recipe_dir),
                "recipe_hash": hash_json(recipe),
                "overrides": self.context.secrets.overrides(overrides, r.recipe.to_dict()),
                "use_cache": self.use_cache,
                "environment": environment(self.context.project_dir, r.backend_distributions()),
                "plugins": {
                    n: {
                        "version": self.plugins.infos[n].version,
                        "source": self.plugins.infos[n].source,
                        "module": self.plugins.infos[n].module,
                    }
                    for n in sorted(used)
                },
                "data": {},
                "stages": [{"name": s.stage, "plugin": s.plugin} for s in r.steps],
                "links": dict(self.context.links),
            }
        )

    def _stage_record(self, name: str) -> StageRecord:
        return self.manifest.stage(name)

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        with file_lock(self.store.run_dir(self.context.run_id) / ".manifest.lock"):
            yield

    def save(self) -> None:
        """Write the whole manifest as this process holds it: the run's owner, as the run starts."""
        self.manifest.links = dict(self.context.links)
        with self._lock():
            # Written redacted (errors and summaries can echo option values).
            self.store.write_manifest(self.context.run_id, self.context.secrets.manifest(self.manifest))

    def _update(self, change: Callable[[Manifest], _T]) -> _T:
        """Apply ``change`` to the stored manifest and write it back, under the run's lock.

        Stages of one run may run in several processes at once (a runner's workers); each
        process changes only its own stage's record, and re-reading the file under the lock
        means no process writes back a copy that lacks another's change. One file (rather than
        a record file per stage) keeps the manifest a single document every reader can open.
        """
        run_id = self.context.run_id
        with self._lock():
            path = self.store.manifest_path(run_id)
            manifest = self.store.read_manifest(run_id) if path.is_file() else self.manifest
            value = change(manifest)
            manifest.links = {**manifest.links, **self.context.links}
            self.store.write_manifest(run_id, self.context.secrets.manifest(manifest))
        self.context.links.update(manifest.links)
        self.manifest = manifest
        return value

    # -- events --------------------------------------------------------------------------

    def fire(self, hook: str, **kwargs: Any) -> None:
        """Call an event hook on every plugin but the trackers this recipe did not enable."""
        self.plugins.event_caller(hook, self._excluded)(**kwargs)

    # -- the run -------------------------------------------------------------------------

    @property
    def stage_names(self) -> list[str]:
        return [s.stage for s in self.resolved.steps]

    def needs(self, name: str) -> list[str]:
        """The stages of this recipe that ``name`` must wait for (see :func:`crispml.stages.needs`):
        a runner may run stages side by side once each one's needs are done."""
        return needs(name, self.stage_names)

    @property
    def ended(self) -> bool:
        return self.error is not None or self.rejection is not None

    def start(self) -> None:
        """Write the manifest and tell every observer the run begins."""
        self.save()
        self.fire("crispml_before_run", context=self.context)

    def run_stage(self, name: str, *, run_jobs: RunJobs | None = None) -> str:
        """Run (or reuse) one stage; return its status. Raises ``StageError`` if it fails.

        A train step with candidates hands its :class:`~crispml.CandidateJob` s to ``run_jobs``
        (a runner's pool of processes, threads or a cluster), or runs them in order here.

        May be called again for a stage that failed (a retry): the error is cleared when the
        retry starts and the stage's record keeps every attempt. A stage already done returns
        its status and result without running again; a rejected one is never re-run; a stage
        whose needed stages failed, or that follows a rejection, ends ``skipped``.

        Raises ``UsageError`` for a stage the recipe does not have, a needed stage that has not
        run yet, or a stage another live process is running now.
        """
        step = self.resolved.step(name)
        if step is None:
            raise UsageError(
                f"run '{self.context.run_id}' has no stage '{name}' (its stages: {', '.join(self.stage_names)})"
            )
        verdict = self._update(lambda m: self._claim(m, name, rerun=False))
        if verdict == "reuse":
            stored = self._stored(name)
            if stored is not None:
                return self._reuse(name, step, stored)
            # Recorded as done but its result file is gone: run it again.
            verdict = self._update(lambda m: self._claim(m, name, rerun=True))
        if verdict is not None:
            return verdict
        return self._execute(name, step, run_jobs)

    def _claim(self, manifest: Manifest, name: str, *, rerun: bool) -> str | None:
        """Decide, under the run's lock, whether ``name`` runs now; mark it running if it does.

        Returns ``None`` (run it), ``"reuse"`` (done before), or the status to return as is."""
        record = manifest.stage(name)
        status = record.status
        if status == "rejected":
            return "rejected"  # a rejection is an outcome, not a failure: never retried
        if status == "running" and running_elsewhere(record):
            raise UsageError(
                f"stage '{name}' of run '{self.context.run_id}' is already running "
                f"(pid {record.pid} on {record.host}): not starting it twice"
            )
        if status in DONE and not rerun:
            return "reuse"
        if self._blocked(manifest, name):
            record.status = "skipped"
            return "skipped"
        missing = [n for n in self.needs(name) if manifest.stage(n).status not in DONE]
        if missing:
            state = manifest.stage(missing[0]).status
            raise UsageError(
                f"stage '{name}' needs stage '{missing[0]}', which has not run yet in run "
                f"'{self.context.run_id}' (it is {state})"
            )
        if isinstance(self.error, StageError) and self.error.stage == name:
            self.error = None  # a retry: this stage's earlier failure no longer ends the run
        last = record.attempts[-1] if record.attempts else None
        if last is not None and last.duration is None and last.error is None:
            last.error = "interrupted: the process running it ended before the stage did"
        now = _now()
        record.status, record.started, record.duration, record.error, record.reasons = "running", now, None, None, None
        record.pid, record.host, record.thread = os.getpid(), socket.gethostname(), threading.get_ident()
        record.pid_created = ProcessIdentity.current().created
        record.attempts.append(Attempt(started=now))
        return None

    def _blocked(self, manifest: Manifest, name: str) -> bool:
        """True when ``name`` must not run: the run was rejected (nothing after a rejection
        runs), the runner itself failed, or a stage it needs failed or was skipped."""
        if self.rejection is not None or any(r.status == "rejected" for r in manifest.stages):
            return True
        if self.error is not None and not isinstance(self.error, StageError):
            return True
        return any(manifest.stage(n).status in ("failed", "skipped") for n in self.needs(name))

    def _stored(self, name: str) -> Result | None:
        output = BY_NAME[name].output
        if output in self.results:
            return self.results[output]
        stored: Result | None = self.store.load_result(self.context.run_id, name)
        return stored

    def _reuse(self, name: str, step: ResolvedStep, stored: Result) -> str:
        """A stage done earlier in this run (before a resume, or by another process)."""
        record = self._stage_record(name)
        self._accept(name, stored, str(record.fingerprint))
        self.fire("crispml_before_stage", stage=name, plugin=step.plugin, context=self.context)
        self.fire(
            "crispml_after_stage",
            stage=name,
            plugin=step.plugin,
            status="cached",
            result=stored,
            duration=0.0,
            context=self.context,
        )
        return record.status

    def _inputs(self, name: str) -> dict[str, Any]:
        """The results ``name`` receives: from memory, else from the run store (a stage run by
        another process). ``None`` for an output whose stage the recipe does not have."""
        inputs: dict[str, Any] = {}
        for output in BY_NAME[name].inputs:
            producer = PRODUCER[output]
            if producer not in self.stage_names:
                inputs[output] = None
                continue
            if output not in self.results:
                stored = self.store.load_result(self.context.run_id, producer)
                if stored is None:
                    raise PluginError(
                        f"the stored result of stage '{producer}' is missing "
                        f"({self.store.result_path(self.context.run_id, producer)})"
                    )
                self._accept(producer, stored, str(self._stage_record(producer).fingerprint))
            inputs[output] = self.results[output]
        return inputs

    def _execute(self, name: str, step: ResolvedStep, run_jobs: RunJobs | None = None) -> str:
        t0 = time.perf_counter()
        try:
            inputs = self._inputs(name)
            self.fire("crispml_before_stage", stage=name, plugin=step.plugin, context=self.context)
            key = self._cache_key(step, inputs)
            result: Result | None
            if step.candidates:
                result, status, key, code = self._search(name, step, run_jobs)
            else:
                result, status, code = self._cached(step, key)
            if result is None:
                result, code = self._compute(step, inputs, key, name, self.context)
                status = "succeeded"
            fingerprint = output_fingerprint(key, code, self.context.run_id)
            reasons = check_gates(step.gates, result.metrics)
            if result.rejection:
                reasons.append(result.rejection)
            if reasons:
                status = "rejected"
                self.rejection = f"{name}: " + "; ".join(reasons)
            self._accept(name, result, fingerprint)
            duration = time.perf_counter() - t0
            done: Result = result

            def record_done(manifest: Manifest) -> None:
                record = _end_attempt(manifest, name, duration, None)
                record.status, record.summary, record.fingerprint = status, done.summary(), fingerprint
                record.gates, record.reasons = [str(g) for g in step.gates], reasons or None
                record.files = self.files.get(name) or None
                if isinstance(done, Dataset):
                    manifest.data = done.summary()

            self._update(record_done)
            self.fire(
                "crispml_after_stage",
                stage=name,
                plugin=step.plugin,
                status=status,
                result=result,
                duration=duration,
                context=self.context,
            )
            return status
        except Exception as exc:
            return self._fail(name, step, exc, time.perf_counter() - t0)

    def _fail(self, name: str, step: ResolvedStep, exc: Exception, duration: float) -> str:
        error = exc if isinstance(exc, StageError) else StageError(name, step.plugin, exc)
        # The error leaves this process (a runner records it: a Prefect task's state): its
        # message shows what the run's secrets came from, never them (``error.cause`` is whole).
        error.args = (self.context.redact(str(error)),)
        self.error = error

        def record_failed(manifest: Manifest) -> None:
            _end_attempt(manifest, name, duration, str(error)).status = "failed"

        self._update(record_failed)
        try:
            self.fire("crispml_on_stage_error", stage=name, plugin=step.plugin, error=exc, context=self.context)
        finally:
            raise error from exc

    def _accept(self, name: str, result: Result, fingerprint: str) -> None:
        output = BY_NAME[name].output
        self.results[output] = result
        self.fingerprints[output] = fingerprint

    def _compute(
        self, step: ResolvedStep, inputs: dict[str, Any], key: str, where: str, context: RunContext
    ) -> tuple[Result, dict[str, str] | None]:
        """Run ``step``'s hook; store its result under ``where`` in the run (and in the cache,
        with the code it ran, when the step may be cached). Returns the result and that code."""
        loaded = set(sys.modules)
        result = self._call(step, inputs, context)
        result_file = self.store.save_result(self.context.run_id, where, result)
        code = None
        if BY_NAME[step.stage].cacheable and step.cache:
            module = module_of(self.plugins.get(step.plugin))
            dynamic = imported_with(module.__name__) if module else frozenset()
            code = code_dependencies(
                module,
                {self.context.project_dir, self.resolved.recipe_dir},
                (set(sys.modules) - loaded) | set(step.options.code_references()) | dynamic,
            )
            self.store.cache_put(key, result_file, code, self.store.artifact_dir(self.context.run_id, where))
        return result, code

    # -- candidates ----------------------------------------------------------------------

    def _search(
        self, name: str, step: ResolvedStep, run_jobs: RunJobs | None
    ) -> tuple[Result, str, str, dict[str, str] | None]:
        """Train and evaluate every candidate (through ``run_jobs``), record them all, and hand
        on the best: ``(its model, status, its cache key, its code)``. Its model's fingerprint
        is then the one a plain step with the winner's options would have, so the evaluate stage
        reuses the winner's evaluation from the cache, and a grid of one is a plain run."""
        run_id = self.context.run_id
        jobs = [
            CandidateJob(
                project_dir=str(self.context.project_dir),
                run_id=run_id,
                stage=name,
                index=c.index,
                overrides=self.context.redact(c.overrides),
                options=self.context.redact(c.raw),
                dataset=str(self.store.result_path(run_id, "load")),
                dataset_fingerprint=self.fingerprints["dataset"],
            )
            for c in step.candidates
        ]
        opened = (str(self.context.project_dir), run_id)
        _OPEN[opened] = self
        try:
            outcomes = list(run_jobs(jobs)) if run_jobs is not None else [self.run_job(job) for job in jobs]
        finally:
            _OPEN.pop(opened, None)
        by_index = {o.index: o for o in outcomes}
        outcomes = [by_index.get(j.index) or CandidateOutcome.failed(j, "the runner returned no outcome") for j in jobs]
        failed = [o for o in outcomes if o.status == "failed"]
        winner = None
        if not failed:
            try:
                winner = best(outcomes, step.select)  # type: ignore[arg-type]  # set with candidates
            except ValueError as exc:
                raise PluginError(str(exc)) from None
        records = [
            CandidateRecord(
                index=o.index,
                overrides=j.overrides,
                options=j.options,
                status=o.status,
                metrics=dict(o.metrics),
                duration=round(o.duration, 4),
                error=o.error,
            )
            for j, o in zip(jobs, outcomes, strict=True)
        ]
        selected = winner.index if winner else None

        def record_candidates(manifest: Manifest) -> None:
            record = manifest.stage(name)
            record.candidates, record.selected = records, selected

        self._update(record_candidates)
        self.fire(
            "crispml_after_candidates",
            stage=name,
            plugin=step.plugin,
            candidates=records,
            selected=selected,
            context=self.context,
        )
        if winner is None:
            first = failed[0]
            label = step.candidates[first.index - 1].label
            raise CandidateError(f"{len(failed)} of {len(jobs)} candidates failed; {label}: {first.error}")
        scope = candidate_scope(name, winner.index)
        stored = self.store.result_path(run_id, f"{scope}/{name}")
        with stored.open("rb") as fh:
            result: Result = pickle.load(fh)
        self.store.link_result(run_id, name, stored)
        files = self.store.artifact_dir(run_id, f"{scope}/{name}")
        if files.is_dir():
            shutil.copytree(files, self.context.artifact_dir(name), dirs_exist_ok=True)
        status = "cached" if all(o.status == "cached" for o in outcomes) else "succeeded"
        return result, status, str(winner.key), winner.code

    def run_job(self, job: CandidateJob) -> CandidateOutcome:
        """Train and evaluate one candidate (in whichever process holds this plan), each step
        cached on its own. A failure is returned as the outcome's one-line error, not raised:
        the job's runner may be another process, and the plan decides what it means."""
        t0 = time.perf_counter()
        try:
            step, evaluate = self.resolved.step(job.stage), self.resolved.step("evaluate")
            if step is None or evaluate is None or not 1 <= job.index <= len(step.candidates):
                raise UsageError(f"run '{job.run_id}' has no candidate {job.index} of stage '{job.stage}'")
            scope = candidate_scope(job.stage, job.index)
            context = dataclasses.replace(self.context, candidate=scope)
            with open(job.dataset, "rb") as fh:
                dataset = pickle.load(fh)
            train = dataclasses.replace(step, options=step.candidates[job.index - 1].options, candidates=[])
            inputs: dict[str, Any] = {"dataset": dataset}
            key = self._cache_key(train, inputs, {"dataset": job.dataset_fingerprint})
            model, trained, code = self._cached(train, key, f"{scope}/{job.stage}")
            if model is None:
                model, code = self._compute(train, inputs, key, f"{scope}/{job.stage}", context)
                trained = "succeeded"
            fingerprint = output_fingerprint(key, code, job.run_id)
            inputs = {"model": model, "dataset": dataset}
            fingerprints = {"model": fingerprint, "dataset": job.dataset_fingerprint}
            ekey = self._cache_key(evaluate, inputs, fingerprints)
            evaluation, evaluated, _ = self._cached(evaluate, ekey, f"{scope}/evaluate")
            if evaluation is None:
                evaluation, _ = self._compute(evaluate, inputs, ekey, f"{scope}/evaluate", context)
                evaluated = "succeeded"
        except Exception as exc:
            error = self.context.redact(f"{type(exc).__name__}: {one_line(exc)}")
            return CandidateOutcome.failed(job, error, time.perf_counter() - t0)
        return CandidateOutcome(
            index=job.index,
            status="cached" if trained == evaluated == "cached" else "succeeded",
            metrics=dict(evaluation.metrics),
            train_metrics=dict(model.metrics),
            duration=time.perf_counter() - t0,
            key=key,
            code=code,
            fingerprint=fingerprint,
        )

    def _call(self, step: ResolvedStep, inputs: dict[str, Any], context: RunContext | None = None) -> Result:
        spec = BY_NAME[step.stage]
        result: Result | None = self.plugins.call_only(
            spec.hook, step.plugin, options=step.options, context=context or self.context, **inputs
        )
        if result is None:
            raise PluginError(f"plugin '{step.plugin}' returned nothing from {spec.hook}")
        if not isinstance(result, spec.result_type):
            raise PluginError(
                f"plugin '{step.plugin}' returned {type(result).__name__} from {spec.hook}, "
                f"expected crispml.{spec.result_type.__name__}"
            )
        if isinstance(result, Dataset):
            # ``source`` is lineage (shown, stored, sent to trackers): a DSN's password or a
            # value read from ${env:NAME} must not travel with it.
            result.source = self.context.redact(result.source)
            result = apply_split(result, self.resolved.recipe.split)
        return result

    def _cache_key(self, step: ResolvedStep, inputs: dict[str, Any], fingerprints: dict[str, str] | None = None) -> str:
        """The key of ``step``'s result given its inputs (whose fingerprints are this plan's, or
        ``fingerprints``: a candidate's model is not the stage's)."""
        known = self.fingerprints if fingerprints is None else fingerprints
        plugin = self.plugins.get(step.plugin)
        module = module_of(plugin)
        files = {str(p): hash_file(p) for p in step.options.external_inputs()}
        self.files[step.stage] = files
        material = {
            "crispml": __version__,
            "stage": step.stage,
            "plugin": step.plugin,
            "plugin_version": self.plugins.infos[step.plugin].version,
            "backends": {b.distribution: b.version() for b in self.plugins.declaration(step.plugin).backends},
            "plugin_source": module_source_hash(module) if module else type(plugin).__qualname__,
            "options": step.options.model_dump(mode="json"),
            "inputs": {k: known.get(k) for k in sorted(inputs) if inputs[k] is not None},
            "files": files,
        }
        if step.stage == "load":
            split = self.resolved.recipe.split
            material["split"] = split.model_dump() if split else None
        return self._key_of(material, step)

    def _key_of(self, material: dict[str, Any], step: ResolvedStep) -> str:
        """The hash of a cache key's ``material``, with the step's secrets in it only as a keyed
        digest.

        A declared secret is dumped masked (``**********``) and so would not change the key:
        two runs differing only in a database password would share an entry. Yet the key is
        written down (the cache entry's name, the manifest's fingerprints), and a plain hash over
        a secret can be found again by hashing guesses. So a step holding a secret — a declared
        one, a ``${env:NAME}`` value, a URL password — is keyed by its material as it may be
        written (masked: references kept) plus an HMAC, under the project's key, of the material
        with every secret in clear. A step without one keeps the plain hash, and no key is made.
        """
        revealed, declared = reveal(step.options)
        shown = self.context.secrets(material)
        if not declared and shown == material:
            return hash_json(material)
        key = project_key(self.store.root)
        shown["secrets"] = keyed_hash_json(key, {**material, "options": revealed})
        return hash_json(shown)

    def _cached(
        self, step: ResolvedStep, key: str, where: str | None = None
    ) -> tuple[Result | None, str, dict[str, str] | None]:
        """``(result, "cached", code hashes)`` stored under ``key`` if its code is unchanged;
        the result and files are linked into the run as ``where`` (default: the stage's)."""
        where = where or step.stage
        if not (self.use_cache and step.cache and BY_NAME[step.stage].cacheable):
            return None, "", None
        hit = self.store.cache_get(key)
        if hit is None:
            return None, "", None
        result, code, entry = hit
        if not unchanged(code):
            return None, "", None
        if (entry / "artifacts").is_dir():
            target = self.store.artifact_dir(self.context.run_id, where)
            shutil.copytree(entry / "artifacts", target, dirs_exist_ok=True)
        self.store.link_result(self.context.run_id, where, entry / "result.pkl")
        return result, "cached", code

    def finish(self) -> str:
        """Close the run: mark what never ran ``skipped``, write the outcome, tell observers.

        The outcome is read from the stored stage records, so a runner whose stages ran in
        other processes finishes the run with the same outcome as the local runner."""

        def close(manifest: Manifest) -> str | None:
            if manifest.status in ENDED:
                return None
            for record in manifest.stages:
                if record.status in ("pending", "running"):
                    record.status, record.pid, record.host, record.thread = "skipped", None, None, None
                    record.pid_created = None
            self.error = self._run_error(manifest)
            self.rejection = self.rejection or _rejection(manifest)
            status = "failed" if self.error else "rejected" if self.rejection else "succeeded"
            manifest.status, manifest.ended = status, _now()
            manifest.duration = round(time.perf_counter() - self._t0, 4)
            manifest.rejection, manifest.error = self.rejection, str(self.error) if self.error else None
            return status

        status = self._update(close)
        if status is None:
            return self.manifest.status
        try:
            self.fire("crispml_after_run", context=self.context, status=status, error=self.error)
        except Exception as exc:
            # An observer that fails at the end (a tracker that lost its server) fails the run.
            status = "failed"
            self.error = exc
            message = f"crispml_after_run: {type(exc).__name__}: {exc}"

            def record_observer_failure(manifest: Manifest) -> None:
                manifest.status, manifest.error = status, message

            self._update(record_observer_failure)
        return status

    def _run_error(self, manifest: Manifest) -> BaseException | None:
        """The run's error: the runner's own, else the first stage whose last attempt failed."""
        if self.error is not None and not isinstance(self.error, StageError):
            return self.error
        for record in manifest.stages:
            if record.status == "failed":
                if isinstance(self.error, StageError) and self.error.stage == record.name:
                    return self.error
                return StageError.recorded(record.name, record.plugin, str(record.error))
        return None


def candidate_scope(stage: str, index: int) -> str:
    """Where a candidate's results and files live in its run (``candidates/train-3``)."""
    return f"candidates/{stage}-{index}"


def open_plan(project_dir: str, run_id: str) -> RunPlan | None:
    """The plan of a run whose candidates this process is running now, if any."""
    return _OPEN.get((project_dir, run_id))


def output_fingerprint(key: str, code: dict[str, str] | None, run_id: str) -> str:
    """The fingerprint a stage hands its consumers (part of their cache keys).

    It differs whenever the result may differ: the cache key holds the options, the inputs'
    fingerprints and the plugin, and ``code`` the project files the stage ran with (the same
    hashes its cache entry is checked against before reuse) — so a changed helper re-runs the
    stage *and* everything downstream. A result not stored in the cache (``code`` is ``None``)
    is this run's own: its fingerprint names the run, so downstream never matches another's.
    """
    if code is None:
        return hash_json([key, run_id])
    return hash_json([key, code])


def _end_attempt(manifest: Manifest, name: str, duration: float, error: str | None) -> StageRecord:
    """Close the stage's current attempt; return its record (no longer held by a process)."""
    record = manifest.stage(name)
    record.duration, record.error = round(duration, 4), error
    record.pid, record.pid_created, record.host, record.thread = None, None, None, None
    if record.attempts:
        record.attempts[-1].duration, record.attempts[-1].error = round(duration, 4), error
    return record


def _rejection(manifest: Manifest) -> str | None:
    for record in manifest.stages:
        if record.status == "rejected":
            return f"{record.name}: " + "; ".join(record.reasons or [])
    return None


def running_elsewhere(record: StageRecord) -> bool:
    """True when a live process, or another live thread of this one, holds the stage."""
    from crispml.runs import _alive

    if record.pid == os.getpid() and record.host == socket.gethostname():
        return record.thread != threading.get_ident() and record.thread in {t.ident for t in threading.enumerate()}
    return _alive(record)
