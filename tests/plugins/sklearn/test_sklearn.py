"""The sklearn plugin against real scikit-learn."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from crispml import Dataset, Declaration, Options, Recipe, RecipeError, Split, Step, check, hookimpl, run


def _recipe(data: Path, **changes: object) -> Recipe:
    fields: dict[str, object] = {
        "name": "sk",
        "split": Split(test_size=0.25, seed=0, stratify="churned"),
        "load": Step(use="files", path=str(data), target="churned"),
        "train": Step(use="sklearn", params={"max_iter": 500}),
        "evaluate": Step(use="sklearn", metrics=["accuracy", "roc_auc"]),
    }
    fields.update(changes)
    return Recipe(**fields)  # type: ignore[arg-type]


def test_trains_a_pipeline_that_handles_raw_categorical_data(project: Path, churn_csv: Path) -> None:
    result = run(_recipe(churn_csv), project=project)
    assert result.status == "succeeded", result.error
    model = result["model"]
    assert model.task == "classification" and model.flavor == "sklearn"
    assert type(model.model).__name__ == "Pipeline"
    assert "contract" in model.feature_columns and "churned" not in model.feature_columns
    predictions = model.model.predict(model.input_example)
    assert len(predictions) == 5 and set(predictions) <= {0, 1}
    metrics = result["evaluation"].metrics
    assert 0.7 < metrics["roc_auc"] <= 1.0 and 0.6 < metrics["accuracy"] <= 1.0
    assert result["evaluation"].rows == 500


def test_classifier_plots_are_png_artifacts_of_the_run(project: Path, churn_csv: Path) -> None:
    result = run(_recipe(churn_csv), project=project)
    evaluation = result["evaluation"]
    assert evaluation.artifacts == ["confusion_matrix.png", "roc_curve.png"]
    for name in evaluation.artifacts:
        png = result.run_dir / "artifacts" / "evaluate" / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    cached = run(_recipe(churn_csv), project=project)
    assert cached.stage_status["evaluate"] == "cached"
    assert (cached.run_dir / "artifacts" / "evaluate" / "roc_curve.png").is_file()  # carried into the new run


def test_evaluate_predicts_once_per_method_for_all_metrics_and_plots(
    project: Path, churn_csv: Path, tmp_path: Path
) -> None:
    """Three metrics and two plots ask the model five times (accuracy and f1 ``predict``, roc_auc
    ``decision_function``, the plots ``predict`` and ``predict_proba``); each method runs once,
    and the metrics are exactly what the scorers give on the bare estimator."""
    from sklearn.metrics import get_scorer

    from crispml_sklearn import EvaluateOptions
    from crispml_sklearn._evaluate import evaluate

    result = run(_recipe(churn_csv), project=project)
    model, dataset = result["model"], result["dataset"]
    pipeline = model.model
    calls: list[str] = []
    for method in ("predict", "predict_proba", "decision_function"):
        bound = getattr(pipeline, method)

        def counted(X: object, _bound: object = bound, _name: str = method, **kwargs: object) -> object:
            calls.append(_name)
            return _bound(X, **kwargs)  # type: ignore[operator]

        counted.__name__ = method  # scikit-learn reads it (decision_function vs predict_proba)
        setattr(pipeline, method, counted)
    options = EvaluateOptions(metrics=["accuracy", "roc_auc", "f1"], plots=True)
    evaluation = evaluate(options, model, dataset, tmp_path)
    assert evaluation.artifacts == ["confusion_matrix.png", "roc_curve.png"]
    assert sorted(calls) == ["decision_function", "predict", "predict_proba"]
    X, y = dataset.test_frame[model.feature_columns], dataset.test_frame[model.target]
    assert evaluation.metrics == {name: float(get_scorer(name)(pipeline, X, y)) for name in options.metrics}
    assert len(calls) == 3 + 3  # the bare estimator: a call per metric


@pytest.mark.parametrize(
    ("estimator", "target", "metrics"),
    [
        ("sklearn.dummy.DummyClassifier", "churned", ["accuracy", "f1"]),
        ("sklearn.svm.LinearSVC", "churned", ["accuracy", "roc_auc"]),  # no predict_proba
        ("sklearn.ensemble.RandomForestClassifier", "churned", ["roc_auc", "neg_log_loss"]),
        ("sklearn.linear_model.Ridge", "monthly_charges", ["r2", "neg_mean_absolute_error"]),
    ],
)
def test_evaluate_scores_a_bare_estimator_as_its_bare_scorers_do(
    project: Path, churn_csv: Path, tmp_path: Path, estimator: str, target: str, metrics: list[str]
) -> None:
    """The evaluate stage hands scorers and plots a wrapper that predicts once per method. A
    train plugin of someone else's may hand it any fitted estimator, not only this plugin's
    pipelines (which answer scikit-learn's "is it fitted?" themselves): a dummy, one with no
    ``predict_proba``, a forest, a regressor — scored exactly as the bare scorers score them."""
    import importlib

    from sklearn.metrics import get_scorer

    from crispml import TrainedModel
    from crispml_sklearn import EvaluateOptions
    from crispml_sklearn._evaluate import evaluate

    shutil.copy(churn_csv, project / "c.csv")
    recipe = Recipe(
        name="bare",
        split=Split(test_size=0.25, seed=0),
        load=Step(use="files", path=str(project / "c.csv"), target=target),
        train=Step(use="sklearn"),
        evaluate=Step(use="sklearn"),
    )
    dataset = run(recipe, project=project)["dataset"]
    frame = dataset.frame
    columns = [c for c in frame.columns if c != target and frame[c].dtype.kind in "if" and not frame[c].isna().any()]
    module, name = estimator.rsplit(".", 1)
    train = dataset.train_frame
    fitted = getattr(importlib.import_module(module), name)().fit(train[columns], train[target])
    task = "regression" if target == "monthly_charges" else "classification"
    model = TrainedModel(model=fitted, flavor="sklearn", task=task, target=target, feature_columns=columns)
    evaluation = evaluate(EvaluateOptions(metrics=metrics), model, dataset, tmp_path)
    X, y = dataset.test_frame[columns], dataset.test_frame[target]
    assert evaluation.metrics == {m: float(get_scorer(m)(fitted, X, y)) for m in metrics}
    assert ("confusion_matrix.png" in evaluation.artifacts) == (task == "classification")


def test_regression_with_another_estimator(project: Path, churn_csv: Path) -> None:
    shutil.copy(churn_csv, project / "c.csv")
    recipe = Recipe(
        name="reg",
        load=Step(use="files", path=str(project / "c.csv"), target="monthly_charges"),
        train=Step(use="sklearn", estimator="sklearn.ensemble.RandomForestRegressor", params={"n_estimators": 20}),
        evaluate=Step(use="sklearn", metrics=["r2", "neg_mean_absolute_error"], gate={"r2": ">= 0.5"}),
    )
    result = run(recipe, project=project)
    assert result.status == "succeeded", result.error
    assert result["model"].task == "regression"
    assert result["evaluation"].metrics["r2"] > 0.5
    assert result["evaluation"].artifacts == []


def test_the_same_recipe_trains_the_same_model(project: Path, churn_csv: Path) -> None:
    recipe = _recipe(
        churn_csv,
        train=Step(
            use="sklearn",
            estimator="sklearn.ensemble.RandomForestClassifier",
            params={"n_estimators": 10, "random_state": 1},
        ),
    )
    a = run(recipe, project=project, use_cache=False)["evaluation"].metrics
    b = run(recipe, project=project, use_cache=False)["evaluation"].metrics
    assert a == b


@pytest.mark.parametrize(
    ("train", "message"),
    [
        ({"estimator": "sklearn.linear_model.Nope"}, "train.estimator: cannot import estimator"),
        ({"estimator": "os.path"}, "train.estimator: 'os.path' is not a scikit-learn estimator class"),
        ({"params": {"n_neighbours": 3}}, "train.params: LogisticRegression has no parameter(s): n_neighbours"),
        ({"params": {"C": -1}}, "train.params: The 'C' parameter of LogisticRegression must be a float"),
    ],
)
def test_bad_estimators_are_recipe_errors(churn_csv: Path, train: dict[str, object], message: str) -> None:
    with pytest.raises(RecipeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check(_recipe(churn_csv, train=Step(use="sklearn", **train)))


class _KeyedLoader:
    """A load step whose rows carry an id and an event time that predict the label perfectly:
    a model that saw them would score 1.0 — so they must never reach it."""

    @hookimpl
    def crispml_declare(self) -> Declaration:
        return Declaration(stages={"load": Options})

    @hookimpl
    def crispml_load(self) -> Dataset:
        import numpy as np
        import pandas as pd

        rng = np.random.default_rng(0)
        n = 200
        label = rng.integers(0, 2, n)
        frame = pd.DataFrame(
            {
                "customer_id": label * 1000 + np.arange(n),
                "event_timestamp": pd.Timestamp("2026-01-01", tz="UTC") + pd.to_timedelta(label, unit="D"),
                "noise": rng.normal(size=n),
                "churned": label,
            }
        )
        return Dataset(
            frame=frame,
            target="churned",
            name="keyed",
            source="memory",
            fingerprint="keyed",
            key_columns=("customer_id", "event_timestamp"),
        )


def test_key_columns_never_reach_the_model(project: Path) -> None:
    recipe = Recipe(
        name="keys",
        split=Split(test_size=0.25, seed=0),
        load=Step(use="keyed"),
        train=Step(use="sklearn"),
        evaluate=Step(use="sklearn", metrics=["accuracy"], plots=False),
    )
    result = run(recipe, project=project, extra_plugins={"keyed": _KeyedLoader()})
    assert result.status == "succeeded", result.error
    model = result["model"]
    assert model.feature_columns == ["noise"]
    assert list(model.model.feature_names_in_) == ["noise"]
    assert list(model.input_example.columns) == ["noise"]
    assert result["evaluation"].metrics["accuracy"] < 0.75  # noise alone: the ids were not learnt
