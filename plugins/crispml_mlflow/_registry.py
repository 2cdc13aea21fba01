"""The model registry: register, the champion/challenger gate, promote, rollback, load.

Audit trail: every version carries ``crispml.*`` tags (which run, which data, its metrics, who
registered it and when, the gate's decision); a version that becomes champion gets
``crispml.champion_since``, ``crispml.promoted_by`` and ``crispml.promotion_reason``; the one it
replaces gets ``crispml.champion_until``. The registered model's ``crispml.champion_history``
tag lists every promotion in order, which is what ``rollback`` walks back.

Registration (the lookup of an identical model already registered, logging, the new version,
the decision: read champion, compare, move the alias) runs under a per-model file lock, so two
runs on one machine registering the same model at once cannot both "win" with stale reads, nor
both register one identical model. A champion move writes its audit tags and history first and
the alias last, and undoes its earlier writes if one fails.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import warnings
from collections.abc import Callable
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crispml import Dataset, Evaluation, ModelVersion, RunContext, TrainedModel, UsageError
from crispml_mlflow import _backend, _tracking

if TYPE_CHECKING:
    from crispml_mlflow import RegisterOptions

CHAMPION = "champion"
CHALLENGER = "challenger"
HISTORY = "crispml.champion_history"
METRIC_TAG = "crispml.metric."
MODEL_TAG = "crispml.model_fingerprint"
_REF = re.compile(r"^(?P<name>[A-Za-z][A-Za-z0-9_.-]*)(?:@(?P<alias>[A-Za-z0-9_-]+)|/(?P<version>\d+))$")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _not_found(exc: BaseException) -> bool:
    code = getattr(exc, "error_code", "")
    return code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND") or "not found" in str(exc).lower()


# -- register ---------------------------------------------------------------------------------


def register(
    options: RegisterOptions,
    model: TrainedModel,
    evaluation: Evaluation | None,
    dataset: Dataset,
    context: RunContext,
) -> ModelVersion:
    metric = options.compare_on
    value: float | None = None
    if metric is not None:
        produced = sorted(evaluation.metrics) if evaluation is not None else []
        if metric not in produced:
            raise UsageError(
                f"register: compare_on '{metric}' is not a metric the evaluation produced "
                f"(it produced: {', '.join(produced) or 'nothing'})"
            )
        assert evaluation is not None
        value = float(evaluation.metrics[metric])

    tracker = context.trackers.get("mlflow")
    uri_option = options.tracking_uri or getattr(tracker, "tracking_uri", None)
    uri = _backend.tracking_uri(uri_option, context.project_dir)
    client = _backend.client(uri, context.project_dir, timeout=options.timeout, max_retries=options.max_retries)
    _backend.check_reachable(client, uri, options.timeout, options.max_retries)

    # The model goes into the tracked MLflow run when there is one on this store; else into a
    # run of its own, in the experiment named after the recipe.
    run_id = context.links.get("mlflow_run_id") if tracker is not None else None
    if run_id and context.links.get("mlflow_tracking_uri") != _backend.safe_uri(uri):
        run_id = None
    # The lookup of an already registered identical model, the logging and the gate all run under
    # the per-model lock: two runs of one unchanged model at once cannot both register it.
    with _backend.file_lock(_lock(context.project_dir, uri, options.model_name)):
        # The same trained model (same train-stage fingerprint: data, options, code) registered
        # before is not registered again: re-running an unchanged recipe is not a new challenger,
        # and it passes only if that version is the champion.
        existing = _registered_as(client, options, _model_fingerprint(context), value)
        if existing is not None:
            return existing
        own_run = run_id is None
        if own_run:
            exp = _tracking.experiment_id(client, context.recipe.name, uri, context.project_dir)
            tags = _tracking.run_tags(context, {"mlflow.runName": f"{context.run_id}-register"})
            run = client.create_run(exp, run_name=tags["mlflow.runName"], tags=tags)
            run_id = run.info.run_id
            context.links["mlflow_register_run_id"] = run_id
        try:
            info = _log_model(options, model, dataset, uri, str(run_id))
            version = _register_and_decide(client, options, context, info, str(run_id), dataset, evaluation, value)
        except BaseException:
            if own_run:
                client.set_terminated(run_id, "FAILED")
            raise
        if own_run:
            client.set_terminated(run_id, "FINISHED")
        return version


def _lock(project_dir: Path, uri: str, name: str) -> Path:
    return _backend.lock_path(project_dir, f"{_backend.safe_uri(uri)}|{name}")


def _model_fingerprint(context: RunContext) -> str | None:
    for stage in context.manifest().get("stages", []):
        if stage.get("name") == "train" and stage.get("fingerprint"):
            return str(stage["fingerprint"])
    return None


def _registered_as(
    client: Any, options: RegisterOptions, fingerprint: str | None, value: float | None
) -> ModelVersion | None:
    """The version already registered for this exact trained model, if any.

    It is not registered twice; with a ``compare_on`` gate the run passes only if that version is
    the champion now. A version the gate kept out (or a champion since replaced) carries a
    ``rejection``: re-running an unchanged model must not turn an earlier "no" into a success.
    Without ``compare_on`` there was no gate, and a re-run succeeds as the first run did."""
    if fingerprint is None:
        return None
    name = options.model_name
    try:
        model = client.get_registered_model(name)
    except Exception as exc:
        if _not_found(exc):
            return None
        raise
    for mv in client.search_model_versions(f"name='{name}'"):
        tags = mv.tags or {}
        if tags.get(MODEL_TAG) != fingerprint:
            continue
        version = str(mv.version)
        aliases = sorted(a for a, v in (model.aliases or {}).items() if str(v) == version)
        metrics: dict[str, float] = {}
        metric = options.compare_on
        if metric is not None and value is not None:
            metrics[metric] = value
        rejection = None
        # Without compare_on there is no gate: registering is the outcome, and a re-run repeats it.
        if CHAMPION not in aliases and options.compare_on is not None:
            champion = (model.aliases or {}).get(CHAMPION)
            now = f"champion is version {champion}" if champion is not None else "there is no champion"
            rejection = (
                f"this unchanged model (same data, options and code) is already version {version} "
                f"of '{name}', and it is not the champion ({now})"
            )
            decision = tags.get("crispml.decision")
            if decision:
                rejection += f"; earlier decision: {decision}"
        return ModelVersion(
            name=name,
            version=version,
            uri=f"models:/{name}/{version}",
            aliases=aliases,
            run_id=mv.run_id,
            promoted=False,
            metrics=metrics,
            rejection=rejection,
        )
    return None


def requirements(model: TrainedModel, options: RegisterOptions) -> list[str]:
    """Pinned from what is installed: crispml already knows the environment, so MLflow need
    not infer it (its inference loads the model in a subprocess)."""
    if options.pip_requirements is not None:
        return list(options.pip_requirements)
    names = ["mlflow", "pandas", "numpy"]
    if model.flavor == "sklearn":
        names.append("scikit-learn")
    names.append("skops" if options.serialization_format == "skops" else "cloudpickle")
    estimator = model.model
    steps = getattr(estimator, "steps", None)
    if steps:
        estimator = steps[-1][1]
    top = type(estimator).__module__.split(".")[0]
    if top not in ("sklearn", "builtins", "__main__"):
        names.append(top)
    out = []
    for name in dict.fromkeys(names):
        try:
            out.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return out


def _log_model(options: RegisterOptions, model: TrainedModel, dataset: Dataset, uri: str, run_id: str) -> Any:
    from mlflow.models import infer_signature

    example = model.input_example
    if example is None:
        example = dataset.train_frame[model.feature_columns].head(5)
    with warnings.catch_warnings():
        # MLflow hints that integer columns cannot hold missing values: true, and not actionable.
        warnings.filterwarnings("ignore", message=".*integer column", category=UserWarning)
        # Emitted while MLflow imports its own PythonModel subclasses: about MLflow, not the user.
        warnings.filterwarnings("ignore", message=".*Any type hint is inferred", category=UserWarning)
        signature = infer_signature(example, model.model.predict(example))
        with _backend.fluent(uri):
            common: dict[str, Any] = {
                "name": "model",
                "run_id": run_id,
                "signature": signature,
                "input_example": example,
                "pip_requirements": requirements(model, options),
            }
            if model.flavor == "sklearn":
                import mlflow.sklearn

                _quiet_pickle_warning(options)

                return mlflow.sklearn.log_model(
                    model.model, serialization_format=options.serialization_format, **common
                )
            import mlflow.pyfunc

            return mlflow.pyfunc.log_model(python_model=_Predictor(model.model), **common)


class _DropPickleWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "pickle or cloudpickle format" not in record.getMessage()


def _quiet_pickle_warning(options: RegisterOptions) -> None:
    """cloudpickle is the default on purpose (skops refuses crispml's preprocessing pipeline:
    ``numpy.dtype`` is not a trusted type), and documented: MLflow's warning about it on every
    registration is noise. Shown when a user sets ``serialization_format: pickle``."""
    logger = logging.getLogger("mlflow.sklearn")
    quiet = options.serialization_format == "cloudpickle"
    if quiet and not any(isinstance(f, _DropPickleWarning) for f in logger.filters):
        logger.addFilter(_DropPickleWarning())


def _pyfunc_base() -> type:
    import mlflow.pyfunc

    return mlflow.pyfunc.PythonModel  # type: ignore[no-any-return]


class _Predictor:
    """Any fitted object with ``predict`` as an MLflow pyfunc model (non-sklearn flavors)."""

    def __new__(cls, fitted: Any) -> Any:
        base = _pyfunc_base()

        class Predictor(base):  # type: ignore[misc,valid-type]
            def __init__(self, inner: Any) -> None:
                self.inner = inner

            def predict(self, context: Any, model_input: Any, params: Any = None) -> Any:
                return self.inner.predict(model_input)

        return Predictor(fitted)


def _metric_of(client: Any, mv: Any, metric: str) -> float | None:
    tag = (mv.tags or {}).get(METRIC_TAG + metric)
    if tag is not None:
        try:
            return float(tag)
        except ValueError:
            return None
    if mv.run_id:
        try:
            value = client.get_run(mv.run_id).data.metrics.get(metric)
        except Exception:
            return None
        return None if value is None else float(value)
    return None


def champion_of(client: Any, name: str) -> Any | None:
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except Exception as exc:
        if _not_found(exc):
            return None
        raise


def _ensure_registered_model(client: Any, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
        return
    except MlflowException as exc:
        if not _not_found(exc):
            raise
    try:
        client.create_registered_model(name, tags={"crispml.created_by": _backend.user(), "crispml.created_at": _now()})
    except MlflowException as exc:
        if getattr(exc, "error_code", "") != "RESOURCE_ALREADY_EXISTS":
            raise


def _register_and_decide(
    client: Any,
    options: RegisterOptions,
    context: RunContext,
    info: Any,
    run_id: str,
    dataset: Dataset,
    evaluation: Evaluation | None,
    value: float | None,
) -> ModelVersion:
    name = options.model_name
    metric = options.compare_on
    manifest = context.manifest()
    git = ((manifest.get("environment") or {}).get("git") or {}).get("commit")
    tags = {
        "crispml.run_id": context.run_id,
        "crispml.recipe": context.recipe.name,
        "crispml.data_fingerprint": dataset.fingerprint,
        "crispml.registered_by": _backend.user(),
        "crispml.registered_at": _now(),
        "crispml.git_commit": str(git),
        "crispml.mlflow_run_id": run_id,
    }
    fingerprint = _model_fingerprint(context)
    if fingerprint:
        tags[MODEL_TAG] = fingerprint
    for key, val in (evaluation.metrics if evaluation else {}).items():
        tags[METRIC_TAG + key] = repr(float(val))

    # Called under the per-model lock (see ``register``).
    _ensure_registered_model(client, name)
    mv = client.create_model_version(name, info.model_uri, run_id=run_id, tags=tags, model_id=info.model_id)
    version = str(mv.version)
    try:
        client.set_registered_model_alias(name, CHALLENGER, version)
        champion = champion_of(client, name)
        rejection: str | None = None
        metrics: dict[str, float] = {}
        if value is not None and metric is not None:
            metrics[metric] = value
        if champion is None:
            reason = "first model: no champion yet"
            promote = True
        elif metric is None or value is None:
            reason = f"no compare_on: champion stays version {champion.version}"
            promote = False
        else:
            old = _metric_of(client, champion, metric)
            if old is None:
                promote = False
                reason = (
                    f"champion version {champion.version} has no recorded {metric}: "
                    "cannot compare (promote by hand: crispml promote)"
                )
                rejection = reason
            else:
                metrics[f"champion_{metric}"] = old
                gain = value - old if options.greater_is_better else old - value
                promote = gain > options.min_improvement
                word = "beats" if promote else "does not beat"
                reason = (
                    f"{metric} {value:.6g} {word} champion version {champion.version}'s "
                    f"{old:.6g} by more than {options.min_improvement:g}"
                )
                if not promote:
                    rejection = f"challenger version {version}: {reason}"
        client.set_model_version_tag(
            name, version, "crispml.decision", ("promoted: " if promote else "kept: ") + reason
        )
        if promote:
            # The last write of the gate; it undoes its own writes if one fails, so the
            # previous champion stays champion.
            set_champion(client, name, version, reason, by=_backend.user(), run=context.run_id)
    except BaseException:
        # Nothing half-registered: a version whose gate did not complete is removed (it never
        # became champion: ``set_champion`` moves the alias last and undoes itself on failure).
        with contextlib.suppress(Exception):
            client.delete_model_version(name, version)
        raise
    aliases = [CHALLENGER] + ([CHAMPION] if promote else [])
    return ModelVersion(
        name=name,
        version=version,
        uri=f"models:/{name}/{version}",
        aliases=aliases,
        run_id=run_id,
        promoted=promote,
        metrics=metrics,
        rejection=rejection,
    )


# -- champion moves (the gate, promote, rollback) ----------------------------------------------


def _history_tag(client: Any, name: str) -> str | None:
    return (client.get_registered_model(name).tags or {}).get(HISTORY)


def history(client: Any, name: str) -> list[dict[str, Any]]:
    try:
        value = json.loads(_history_tag(client, name) or "[]")
    except ValueError:
        return []
    return value if isinstance(value, list) else []


class _Undoable:
    """The registry writes of one champion move, each with how to undo it. If a write fails,
    ``undo`` puts back what the earlier ones changed (newest first): a move happens entirely
    or not at all (as far as the registry still answers)."""

    def __init__(self, client: Any, name: str) -> None:
        self.client, self.name = client, name
        self.undos: list[Callable[[], None]] = []

    def version_tag(self, version: str, key: str, value: str, before: dict[str, str]) -> None:
        c, name, old = self.client, self.name, before.get(key)
        if old is None:
            self.undos.append(lambda: c.delete_model_version_tag(name, version, key))
        else:
            self.undos.append(lambda: c.set_model_version_tag(name, version, key, old))
        c.set_model_version_tag(name, version, key, value)

    def model_tag(self, key: str, value: str, old: str | None) -> None:
        c, name = self.client, self.name
        if old is None:
            self.undos.append(lambda: c.delete_registered_model_tag(name, key))
        else:
            self.undos.append(lambda: c.set_registered_model_tag(name, key, old))
        c.set_registered_model_tag(name, key, value)

    def alias(self, alias: str, version: str, old: str | None) -> None:
        c, name = self.client, self.name
        if old is None:
            self.undos.append(lambda: c.delete_registered_model_alias(name, alias))
        else:
            self.undos.append(lambda: c.set_registered_model_alias(name, alias, old))
        c.set_registered_model_alias(name, alias, version)

    def undo(self) -> None:
        for step in reversed(self.undos):
            with contextlib.suppress(Exception):
                step()
        self.undos.clear()


def set_champion(client: Any, name: str, version: str, reason: str, *, by: str, run: str | None) -> None:
    """Move ``champion`` to ``version`` and record who, when, why and from which run.

    The audit tags and the history are written first and the alias moved last; if any write
    fails, the earlier ones are undone and the previous champion stays champion."""
    now = _now()
    previous = champion_of(client, name)
    target = client.get_model_version(name, version)
    old_history = _history_tag(client, name)
    entries = history(client, name)
    entries.append({"version": str(version), "at": now, "by": by, "reason": reason, "run": run})
    writes = _Undoable(client, name)
    try:
        for key, val in {
            "crispml.champion_since": now,
            "crispml.promoted_by": by,
            "crispml.promotion_reason": reason,
            "crispml.promoted_from_run": run or "-",
        }.items():
            writes.version_tag(str(version), key, val, target.tags or {})
        if previous is not None and str(previous.version) != str(version):
            before = previous.tags or {}
            writes.version_tag(str(previous.version), "crispml.champion_until", now, before)
            writes.version_tag(str(previous.version), "crispml.replaced_by", str(version), before)
        writes.model_tag(HISTORY, json.dumps(entries[-200:]), old_history)
        writes.alias(CHAMPION, str(version), None if previous is None else str(previous.version))
    except BaseException:
        writes.undo()
        raise


def _model(client: Any, name: str) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_registered_model(name)
    except MlflowException as exc:
        if _not_found(exc):
            raise UsageError(f"no registered model named '{name}' (see: crispml models)") from None
        raise


def promote(client: Any, project_dir: Path, uri: str, name: str, version: str, reason: str) -> str:
    """A manual promotion: ``crispml promote MODEL VERSION``."""
    from mlflow.exceptions import MlflowException

    _model(client, name)
    if not version.isdigit():
        raise UsageError(f"version must be a number, got '{version}'")
    with _backend.file_lock(_lock(project_dir, uri, name)):
        try:
            client.get_model_version(name, version)
        except MlflowException as exc:
            if not _not_found(exc):
                raise
            known = sorted(int(v.version) for v in client.search_model_versions(f"name='{name}'"))
            raise UsageError(
                f"model '{name}' has no version {version} (versions: {', '.join(map(str, known)) or 'none'})"
            ) from None
        current = champion_of(client, name)
        if current is not None and str(current.version) == version:
            raise UsageError(f"version {version} of '{name}' is already the champion")
        set_champion(client, name, version, f"manual promotion: {reason}", by=_backend.user(), run=None)
    return version


def rollback(client: Any, project_dir: Path, uri: str, name: str) -> tuple[str, str]:
    """Move ``champion`` back to the previous champion; return ``(from, to)``."""
    _model(client, name)
    with _backend.file_lock(_lock(project_dir, uri, name)):
        current = champion_of(client, name)
        if current is None:
            raise UsageError(f"model '{name}' has no champion: nothing to roll back")
        entries = history(client, name)
        # The promotions before the current champion's latest one, newest first.
        positions = [i for i, e in enumerate(entries) if str(e.get("version")) == str(current.version)]
        before = entries[: positions[-1]] if positions else entries
        target, keep = None, 0
        for i in range(len(before) - 1, -1, -1):
            candidate = str(before[i].get("version"))
            if candidate == str(current.version):
                continue
            try:
                client.get_model_version(name, candidate)
            except Exception:
                continue  # deleted since: go further back
            target, keep = candidate, i + 1
            break
        if target is None:
            raise UsageError(
                f"model '{name}' has no previous champion to roll back to (champion is version {current.version})"
            )
        now = _now()
        by = _backend.user()
        reason = f"rollback from version {current.version}"
        # Drop the rolled-back promotion(s) from the history, so a second rollback goes further.
        old_history = _history_tag(client, name)
        entries = entries[:keep]
        entries[-1] = {**entries[-1], "rollback": {"at": now, "by": by, "from": str(current.version)}}
        before = client.get_model_version(name, target).tags or {}
        writes = _Undoable(client, name)
        try:
            for key, val in {
                "crispml.champion_since": now,
                "crispml.promoted_by": by,
                "crispml.promotion_reason": reason,
            }.items():
                writes.version_tag(target, key, val, before)
            for key in ("crispml.champion_until", "crispml.rolled_back"):
                writes.version_tag(str(current.version), key, now, current.tags or {})
            writes.model_tag(HISTORY, json.dumps(entries[-200:]), old_history)
            # The alias last: if anything before fails, the current champion stays champion.
            writes.alias(CHAMPION, target, str(current.version))
        except BaseException:
            writes.undo()
            raise
    return str(current.version), target


# -- listing and loading --------------------------------------------------------------------


def list_models(client: Any) -> list[dict[str, Any]]:
    """Every registered model with its versions, aliases and crispml metrics."""
    models = []
    token = None
    while True:
        page = client.search_registered_models(max_results=1000, page_token=token)
        models.extend(page)
        token = page.token
        if not token:
            break
    out = []
    for rm in sorted(models, key=lambda m: m.name):
        versions = []
        token = None
        while True:
            page = client.search_model_versions(f"name='{rm.name}'", max_results=10000, page_token=token)
            versions.extend(page)
            token = page.token
            if not token:
                break
        by_version: dict[str, list[str]] = {}
        for alias, v in (rm.aliases or {}).items():
            by_version.setdefault(str(v), []).append(alias)
        rows = []
        for mv in sorted(versions, key=lambda v: int(v.version)):
            tags = mv.tags or {}
            rows.append(
                {
                    "version": str(mv.version),
                    "aliases": sorted(set(mv.aliases or []) | set(by_version.get(str(mv.version), []))),
                    "metrics": {
                        k.removeprefix(METRIC_TAG): float(v) for k, v in tags.items() if k.startswith(METRIC_TAG)
                    },
                    "crispml_run_id": tags.get("crispml.run_id"),
                    "mlflow_run_id": mv.run_id,
                    "created": datetime.fromtimestamp(mv.creation_timestamp / 1000, UTC).isoformat(timespec="seconds"),
                    "decision": tags.get("crispml.decision"),
                    "promotion_reason": tags.get("crispml.promotion_reason"),
                }
            )
        out.append(
            {
                "name": rm.name,
                "aliases": {a: str(v) for a, v in sorted((rm.aliases or {}).items())},
                "versions": rows,
            }
        )
    return out


def parse_reference(reference: str) -> tuple[str, str | None, str | None] | None:
    """``name@alias`` → (name, alias, None); ``name/3`` → (name, None, "3"); else ``None``."""
    match = _REF.match(reference.strip())
    if not match:
        return None
    return match["name"], match["alias"], match["version"]


def load_model(reference: str, project_dir: Path) -> Any | None:
    parsed = parse_reference(reference)
    if parsed is None:
        return None
    name, alias, version = parsed
    uri = _backend.tracking_uri(None, project_dir)
    db = _backend.sqlite_path(uri)
    if db is not None and not db.exists():
        return None  # no embedded registry in this project: do not create one to look
    client = _backend.client(uri, project_dir)
    _backend.check_reachable(client, uri, 10, 1)
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException as exc:
        if _not_found(exc):
            return None
        raise
    try:
        if alias is not None:
            client.get_model_version_by_alias(name, alias)
        else:
            client.get_model_version(name, str(version))
    except MlflowException as exc:
        if _not_found(exc):
            what = f"alias '{alias}'" if alias else f"version {version}"
            raise UsageError(f"model '{name}' has no {what} (see: crispml models)") from None
        raise
    import mlflow.pyfunc

    with _backend.fluent(uri):
        target = f"models:/{name}@{alias}" if alias else f"models:/{name}/{version}"
        return mlflow.pyfunc.load_model(target)
