"""Small in-test plugins: any object with hookimpls is a plugin."""

from __future__ import annotations

import hashlib
from typing import Any

import pandas as pd
import pytest

from crispml import (
    Dataset,
    Declaration,
    Evaluation,
    Options,
    Recipe,
    Step,
    TrainedModel,
    hookimpl,
)


class TableOptions(Options):
    rows: int = 40
    offset: float = 0.0


class TableLoader:
    """Loads a small deterministic table; counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    @hookimpl
    def crispml_declare(self) -> Declaration:
        return Declaration(stages={"load": TableOptions})

    @hookimpl
    def crispml_load(self, options: TableOptions) -> Dataset:
        self.calls += 1
        frame = pd.DataFrame(
            {"x": [float(i) + options.offset for i in range(options.rows)], "y": [i % 2 for i in range(options.rows)]}
        )
        digest = hashlib.sha256(frame.to_csv().encode()).hexdigest()
        return Dataset(frame=frame, target="y", name="table", source="memory", fingerprint=digest)


class TrainOptions(Options):
    bias: float = 0.0
    fail: bool = False


class EvalOptions(Options):
    metrics: list[str] = ["score"]

    def provided_metrics(self) -> list[str]:
        return list(self.metrics)


class MeanModel:
    """Trains the mean of ``x``; evaluates to ``score = 1 - bias``. Counts its calls."""

    def __init__(self) -> None:
        self.train_calls = 0
        self.eval_calls = 0

    @hookimpl
    def crispml_declare(self) -> Declaration:
        return Declaration(stages={"train": TrainOptions, "evaluate": EvalOptions})

    @hookimpl
    def crispml_train(self, options: TrainOptions, dataset: Dataset) -> TrainedModel:
        self.train_calls += 1
        if options.fail:
            raise RuntimeError("training blew up")
        mean = float(dataset.train_frame["x"].mean())
        return TrainedModel(
            model={"mean": mean, "bias": options.bias},
            flavor="test",
            task="regression",
            target=dataset.target,
            feature_columns=dataset.feature_columns,
        )

    @hookimpl
    def crispml_evaluate(self, options: EvalOptions, model: TrainedModel, dataset: Dataset) -> Evaluation:
        self.eval_calls += 1
        return Evaluation(metrics={"score": 1.0 - model.model["bias"]}, rows=len(dataset.test_frame))


def basic_recipe(**changes: Any) -> Recipe:
    data: dict[str, Any] = {
        "name": "basic",
        "load": Step(use="table"),
        "train": Step(use="mean"),
        "evaluate": Step(use="mean", gate={"score": ">= 0.5"}),
    }
    data.update(changes)
    return Recipe(**data)


@pytest.fixture
def table() -> TableLoader:
    return TableLoader()


@pytest.fixture
def mean() -> MeanModel:
    return MeanModel()


@pytest.fixture
def fakes(table: TableLoader, mean: MeanModel) -> dict[str, object]:
    return {"table": table, "mean": mean}
