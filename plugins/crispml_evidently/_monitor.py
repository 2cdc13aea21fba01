"""The monitor stage: find the reference and the current data through lineage, compare, decide.

* Reference = exactly what the served version was trained on: the deployment's
  ``training_run`` → that run's stored ``load`` result → ``train_frame[feature_columns]``, with
  that run's trained model's predictions on it. ``reference: FILE`` when the run is not in this
  project's run store.
* Current = the deployment's predicted records in the window (``crispml.prediction_records``),
  only those the version now serving answered (the others are counted), or ``batch: FILE``.

Nothing here opens the serving plugin's files: the deployment and its log come through
``crispml.deployment`` and ``crispml.prediction_records``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crispml import (
    Deployment,
    MonitorReport,
    RunContext,
    RunStore,
    UsageError,
    ValidationReport,
    parse_duration,
)

if TYPE_CHECKING:
    from crispml_evidently import MonitorOptions

PREDICTION = "prediction"


@dataclass
class Reference:
    frame: Any
    """Feature columns, plus ``prediction`` when the model could be asked."""
    features: list[str]
    numerical: list[str]
    categorical: list[str]
    model: Any
    source: dict[str, Any]
    target: str | None = None
    """The training data's target column (absent from production data)."""
    key_columns: tuple[str, ...] = ()
    """The training data's key columns (entity keys, event time): not compared for drift, but
    checked by a suite with ``validate: true`` when the window's requests carry them."""


def deployment_name(options: MonitorOptions, recipe: Any) -> str | None:
    """``deployment:``, else the recipe's deploy step's ``name``."""
    if options.deployment:
        return options.deployment
    deploy = recipe.step("deploy") if recipe is not None else None
    name = deploy.options.get("name") if deploy is not None else None
    return str(name) if name else None


def find_deployment(options: MonitorOptions, context: RunContext) -> Deployment | None:
    """The watched deployment (through ``crispml_deployment``), or ``None`` when a batch is
    compared and no deployment is named."""
    name = deployment_name(options, context.recipe)
    if name is None:
        if options.batch is not None:
            return None
        raise UsageError("monitor.deployment: no deployment to watch (name one, or add a deploy step)")
    try:
        return context.session.deployment(name)
    except UsageError as exc:
        raise UsageError(f"monitor.deployment: {exc}") from None


def _read_table(path: Path) -> Any:
    import pandas as pd

    if path.suffix.lower() in (".parquet", ".pq"):
        return pd.read_parquet(path)
    return pd.read_csv(path)


def load_reference(options: MonitorOptions, training_run: str | None, store: RunStore) -> Reference:
    from crispml_evidently._drift import column_types

    if options.reference is not None:
        frame = _read_table(options.reference)
        features = [str(c) for c in frame.columns if c != PREDICTION]
        numerical, categorical = column_types(frame, features)
        return Reference(frame, features, numerical, categorical, None, {"source": str(options.reference)})
    training_run = check_training_run(training_run, store)
    dataset = store.load_result(training_run, "load")
    trained = store.load_result(training_run, "train")
    features = list(trained.feature_columns) if trained is not None else list(dataset.feature_columns)
    frame = dataset.train_frame[features].reset_index(drop=True)
    numerical, categorical = column_types(dataset.frame, features)
    model = trained.model if trained is not None else None
    if model is not None:
        frame[PREDICTION] = model.predict(frame[features])
    source = {"training_run": training_run, "data_fingerprint": dataset.fingerprint, "source": dataset.source}
    return Reference(frame, features, numerical, categorical, model, source, dataset.target, tuple(dataset.key_columns))


def check_training_run(training_run: str | None, store: RunStore) -> str:
    """The run that trained the served model, if this project's store has its data."""
    if training_run is None:
        raise UsageError("monitor: the deployment does not say which run trained its model: give 'reference: FILE'")
    if not store.result_path(training_run, "load").is_file():
        raise UsageError(
            f"monitor: run '{training_run}' (which trained the served model) is not in this project's run "
            f"store ({store.runs_dir}): give 'reference: FILE'"
        )
    return training_run


def current_from_log(options: MonitorOptions, deployment: Deployment) -> tuple[Any, int, dict[str, Any]]:
    """``(frame, rows from other versions, source)`` of the window's records."""
    import crispml

    since = timedelta(seconds=parse_duration(options.window.since)) if options.window.since else None
    records = crispml.prediction_records(deployment, since=since, last=options.window.last)
    mine = [r for r in records if deployment.model is None or r.get("model") == deployment.model]
    frame = crispml.window_frame(mine)
    if mine:
        frame[PREDICTION] = [r.get("prediction") for r in mine]
    window = {"since": options.window.since} if options.window.since else {"last": options.window.last}
    source = {"deployment": deployment.name, "model": deployment.model, "window": window}
    return frame, len(records) - len(mine), source


def current_from_batch(options: MonitorOptions, reference: Reference) -> tuple[Any, int, dict[str, Any]]:
    assert options.batch is not None
    frame = _read_table(options.batch)
    check_batch_columns(options.batch, [str(c) for c in frame.columns], reference.features)
    if PREDICTION not in frame.columns and reference.model is not None and len(frame):
        frame[PREDICTION] = reference.model.predict(frame[reference.features])
    return frame, 0, {"batch": str(options.batch)}


def check_batch_columns(path: Path, columns: list[str], features: list[str]) -> None:
    missing = [c for c in features if c not in columns]
    if missing:
        raise UsageError(
            f"--batch {path}: lacks the model's column(s) {', '.join(missing)} (has: {', '.join(columns)})"
        )


def monitor(options: MonitorOptions, deployment: Deployment | None, context: RunContext) -> MonitorReport:
    from crispml_evidently._drift import detect

    store = context.store
    if options.batch is None:
        deployment = find_deployment(options, context)
    elif deployment is None:
        try:  # a batch is compared with what the deployment serves, when there is one
            deployment = find_deployment(options, context)
        except UsageError:
            deployment = None
    label = (deployment.model if deployment is not None else None) or (deployment.name if deployment else "batch")
    training_run = deployment.training_run if deployment is not None else None
    if options.batch is not None and training_run is None:
        training_run = _latest_training_run(store, context.recipe.name)
    reference = load_reference(options, training_run, store)
    if options.batch is not None:
        current, others, source = current_from_batch(options, reference)
        unit = "rows"
    else:
        assert deployment is not None
        current, others, source = current_from_log(options, deployment)
        unit = "requests"
    rows = len(current)
    metrics: dict[str, float] = {"current_rows": float(rows), "other_versions_rows": float(others)}
    head = f"{label} · {rows:,} {unit}" + (f" ({others:,} from other versions not compared)" if others else "")
    if rows == 0:
        return MonitorReport(metrics=metrics, headline=f"{head} · no production data in the window")
    if rows < options.min_rows:
        return MonitorReport(
            metrics=metrics, headline=f"{head} · fewer than min_rows ({options.min_rows}): not compared"
        )
    missing = [c for c in reference.features if c not in current.columns]
    if missing:
        raise UsageError(f"the current data lacks the model's column(s): {', '.join(missing)}")
    suite = validate_window(current, reference, label, context) if options.validate_ else None
    prediction = PREDICTION if PREDICTION in reference.frame and PREDICTION in current else None
    out_dir = context.artifact_dir("monitor")
    doc = detect(
        reference.frame,
        current,
        numerical=reference.numerical,
        categorical=reference.categorical,
        settings=options.settings(),
        prediction=prediction,
        out_dir=out_dir,
        sources={"reference": reference.source, "current": source},
    )
    drifted, total, share = doc["drifted_columns"], doc["column_count"], doc["drift_share"]
    drift = bool(doc["dataset_drift"])
    metrics |= {
        "drift_share": float(share),
        "drifted_columns": float(drifted),
        "prediction_drift": float(bool(doc["prediction"] and doc["prediction"]["drifted"])),
    }
    sign = "≥" if drift else "<"
    head += f" · {drifted} of {total} columns drifted ({share:.2f} {sign} {options.drift_share:g})"
    rejection = None
    if drift:
        names = ", ".join(c for c, v in doc["columns"].items() if v["drifted"])
        rejection = f"drift: {drifted} of {total} columns ({names})"
    bad_data = False
    if suite is not None:
        failed = [r for r in suite.results if not r.success]
        metrics["validation_failed"] = float(len(failed))
        bad_data = suite.rejection is not None
        head += f" · suite failed ({len(failed)} of {len(suite.results)})" if failed else " · suite passed"
        if bad_data:
            # Never retrain on bad data: the window failing the suite is the finding.
            rejection = f"the window failed validation: {suite.rejection}" + (f"; {rejection}" if rejection else "")
    return MonitorReport(
        metrics=metrics,
        artifacts=[p.name for p in sorted(out_dir.iterdir()) if p.is_file()],
        rejection=rejection,
        drift_detected=drift,
        retrain=drift and not bad_data and options.on_drift == "retrain",
        headline=head,
    )


def validate_window(current: Any, reference: Reference, label: str, context: RunContext) -> ValidationReport:
    """The recipe's validate step applied to the window (``context.apply_step``): the window's
    Dataset names the training target without having the column, so expectations on it are
    the validate plugin's to skip; it holds the model's features and the training data's key
    columns the requests carried (as ``crispml validate-data``'s window does)."""
    import crispml

    window = crispml.window_dataset(
        current, reference.target, label, features=reference.features, key_columns=reference.key_columns
    )
    report = context.apply_step("validate", dataset=window)
    assert isinstance(report, ValidationReport)
    return report


def _latest_training_run(store: RunStore, recipe_name: str) -> str | None:
    """For a batch with no deployment: this recipe's latest run that trained a model."""
    for manifest in store.list_runs():
        if manifest.recipe_name != recipe_name or manifest.status != "succeeded":
            continue
        if any(s.name == "train" and s.status in ("succeeded", "cached") for s in manifest.stages):
            return manifest.run_id
    return None
