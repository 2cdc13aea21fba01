"""Tracking: one MLflow run per crispml run, fed by the event hooks.

The MLflow run id goes into ``context.links`` (so the manifest names it); the crispml run id is
the MLflow run's name and its ``crispml.run_id`` tag. ``crispml resume`` continues the same
MLflow run. Everything sent goes through ``context.redact`` first: values read from
``${env:NAME}`` are sent as the reference, declared secrets and passwords inside URIs as ``***``.
"""

from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crispml import Dataset, RunContext, flatten
from crispml_mlflow import _backend

if TYPE_CHECKING:
    from crispml import CandidateRecord, Result
    from crispml_mlflow import TrackingOptions

PLUGIN = "mlflow"  # this plugin's name (its entry point), under which a recipe's tracking: names it
MAX_PARAM = 6000
MAX_TAG = 5000
_KEY_BAD = re.compile(r"[^A-Za-z0-9_\-. :/]")

_CLIENTS: dict[tuple[str, str], Any] = {}


def _key(name: str) -> str:
    return _KEY_BAD.sub("_", name)[:250]


def _text(value: Any, limit: int) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def connect(options: TrackingOptions, context: RunContext) -> tuple[Any, str]:
    uri = _backend.tracking_uri(options.tracking_uri, context.project_dir)
    key = (context.run_id, uri)
    if key not in _CLIENTS:
        client = _backend.client(uri, context.project_dir, timeout=options.timeout, max_retries=options.max_retries)
        _backend.check_reachable(client, uri, options.timeout, options.max_retries)
        _CLIENTS[key] = client
    return _CLIENTS[key], uri


def experiment_id(client: Any, name: str, uri: str, project_dir: Path) -> str:
    """The experiment's id, created on first use (two runs creating it at once both succeed)."""
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found is not None:
        if found.lifecycle_stage == "deleted":
            client.restore_experiment(found.experiment_id)
        return str(found.experiment_id)
    root = _backend.artifact_root(uri, project_dir)
    location = None
    if root is not None:
        location = str(Path(root) / re.sub(r"[^A-Za-z0-9_.-]", "_", name))
    try:
        return str(client.create_experiment(name, artifact_location=location))
    except MlflowException:
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return str(found.experiment_id)


def run_tags(context: RunContext, extra: dict[str, str] | None = None) -> dict[str, str]:
    manifest = context.manifest()
    env = manifest.get("environment") or {}
    git = env.get("git") or {}
    tags = {
        "mlflow.runName": context.run_id,
        "mlflow.user": _backend.user().split("@")[0],
        "mlflow.source.type": "LOCAL",
        "mlflow.source.name": str(manifest.get("recipe_file") or context.recipe.name),
        "crispml.run_id": context.run_id,
        "crispml.recipe": context.recipe.name,
        "crispml.recipe_hash": str(manifest.get("recipe_hash")),
        "crispml.run_dir": str(context.run_dir),
        "crispml.version": str(env.get("crispml")),
    }
    if git.get("commit"):
        tags["mlflow.source.git.commit"] = str(git["commit"])
        tags["crispml.git_commit"] = str(git["commit"])
        tags["crispml.git_dirty"] = str(bool(git.get("dirty"))).lower()
    # The tracker's ``tags:`` option as the recipe spells it: ``owner: ${env:USER}`` is sent as
    # the reference, never the value (the validated options hold the value).
    written = ((context.redacted_recipe().get("tracking") or {}).get(PLUGIN) or {}).get("tags") or {}
    tags.update({str(k): str(written.get(k, context.redact(v))) for k, v in (extra or {}).items()})
    return {k: _text(v, MAX_TAG) for k, v in tags.items()}


def params_of(context: RunContext) -> dict[str, str]:
    """The recipe's options, flattened (``train.params.C``), as the manifest keeps them."""
    recipe = context.redacted_recipe()
    recipe.pop("description", None)
    return {_key(k): _text(v, MAX_PARAM) for k, v in flatten(recipe).items()}


def before_run(options: TrackingOptions, context: RunContext) -> None:
    from mlflow.entities import Param

    client, uri = connect(options, context)
    previous = context.links.get("mlflow_run_id")
    if previous and context.resumed:
        client.update_run(previous, status="RUNNING")
        client.set_tag(previous, "crispml.resumed", "true")
        return
    exp = experiment_id(client, options.experiment or context.recipe.name, uri, context.project_dir)
    run = client.create_run(exp, run_name=context.run_id, tags=run_tags(context, options.tags))
    run_id = run.info.run_id
    context.links["mlflow_run_id"] = run_id
    context.links["mlflow_experiment_id"] = exp
    context.links["mlflow_tracking_uri"] = _backend.safe_uri(uri)
    if _backend.is_remote(uri):
        context.links["mlflow_run_url"] = f"{_backend.safe_uri(uri).rstrip('/')}/#/experiments/{exp}/runs/{run_id}"
    params = [Param(k, v) for k, v in params_of(context).items()]
    for i in range(0, len(params), 100):
        client.log_batch(run_id, params=params[i : i + 100])


def _run(options: TrackingOptions, context: RunContext) -> tuple[Any, str] | None:
    run_id = context.links.get("mlflow_run_id")
    if not run_id:
        return None  # before_run did not get as far as creating it
    client, _ = connect(options, context)
    return client, str(run_id)


def metric_name(stage: str, name: str) -> str:
    """Evaluation metrics keep their names (``roc_auc``); others are ``<stage>.<name>``."""
    return _key(name if stage == "evaluate" else f"{stage}.{name}")


def after_stage(
    options: TrackingOptions,
    context: RunContext,
    stage: str,
    plugin: str,
    status: str,
    result: Result,
    duration: float,
) -> None:
    from mlflow.entities import Metric, RunTag

    found = _run(options, context)
    if found is None:
        return
    client, run_id = found
    now = int(time.time() * 1000)
    metrics = [Metric(f"crispml.stage.{stage}.seconds", float(duration), now, 0)]
    for name, value in result.metrics.items():
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            metrics.append(Metric(metric_name(stage, name), float(value), now, 0))
    tags = [
        RunTag(f"crispml.stage.{stage}.status", status),
        RunTag(f"crispml.stage.{stage}.plugin", plugin),
    ]
    if result.rejection:
        tags.append(RunTag(f"crispml.stage.{stage}.rejection", _text(context.redact(result.rejection), MAX_TAG)))
    client.log_batch(run_id, metrics=metrics, tags=tags)
    if isinstance(result, Dataset):
        _log_dataset(client, run_id, result)
    if options.log_artifacts:
        folder = context.run_dir / "artifacts" / stage
        if folder.is_dir() and any(folder.iterdir()):
            client.log_artifacts(run_id, str(folder), artifact_path=f"stages/{stage}")


def after_candidates(
    options: TrackingOptions,
    context: RunContext,
    stage: str,
    candidates: list[CandidateRecord],
    selected: int | None,
) -> None:
    """Each candidate as an MLflow run nested under the run's (``mlflow.parentRunId``), as
    MLflow's own searches log them: its options as params, its evaluation as metrics. A stage
    run again (a resume) updates the nested runs it made before rather than adding more."""
    from mlflow.entities import Metric, Param, RunTag

    found = _run(options, context)
    if found is None:
        return
    client, parent = found
    experiment = str(context.links.get("mlflow_experiment_id") or client.get_run(parent).info.experiment_id)
    earlier: dict[str, str] = {}
    for child in client.search_runs(
        [experiment], filter_string=f"tags.mlflow.parentRunId = '{parent}'", max_results=1000
    ):
        index = child.data.tags.get("crispml.candidate")
        if child.data.tags.get("crispml.stage") == stage and index:
            earlier[index] = child.info.run_id
    now = int(time.time() * 1000)
    for candidate in candidates:
        tags = {
            "mlflow.parentRunId": parent,
            "crispml.run_id": context.run_id,
            "crispml.stage": stage,
            "crispml.candidate": str(candidate.index),
            "crispml.candidate.status": candidate.status,
            "crispml.selected": str(candidate.index == selected).lower(),
        }
        if candidate.error:
            tags["crispml.error"] = _text(context.redact(candidate.error), MAX_TAG)
        run_id = earlier.get(str(candidate.index))
        if run_id is None:
            name = f"{context.run_id}/{stage}-{candidate.index}"
            run_id = client.create_run(experiment, run_name=name).info.run_id
            flat = flatten(context.redact(candidate.options)).items()
            params = [Param(_key(k), _text(v, MAX_PARAM)) for k, v in flat]
            for i in range(0, len(params), 100):
                client.log_batch(run_id, params=params[i : i + 100])
        metrics = [
            Metric(_key(name), float(value), now, 0)
            for name, value in candidate.metrics.items()
            if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        ]
        if candidate.duration is not None:
            metrics.append(Metric("crispml.candidate.seconds", float(candidate.duration), now, 0))
        client.log_batch(run_id, metrics=metrics, tags=[RunTag(k, _text(v, MAX_TAG)) for k, v in tags.items()])
        client.set_terminated(run_id, "FAILED" if candidate.status == "failed" else "FINISHED")


def _log_dataset(client: Any, run_id: str, dataset: Dataset) -> None:
    """The dataset as an MLflow input; its digest is crispml's fingerprint (MLflow keeps 36
    characters of it; the whole one is the input's ``crispml.fingerprint`` tag)."""
    import warnings

    import mlflow.data
    from mlflow.entities import DatasetInput, InputTag

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MLflow's hints about integer columns in the schema
        data = mlflow.data.from_pandas(
            dataset.frame,
            source=_source(dataset.source),
            name=dataset.name,
            targets=dataset.target,
            digest=dataset.fingerprint[:36],
        )
        entity = data._to_mlflow_entity()
    tags = [
        InputTag("mlflow.data.context", "train"),
        InputTag("crispml.fingerprint", dataset.fingerprint),
    ]
    client.log_inputs(run_id, datasets=[DatasetInput(entity, tags=tags)])


def _source(text: str) -> Any:
    """MLflow's source for a dataset's ``source``: a path or a URI MLflow knows resolves as
    usual; any other (``feast:churn/churn_v1 ... labels.parquet``, a scheme MLflow has no resolver
    for) is kept as it is in a code source's tags, instead of failing the stage."""
    from mlflow.data.code_dataset_source import CodeDatasetSource
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.exceptions import MlflowException

    try:
        return resolve_dataset_source(text)
    except MlflowException:
        return CodeDatasetSource(tags={"crispml.source": text})


def on_stage_error(
    options: TrackingOptions, context: RunContext, stage: str, plugin: str, error: BaseException
) -> None:
    from mlflow.entities import RunTag

    found = _run(options, context)
    if found is None:
        return
    client, run_id = found
    message = _text(context.redact(f"{type(error).__name__}: {error}"), MAX_TAG)
    client.log_batch(
        run_id,
        tags=[
            RunTag(f"crispml.stage.{stage}.status", "failed"),
            RunTag(f"crispml.stage.{stage}.plugin", plugin),
            RunTag(f"crispml.stage.{stage}.error", message),
        ],
    )


def after_run(options: TrackingOptions, context: RunContext, status: str, error: BaseException | None) -> None:
    from mlflow.entities import RunTag

    found = _run(options, context)
    try:
        if found is None:
            return
        client, run_id = found
        manifest = context.redact(context.manifest().to_dict())
        tags = [RunTag("crispml.outcome", status)]
        if manifest.get("rejection"):
            tags.append(RunTag("crispml.rejection", _text(manifest["rejection"], MAX_TAG)))
        if manifest.get("error"):
            tags.append(RunTag("crispml.error", _text(manifest["error"], MAX_TAG)))
        client.log_batch(run_id, tags=tags)
        if manifest.get("duration") is not None:
            client.log_metric(run_id, "crispml.run.seconds", float(manifest["duration"]))
        if options.log_artifacts:
            client.log_dict(run_id, manifest, "crispml/manifest.json")
        # A rejected run did its job (a gate said no): FINISHED, with its outcome as a tag.
        client.set_terminated(run_id, "FAILED" if status == "failed" else "FINISHED")
    finally:
        for key in [k for k in _CLIENTS if k[0] == context.run_id]:
            _CLIENTS.pop(key, None)
