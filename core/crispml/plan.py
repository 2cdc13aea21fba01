"""A run plan: executes one stage at a time for whichever runner drives it.

The plan owns everything a run means besides ordering — the cache, the gates, the event hooks,
the run store and its manifest — so that a runner (in-process, or Prefect tasks with retries)
only decides when and where ``plan.run_stage(name)`` is called.

A stage's status is one of ``succeeded``, ``cached``, ``rejected``, ``failed``, ``skipped``
(``pending`` until it ran). The run's is ``running``, then ``succeeded``, ``rejected`` (a gate
said no: nothing downstream ran) or ``failed`` (an error; the run can be resumed).
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import time
from datetime import UTC, datetime
from typing import Any

from crispml._version import __version__
from crispml.context import RunContext
from crispml.environment import environment
from crispml.errors import PluginError, StageError
from crispml.fingerprint import (
    code_dependencies,
    hash_file,
    hash_json,
    module_source_hash,
    unchanged,
)
from crispml.gates import check_gates
from crispml.plugins import module_of
from crispml.resolve import Resolved, ResolvedStep
from crispml.results import Dataset, Result
from crispml.split import apply_split
from crispml.stages import BY_NAME

DONE = ("succeeded", "cached")
ENDED = ("succeeded", "rejected", "failed")


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
        manifest: dict[str, Any] | None = None,
        overrides: list[str] | None = None,
    ) -> None:
        self.resolved = resolved
        self.context = context
        self.plugins = resolved.plugins
        self.store = context.store
        self.use_cache = use_cache
        self.results: dict[str, Result] = {}
        self.fingerprints: dict[str, str] = {}
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

    def _new_manifest(self, overrides: list[str]) -> dict[str, Any]:
        r = self.resolved
        used = {s.plugin for s in r.steps} | set(r.trackers) | {r.runner}
        recipe = self.context.secrets.recipe(r.recipe.to_dict())
        return {
            "run_id": self.context.run_id,
            "recipe_name": r.recipe.name,
            "status": "running",
            "started": _now(),
            "ended": None,
            "duration": None,
            "pid": os.getpid(),
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
            "stages": [{"name": s.stage, "plugin": s.plugin, "status": "pending"} for s in r.steps],
            "rejection": None,
            "error": None,
            "links": self.context.links,
            "resumes": 0,
        }

    def _stage_record(self, name: str) -> dict[str, Any]:
        return next(s for s in self.manifest["stages"] if s["name"] == name)

    def save(self) -> None:
        self.manifest["links"] = self.context.links
        # Written redacted (errors and summaries can echo option values); kept whole in memory.
        self.store.write_manifest(self.context.run_id, self.context.secrets.manifest(self.manifest))

    # -- events --------------------------------------------------------------------------

    def fire(self, hook: str, **kwargs: Any) -> None:
        """Call an event hook on every plugin but the trackers this recipe did not enable."""
        self.plugins.event_caller(hook, self._excluded)(**kwargs)

    # -- the run -------------------------------------------------------------------------

    @property
    def stage_names(self) -> list[str]:
        return [s.stage for s in self.resolved.steps]

    @property
    def ended(self) -> bool:
        return self.error is not None or self.rejection is not None

    def start(self) -> None:
        """Write the manifest and tell every observer the run begins."""
        self.save()
        self.fire("crispml_before_run", context=self.context)

    def run_stage(self, name: str) -> str:
        """Run (or reuse) one stage; return its status. Raises ``StageError`` if it fails."""
        record = self._stage_record(name)
        if self.ended:
            record["status"] = "skipped"
            self.save()
            return "skipped"
        step = self.resolved.step(name)
        assert step is not None, name
        spec = BY_NAME[name]
        if record["status"] in DONE and self.context.resumed:
            stored = self.store.load_result(self.context.run_id, name)
            if stored is not None:
                self._accept(name, stored, record["fingerprint"])
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
                return str(record["status"])
        inputs = {o: self.results.get(o) for o in spec.inputs}
        record.update(status="running", started=_now(), error=None, reasons=None)
        self.save()
        t0 = time.perf_counter()
        try:
            self.fire("crispml_before_stage", stage=name, plugin=step.plugin, context=self.context)
            key = self._cache_key(step, inputs)
            result, status = self._cached(step, key)
            if result is None:
                loaded = set(sys.modules)
                result = self._call(step, inputs)
                status = "succeeded"
                result_file = self.store.save_result(self.context.run_id, name, result)
                if spec.cacheable and step.cache:
                    code = code_dependencies(
                        module_of(self.plugins.get(step.plugin)),
                        {self.context.project_dir, self.resolved.recipe_dir},
                        (set(sys.modules) - loaded) | set(step.options.code_references()),
                    )
                    self.store.cache_put(key, result_file, code, self.store.artifact_dir(self.context.run_id, name))
                else:
                    # Not stored under its key, so this result is this run's own: downstream
                    # stages must not match results computed from another run's.
                    key = hash_json([key, self.context.run_id])
            reasons = check_gates(step.gates, result.metrics)
            if result.rejection:
                reasons.append(result.rejection)
            if reasons:
                status = "rejected"
                self.rejection = f"{name}: " + "; ".join(reasons)
            self._accept(name, result, key)
            duration = time.perf_counter() - t0
            record.update(
                status=status,
                duration=round(duration, 4),
                summary=result.summary(),
                fingerprint=key,
                gates=[str(g) for g in step.gates],
                reasons=reasons or None,
            )
            if isinstance(result, Dataset):
                self.manifest["data"] = result.summary()
            self.save()
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
            return self._fail(name, step, record, exc, time.perf_counter() - t0)

    def _fail(self, name: str, step: ResolvedStep, record: dict[str, Any], exc: Exception, duration: float) -> str:
        error = exc if isinstance(exc, StageError) else StageError(name, step.plugin, exc)
        record.update(status="failed", duration=round(duration, 4), error=str(error))
        self.error = error
        self.save()
        try:
            self.fire("crispml_on_stage_error", stage=name, plugin=step.plugin, error=exc, context=self.context)
        finally:
            raise error from exc

    def _accept(self, name: str, result: Result, fingerprint: str) -> None:
        output = BY_NAME[name].output
        self.results[output] = result
        self.fingerprints[output] = fingerprint

    def _call(self, step: ResolvedStep, inputs: dict[str, Any]) -> Result:
        spec = BY_NAME[step.stage]
        result: Result | None = self.plugins.call_only(
            spec.hook, step.plugin, options=step.options, context=self.context, **inputs
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

    def _cache_key(self, step: ResolvedStep, inputs: dict[str, Any]) -> str:
        plugin = self.plugins.get(step.plugin)
        module = module_of(plugin)
        material = {
            "crispml": __version__,
            "stage": step.stage,
            "plugin": step.plugin,
            "plugin_version": self.plugins.infos[step.plugin].version,
            "backends": {b.distribution: b.version() for b in self.plugins.declaration(step.plugin).backends},
            "plugin_source": module_source_hash(module) if module else type(plugin).__qualname__,
            "options": step.options.model_dump(mode="json"),
            "inputs": {k: self.fingerprints.get(k) for k in sorted(inputs) if inputs[k] is not None},
            "files": {str(p): hash_file(p) for p in step.options.external_inputs()},
        }
        if step.stage == "load":
            split = self.resolved.recipe.split
            material["split"] = split.model_dump() if split else None
        return hash_json(material)

    def _cached(self, step: ResolvedStep, key: str) -> tuple[Result | None, str]:
        if not (self.use_cache and step.cache and BY_NAME[step.stage].cacheable):
            return None, ""
        hit = self.store.cache_get(key)
        if hit is None:
            return None, ""
        result, code, entry = hit
        if not unchanged(code):
            return None, ""
        if (entry / "artifacts").is_dir():
            target = self.context.artifact_dir(step.stage)
            shutil.copytree(entry / "artifacts", target, dirs_exist_ok=True)
        self.store.link_result(self.context.run_id, step.stage, entry / "result.pkl")
        return result, "cached"

    def finish(self) -> str:
        """Close the run: mark what never ran ``skipped``, write the outcome, tell observers."""
        if self.manifest["status"] in ENDED:
            return str(self.manifest["status"])
        for record in self.manifest["stages"]:
            if record["status"] in ("pending", "running"):
                record["status"] = "skipped"
        status = "failed" if self.error else "rejected" if self.rejection else "succeeded"
        self.manifest.update(
            status=status,
            ended=_now(),
            duration=round(time.perf_counter() - self._t0, 4),
            rejection=self.rejection,
            error=str(self.error) if self.error else None,
        )
        self.save()
        try:
            self.fire("crispml_after_run", context=self.context, status=status, error=self.error)
        except Exception as exc:
            # An observer that fails at the end (a tracker that lost its server) fails the run.
            status = "failed"
            self.error = exc
            self.manifest.update(status=status, error=f"crispml_after_run: {type(exc).__name__}: {exc}")
        self.save()
        return status
