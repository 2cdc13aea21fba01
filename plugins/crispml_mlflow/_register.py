"""The register stage: log the model, register a version, and the champion/challenger decision.

Registration (the lookup of an identical model already registered, logging, the new version,
the decision: read champion, compare, move the alias) runs under a per-model file lock, so two
runs on one machine registering the same model at once cannot both "win" with stale reads, nor
both register one identical model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from crispml import Dataset, Evaluation, ModelVersion, RunContext, TrainedModel, UsageError
from crispml_mlflow import _backend, _journal, _tracking
from crispml_mlflow._champion import REPLACED_TAGS, before, set_champion, undo_after_failure
from crispml_mlflow._log_model import log_model
from crispml_mlflow._tags import (
    CHALLENGER,
    CHAMPION,
    METRIC_TAG,
    MODEL_TAG,
    champion_of,
    history_tag,
    lock_for,
    not_found,
    timestamp,
)

if TYPE_CHECKING:
    from crispml_mlflow import RegisterOptions


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
    with _backend.file_lock(lock_for(context.project_dir, uri, options.model_name)):
        # A registration of this model cut off earlier (kill -9, a lost connection) is finished
        # or undone first: what follows reads a registry whose aliases and tags agree.
        _journal.reconcile(client, options.model_name)
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
            info = log_model(options, model, dataset, uri, str(run_id))
            version = _register_and_decide(client, options, context, info, str(run_id), dataset, evaluation, value)
        except BaseException:
            if own_run:
                client.set_terminated(run_id, "FAILED")
            raise
        if own_run:
            client.set_terminated(run_id, "FINISHED")
        return version


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
        if not_found(exc):
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


def _measured(evaluation: Evaluation | None, metric: str, champion: Any) -> float | None:
    """The champion's ``metric`` as the evaluate step measured it on this run's test rows
    (``baseline: champion``: ``champion_<metric>``, ``champion_version``) — a fairer comparison
    than the stored metric, measured on the data of its own day. Only if the version measured is
    the champion now: one promoted meanwhile was not measured."""
    got = (evaluation.metrics if evaluation is not None else {}) or {}
    value, version = got.get(f"champion_{metric}"), got.get("champion_version")
    if value is None or version is None or str(int(version)) != str(champion.version):
        return None
    return float(value)


def _ensure_registered_model(client: Any, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
        return
    except MlflowException as exc:
        if not not_found(exc):
            raise
    try:
        client.create_registered_model(
            name, tags={"crispml.created_by": _backend.user(), "crispml.created_at": timestamp()}
        )
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
        "crispml.registered_at": timestamp(),
        "crispml.git_commit": str(git),
        "crispml.mlflow_run_id": run_id,
    }
    fingerprint = _model_fingerprint(context)
    if fingerprint:
        tags[MODEL_TAG] = fingerprint
    for key, val in (evaluation.metrics if evaluation else {}).items():
        tags[METRIC_TAG + key] = repr(float(val))

    # Called under the per-model lock (see ``register``). Before the first write, a pending-move
    # record says what is about to change (``_journal``): a kill at any later write is finished or
    # undone by the next register, promote or rollback of this model.
    _ensure_registered_model(client, name)
    token = _journal.new_token()
    tags[_journal.REGISTRATION] = token
    champion = champion_of(client, name)
    model_aliases = client.get_registered_model(name).aliases or {}
    challenger_before = model_aliases.get(CHALLENGER)
    touched = {} if champion is None else {str(champion.version): before(champion, REPLACED_TAGS)}
    record = {
        "op": "register",
        "token": token,
        "run": context.run_id,
        "challenger": None if challenger_before is None else str(challenger_before),
        "tags": touched,
    }
    _journal.begin(client, name, record, history_tag(client, name))
    try:
        mv = client.create_model_version(name, info.model_uri, run_id=run_id, tags=tags, model_id=info.model_id)
        version = str(mv.version)
        client.set_registered_model_alias(name, CHALLENGER, version)
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
            measured = _measured(evaluation, metric, champion)
            old = measured if measured is not None else _metric_of(client, champion, metric)
            where = " on the same test rows" if measured is not None else ""
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
                    f"{old:.6g}{where} by more than {options.min_improvement:g}"
                )
                if not promote:
                    rejection = f"challenger version {version}: {reason}"
        decision = ("promoted: " if promote else "kept: ") + reason
        client.set_model_version_tag(name, version, _journal.DECISION, decision)
        if promote:
            # The alias moves last of all: until it does, the previous champion is champion.
            by = _backend.user()
            set_champion(client, name, version, reason, by=by, run=context.run_id, previous=champion, journaled=True)
        _journal.end(client, name)
    except BaseException:
        # Nothing half-registered: the change is undone now (the version removed, the tags and
        # aliases it touched put back), or, if the registry stopped answering, by the next writer.
        undo_after_failure(client, name)
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
