"""The ``mlflow`` plugin: every run tracked in MLflow, models registered through a champion gate.

    tracking: [mlflow]                      # or {mlflow: {tracking_uri: http://host:5000}}
    register: {use: mlflow, model_name: churn, compare_on: roc_auc, min_improvement: 0.0}

* **Tracking** is an observer on the event hooks: each crispml run is an MLflow run in the
  experiment named after the recipe (params, metrics, stage status and time, the dataset with
  crispml's fingerprint as digest, the manifest and stage artifacts, tags).
* **register** logs the trained model (signature, input example, pinned requirements), registers
  a version, sets the alias ``challenger`` and moves ``champion`` only when the challenger beats
  it on ``compare_on`` by more than ``min_improvement``; otherwise the run ends ``rejected``.
* ``crispml.load_model("churn@champion")``, and the commands ``crispml models``,
  ``promote``, ``rollback`` and ``ui``.

The embedded default is ``sqlite:///<project>/.crispml/mlflow.db`` with artifacts under
``.crispml/mlartifacts``; ``MLFLOW_TRACKING_URI`` or the ``tracking_uri`` option point elsewhere.

This module only declares: MLflow (a 3 s import) is imported by the submodules, which load when
a hook body or a command runs.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from crispml import (
    Backend,
    Dataset,
    Declaration,
    Evaluation,
    ModelVersion,
    Options,
    ResolvedModel,
    RunContext,
    TrainedModel,
    hookimpl,
)

if TYPE_CHECKING:
    import click

    from crispml import CandidateRecord, Result

__version__ = "0.1.0"

MODEL_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,254}$")
"""Registered model names crispml accepts: unambiguous in ``name@alias`` and ``name/version``."""


def check_model_name(name: str) -> str:
    if not MODEL_NAME.match(name) or ".." in name:
        raise ValueError(
            f"invalid model name {name!r}: use a letter, then letters, digits, '_', '.' or '-' "
            "(at most 255 characters; no '/', '@', ':' or spaces)"
        )
    return name


class _Connection(Options):
    tracking_uri: str | None = None
    """MLflow tracking (and registry) URI: ``http://host:port`` of an ``mlflow server``,
    ``sqlite:///path.db``… Default: ``$MLFLOW_TRACKING_URI``, else the embedded
    ``sqlite:///<project>/.crispml/mlflow.db``."""
    timeout: int = Field(10, ge=1, le=600)
    """Seconds an HTTP request to a tracking server may take (``MLFLOW_HTTP_REQUEST_TIMEOUT``)."""
    max_retries: int = Field(1, ge=0, le=10)
    """Retries of a failed HTTP request (``MLFLOW_HTTP_REQUEST_MAX_RETRIES``), 1 s backoff."""


class TrackingOptions(_Connection):
    """``tracking: {mlflow: {...}}``: where and how runs are recorded."""

    experiment: str | None = None
    """The MLflow experiment (default: the recipe's name)."""
    log_artifacts: bool = True
    """Upload each stage's files and the run manifest as MLflow artifacts."""
    tags: dict[str, str] = Field(default_factory=dict)
    """Extra tags set on every MLflow run."""


class RegisterOptions(_Connection):
    """``register: {use: mlflow, ...}``: register the trained model and decide the champion."""

    model_name: str
    """The registered model's name."""
    compare_on: str | None = None
    """The evaluation metric the champion/challenger gate compares. Without it, a new version
    becomes champion only when there is none yet (promote by hand with ``crispml promote``)."""
    min_improvement: float = Field(0.0, ge=0.0)
    """How much the challenger must beat the champion by (strictly more than this)."""
    greater_is_better: bool = True
    """``False`` for metrics where lower is better (an error, a loss)."""
    serialization_format: Literal["cloudpickle", "skops", "pickle"] = "cloudpickle"
    """How scikit-learn models are saved. ``skops`` loads only trusted types (safer for models
    from elsewhere; your own estimator classes need ``skops_trusted_types``) and costs ~2 s."""
    pip_requirements: list[str] | None = None
    """The model's requirements. Default: the installed versions of what the model needs
    (never MLflow's inference, which loads the model in a subprocess: ~10 s)."""

    @field_validator("model_name")
    @classmethod
    def _valid_name(cls, name: str) -> str:
        return check_model_name(name)

    @field_validator("compare_on")
    @classmethod
    def _compare_on_is_evaluated(cls, metric: str | None, info: ValidationInfo) -> str | None:
        if metric is None:
            return None
        steps = (info.context or {}).get("steps")
        if steps is None:  # validated outside a recipe check: checked when the stage runs
            return metric
        evaluate = steps.get("evaluate")
        if evaluate is None:
            raise ValueError(f"compare_on '{metric}' needs an evaluate step in the recipe to compute it")
        provided = evaluate.provided_metrics()
        if provided is not None and metric not in provided:
            raise ValueError(
                f"metric '{metric}' is not computed by the evaluate step "
                f"(it computes: {', '.join(provided) or 'nothing'})"
            )
        return metric

    @model_validator(mode="after")
    def _uri(self) -> RegisterOptions:
        if self.tracking_uri is not None and not self.tracking_uri.strip():
            raise ValueError("tracking_uri is empty")
        return self


@hookimpl
def crispml_declare() -> Declaration:
    return Declaration(
        tracker=TrackingOptions,
        stages={"register": RegisterOptions},
        backends=(Backend("mlflow", "mlflow", extra="mlflow"),),
        description="Track runs in MLflow; register models with a champion/challenger gate.",
    )


# -- tracking: an observer on the event hooks ---------------------------------------------------


def _tracker_options(context: RunContext) -> TrackingOptions | None:
    options = context.trackers.get("mlflow")
    return options if isinstance(options, TrackingOptions) else None


@hookimpl
def crispml_environment() -> dict[str, str]:
    """Telemetry off (MLflow accepts only "true"); its installation id would go to
    ``$XDG_CONFIG_HOME``, which the core points into the project."""
    return {"MLFLOW_DISABLE_TELEMETRY": "true"}


@hookimpl
def crispml_before_run(context: RunContext) -> None:
    options = _tracker_options(context)
    if options is not None:
        from crispml_mlflow._tracking import before_run

        before_run(options, context)


@hookimpl
def crispml_after_stage(
    stage: str, plugin: str, status: str, result: Result, duration: float, context: RunContext
) -> None:
    options = _tracker_options(context)
    if options is not None:
        from crispml_mlflow._tracking import after_stage

        after_stage(options, context, stage, plugin, status, result, duration)


@hookimpl
def crispml_after_candidates(
    stage: str, plugin: str, candidates: list[CandidateRecord], selected: int | None, context: RunContext
) -> None:
    options = _tracker_options(context)
    if options is not None:
        from crispml_mlflow._tracking import after_candidates

        after_candidates(options, context, stage, candidates, selected)


@hookimpl
def crispml_on_stage_error(stage: str, plugin: str, error: BaseException, context: RunContext) -> None:
    options = _tracker_options(context)
    if options is not None:
        from crispml_mlflow._tracking import on_stage_error

        on_stage_error(options, context, stage, plugin, error)


@hookimpl
def crispml_after_run(context: RunContext, status: str, error: BaseException | None) -> None:
    options = _tracker_options(context)
    if options is not None:
        from crispml_mlflow._tracking import after_run

        after_run(options, context, status, error)


# -- the register stage -------------------------------------------------------------------------


@hookimpl
def crispml_register(
    options: RegisterOptions,
    model: TrainedModel,
    evaluation: Evaluation | None,
    dataset: Dataset,
    context: RunContext,
) -> ModelVersion:
    from crispml_mlflow._backend import process_uris_kept
    from crispml_mlflow._register import register

    # MLflow's global URIs point at the registry from the model's logging to its registration
    # (MLflow resolves the logged model through them): put back when the whole stage is over.
    with process_uris_kept():
        return register(options, model, evaluation, dataset, context)


@hookimpl
def crispml_load_model(reference: str, project_dir: Path) -> Any | None:
    from crispml_mlflow._backend import process_uris_kept
    from crispml_mlflow._load import load_model

    with process_uris_kept():
        return load_model(reference, project_dir)


@hookimpl
def crispml_resolve_model(reference: str, project_dir: Path, context: RunContext | None) -> ResolvedModel | None:
    from crispml_mlflow._resolve import resolve

    return resolve(reference, project_dir, context)


@hookimpl
def crispml_register_commands(cli: click.Group) -> None:
    from crispml_mlflow._cli import add_commands

    add_commands(cli)
