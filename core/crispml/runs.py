"""The Python API for running recipes: ``crispml.run``, ``crispml.resume``, ``crispml.check``."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

from crispml._isolation import isolate
from crispml._process import ProcessIdentity
from crispml._redact import masked_fields
from crispml.check_cache import resolve_checked
from crispml.context import RunContext
from crispml.errors import EXIT_FAILED, EXIT_REJECTED, EXIT_SUCCEEDED, UsageError
from crispml.manifest import Manifest, StageRecord
from crispml.plan import DONE, RunPlan
from crispml.plugins import Plugins, get_plugins
from crispml.recipe import Recipe
from crispml.resolve import Resolved, on_path
from crispml.results import Result
from crispml.store import RunStore, find_project, new_run_id

_EXIT = {"succeeded": EXIT_SUCCEEDED, "rejected": EXIT_REJECTED, "failed": EXIT_FAILED}


@dataclass
class RunResult:
    """What a run produced: its id, outcome, each stage's result and the manifest."""

    run_id: str
    status: str
    results: dict[str, Result]
    manifest: Manifest
    run_dir: Path
    error: BaseException | None = field(default=None, repr=False)

    @property
    def exit_code(self) -> int:
        return _EXIT[self.status]

    @property
    def stage_status(self) -> dict[str, str]:
        return self.manifest.stage_status

    def __getitem__(self, output: str) -> Result:
        """A result by its output name: ``dataset``, ``model``, ``evaluation``…

        A result another process produced (a runner's worker) is read from the run store."""
        if output not in self.results:
            from crispml.stages import PRODUCER

            stage = PRODUCER.get(output)
            stored = RunStore(self.run_dir.parents[2]).load_result(self.run_id, stage) if stage else None
            if stored is None:
                raise KeyError(output)
            self.results[output] = stored
        return self.results[output]


def _as_recipe(recipe: Recipe | str | Path, overrides: list[str] | None) -> Recipe:
    if isinstance(recipe, Recipe):
        if overrides:
            from crispml.recipe import apply_overrides

            data = recipe.to_dict()
            done = apply_overrides(data, overrides)
            return Recipe.from_dict(data, overridden=done).with_source(recipe.source)
        return recipe
    return Recipe.from_yaml(recipe, overrides=overrides)


def _plugins(plugins: Plugins | None, extra: dict[str, object] | None) -> Plugins:
    pl = plugins or get_plugins()
    for name, obj in (extra or {}).items():
        if pl.get(name) is None:
            pl.register(obj, name, source="registered")
    return pl


def check(
    recipe: Recipe | str | Path,
    *,
    overrides: list[str] | None = None,
    plugins: Plugins | None = None,
    extra_plugins: dict[str, object] | None = None,
) -> Resolved:
    """Validate a recipe against the installed plugins without running anything."""
    recipe = _as_recipe(recipe, overrides)
    with on_path(_recipe_dir(recipe)):
        return resolve_checked(recipe, _plugins(plugins, extra_plugins), find_project())


def run(
    recipe: Recipe | str | Path,
    *,
    overrides: list[str] | None = None,
    use_cache: bool = True,
    project: str | Path | None = None,
    plugins: Plugins | None = None,
    extra_plugins: dict[str, object] | None = None,
) -> RunResult:
    """Check and run a recipe. A failed gate or a failed stage is an outcome, not an exception:
    read ``RunResult.status``. Only a recipe error (nothing ran) raises ``RecipeError``.

    :param recipe: a ``Recipe``, or the path of a recipe YAML file.
    :param overrides: ``key.path=value`` strings, as ``--set`` takes them.
    :param use_cache: ``False`` re-runs every stage (``--no-cache``).
    :param project: the folder whose ``.crispml/`` holds the run (default: found from the cwd).
    :param extra_plugins: plugin objects to register for this run, by name.
    """
    recipe = _as_recipe(recipe, overrides)
    with on_path(_recipe_dir(recipe)):
        return _run(recipe, overrides, use_cache, project, _plugins(plugins, extra_plugins))


def _recipe_dir(recipe: Recipe) -> Path:
    return (recipe.source.parent if recipe.source else Path.cwd()).resolve()


def _run(
    recipe: Recipe, overrides: list[str] | None, use_cache: bool, project: str | Path | None, plugins: Plugins
) -> RunResult:
    return _execute(_new_plan(recipe, overrides, use_cache, project, plugins))


def _new_plan(
    recipe: Recipe, overrides: list[str] | None, use_cache: bool, project: str | Path | None, plugins: Plugins
) -> RunPlan:
    store = RunStore(Path(project).resolve() if project else find_project())
    resolved = lifecycle_steps(resolve_checked(recipe, plugins, store.project_dir, reuse=use_cache, run=True))
    isolate(store.project_dir, plugins)
    context = RunContext(
        run_id=new_run_id(),
        recipe=recipe,
        project_dir=store.project_dir,
        recipe_dir=resolved.recipe_dir,
        store=store,
        trackers=dict(resolved.trackers),
        steps={s.stage: (s.plugin, s.options) for s in resolved.steps},
        plugins=plugins,
        secrets=resolved.secrets,
    )
    return RunPlan(resolved, context, use_cache=use_cache, overrides=overrides)


def lifecycle_steps(resolved: Resolved) -> Resolved:
    """``resolved`` without its ``monitor`` step: a run of the recipe trains, registers and
    deploys; watching production traffic is a run of its own kind (``crispml monitor``), on a
    schedule of its own, which would otherwise compare a model with itself right after deploying it."""
    if resolved.step("monitor") is None:
        return resolved
    return dataclasses.replace(resolved, steps=[s for s in resolved.steps if s.stage != "monitor"])


def resume(
    run_id: str,
    *,
    project: str | Path | None = None,
    plugins: Plugins | None = None,
    extra_plugins: dict[str, object] | None = None,
) -> RunResult:
    """Continue a failed or interrupted run from its first unfinished stage, under the same id."""
    store = RunStore(Path(project).resolve() if project else find_project())
    manifest = store.read_manifest(run_id)
    if manifest.status in ("succeeded", "rejected"):
        raise UsageError(f"run '{run_id}' already ended {manifest.status}: nothing to resume")
    if manifest.status == "running" and _busy(manifest):
        raise UsageError(f"run '{run_id}' is still running (pid {_busy(manifest)})")
    recipe = stored_recipe(run_id, manifest, "resumed")
    with on_path(Path(manifest.recipe_dir)):
        return _resume(run_id, manifest, recipe, store, _plugins(plugins, extra_plugins))


def stored_recipe(run_id: str, manifest: Manifest, doing: str) -> Recipe:
    """The recipe a stored run ran, to carry it on (``doing``: "resumed", ...)."""
    masked = masked_fields(manifest.recipe)
    if masked:
        raise UsageError(
            f"run '{run_id}' had secrets written into its recipe ({masked[0]} is masked in its manifest), "
            f"so it cannot be {doing}: write secrets as ${{env:NAME}} and run the recipe again"
        )
    return Recipe.from_dict(manifest.recipe).with_source(Path(manifest.recipe_file) if manifest.recipe_file else None)


def stored_plan(
    run_id: str, manifest: Manifest, recipe: Recipe, store: RunStore, plugins: Plugins, *, resumed: bool
) -> RunPlan:
    """A plan over a run already in the store (call inside ``on_path(manifest.recipe_dir)``)."""
    resolved = resolve_checked(recipe, plugins, store.project_dir, reuse=manifest.use_cache, run=True)
    if manifest.kind == "monitor":
        resolved = dataclasses.replace(resolved, steps=[s for s in resolved.steps if s.stage == "monitor"])
    else:
        resolved = lifecycle_steps(resolved)
    isolate(store.project_dir, plugins)
    context = RunContext(
        run_id=run_id,
        recipe=recipe,
        project_dir=store.project_dir,
        recipe_dir=Path(manifest.recipe_dir),
        store=store,
        trackers=dict(resolved.trackers),
        links=dict(manifest.links),
        resumed=resumed,
        steps={s.stage: (s.plugin, s.options) for s in resolved.steps},
        plugins=plugins,
        secrets=resolved.secrets,
    )
    return RunPlan(resolved, context, use_cache=manifest.use_cache, manifest=manifest)


def _resume(run_id: str, manifest: Manifest, recipe: Recipe, store: RunStore, plugins: Plugins) -> RunResult:
    for record in manifest.stages:
        if record.status not in DONE:
            record.status, record.error = "pending", None
    manifest.status, manifest.ended, manifest.error, manifest.rejection = "running", None, None, None
    manifest.pid, manifest.pid_created = os.getpid(), ProcessIdentity.current().created
    manifest.resumes += 1
    return _execute(stored_plan(run_id, manifest, recipe, store, plugins, resumed=True))


def _alive(holder: Manifest | StageRecord) -> bool:
    """Is the process a manifest (or a running stage's record) names still running? The pid and
    its start time must both match: a pid recycled for another process (after a reboot, say) is
    not the run. Records written before start times were kept are judged by the pid alone."""
    import socket

    if holder.host != socket.gethostname():
        return True  # cannot tell from here: assume it is
    try:
        created = holder.pid_created
        identity = ProcessIdentity(int(holder.pid), float(created) if created is not None else None)  # type: ignore[arg-type]
    except (ValueError, TypeError):
        return False
    return identity.alive()


def _busy(manifest: Manifest) -> int | None:
    """The pid of a live process of the run — the one that started it, or one running one of
    its stages (a runner's worker) — else ``None``."""
    holders: list[Manifest | StageRecord] = [manifest, *(r for r in manifest.stages if r.status == "running")]
    return next((int(h.pid) for h in holders if h.pid is not None and _alive(h)), None)


def run_state(manifest: Manifest) -> str:
    """The status to show for a manifest: ``interrupted`` for a run whose processes are gone."""
    status = manifest.status
    if status == "running" and not _busy(manifest):
        return "interrupted"
    return status


def _execute(plan: RunPlan) -> RunResult:
    resolved = plan.resolved
    try:
        plan.start()
        status = plan.plugins.call_only("crispml_execute", resolved.runner, plan=plan, options=resolved.runner_options)
    except Exception as exc:
        if plan.error is None:
            plan.error = exc
        status = None
    status = plan.finish() if status is None or plan.manifest.status == "running" else status
    return result_of(plan, status)


def result_of(plan: RunPlan, status: str) -> RunResult:
    return RunResult(
        run_id=plan.context.run_id,
        status=status,
        results=plan.results,
        manifest=plan.context.secrets.manifest(plan.manifest),  # as written: secrets masked
        run_dir=plan.context.run_dir,
        error=plan.error,
    )
