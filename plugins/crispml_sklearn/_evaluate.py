"""Evaluation with scikit-learn scorers, plus PNG plots for classifiers."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sklearn.metrics import get_scorer

from crispml import Dataset, Evaluation, TrainedModel

if TYPE_CHECKING:
    from crispml_sklearn import EvaluateOptions

_PYPLOT = threading.Lock()
"""pyplot's figure registry is global: candidates evaluated in threads side by side take turns."""


def evaluate(options: EvaluateOptions, model: TrainedModel, dataset: Dataset, out: Path) -> Evaluation:
    frame = dataset.test_frame if options.split == "test" else dataset.train_frame
    if len(frame) == 0:
        raise ValueError(f"the {options.split} split is empty: set the recipe's split")
    X, y = frame[model.feature_columns], frame[model.target]
    metrics = {name: float(get_scorer(name)(model.model, X, y)) for name in options.metrics}
    artifacts: list[str] = []
    if options.plots and model.task == "classification":
        with _PYPLOT:
            artifacts = _plots(model.model, X, y, out)
    return Evaluation(metrics=metrics, artifacts=artifacts, split=options.split, rows=len(frame))


def _plots(estimator: Any, X: Any, y: Any, out: Path) -> list[str]:
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
        RocCurveDisplay.from_estimator(estimator, X, y, ax=ax)
        ax.set_title("ROC curve")
        fig.tight_layout()
        fig.savefig(out / "roc_curve.png", dpi=100)
        plt.close(fig)
        names.append("roc_curve.png")
    return names
