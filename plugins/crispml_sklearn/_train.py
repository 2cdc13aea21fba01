"""Training with scikit-learn (imported when a train stage runs or a recipe is checked)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from sklearn.base import BaseEstimator, is_classifier
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from crispml import Dataset, TrainedModel, UsageError

if TYPE_CHECKING:
    from crispml_sklearn import TrainOptions


def import_estimator(path: str) -> type[BaseEstimator]:
    module_name, _, attr = path.rpartition(".")
    if not module_name:
        raise ValueError(f"expected an import path like sklearn.linear_model.LogisticRegression, got {path!r}")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot import estimator '{path}': {exc}") from None
    if not (isinstance(cls, type) and hasattr(cls, "fit") and hasattr(cls, "get_params")):
        raise ValueError(f"'{path}' is not a scikit-learn estimator class")
    return cls


def check_params(path: str, params: dict[str, Any]) -> None:
    """Fail early (at recipe check) on an unknown parameter or a value of the wrong type."""
    cls = import_estimator(path)
    unknown = sorted(set(params) - set(cls().get_params(deep=False)))
    if unknown:
        raise ValueError(f"{cls.__name__} has no parameter(s): {', '.join(unknown)}")
    validate = getattr(cls(**params), "_validate_params", None)
    if validate is not None:  # scikit-learn's own parameter constraints (>= 1.2)
        try:
            validate()
        except (TypeError, ValueError) as exc:
            raise ValueError(str(exc).replace("\n", " ")) from None


def build_pipeline(estimator: BaseEstimator, frame: Any, preprocess: bool) -> Any:
    if not preprocess:
        return estimator
    numeric = [c for c in frame.columns if frame[c].dtype.kind in "iuf"]
    categorical = [c for c in frame.columns if c not in numeric]
    transformers = []
    if numeric:
        transformers.append(
            ("numeric", Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]), numeric)
        )
    if categorical:
        transformers.append(
            (
                "categorical",
                Pipeline(
                    [
                        ("impute", SimpleImputer(strategy="most_frequent")),
                        ("encode", OneHotEncoder(handle_unknown="ignore")),
                    ]
                ),
                categorical,
            )
        )
    return Pipeline([("preprocess", ColumnTransformer(transformers)), ("model", estimator)])


def train(options: TrainOptions, dataset: Dataset) -> TrainedModel:
    if dataset.target is None:
        raise UsageError("train: the dataset has no target column (set load.target)")
    frame = dataset.train_frame
    features = dataset.feature_columns
    X, y = frame[features], frame[dataset.target]
    estimator = import_estimator(options.estimator)(**options.params)
    pipeline = build_pipeline(estimator, X, options.preprocess)
    pipeline.fit(X, y)
    return TrainedModel(
        model=pipeline,
        flavor="sklearn",
        task="classification" if is_classifier(estimator) else "regression",
        target=dataset.target,
        feature_columns=features,
        params={"estimator": options.estimator, **options.params},
        input_example=X.head(5),
    )
