"""Checking a recipe against the installed plugins, before anything runs.

``resolve`` turns a :class:`~crispml.recipe.Recipe` into a :class:`Resolved` plan: each step
bound to a loaded plugin that declares the stage, its options validated against that plugin's
model, its gate parsed. Every mistake is a :class:`~crispml.errors.RecipeError` naming the
file, the field and its YAML line — and nothing has run.
"""

from __future__ import annotations

import difflib
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from crispml._redact import ENV_REFERENCE, Redactor, annotation_is_secret
from crispml._yaml import line_of, load_with_lines
from crispml.candidates import MAX_CANDIDATES, Candidate, apply, describe, expand, grid_size
from crispml.check_cache import SKIP_BACKEND_CHECKS
from crispml.declarations import Backend, Declaration, Options
from crispml.errors import MissingBackendError, PluginError, RecipeError, clip
from crispml.gates import Gate
from crispml.plugins import Plugins
from crispml.recipe import Recipe, Select, Step, describe_error
from crispml.stages import BY_NAME


@dataclass
class ResolvedStep:
    stage: str
    plugin: str
    options: Options
    gates: list[Gate] = field(default_factory=list)
    cache: bool = True
    candidates: list[Candidate] = field(default_factory=list)
    """The step's checked candidates (``grid:`` or ``candidates:``); empty for a plain step."""
    select: Select | None = None
    """Which candidate wins (set whenever ``candidates`` is)."""


@dataclass
class Resolved:
    recipe: Recipe
    recipe_dir: Path
    steps: list[ResolvedStep]
    trackers: dict[str, BaseModel]
    runner: str
    runner_options: BaseModel
    plugins: Plugins
    secrets: Redactor = field(default_factory=Redactor)
    """What this recipe's options hold that must not be written down (``crispml._redact``)."""

    def step(self, stage: str) -> ResolvedStep | None:
        return next((s for s in self.steps if s.stage == stage), None)

    def backend_distributions(self) -> list[str]:
        names = {s.plugin for s in self.steps} | set(self.trackers) | {self.runner}
        return [b.distribution for n in names for b in self.plugins.declaration(n).backends]


@contextmanager
def on_path(folder: Path) -> Iterator[None]:
    """Make modules next to the recipe importable while it is checked and run: ``plugins: [steps]``
    finds ``steps.py``, ``estimator: mymodels.Mine`` finds ``mymodels.py``, and cached results
    that pickled their classes load again."""
    entry = str(folder)
    added = entry not in sys.path
    if added:
        sys.path.insert(0, entry)
    try:
        yield
    finally:
        if added and entry in sys.path:
            sys.path.remove(entry)


class _Locator:
    """Turns a field path into ``file:line`` using the recipe's YAML, when there is one."""

    def __init__(self, recipe: Recipe) -> None:
        self.source = recipe.source
        self.file = str(recipe.source) if recipe.source else None
        self.overridden = recipe.overridden

    def _lines(self) -> dict[tuple[str | int, ...], int]:
        # Parsed only when there is an error to place: a valid recipe never pays for it.
        if self.source is None or not self.source.is_file():
            return {}
        try:
            return load_with_lines(self.source.read_text())[1]
        except Exception:
            return {}

    def error(self, path: tuple[Any, ...], message: str, *, backend: Backend | None = None) -> RecipeError:
        """A recipe error at ``path``; a :class:`MissingBackendError` when ``backend`` is missing."""
        field = tuple(str(p) for p in path)
        file: str | None
        line: int | None
        if any(field[: len(o)] == o or o[: len(field)] == field for o in self.overridden):
            file, line = "--set", None
        else:
            lines = self._lines()
            file, line = self.file, (line_of(lines, path) if lines else None)
        if backend is not None:
            return MissingBackendError(message, backend=backend, field=".".join(field), file=file, line=line)
        return RecipeError(message, field=".".join(field), file=file, line=line)


def _validate_options(
    model: type[BaseModel],
    data: dict[str, Any],
    prefix: tuple[Any, ...],
    where: _Locator,
    base_dir: Path,
    earlier: dict[str, Options] | None = None,
    secrets: Redactor | None = None,
    checks: bool = True,
) -> Any:
    # Validators read ``info.context``: ``base_dir`` (the recipe's folder) and ``steps`` (the
    # options of the steps validated before this one, by stage), so that e.g. a validate step
    # can check its columns against the file the load step reads, before anything runs.
    # ``checks=False`` skips the validators marked ``backend_check`` (``crispml.check_cache``).
    context: dict[str, Any] = {"base_dir": base_dir, "steps": dict(earlier or {})}
    if not checks:
        context[SKIP_BACKEND_CHECKS] = True
    known = Redactor()
    expanded = _expand_env(data, prefix, where, known)
    try:
        options = model.model_validate(expanded, context=context)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(err["loc"])
        # The value of a declared-secret field is never echoed; one read from ${env:NAME} is
        # shown as its reference (``known.text``).
        msg = describe_error(err, show_input=not _declared_secret(model, loc))
        if err.get("type") == "extra_forbidden" and loc:
            known_fields = sorted(model.model_fields)
            near = difflib.get_close_matches(str(loc[-1]), known_fields, n=1)
            hint = f"did you mean '{near[0]}'? " if near else ""
            msg = f"unknown option ({hint}expected one of: {', '.join(known_fields)})"
        # A validator may name another step's option (the file the load step reads): mask
        # what every step validated so far holds, not only this one.
        shown = Redactor()
        shown.merge(known)
        if secrets is not None:
            shown.merge(secrets)
        raise where.error((*prefix, *loc), shown.text(msg)) from None
    known.learn_options(options, data, tuple(str(p) for p in prefix))
    if secrets is not None:
        secrets.merge(known)
    return options


def _declared_secret(model: type[BaseModel], loc: tuple[Any, ...]) -> bool:
    """Whether the options field an error points at (its top-level field) is declared secret."""
    if not loc:
        return False
    fields = model.model_fields
    info = fields.get(str(loc[0])) or next((f for f in fields.values() if f.alias == loc[0]), None)
    return info is not None and annotation_is_secret(info.annotation)


def _expand_env(value: Any, path: tuple[Any, ...], where: _Locator, known: Redactor) -> Any:
    """Replace ``${env:NAME}`` in option strings, so secrets stay out of recipe files.

    The recipe (and so the run manifest) keeps the ``${env:NAME}`` form; only the validated
    options a plugin receives hold the value. ``known`` learns each value, so that whatever is
    written down or printed shows the reference instead.
    """
    if isinstance(value, dict):
        return {k: _expand_env(v, (*path, k), where, known) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_env(v, (*path, i), where, known) for i, v in enumerate(value)]
    if isinstance(value, str) and "${env:" in value:

        def lookup(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in os.environ:
                raise where.error(path, f"environment variable {name} is not set (used as ${{env:{name}}})")
            known.add_env(name, os.environ[name])
            return os.environ[name]

        expanded = ENV_REFERENCE.sub(lookup, value)
        if expanded != value and ENV_REFERENCE.fullmatch(value) is None:
            known.add(expanded, value)  # "postgresql://u:${env:PW}@h" is written as the user wrote it
        return expanded
    return value


def _plugin_for(plugins: Plugins, name: str, path: tuple[Any, ...], where: _Locator, what: str) -> None:
    if name in plugins.names():
        return
    broken = plugins.infos.get(name)
    if broken is not None and broken.error:
        raise where.error(path, f"plugin '{name}' is installed but failed to load: {broken.error}")
    useful = [n for n in plugins.names() if plugins.declaration(n) != Declaration()]
    installed = ", ".join(sorted(useful)) or "none"
    near = difflib.get_close_matches(name, useful, n=1)
    hint = f"did you mean '{near[0]}'? " if near else ""
    raise where.error(path, f"no plugin named '{name}' {what}; {hint}installed: {installed}")


def _check_stratify(recipe: Recipe, steps: list[ResolvedStep], where: _Locator) -> None:
    """``split.stratify`` must name a column of the loaded data, when the load step can say
    which columns that will be (a mistake here would otherwise surface mid-run)."""
    stratify = recipe.split.stratify if recipe.split is not None else None
    load = next((s for s in steps if s.stage == "load"), None)
    if stratify is None or load is None:
        return
    provided = load.options.provided_columns()
    columns = provided[0] if provided is not None else None
    if columns is not None and stratify not in columns:
        near = difflib.get_close_matches(stratify, columns, n=1)
        hint = f"did you mean '{near[0]}'? " if near else ""
        # Only the number of columns, not their names: the load step may read any file on the
        # machine, and its first line is not ours to print.
        raise where.error(
            ("split", "stratify"),
            f"column '{clip(stratify)}' is not in the data the load step reads "
            f"({hint}it has {len(columns)} columns: see load.target's columns or the file's header)",
        )


def _candidates(
    stage: str,
    step: Step,
    model: type[Options],
    where: _Locator,
    recipe_dir: Path,
    earlier: list[ResolvedStep],
    secrets: Redactor,
) -> list[Candidate]:
    """Check a step's ``grid:`` or ``candidates:`` and validate each candidate's options like the
    step's own: a mistake in any candidate is a recipe error before anything runs."""
    if step.grid is None and step.candidates is None:
        if step.select is not None:
            raise where.error((stage, "select"), "select needs candidates to choose from (add grid: or candidates:)")
        return []
    field_name = "grid" if step.grid is not None else "candidates"
    if stage != "train":
        raise where.error((stage, field_name), f"only the train step takes candidates, not the {stage} step")
    if step.grid is not None and step.candidates is not None:
        raise where.error((stage, "candidates"), "give either grid: or candidates:, not both")
    if step.grid is not None:
        for key, values in step.grid.items():
            _check_option_path(model, key, (stage, "grid", key), where, step.use)
            if not values:
                raise where.error((stage, "grid", key), "expected a non-empty list of values")
        count = grid_size(step.grid)
    else:
        count = len(step.candidates or [])
        if count == 0:
            raise where.error((stage, "candidates"), "expected a non-empty list of candidates")
    if count > MAX_CANDIDATES:
        raise where.error(
            (stage, field_name), f"{count:,} candidates; a step tries at most {MAX_CANDIDATES} (max_candidates)"
        )
    overrides = expand(step.grid) if step.grid is not None else list(step.candidates or [])
    out = []
    for i, override in enumerate(overrides, start=1):
        path: tuple[Any, ...] = (stage, "grid") if step.grid is not None else (stage, "candidates", i - 1)
        if step.grid is None:
            for key in override:
                _check_option_path(model, str(key), (*path, key), where, step.use)
        try:
            raw = apply(step.options, override)
        except ValueError as exc:
            raise where.error(path, f"candidate {i} ({describe(override)}): {exc}") from None
        try:
            options = _validate_options(
                model, raw, (stage,), where, recipe_dir, {s.stage: s.options for s in earlier}, secrets
            )
        except RecipeError as exc:
            # Named by the candidate, at the grid (or list entry) that made it.
            raise where.error(path, f"candidate {i} ({describe(override)}): {exc.field}: {exc.message}") from None
        _mask_candidate_secrets(options, raw, override, path, secrets)
        out.append(Candidate(i, dict(override), raw, options))
    return out


def _mask_candidate_secrets(
    options: Options, raw: dict[str, Any], override: dict[str, Any], path: tuple[Any, ...], secrets: Redactor
) -> None:
    """A declared-secret option a candidate sets is masked where the recipe spells it
    (``train.candidates.0.token``, or a grid key's whole list of values): the manifest keeps
    the recipe by path, and ``train.token`` is not where a candidate writes it."""
    probe = Redactor()
    probe.learn_options(options, raw, ())
    for key in override:
        parts = tuple(str(key).split("."))
        for secret in probe.secret_paths:
            if secret[: len(parts)] == parts or parts[: len(secret)] == secret:
                if path[1] == "grid":
                    secrets.add_path((*path, key))
                else:
                    secrets.add_path((*path, key, *secret[len(parts) :]))


def _check_option_path(model: type[Options], key: str, path: tuple[Any, ...], where: _Locator, plugin: str) -> None:
    """A candidate's option path must start at an option of the step."""
    fields = {n: f for n, f in model.model_fields.items()}
    names = set(fields) | {f.alias for f in fields.values() if f.alias}
    head = key.split(".")[0]
    if head in names:
        return
    near = difflib.get_close_matches(head, sorted(names), n=1)
    hint = f"did you mean '{near[0]}'? " if near else ""
    raise where.error(
        path,
        f"'{clip(head)}' is no option of plugin '{plugin}' for this step "
        f"({hint}its options: {', '.join(sorted(names)) or 'none'})",
    )


def _check_select(steps: list[ResolvedStep], where: _Locator) -> None:
    """``select`` must name a metric the evaluate step computes (when it says which)."""
    for step in steps:
        if not step.candidates:
            continue
        if step.select is None:
            raise where.error(
                (step.stage, "select"),
                "missing: name the evaluate metric that picks the best candidate (e.g. select: roc_auc)",
            )
        evaluate = next((s for s in steps if s.stage == "evaluate"), None)
        if evaluate is None:
            raise where.error((step.stage, "select"), "candidates are compared by the evaluate step: add one")
        provided = evaluate.options.provided_metrics()
        if provided is not None and step.select.metric not in provided:
            raise where.error(
                (step.stage, "select"),
                f"metric '{clip(step.select.metric)}' is not computed by the evaluate step "
                f"(it computes: {', '.join(provided) or 'nothing'})",
            )


def resolve(recipe: Recipe, plugins: Plugins, *, checks: bool = True) -> Resolved:
    """Bind and validate every step of ``recipe``; raise a ``RecipeError`` on the first mistake.

    ``checks=False`` leaves out what needs a backend (validators marked ``backend_check``, the
    split's column against the load step's): for a recipe whose full check passed before
    (``crispml.check_cache``), so that nothing imports a backend.
    """
    where = _Locator(recipe)
    secrets = Redactor()
    recipe_dir = (recipe.source.parent if recipe.source else Path.cwd()).resolve()

    with on_path(recipe_dir):
        for i, module in enumerate(recipe.plugins):
            try:
                plugins.load_modules([module])
            except PluginError as exc:
                raise where.error(("plugins", i), str(exc)) from None
            except Exception as exc:
                raise where.error(
                    ("plugins", i), f"cannot import module '{module}': {type(exc).__name__}: {exc}"
                ) from None

    present = {stage for stage, _ in recipe.steps()}
    steps: list[ResolvedStep] = []
    for stage, step in recipe.steps():
        spec = BY_NAME[stage]
        missing = [r for r in spec.requires if r not in present]
        if missing:
            raise where.error((stage,), f"stage '{stage}' needs a '{missing[0]}' step in the recipe")
        _plugin_for(plugins, step.use, (stage, "use"), where, "is installed")
        decl = plugins.declaration(step.use)
        if stage not in decl.stages:
            offers = ", ".join(sorted(decl.stages)) or "no stages"
            providers = ", ".join(plugins.providers(stage)) or "none installed"
            raise where.error(
                (stage, "use"),
                f"plugin '{step.use}' does not provide stage '{stage}' (it provides: {offers}; "
                f"plugins that provide '{stage}': {providers})",
            )
        for backend in decl.missing_backends():
            raise where.error(
                (stage, "use"),
                f"plugin '{step.use}' needs {backend.distribution}, which is not installed: {backend.install_hint()}",
                backend=backend,
            )
        options = _validate_options(
            decl.stages[stage],
            step.options,
            (stage,),
            where,
            recipe_dir,
            {s.stage: s.options for s in steps},
            secrets,
            checks,
        )
        gates = []
        for metric, expression in step.gate.items():
            try:
                gates.append(Gate.parse(metric, expression))
            except ValueError as exc:
                raise where.error((stage, "gate", metric), str(exc)) from None
        provided = options.provided_metrics()
        if provided is not None:
            for gate in gates:
                if gate.metric not in provided:
                    raise where.error(
                        (stage, "gate", gate.metric),
                        f"metric '{gate.metric}' is not computed by this step "
                        f"(it computes: {', '.join(provided) or 'nothing'})",
                    )
        candidates = _candidates(stage, step, decl.stages[stage], where, recipe_dir, steps, secrets)
        steps.append(ResolvedStep(stage, step.use, options, gates, step.cache, candidates, step.select))

    _check_select(steps, where)
    if checks:
        _check_stratify(recipe, steps, where)

    trackers: dict[str, BaseModel] = {}
    for name, raw in recipe.tracking.items():
        _plugin_for(plugins, name, ("tracking", name), where, "is installed")
        decl = plugins.declaration(name)
        if decl.tracker is None:
            raise where.error(("tracking", name), f"plugin '{name}' is not a tracker")
        for backend in decl.missing_backends():
            raise where.error(
                ("tracking", name),
                f"tracker '{name}' needs {backend.distribution}: {backend.install_hint()}",
                backend=backend,
            )
        trackers[name] = _validate_options(
            decl.tracker, raw, ("tracking", name), where, recipe_dir, secrets=secrets, checks=checks
        )

    runner = recipe.runner.use
    _plugin_for(plugins, runner, ("runner",), where, "is installed")
    rdecl = plugins.declaration(runner)
    if rdecl.runner is None:
        raise where.error(("runner",), f"plugin '{runner}' is not a runner")
    for backend in rdecl.missing_backends():
        raise where.error(
            ("runner",), f"runner '{runner}' needs {backend.distribution}: {backend.install_hint()}", backend=backend
        )
    # The runner sees the steps too (``info.context["steps"]``): per-stage options name stages.
    runner_options = _validate_options(
        rdecl.runner,
        recipe.runner.options,
        ("runner",),
        where,
        recipe_dir,
        {s.stage: s.options for s in steps},
        secrets,
        checks,
    )
    return Resolved(recipe, recipe_dir, steps, trackers, runner, runner_options, plugins, secrets)
