"""The ``evidently`` plugin: drift of production data against what the served model was trained on.

    monitor:
      use: evidently
      deployment: churn          # default: the recipe's deploy step's name
      window: {since: 24h}       # or {last: 5000}
      min_rows: 200
      drift_share: 0.5           # dataset drift: share of drifted feature columns ≥ this
      method: psi                # with threshold 0.2; or auto (Evidently's choice), ks, wasserstein…
      per_column: {tenure_months: {method: wasserstein, threshold: 0.2}}
      on_drift: retrain          # or report
      retrain: {set: ["load.path=data/latest.csv"], cooldown: 6h, after: 2}

``crispml monitor recipe.yaml`` runs this step alone. Reference: the served version's training
rows, from its training run in this project's run store (or ``reference: FILE``). Current: the
deployment's predicted records in the window, from the version now serving (or ``--batch FILE``).
Artifacts: ``drift.json`` (crispml's schema), ``drift.html`` and ``evidently.json`` (Evidently's).
See ``docs/plugins/evidently.md``.

This module only declares; Evidently (~9 s to import) and pandas load when the stage runs.
"""

from __future__ import annotations

import csv
import difflib
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from crispml import (
    Backend,
    Dataset,
    Declaration,
    Deployment,
    ExistingPath,
    ModelVersion,
    MonitorReport,
    Options,
    RetrainPolicy,
    RunContext,
    hookimpl,
    parse_duration,
)

__version__ = "0.1.0"

# Kept in step with _drift (which imports pandas): this module must stay cheap to import.
_NUMERICAL_ONLY = {"anderson", "cramer_von_mises", "ed", "es", "empirical_mmd", "ks", "mannw", "t_test", "wasserstein"}
_CATEGORICAL_ONLY = {"chisquare", "fisher_exact", "g_test", "TVD", "z"}
_METHODS = _NUMERICAL_ONLY | _CATEGORICAL_ONLY | {"hellinger", "jensenshannon", "kl_div", "psi"}
DEFAULT_METHOD, DEFAULT_THRESHOLD = "psi", 0.2


def _method(name: str | None, allowed: set[str], what: str) -> str | None:
    if name is None or name in allowed:
        return name
    near = difflib.get_close_matches(name, sorted(allowed), n=1)
    hint = f"did you mean '{near[0]}'? " if near else ""
    raise ValueError(f"unknown {what} '{name}' ({hint}expected one of: {', '.join(sorted(allowed))})")


def _duration(value: str | None) -> str | None:
    if value is not None:
        parse_duration(value)  # its ValueError says what a duration looks like
    return value


class Window(Options):
    """Which predicted records are the current data: ``{since: 24h}`` or ``{last: 5000}``."""

    since: str | None = None
    last: int | None = Field(None, ge=1)

    @field_validator("since")
    @classmethod
    def _since(cls, since: str | None) -> str | None:
        return _duration(since)

    @model_validator(mode="after")
    def _one(self) -> Window:
        if (self.since is None) == (self.last is None):
            raise ValueError("give one of 'since' (a duration like 24h) or 'last' (a number of records)")
        return self


class ColumnRule(Options):
    """One column's own method and/or threshold."""

    method: str | None = None
    threshold: float | None = Field(None, gt=0)

    @field_validator("method")
    @classmethod
    def _known(cls, method: str | None) -> str | None:
        return _method(method, _METHODS, "method")


class Retrain(Options):
    """How drift becomes a training run (see :class:`crispml.RetrainPolicy`)."""

    set: list[str] = Field(default_factory=list)
    """``key=value`` overrides for the retrain, as ``--set`` takes them (fresh data, usually)."""
    cooldown: str | None = None
    """No retrain within this long of the recipe's last one (``6h``)."""
    after: int = Field(1, ge=1, le=1000)
    """Retrain only after this many consecutive drifting monitor runs."""

    @field_validator("cooldown")
    @classmethod
    def _cooldown(cls, cooldown: str | None) -> str | None:
        return _duration(cooldown)

    @field_validator("set")
    @classmethod
    def _pairs(cls, items: list[str]) -> list[str]:
        for item in items:
            key, sep, _ = item.partition("=")
            if not sep or not key.strip():
                raise ValueError(f"{item!r}: expected KEY=VALUE, e.g. load.path=data/latest.csv")
            if key.strip().split(".")[0] == "monitor":
                raise ValueError(f"{item!r}: a retrain runs without the monitor step; set another step")
        return items


class MonitorOptions(Options):
    """``monitor: {use: evidently, ...}``."""

    deployment: str | None = None
    """The deployment to watch (default: the name of the recipe's deploy step)."""
    window: Window = Field(default_factory=lambda: Window(since="24h"))
    min_rows: int = Field(100, ge=1)
    """Fewer current records than this: nothing is compared (exit 0, said so)."""
    drift_share: float = 0.5
    """The data set drifted when this share of its feature columns drifted."""
    method: str = DEFAULT_METHOD
    """Every column's method: an Evidently stat test name, or ``auto`` (Evidently's choice)."""
    threshold: float | None = Field(None, gt=0)
    """The method's threshold (default: 0.2 for ``psi``; the method's own otherwise)."""
    num_method: str | None = None
    cat_method: str | None = None
    per_column: dict[str, ColumnRule] = Field(default_factory=dict)
    max_null_increase: float = Field(0.1, ge=0, le=1)
    """A column whose share of nulls rises by more than this drifted (Evidently ignores nulls)."""
    reference: ExistingPath | None = None
    """A CSV/Parquet file of reference rows, when the served version's training run is not in
    this project's run store."""
    batch: ExistingPath | None = None
    """A CSV/Parquet file to compare instead of the deployment's requests (``--batch``)."""
    validate_: bool = Field(False, alias="validate")
    """Also check the window with the recipe's validate step (expectations on the target are
    skipped: production data has no labels). A window failing it is never retrained on."""
    on_drift: Literal["report", "retrain"] = "report"
    retrain: Retrain = Field(default_factory=Retrain)

    @field_validator("batch")
    @classmethod
    def _batch_has_the_features(cls, batch: Path | None, info: ValidationInfo) -> Path | None:
        steps = (info.context or {}).get("steps") or {}
        columns = _known_features(info.data.get("reference"), steps.get("load"))
        header = _header(batch) if batch is not None else None
        if batch is not None and columns is not None and header is not None:
            missing = [c for c in columns if c not in header]
            if missing:
                have = ", ".join(header)
                raise ValueError(f"{batch.name} lacks the model's column(s) {', '.join(missing)} (it has: {have})")
        return batch

    @field_validator("drift_share")
    @classmethod
    def _share(cls, share: float) -> float:
        if not 0 < share <= 1:
            raise ValueError(f"expected a share of the columns in (0, 1], got {share:g}")
        return share

    @field_validator("method")
    @classmethod
    def _known_method(cls, method: str) -> str:
        return _method(method, _METHODS | {"auto"}, "method") or method

    @field_validator("num_method")
    @classmethod
    def _num(cls, method: str | None) -> str | None:
        return _method(method, _METHODS - _CATEGORICAL_ONLY, "numerical method")

    @field_validator("cat_method")
    @classmethod
    def _cat(cls, method: str | None) -> str | None:
        return _method(method, _METHODS - _NUMERICAL_ONLY, "categorical method")

    @field_validator("validate_")
    @classmethod
    def _a_validate_step(cls, value: bool, info: ValidationInfo) -> bool:
        if value and "validate" not in ((info.context or {}).get("steps") or {}):
            raise ValueError("validate: true checks the window with the recipe's validate step, and it has none")
        return value

    @model_validator(mode="after")
    def _against_the_recipe(self, info: ValidationInfo) -> MonitorOptions:
        steps = (info.context or {}).get("steps") or {}
        if self.deployment is None and "deploy" not in steps and self.batch is None:
            raise ValueError("name the deployment to watch (deployment: NAME): the recipe has no deploy step")
        columns = _known_features(self.reference, steps.get("load"))
        if columns is not None:
            for name in self.per_column:
                if name not in columns:
                    near = difflib.get_close_matches(name, columns, n=1)
                    hint = f"did you mean '{near[0]}'? " if near else ""
                    raise ValueError(f"per_column: '{name}' is not a feature ({hint}features: {', '.join(columns)})")
        return self

    def ready(self, context: RunContext) -> None:
        """``crispml monitor`` checks, before it records a run, that the deployment exists and
        that the run which trained its model is in this project's store (or a reference given)."""
        from crispml_evidently._monitor import check_training_run, find_deployment

        if self.batch is None:
            deployment = find_deployment(self, context)
            if self.reference is None and deployment is not None:
                check_training_run(deployment.training_run, context.store)

    def settings(self) -> Any:
        """The drift engine's settings (``_drift.DriftSettings``)."""
        from crispml_evidently._drift import DriftSettings, Rule

        threshold = self.threshold
        if threshold is None and self.method == DEFAULT_METHOD:
            threshold = DEFAULT_THRESHOLD
        return DriftSettings(
            drift_share=self.drift_share,
            method=None if self.method == "auto" else self.method,
            threshold=threshold,
            num_method=self.num_method,
            cat_method=self.cat_method,
            per_column={k: Rule(v.method, v.threshold) for k, v in self.per_column.items()},
            max_null_increase=self.max_null_increase,
        )

    def retrain_policy(self) -> RetrainPolicy | None:
        if self.on_drift != "retrain":
            return None
        cooldown = parse_duration(self.retrain.cooldown) if self.retrain.cooldown else 0.0
        return RetrainPolicy(tuple(self.retrain.set), self.retrain.after, cooldown, "monitor.retrain")

    def external_inputs(self) -> list[Path]:
        return [p for p in (self.reference, self.batch) if p is not None]

    def provided_metrics(self) -> list[str]:
        return [
            *("drift_share", "drifted_columns", "current_rows", "prediction_drift"),
            *("other_versions_rows", "validation_failed"),
        ]


def _header(path: Path) -> list[str] | None:
    """A CSV file's column names, from its first line (``None`` for other formats)."""
    if path.suffix.lower() not in (".csv", ".txt"):
        return None
    try:
        with path.open(newline="") as fh:
            return next(csv.reader(fh), None)
    except (OSError, UnicodeDecodeError, csv.Error):
        return None


def _known_features(reference: Path | None, load: Any) -> list[str] | None:
    """The feature columns, when a recipe check can know them without loading data: the
    reference file's header, else the load step's columns (``Options.provided_columns``, for
    whichever plugin loads) without its target."""
    if reference is not None:
        return _header(reference)
    provided = getattr(load, "provided_columns", None)
    found = provided() if callable(provided) else None
    if found is None:
        return None
    # ``target`` is the one load option the lifecycle shares (train needs it too, and the
    # sklearn plugin reads it the same way): every load plugin that names a target calls it so.
    target = getattr(load, "target", None)
    return [str(c) for c in found[0] if c != target]


@hookimpl
def crispml_declare() -> Declaration:
    return Declaration(
        stages={"monitor": MonitorOptions},
        backends=(
            Backend("evidently", "evidently", extra="evidently"),
            Backend("pandas", "pandas", extra="evidently"),
        ),
        description="Monitor drift of production data against the training data with Evidently 0.7.",
    )


@hookimpl
def crispml_monitor(
    options: MonitorOptions,
    dataset: Dataset | None,
    model_version: ModelVersion | None,
    deployment: Deployment | None,
    context: RunContext,
) -> MonitorReport:
    from crispml_evidently._monitor import monitor

    return monitor(options, deployment, context)
