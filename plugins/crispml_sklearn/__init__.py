"""The ``sklearn`` plugin: train a scikit-learn estimator and evaluate it by scorer names.

    train:    {use: sklearn, estimator: sklearn.ensemble.RandomForestClassifier, params: {n_estimators: 200}}
    evaluate: {use: sklearn, metrics: [accuracy, roc_auc], gate: {roc_auc: ">= 0.8"}}

The estimator is wrapped in a Pipeline with the preprocessing a tabular dataset needs (impute
and scale numbers; impute and one-hot encode categories), so a raw DataFrame goes in. This
module only declares; scikit-learn is imported by ``_train`` and ``_evaluate`` when a stage runs
(or when a recipe is checked, to validate estimator names, parameters and metric names — checks
marked ``backend_check``, which an unchanged re-run skips).
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from crispml import (
    Backend,
    Dataset,
    Declaration,
    Evaluation,
    Options,
    RunContext,
    TrainedModel,
    backend_check,
    hookimpl,
)

__version__ = "0.1.0"


class TrainOptions(Options):
    estimator: str = "sklearn.linear_model.LogisticRegression"
    """Import path of a scikit-learn estimator class (yours too: ``my_project.models.Mine``)."""
    params: dict[str, Any] = Field(default_factory=dict)
    """Constructor arguments of the estimator."""
    preprocess: bool = True
    """Wrap the estimator in imputation, scaling and one-hot encoding."""

    @field_validator("estimator")
    @classmethod
    @backend_check
    def _estimator_exists(cls, estimator: str, info: ValidationInfo) -> str:
        from crispml_sklearn._train import import_estimator

        import_estimator(estimator)
        return estimator

    @field_validator("params")
    @classmethod
    @backend_check
    def _params_fit_the_estimator(cls, params: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        from crispml_sklearn._train import check_params

        if "estimator" in info.data:  # else the estimator itself was the error
            check_params(info.data["estimator"], params)
        return params

    @model_validator(mode="after")
    def _load_names_a_target(self, info: ValidationInfo) -> TrainOptions:
        load = ((info.context or {}).get("steps") or {}).get("load")
        if load is not None and getattr(load, "target", "unknown") is None:
            raise ValueError("the load step names no target column to train on (set load.target)")
        return self

    def code_references(self) -> list[str]:
        # A user's own estimator class is code this step runs: its module invalidates the cache.
        return [self.estimator.rpartition(".")[0]]


class EvaluateOptions(Options):
    metrics: list[str] = Field(default_factory=lambda: ["accuracy"], min_length=1)
    """scikit-learn scorer names (``sklearn.metrics.get_scorer_names()``)."""
    plots: bool = True
    """Save a confusion matrix and a ROC curve (classifiers) as PNG artifacts."""
    split: Literal["test", "train"] = "test"
    baseline: Literal["champion"] | None = None
    """``champion``: also score the registered champion on the same rows, as
    ``champion_<metric>`` — the register step's champion/challenger gate then compares like with
    like (the champion's stored metric was measured on older data)."""
    baseline_model: str | None = None
    """The registered model whose champion is the baseline (default: the register step's
    ``model_name``)."""

    @field_validator("metrics")
    @classmethod
    @backend_check
    def _known_metrics(cls, metrics: list[str], info: ValidationInfo) -> list[str]:
        from sklearn.metrics import get_scorer_names

        known = set(get_scorer_names())
        for name in metrics:
            if name not in known:
                near = difflib.get_close_matches(name, sorted(known), n=3)
                hint = f" (did you mean {', '.join(near)}?)" if near else ""
                raise ValueError(f"unknown metric '{name}'{hint}")
        return metrics

    def provided_metrics(self) -> list[str]:
        if self.baseline == "champion":
            return [*self.metrics, *(f"champion_{m}" for m in self.metrics), "champion_version"]
        return list(self.metrics)


@hookimpl
def crispml_declare() -> Declaration:
    return Declaration(
        stages={"train": TrainOptions, "evaluate": EvaluateOptions},
        backends=(
            Backend("scikit-learn", "sklearn", extra="sklearn"),
            Backend("matplotlib", "matplotlib", extra="sklearn"),
        ),
        description="Train scikit-learn estimators; evaluate with scorer names and plots.",
    )


@hookimpl
def crispml_environment(project_dir: Path) -> dict[str, str]:
    """matplotlib (the evaluation's plots) keeps its config and font cache in the project: on
    macOS it ignores the XDG folders and would write ``~/.matplotlib``."""
    return {"MPLCONFIGDIR": str(project_dir / ".crispml" / "matplotlib")}


@hookimpl
def crispml_train(options: TrainOptions, dataset: Dataset, context: RunContext) -> TrainedModel:
    from crispml_sklearn._train import train

    return train(options, dataset)


@hookimpl
def crispml_evaluate(
    options: EvaluateOptions, model: TrainedModel, dataset: Dataset, context: RunContext
) -> Evaluation:
    from crispml_sklearn._evaluate import evaluate

    return evaluate(options, model, dataset, context.artifact_dir("evaluate"), context)
