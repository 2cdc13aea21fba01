"""Helpers shared by the prefect plugin's tests: the ``steps`` plugin module and recipes using it.

``steps`` is a small plugin module written into each project (like a user's own code): a table
loader, a trainer that can fail N times, raise a ``UsageError`` or sleep, and an evaluator whose
score a gate tests.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import yaml

STEPS = textwrap.dedent(
    '''
    """A user's own stages for the prefect runner's tests."""
    import hashlib
    import time

    import pandas as pd

    from crispml import Dataset, Declaration, Evaluation, Options, TrainedModel, UsageError, hookimpl


    class LoadOptions(Options):
        rows: int = 40


    class TrainOptions(Options):
        fail_times: int = 0
        usage_error: bool = False
        sleep: float = 0.0


    class EvalOptions(Options):
        score: float = 1.0


    @hookimpl
    def crispml_declare():
        return Declaration(stages={"load": LoadOptions, "train": TrainOptions, "evaluate": EvalOptions})


    @hookimpl
    def crispml_load(options, context):
        frame = pd.DataFrame({"x": [float(i) for i in range(options.rows)], "y": [i % 2 for i in range(options.rows)]})
        digest = hashlib.sha256(frame.to_csv().encode()).hexdigest()
        return Dataset(frame=frame, target="y", name="table", source="memory", fingerprint=digest)


    @hookimpl
    def crispml_train(options, dataset, context):
        counter = context.project_dir / "train-attempts"
        attempt = int(counter.read_text()) + 1 if counter.exists() else 1
        counter.write_text(str(attempt))
        if options.usage_error:
            raise UsageError("train: the estimator takes no such parameter")
        if attempt <= options.fail_times:
            raise RuntimeError(f"flaky backend, attempt {attempt}")
        if options.sleep and not (context.project_dir / "fast").exists():
            try:
                time.sleep(options.sleep)
            finally:
                (context.project_dir / "cleanup-ran").write_text("yes")
        return TrainedModel(model={"mean": float(dataset.train_frame["y"].mean())}, flavor="dict",
                            task="classification", target="y", feature_columns=["x"])


    @hookimpl
    def crispml_evaluate(options, model, dataset):
        return Evaluation(metrics={"score": options.score}, rows=len(dataset.test_frame))
    '''
)


def retrying(retries: int, **more: Any) -> dict[str, Any]:
    return {"use": "prefect", "retries": retries, "retry_delay_seconds": 0, **more}


def write_recipe(project: Path, runner: Any = "prefect", name: str = "recipe.yaml", **steps: dict[str, Any]) -> Path:
    (project / "steps.py").write_text(STEPS)
    recipe: dict[str, Any] = {
        "name": "flaky",
        "plugins": ["steps"],
        "load": {"use": "steps"},
        "train": {"use": "steps", **steps.get("train", {})},
        "evaluate": {"use": "steps", "gate": {"score": ">= 0.5"}, **steps.get("evaluate", {})},
        "runner": runner,
    }
    path = project / name
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path
