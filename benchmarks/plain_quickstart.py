"""The quickstart's work done with pandas and scikit-learn directly: the baseline crispml is
measured against (same data, same split semantics, same pipeline, same metrics and plots)."""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import ConfusionMatrixDisplay, RocCurveDisplay, get_scorer
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler


def main(data: Path, out: Path) -> dict[str, float]:
    out.mkdir(parents=True, exist_ok=True)
    frame = pd.read_csv(data)
    train, test = train_test_split(frame, test_size=0.25, random_state=42, stratify=frame["churned"])
    features = [c for c in frame.columns if c != "churned"]
    numeric = [c for c in features if frame[c].dtype.kind in "iuf"]
    categorical = [c for c in features if c not in numeric]
    pipeline = Pipeline(
        [
            (
                "preprocess",
                ColumnTransformer(
                    [
                        (
                            "numeric",
                            Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]),
                            numeric,
                        ),
                        (
                            "categorical",
                            Pipeline(
                                [
                                    ("impute", SimpleImputer(strategy="most_frequent")),
                                    ("encode", OneHotEncoder(handle_unknown="ignore")),
                                ]
                            ),
                            categorical,
                        ),
                    ]
                ),
            ),
            ("model", LogisticRegression(C=1.0, max_iter=500)),
        ]
    )
    pipeline.fit(train[features], train["churned"])
    X, y = test[features], test["churned"]
    metrics = {name: float(get_scorer(name)(pipeline, X, y)) for name in ("accuracy", "roc_auc", "f1")}
    fig, ax = plt.subplots(figsize=(4, 4))
    ConfusionMatrixDisplay.from_estimator(pipeline, X, y, ax=ax, colorbar=False)
    fig.tight_layout()
    fig.savefig(out / "confusion_matrix.png", dpi=100)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(4, 4))
    RocCurveDisplay.from_estimator(pipeline, X, y, ax=ax)
    fig.tight_layout()
    fig.savefig(out / "roc_curve.png", dpi=100)
    plt.close(fig)
    assert metrics["roc_auc"] >= 0.75
    return metrics


if __name__ == "__main__":
    print(main(Path(sys.argv[1]), Path(sys.argv[2])))
