"""The quickstart through the Python API: the same workflow as recipe.yaml, spelt in Python
(validate with Great Expectations, train and evaluate with scikit-learn, track and register in
MLflow, serve the champion with BentoML).

    python run.py                          # from this folder; runs are stored in ./.crispml/
    python run.py --set deploy.port=3001   # overrides, as `crispml run --set` takes them
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
    validate=Step(use="great_expectations", suite=str(HERE / "expectations" / "churn.yaml")),
    train=Step(
        use="sklearn",
        estimator="sklearn.linear_model.LogisticRegression",
        params={"C": 1.0, "max_iter": 500},
    ),
    evaluate=Step(use="sklearn", metrics=["accuracy", "roc_auc", "f1"], gate={"roc_auc": ">= 0.75"}),
    tracking=["mlflow"],
    register=Step(use="mlflow", model_name="churn", compare_on="roc_auc"),
    deploy=Step(use="bentoml", name="churn", port=3000),
)

if __name__ == "__main__":
    overrides = [arg for flag, arg in zip(sys.argv[1:], sys.argv[2:], strict=False) if flag == "--set"]
    result = crispml.run(recipe, project=HERE, overrides=overrides)
    print(f"run {result.run_id}: {result.status}")
    for stage, status in result.stage_status.items():
        print(f"  {stage:<9} {status}")
    if "evaluation" in result.results:
        metrics = result["evaluation"].metrics
        print("  metrics: " + ", ".join(f"{k}={v:.3f}" for k, v in metrics.items()))
    sys.exit(result.exit_code)
