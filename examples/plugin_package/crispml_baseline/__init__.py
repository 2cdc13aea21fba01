"""crispml-baseline: a majority-class (or mean) model, as a third-party crispml plugin.

It wraps scikit-learn's ``DummyClassifier``/``DummyRegressor``, imported inside the hook body
(never at module level: every ``crispml`` command imports every plugin).
"""

from __future__ import annotations

from typing import Literal

from crispml import Dataset, Declaration, Options, TrainedModel, hookimpl

__version__ = "0.2.0"


class BaselineOptions(Options):
    strategy: Literal["most_frequent", "prior", "stratified", "mean", "median"] = "most_frequent"
    """A classifier strategy (``most_frequent``, ``prior``, ``stratified``) or a regressor's
    (``mean``, ``median``)."""


@hookimpl
def crispml_declare() -> Declaration:
    return Declaration(stages={"train": BaselineOptions}, description="Majority-class or mean baseline.")


@hookimpl
def crispml_train(options: BaselineOptions, dataset: Dataset) -> TrainedModel:
    from sklearn.dummy import DummyClassifier, DummyRegressor

    regression = options.strategy in ("mean", "median")
    model = DummyRegressor(strategy=options.strategy) if regression else DummyClassifier(strategy=options.strategy)
    frame = dataset.train_frame
    model.fit(frame[dataset.feature_columns], frame[dataset.target])
    return TrainedModel(
        model=model,
        flavor="sklearn",
        task="regression" if regression else "classification",
        target=dataset.target,
        feature_columns=dataset.feature_columns,
        params={"strategy": options.strategy},
        input_example=frame[dataset.feature_columns].head(5),
    )
