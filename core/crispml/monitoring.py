"""``crispml monitor``: a run of a recipe's ``monitor`` step alone, and the retrain it may start.

A monitor run is an ordinary run (stored, tracked, ``kind: monitor`` in its manifest) whose plan
holds one stage. When its :class:`~crispml.results.MonitorReport` asks for a retrain, the core —
not the plugin — runs the recipe again without its monitor step, with the step's
:class:`~crispml.declarations.RetrainPolicy` overrides, so the challenger passes every gate a
first model did. Both manifests name each other (``links.retrain_run``; ``trigger``).

The guards live here because they are about runs, which the core owns: ``after`` consecutive
drifting monitor runs, a ``cooldown`` since the recipe's last retrain, and one retrain per recipe
at a time (a non-blocking :func:`crispml.file_lock`).

Flags reach the monitor plugin as options of its step: ``--since``/``--last`` set ``window``,
``--batch`` sets ``batch``. A monitor plugin that offers those flags declares those options.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from crispml.context import RunContext
from crispml.declarations import RetrainPolicy
from crispml.durations import EXPECTED, parse_duration
from crispml.errors import EXIT_FAILED, EXIT_REJECTED, EXIT_SUCCEEDED, RecipeError, UsageError
from crispml.manifest import Manifest
from crispml.plan import RunPlan
from crispml.plugins import Plugins
from crispml.recipe import Recipe, apply_overrides
from crispml.resolve import Resolved, on_path, resolve
from crispml.results import MonitorReport
from crispml.runs import RunResult, _as_recipe, _execute, _plugins, _recipe_dir
from crispml.store import RunStore, file_lock, find_project, new_run_id

KIND = "monitor"


@dataclass
class MonitorResult:
    """A monitor run and, when its drift started one, the retrain run."""

    monitor: RunResult
    retrain: RunResult | None = None
    held: str | None = None
    """Why a retrain the report asked for did not run (``after``, ``cooldown``, a running one)."""
    no_retrain: bool = field(default=False, repr=False)

    @property
    def report(self) -> MonitorReport | None:
        result = self.monitor.results.get("monitor_report")
        return result if isinstance(result, MonitorReport) else None

    @property
    def exit_code(self) -> int:
        """0 no drift (or too few rows to tell), 3 drift not retrained, else the retrain's code."""
        if self.retrain is not None:
            return self.retrain.exit_code
        if self.monitor.status == "failed":
            return EXIT_FAILED
        return EXIT_REJECTED if self.monitor.status == "rejected" else EXIT_SUCCEEDED

    def line(self) -> str:
        """The one-line summary ``crispml monitor`` prints."""
        report = self.report
        if report is None:
            return f"monitor failed: {self.monitor.manifest.get('error') or self.monitor.error}"
        head = report.headline or self.monitor.manifest.recipe_name
        if self.monitor.status == "succeeded":
            return f"{head} → no drift" if report.metrics.get("current_rows") else head
        why = self.monitor.manifest.get("rejection") or "rejected"
        if self.retrain is not None:
            outcome = self.retrain.status
            if self.retrain.status != "succeeded":
                outcome += f": {self.retrain.manifest.get('rejection') or self.retrain.manifest.get('error')}"
            return f"{head} → {why} → retrain {self.retrain.run_id} {outcome}"
        if self.held:
            return f"{head} → {why}; not retrained: {self.held}"
        if report.retrain and self.no_retrain:
            return f"{head} → {why}; not retrained (--no-retrain)"
        return f"{head} → {why}"

    def as_json(self) -> dict[str, Any]:
        report = self.report
        return {
            "monitor_run": self.monitor.run_id,
            "status": self.monitor.status,
            "exit_code": self.exit_code,
            "line": self.line(),
            "report": report.summary() if report is not None else None,
            "retrain_run": self.retrain.run_id if self.retrain else None,
            "retrain_status": self.retrain.status if self.retrain else None,
            "held": self.held,
        }


def window_overrides(since: str | None, last: int | None, batch: str | Path | None) -> dict[str, Any]:
    """The monitor step's options the command-line flags set (checked here, one line each)."""
    if since is not None and last is not None:
        raise UsageError("--since and --last: give one window, not both")
    out: dict[str, Any] = {}
    if since is not None:
        try:
            parse_duration(since)
        except ValueError:
            raise UsageError(f"--since {since}: {EXPECTED}") from None
        out["window"] = {"since": since}
    if last is not None:
        if last < 1:
            raise UsageError(f"--last {last}: expected a number of records ≥ 1")
        out["window"] = {"last": last}
    if batch is not None:
        path = Path(batch)
        if not path.is_file():
            raise UsageError(f"--batch {batch}: file not found")
        out["batch"] = str(path.resolve())
    return out


def _with_flags(recipe: Recipe, flags: dict[str, Any]) -> Recipe:
    if recipe.monitor is None:
        where = f"{recipe.source}: " if recipe.source else ""
        raise UsageError(f"{where}the recipe has no monitor step (add 'monitor: {{use: ...}}')")
    if not flags:
        return recipe
    data = recipe.to_dict()
    data["monitor"] = {**data["monitor"], **flags}
    # Marked as overridden: a plugin's complaint about them names no line of the recipe file.
    done = set(recipe.overridden) | {("monitor", key) for key in flags}
    try:
        return Recipe.from_dict(data, overridden=done).with_source(recipe.source)
    except RecipeError as exc:
        raise UsageError(f"{_flag_names(flags)}: {exc.message}") from None


def _as_flag_error(exc: RecipeError, flags: dict[str, Any]) -> RecipeError | UsageError:
    """A plugin's complaint about an option a flag set, as a complaint about the flag."""
    for key in flags:
        if exc.file == "--set" and (exc.field or "").startswith(f"monitor.{key}"):
            return UsageError(f"{_flag_names({key: None})}: {exc.message}")
    return exc


def _flag_names(flags: dict[str, Any]) -> str:
    names = {"window": "--since/--last", "batch": "--batch"}
    return ", ".join(names[k] for k in flags)


def retrain_recipe(recipe: Recipe, policy: RetrainPolicy, plugins: Plugins) -> Recipe:
    """The recipe a retrain runs — every step but ``monitor``, with the policy's overrides —
    checked against ``plugins``; a mistake names the monitor's ``retrain.set``."""
    data = recipe.to_dict()
    data.pop("monitor", None)
    try:
        done = apply_overrides(data, list(policy.overrides))
        retrain = Recipe.from_dict(data, overridden=done).with_source(recipe.source)
        resolve(retrain, plugins)
        return retrain
    except (RecipeError, UsageError) as exc:
        message = exc.one_line() if isinstance(exc, RecipeError) else str(exc)
        raise RecipeError(
            f"the retrain recipe is invalid: {message.removeprefix('--set: ')}",
            field=f"{policy.source}.set",
            file=str(recipe.source) if recipe.source else None,
        ) from None


def monitor(
    recipe: Recipe | str | Path,
    *,
    since: str | None = None,
    last: int | None = None,
    batch: str | Path | None = None,
    no_retrain: bool = False,
    overrides: list[str] | None = None,
    project: str | Path | None = None,
    plugins: Plugins | None = None,
    extra_plugins: dict[str, object] | None = None,
    retrain_plugins: Plugins | None = None,
    retrain_wrapper: Callable[[Callable[[], RunResult]], RunResult] | None = None,
) -> MonitorResult:
    """Run ``recipe``'s monitor step alone; on drift, retrain as its policy allows.

    Everything is checked before anything runs — the recipe, the flags and the retrain recipe
    (the monitor's ``retrain`` overrides applied): a mistake raises ``UsageError``/``RecipeError``.

    :param since: the window, a duration (``6h``); or ``last``, a number of records.
    :param batch: a file to compare instead of the deployment's prediction log.
    :param no_retrain: report drift (exit 3) without retraining.
    :param retrain_plugins: the plugins the retrain runs with (default: ``plugins``), so that a
        caller can watch it with a reporter the quiet monitor run does not get.
    :param retrain_wrapper: called with a function that runs the retrain (once the guards let it)
        and returns what that function returns: an orchestrator runs the retrain inside a unit of
        its own (the ``prefect`` plugin's scheduled monitor: a subflow).
    """
    flags = window_overrides(since, last, batch)
    recipe = _with_flags(_as_recipe(recipe, overrides), flags)
    with on_path(_recipe_dir(recipe)):
        loaded = _plugins(plugins, extra_plugins)
        try:
            resolved = resolve(recipe, loaded)
        except RecipeError as exc:
            raise _as_flag_error(exc, flags) from None
        step = resolved.step("monitor")
        assert step is not None
        policy = step.options.retrain_policy()
        retrain = None
        if policy is not None:
            retrain = retrain_recipe(recipe, policy, retrain_plugins or loaded)
        store = RunStore(Path(project).resolve() if project else find_project())
        run = _monitor_run(resolved, store)
        result = MonitorResult(run, no_retrain=no_retrain)
        report = result.report
        if run.status != "rejected" or report is None or not report.retrain or no_retrain or retrain is None:
            return result
        assert policy is not None
        return _maybe_retrain(result, retrain, policy, store, retrain_plugins or loaded, retrain_wrapper)


def _context(resolved: Resolved, store: RunStore, links: dict[str, Any] | None = None) -> RunContext:
    return RunContext(
        run_id=new_run_id(),
        recipe=resolved.recipe,
        project_dir=store.project_dir,
        recipe_dir=resolved.recipe_dir,
        store=store,
        trackers=dict(resolved.trackers),
        links=dict(links or {}),
        steps={s.stage: (s.plugin, s.options) for s in resolved.steps},
        plugins=resolved.plugins,
        secrets=resolved.secrets,
    )


def _monitor_run(resolved: Resolved, store: RunStore) -> RunResult:
    step = resolved.step("monitor")
    assert step is not None
    context = _context(resolved, store)
    step.options.ready(context)  # a missing deployment: one line, exit 2, no run recorded
    plan = RunPlan(dataclasses.replace(resolved, steps=[step]), context, use_cache=False)
    plan.manifest.kind = KIND
    return _execute(plan)


def _drifted(manifest: Manifest) -> bool:
    for stage in manifest.stages:
        if stage.name == "monitor":
            return bool((stage.summary or {}).get("drift_detected"))
    return False


def _started(manifest: Manifest) -> float:
    try:
        return datetime.fromisoformat(manifest.started).timestamp()
    except ValueError:
        return 0.0


def _hold(store: RunStore, name: str, policy: RetrainPolicy) -> str | None:
    """Why no retrain may start now, or ``None``."""
    runs = [m for m in store.list_runs() if m.recipe_name == name]
    if policy.after > 1:
        monitors = [m for m in runs if m.kind == KIND and m.status in ("succeeded", "rejected")]
        streak = 0
        for manifest in monitors[: policy.after]:
            if not _drifted(manifest):
                break
            streak += 1
        if streak < policy.after:
            return f"{streak} of {policy.after} consecutive monitor runs drifted (retrain.after)"
    if policy.cooldown > 0:
        retrains = [m for m in runs if m.get("trigger")]
        if retrains:
            last = max(retrains, key=_started)
            left = policy.cooldown - (time.time() - _started(last))
            if left > 0:
                return f"retrain {last.run_id} started less than the cooldown ago ({_human(left)} left)"
    return None


def _human(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def _maybe_retrain(
    result: MonitorResult,
    recipe: Recipe,
    policy: RetrainPolicy,
    store: RunStore,
    plugins: Plugins,
    wrapper: Callable[[Callable[[], RunResult]], RunResult] | None = None,
) -> MonitorResult:
    name = result.monitor.manifest.recipe_name
    result.held = _hold(store, name, policy)
    if result.held:
        return result
    lock = store.root / "locks" / f"retrain-{name}.lock"
    try:
        with file_lock(lock, blocking=False):
            result.held = _hold(store, name, policy)  # another retrain may have ended meanwhile
            if result.held:
                return result

            def start() -> RunResult:
                return _retrain_run(result, recipe, policy, store, plugins)

            result.retrain = wrapper(start) if wrapper is not None else start()
    except BlockingIOError:
        result.held = f"a retrain of '{name}' is already running"
        return result
    with file_lock(store.run_dir(result.monitor.run_id) / ".manifest.lock"):  # the plan's own lock
        manifest = store.read_manifest(result.monitor.run_id)
        manifest.links["retrain_run"] = result.retrain.run_id
        store.write_manifest(result.monitor.run_id, manifest)
    result.monitor.manifest.links["retrain_run"] = result.retrain.run_id
    return result


def _retrain_run(
    result: MonitorResult, recipe: Recipe, policy: RetrainPolicy, store: RunStore, plugins: Plugins
) -> RunResult:
    resolved = resolve(recipe, plugins)
    context = _context(resolved, store, {"monitor_run": result.monitor.run_id})
    plan = RunPlan(resolved, context, use_cache=True, overrides=list(policy.overrides))
    report = result.report
    trigger = {
        "monitor_run": result.monitor.run_id,
        "drift_share": report.metrics.get("drift_share") if report else None,
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    setattr(plan.manifest, "trigger", trigger)  # noqa: B010 — an extra field of the typed manifest
    return _execute(plan)
