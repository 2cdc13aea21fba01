"""Evaluation with scikit-learn scorers, plus PNG plots for classifiers, and with
``baseline: champion`` the registered champion scored on the same rows.

The champion comes through the core (``context.session.resolve_model`` then
``load_model``): whichever registry plugin holds it answers, and this plugin imports none.
"""

from __future__ import annotations

import functools
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sklearn.metrics import get_scorer

from crispml import Dataset, Evaluation, RunContext, TrainedModel, UsageError

if TYPE_CHECKING:
    from crispml_sklearn import EvaluateOptions

_PYPLOT = threading.Lock()
"""pyplot's figure registry is global: candidates evaluated in threads side by side take turns."""


class Predictions:
    """A fitted estimator whose ``predict``/``predict_proba``/``decision_function`` on one ``X``
    run once, however many scorers and plots ask: three metrics and two plots made five passes
    through the pipeline's transforms, the evaluate stage's largest cost on a big test split
    (docs/performance.md). Everything else is the estimator's own attribute; any other ``X`` is
    predicted afresh."""

    _CACHED = ("predict", "predict_proba", "decision_function")

    def __init__(self, estimator: Any, X: Any) -> None:
        self._estimator = estimator
        self._X = X
        self._answers: dict[str, Any] = {}

    def __sklearn_is_fitted__(self) -> bool:
        """What scikit-learn's ``check_is_fitted`` says of the estimator itself (else it would
        judge this wrapper, whose own attributes name nothing fitted)."""
        from sklearn.exceptions import NotFittedError
        from sklearn.utils.validation import check_is_fitted

        try:
            check_is_fitted(self._estimator)
        except NotFittedError:
            return False
        return True

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._estimator, name)
        if name not in self._CACHED or not callable(attribute):
            return attribute

        @functools.wraps(attribute)  # scikit-learn reads the method's __name__
        def once(X: Any, *args: Any, **kwargs: Any) -> Any:
            if X is not self._X or args or kwargs:
                return attribute(X, *args, **kwargs)
            if name not in self._answers:
                self._answers[name] = attribute(X)
            return self._answers[name]

        return once


def evaluate(
    options: EvaluateOptions, model: TrainedModel, dataset: Dataset, out: Path, context: RunContext | None = None
) -> Evaluation:
    frame = dataset.test_frame if options.split == "test" else dataset.train_frame
    if len(frame) == 0:
        raise ValueError(f"the {options.split} split is empty: set the recipe's split")
    X, y = frame[model.feature_columns], frame[model.target]
    memo = Predictions(model.model, X)
    metrics = {name: float(get_scorer(name)(memo, X, y)) for name in options.metrics}
    if options.baseline == "champion" and context is not None:
        metrics |= champion_metrics(options, frame, y, context)
    artifacts: list[str] = []
    if options.plots and model.task == "classification":
        with _PYPLOT:
            artifacts = _plots(memo, X, y, out)
    return Evaluation(metrics=metrics, artifacts=artifacts, split=options.split, rows=len(frame))


def baseline_model(options: EvaluateOptions, context: RunContext) -> str:
    """``baseline_model``, else the recipe's register step's ``model_name``."""
    if options.baseline_model:
        return options.baseline_model
    register = context.recipe.step("register")
    name = register.options.get("model_name") if register is not None else None
    if not name:
        raise UsageError(
            "evaluate.baseline: champion needs the registered model's name "
            "(a register step with model_name, or evaluate.baseline_model)"
        )
    return str(name)


def champion_metrics(options: EvaluateOptions, frame: Any, y: Any, context: RunContext) -> dict[str, float]:
    """The champion's scores on ``frame`` (``champion_<metric>``, and ``champion_version`` so
    the register gate can tell it is still the champion it compares with); ``{}`` when there is
    no champion yet, said in the run's log."""
    log = context.logger("evaluate")
    name = baseline_model(options, context)
    reference = f"{name}@champion"
    try:
        resolved = context.session.resolve_model(reference, context=context)
    except UsageError as exc:
        log.info("baseline: no champion of '%s' to score (%s): the model is compared with nothing", name, exc)
        return {}
    loaded = context.session.load_model(f"{resolved.name}/{resolved.version}")
    # A pyfunc's raw estimator has predict_proba (roc_auc needs it); pyfunc.predict has not.
    raw = loaded.get_raw_model() if hasattr(loaded, "get_raw_model") else loaded
    columns = [c["name"] for c in resolved.signature] if resolved.signature else None
    if columns is None:
        columns = [str(c) for c in getattr(raw, "feature_names_in_", [])] or None
    missing = [c for c in columns or [] if c not in frame.columns]
    if columns is None or missing:
        what = f"lacks its column(s) {', '.join(missing)}" if missing else "its input columns are unknown"
        log.warning("baseline: champion %s not scored: the evaluated data %s", resolved.label, what)
        return {}
    X = frame[columns]
    memo = Predictions(raw, X)
    try:
        out = {f"champion_{m}": float(get_scorer(m)(memo, X, y)) for m in options.metrics}
    except (AttributeError, TypeError, ValueError) as exc:  # e.g. a pyfunc with no predict_proba
        log.warning("baseline: champion %s not scored: %s", resolved.label, " ".join(str(exc).split())[:300])
        return {}
    log.info("baseline: champion %s scored on the same %d rows: %s", resolved.label, len(frame), out)
    return out | {"champion_version": float(resolved.version)}


def _plots(estimator: Predictions, X: Any, y: Any, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay, RocCurveDisplay

    names = []
    fig, ax = plt.subplots(figsize=(4, 4))
    ConfusionMatrixDisplay.from_estimator(estimator, X, y, ax=ax, colorbar=False)
    ax.set_title("Confusion matrix")
    fig.tight_layout()
    fig.savefig(out / "confusion_matrix.png", dpi=100)
    plt.close(fig)
    names.append("confusion_matrix.png")
    if hasattr(estimator, "predict_proba") and len(set(y)) == 2:
        fig, ax = plt.subplots(figsize=(4, 4))
        RocCurveDisplay.from_estimator(estimator, X, y, ax=ax, name=type(estimator._estimator).__name__)
        ax.set_title("ROC curve")
        fig.tight_layout()
        fig.savefig(out / "roc_curve.png", dpi=100)
        plt.close(fig)
        names.append("roc_curve.png")
    return names
