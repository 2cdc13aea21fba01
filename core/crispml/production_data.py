"""Production data through the recipe's validate step: ``crispml validate-data``.

The window a deployment answered (through ``crispml_deployment`` and the prediction-log
contract, never the serving plugin's files) becomes a :class:`~crispml.Dataset` that names the
training target without having its column — production data has no labels — and the recipe's
validate step checks it as it checked the training data (expectations on the target are the
validate plugin's to skip). The window holds the model's features and the training data's key
columns the requests carried (serving by key: the request sends ``customer_id``, the log records
it with the features fetched), so a suite's expectations on the keys hold for it too. A monitor
step's ``validate: true`` builds the same Dataset (:func:`window_frame`, :func:`window_dataset`)
and applies the step through ``context.apply_step``.

``validate-data`` is a run of its own kind (``kind: validate-data``): stored, tracked, its report
under the run's ``artifacts/validate/``; its plan holds the validate step alone, fed the window
instead of a load result, on the local runner (one stage in this process needs no orchestration).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from crispml._isolation import isolate
from crispml.durations import parse_duration
from crispml.errors import EXIT_SUCCEEDED, UsageError
from crispml.manifest import ProductionWindow
from crispml.models import deployment as find_deployment
from crispml.plan import RunPlan
from crispml.plugins import Plugins
from crispml.recipe import Recipe
from crispml.resolve import on_path, resolve
from crispml.results import Dataset, Deployment, ValidationReport
from crispml.runs import RunResult, _as_recipe, _execute, _plugins, _recipe_dir
from crispml.store import RunStore, find_project

KIND = "validate-data"


def window_frame(records: list[dict[str, Any]]) -> Any:
    """A DataFrame of prediction records (``crispml.prediction_records``): one row per record,
    what the request sent (``inputs``: the features, or only the entity keys when serving by
    key) with what was fetched for it (``features``, a feature store's)."""
    import pandas as pd

    return pd.DataFrame.from_records([{**(r.get("inputs") or {}), **(r.get("features") or {})} for r in records])


def window_dataset(
    frame: Any,
    target: str | None,
    label: str,
    *,
    features: list[str] | None = None,
    key_columns: tuple[str, ...] | list[str] = (),
) -> Dataset:
    """Production rows as a Dataset for a validate step: ``target`` names the training target
    (absent from production data), ``label`` the deployment or batch they came from.

    With ``features`` (the served model's columns), the window keeps the training data's
    ``key_columns`` the rows have — the entity keys a request served by key carries — then those
    features, and drops the rest (a monitor's ``prediction``, request fields the model ignores):
    a suite written for the training data, which has the keys, then checks the keys too. A
    feature the rows lack stays missing: that is the suite's finding. Without ``features``,
    every column is kept. The Dataset's own ``key_columns`` are the keys it kept.
    """
    import pandas as pd

    keys = [c for c in key_columns if c in frame.columns and (features is None or c not in features)]
    if features is not None:
        frame = frame[[*keys, *(c for c in features if c in frame.columns)]]
    frame = frame.reset_index(drop=True)
    fingerprint = format(int(pd.util.hash_pandas_object(frame, index=False).sum()) & (2**64 - 1), "016x")
    return Dataset(
        frame=frame,
        target=target,
        name=f"{label} window",
        source=label,
        fingerprint=fingerprint,
        key_columns=tuple(keys),
    )


@dataclass
class ValidateDataResult:
    """The window validated, and the run that did it (``None`` when the window was empty)."""

    deployment: str
    label: str
    rows: int
    others: int
    run: RunResult | None = None

    @property
    def report(self) -> ValidationReport | None:
        found = self.run.results.get("validation") if self.run is not None else None
        return found if isinstance(found, ValidationReport) else None

    @property
    def exit_code(self) -> int:
        """0 the window passes (or is empty), 3 it fails the suite, 1 the step failed."""
        return self.run.exit_code if self.run is not None else EXIT_SUCCEEDED

    def line(self) -> str:
        """The one-line summary ``crispml validate-data`` prints."""
        head = f"{self.label} · {self.rows:,} requests"
        if self.others:
            head += f" ({self.others:,} from other versions not validated)"
        if self.run is None:
            return f"{head} · no production data in the window"
        report = self.report
        if report is None:
            error = self.run.manifest.get("error") or self.run.error
            return f"{head} · validation failed: {error} · run {self.run.run_id}"
        failed = len(report.failures)
        if failed:
            verdict = f"suite failed ({failed} of {len(report.results)}): {self.run.manifest.get('rejection')}"
        else:
            verdict = f"suite passed ({len(report.results)} expectations)"
        return f"{head} · {verdict} · run {self.run.run_id}"

    def as_json(self) -> dict[str, Any]:
        report = self.report
        return {
            "deployment": self.deployment,
            "model": self.label,
            "rows": self.rows,
            "other_versions_rows": self.others,
            "run_id": self.run.run_id if self.run else None,
            "status": self.run.status if self.run else None,
            "exit_code": self.exit_code,
            "line": self.line(),
            "report": report.summary() if report is not None else None,
        }


class _WindowPlan(RunPlan):
    """A plan of the validate step alone, fed the production window instead of a load result."""

    def __init__(self, *args: Any, window: Dataset, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._window = window

    def _inputs(self, name: str) -> dict[str, Any]:
        return {"dataset": self._window} if name == "validate" else super()._inputs(name)


def _deployment_name(recipe: Recipe, given: str | None) -> str:
    """``--deployment``, else the monitor step's ``deployment``, else the deploy step's ``name``."""
    if given:
        return given
    for stage, key in (("monitor", "deployment"), ("deploy", "name")):
        step = recipe.step(stage)
        if step is not None and step.options.get(key):
            return str(step.options[key])
    raise UsageError("--deployment: name the deployment whose requests to validate (the recipe has no deploy step)")


def _window(recipe: Recipe, since: str | None, last: int | None) -> tuple[timedelta | None, int | None]:
    """The flags' window, else the monitor step's, else the whole log."""
    from crispml.monitoring import window_overrides

    window = window_overrides(since, last, None).get("window")
    if window is None:
        monitor = recipe.step("monitor")
        configured = monitor.options.get("window") if monitor is not None else None
        window = configured if isinstance(configured, dict) else {}
    seconds = parse_duration(str(window["since"])) if window.get("since") else None
    return (timedelta(seconds=seconds) if seconds else None), window.get("last")


def _columns(
    served: Deployment, recipe: Recipe, store: RunStore
) -> tuple[list[str] | None, tuple[str, ...], str | None]:
    """The served model's feature columns, its training data's key columns and target, from its
    training run when this project's store has it; else every column of the window (keys
    included) and the recipe's ``load.target``."""
    run = served.training_run
    loaded = store.load_result(run, "load") if run and store.result_path(run, "load").is_file() else None
    if loaded is not None:
        trained = store.load_result(str(run), "train")
        features = list(trained.feature_columns) if trained is not None else list(loaded.feature_columns)
        return features, tuple(loaded.key_columns), loaded.target
    load = recipe.step("load")
    target = load.options.get("target") if load is not None else None
    return None, (), str(target) if target else None


def validate_data(
    recipe: Recipe | str | Path,
    *,
    deployment: str | None = None,
    since: str | None = None,
    last: int | None = None,
    overrides: list[str] | None = None,
    project: str | Path | None = None,
    plugins: Plugins | None = None,
    extra_plugins: dict[str, object] | None = None,
) -> ValidateDataResult:
    """Apply ``recipe``'s validate step to a deployment's production window alone.

    Everything is checked before anything runs (the recipe, the flags, the deployment): a
    mistake raises ``UsageError``/``RecipeError``. An empty window is no error (exit 0, no run).

    :param deployment: the deployment (default: the monitor step's, else the deploy step's name).
    :param since: the window, a duration (``24h``); or ``last``, a number of records. Default:
        the monitor step's window, else the whole prediction log.
    """
    from crispml.monitoring import _context
    from crispml.predictions import prediction_records

    recipe = _as_recipe(recipe, overrides)
    with on_path(_recipe_dir(recipe)):
        loaded = _plugins(plugins, extra_plugins)
        resolved = resolve(recipe, loaded)
        step = resolved.step("validate")
        if step is None:
            where = f"{recipe.source}: " if recipe.source else ""
            raise UsageError(f"{where}the recipe has no validate step to apply to production data")
        window = _window(recipe, since, last)
        name = _deployment_name(recipe, deployment)
        store = RunStore(Path(project).resolve() if project else find_project())
        isolate(store.project_dir, loaded)
        try:
            served = find_deployment(name, store.project_dir, plugins=loaded)
        except UsageError as exc:
            raise UsageError(f"--deployment: {exc}") from None
        records = prediction_records(served, since=window[0], last=window[1])
        mine = [r for r in records if served.model is None or r.get("model") == served.model]
        label = served.model or served.name
        result = ValidateDataResult(served.name, label, len(mine), len(records) - len(mine))
        if not mine:
            return result
        features, keys, target = _columns(served, recipe, store)
        dataset = window_dataset(window_frame(mine), target, label, features=features, key_columns=keys)
        one = dataclasses.replace(resolved, steps=[step], runner="local", runner_options=_local_options())
        context = _context(one, store)
        plan = _WindowPlan(one, context, use_cache=False, window=dataset)
        plan.manifest.kind = KIND
        plan.manifest.window = ProductionWindow(deployment=served.name, model=served.model)
        result.run = _execute(plan)
        return result


def _local_options() -> Any:
    from crispml._local_runner import LocalOptions

    return LocalOptions()
