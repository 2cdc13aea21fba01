"""Way 2, the Python API: a notebook, an app, a CI job. From the folder `cli.sh` made (my-churn/):

    python ../api.py               # PORT=3100 python ../api.py serves on another port

The same recipe as my-churn/recipe.yaml, spelt in Python; checked, run, its metrics read, the
champion loaded and asked for predictions, the deployment monitored.
"""

from __future__ import annotations

import os
import sys

import pandas as pd

import crispml
from crispml import Recipe, Split, Step

recipe = Recipe(
    name="retrain-on-drift",
    split=Split(test_size=0.25, seed=42, stratify="churned"),
    load=Step(use="files", path="data/churn.csv", target="churned"),
    train=Step(
        use="sklearn",
        estimator="sklearn.ensemble.RandomForestClassifier",
        params={"n_estimators": 100, "min_samples_leaf": 5, "random_state": 0},
    ),
    evaluate=Step(use="sklearn", metrics=["accuracy", "roc_auc", "f1"], gate={"roc_auc": ">= 0.75"}),
    tracking=["mlflow"],
    register=Step(use="mlflow", model_name="churn-watched", compare_on="roc_auc"),
    deploy=Step(use="bentoml", name="churn-watched", port=int(os.environ.get("PORT", "3000"))),
    monitor=Step(
        use="evidently",
        window={"last": 500},
        min_rows=200,
        drift_share=0.5,
        on_drift="retrain",
        retrain={"cooldown": "6h"},
    ),
)

if __name__ == "__main__":
    crispml.check(recipe)  # a broken recipe raises RecipeError here, before anything runs (CI fails)
    result = crispml.run(recipe)  # status: succeeded | rejected | failed — an outcome, not an exception
    print(f"run {result.run_id}: {result.status}")
    print("metrics:", {k: round(v, 4) for k, v in result["evaluation"].metrics.items()})
    model = crispml.load_model("churn-watched@champion")  # an MLflow pyfunc model
    customers = pd.read_csv("data/churn.csv").drop(columns=["churned"]).head(3)
    print("predictions:", list(model.predict(customers)))
    watched = crispml.monitor(recipe)  # the deployment's traffic vs the training data
    print(watched.line())
    sys.exit(result.exit_code)
