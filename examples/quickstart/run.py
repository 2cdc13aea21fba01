"""The quickstart through the Python API: the same workflow as recipe.yaml, spelt in Python.

    python run.py            # from this folder; runs are stored in ./.crispml/
"""

from __future__ import annotations

import sys
from pathlib import Path

import crispml
from crispml import Recipe, Split, Step

HERE = Path(__file__).resolve().parent

recipe = Recipe(
    name="quickstart-churn-api",
    description="Predict customer churn from a shipped CSV (Python API).",
    split=Split(test_size=0.25, seed=42, stratify="churned"),
    load=Step(use="files", path=str(HERE / "data" / "churn.csv"), target="churned"),
    train=Step(
        use="sklearn",
        estimator="sklearn.linear_model.LogisticRegression",
        params={"C": 1.0, "max_iter": 500},
    ),
    evaluate=Step(use="sklearn", metrics=["accuracy", "roc_auc", "f1"], gate={"roc_auc": ">= 0.75"}),
)

if __name__ == "__main__":
    result = crispml.run(recipe, project=HERE)
    print(f"run {result.run_id}: {result.status}")
    for stage, status in result.stage_status.items():
        print(f"  {stage:<9} {status}")
    if "evaluation" in result.results:
        metrics = result["evaluation"].metrics
        print("  metrics: " + ", ".join(f"{k}={v:.3f}" for k, v in metrics.items()))
    sys.exit(result.exit_code)
