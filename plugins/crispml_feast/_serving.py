"""Serving by entity key: the spec a load step records, and what a serving plugin gets for it.

The load stage writes ``Dataset.serving``: the feature references the model is trained on (not
the service's name alone: a service can change after training), the keys and their types, and
where the store is (the repo, the Feast project, the online store's settings without secrets).
A registry keeps it with the model; at deploy time ``crispml_serving_features`` turns it into
:class:`crispml.ServingFeatures`: the self-contained ``resolver.py``, its configuration and a
snapshot of the registry, after checking that every recorded feature still exists with the same
type — else the deploy is refused, naming what changed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from crispml import CrispmlError, ExitCode, ServingFeatures, UsageError
from crispml_feast._definitions import load_definitions
from crispml_feast._store import check_reachable, open_store, quiet, store_spec
from crispml_feast.resolver import ENV_REFERENCE, StoreUnavailable, expand_env

RESOLVER_MODULE = "crispml_feast_resolver"
_SECRET = re.compile(r"(password|passwd|token|secret)=[^,]*", re.IGNORECASE)


def _without_secrets(
    online_store: dict[str, Any] | None, redact: Callable[[Any], Any] | None = None
) -> dict[str, Any] | None:
    """The online store's settings safe to record with a model: no password in them.

    ``redact`` (the run's ``context.secrets``) turns values read from ``${env:NAME}`` back into
    their references, which are kept: the serving process reads the environment again. A
    password written literally in the recipe is dropped (the served model then has none).
    """
    if online_store is None:
        return None
    if redact is not None:
        online_store = redact(online_store)
    out: dict[str, Any] = {}
    for key, value in online_store.items():
        if re.search("password|token|secret", key, re.IGNORECASE) and not _is_reference(value):
            continue
        if isinstance(value, str):
            value = _SECRET.sub(_keep_references, value).replace(",,", ",").strip(",")
        out[key] = value
    return out


def _is_reference(value: Any) -> bool:
    return isinstance(value, str) and ENV_REFERENCE.fullmatch(value) is not None


def _keep_references(match: re.Match[str]) -> str:
    value = match.group(0).partition("=")[2]
    return match.group(0) if _is_reference(value) else ""


class NotServable(CrispmlError):
    """The model version cannot be served as trained: the registry no longer has a feature it
    was trained on (or not with its type), or the online store does not answer.

    Not the user's typo but the deploy check's verdict on this model version: its exit code is
    ``ExitCode.REJECTED``, which a serving plugin turns into a rejected deploy (the
    running deployment keeps serving) rather than a failure."""

    exit_code = ExitCode.REJECTED


def _has_reference(value: Any) -> bool:
    return isinstance(value, str) and ENV_REFERENCE.search(value) is not None


def _dtype(view: Any, feature: str) -> str | None:
    field = next((f for f in view.features if f.name == feature), None)
    return None if field is None else str(field.dtype)


def spec_for(
    options: Any,
    project: str,
    service: Any,
    store: Any,
    keys: dict[str, str],
    redact: Callable[[Any], Any] | None = None,
) -> dict[str, Any]:
    """The serving spec of a dataset built from ``service`` (``redact``: see _without_secrets)."""
    refs = [f"{p.name_to_use()}:{f.name}" for p in service.feature_view_projections for f in p.features]
    with quiet():
        views = {v.name: v for v in store.list_feature_views()}
    types = {}
    for projection in service.feature_view_projections:
        view = views.get(projection.name)
        for f in projection.features:
            types[f"{projection.name_to_use()}:{f.name}"] = _dtype(view, f.name) if view is not None else None
    ttls = {
        p.name_to_use(): (views[p.name].ttl.total_seconds() if p.name in views and views[p.name].ttl else None)
        for p in service.feature_view_projections
    }
    return {
        "plugin": "feast",
        "feature_service": service.name,
        "feature_refs": refs,
        "feature_types": types,
        "ttl_seconds": ttls,
        "keys": keys,
        "repo": str(Path(options.repo).resolve()),
        "project": project,
        "online_store": _without_secrets(options.online_store, redact),
        "on_missing": options.on_missing,
    }


def key_types(frame: Any, keys: list[str]) -> dict[str, str]:
    """Each key column's type as the resolver checks it (``int64``, ``double``, ``string``)."""
    out = {}
    for key in keys:
        kind = frame[key].dtype.kind
        out[key] = "int64" if kind in "iu" else "double" if kind == "f" else "string"
    return out


def changes(spec: dict[str, Any], store: Any) -> list[str]:
    """What changed in the registry since the spec was recorded (``tenure_months removed``)."""
    with quiet():
        views = {v.name: v for v in store.list_feature_views()}
    out = []
    for ref in spec["feature_refs"]:
        view_name, feature = ref.split(":", 1)
        view = views.get(view_name)
        if view is None:
            out.append(f"{ref} removed (no view '{view_name}')")
            continue
        now = _dtype(view, feature)
        was = (spec.get("feature_types") or {}).get(ref)
        if now is None:
            out.append(f"{feature} removed")
        elif was is not None and now != was:
            out.append(f"{feature} changed type from {was} to {now}")
    return out


def serving_features(spec: dict[str, Any], project_dir: Path) -> ServingFeatures:
    repo = Path(spec["repo"])
    if not repo.is_dir():
        raise UsageError(f"the model's features come from the Feast repository {repo}, which is not there")
    definitions = load_definitions(repo)
    recorded = spec.get("online_store")
    try:
        online_store = None if recorded is None else expand_env(recorded)
    except StoreUnavailable as exc:  # an ${env:NAME} the deploying process lacks
        raise UsageError(f"the model's {exc}: set it where crispml deploys and where the model is served") from None
    store_settings = store_spec(repo, project_dir, project=spec.get("project"), online_store=online_store)
    try:
        check_reachable(store_settings)
    except CrispmlError as exc:  # nothing could be served: the deploy check says no
        raise NotServable(str(exc)) from None
    store = open_store(store_settings, definitions)
    changed = changes(spec, store)
    if changed:
        # ``model``: the version's label (``churn/3``) a serving plugin may add for this message.
        trained = spec.get("model") or "the model"
        raise NotServable(
            f"feature service {spec.get('feature_service')} changed since {trained} was trained: {'; '.join(changed)}"
        )
    config = store_settings.config
    online = config.online_store.model_dump(mode="json", exclude_none=True)
    if recorded is None and online.get("type") == "sqlite":
        online["path"] = str(Path(online["path"]).resolve())
    if recorded is not None and any(_has_reference(v) for v in recorded.values()):
        # Shipped as recorded: the resolver reads ${env:NAME} in the serving process, so the
        # secret is in no file of the release or the bento.
        online = dict(recorded)
    repo_config = {
        "project": config.project,
        "provider": "local",
        "online_store": online,
        "entity_key_serialization_version": config.entity_key_serialization_version,
    }
    with quiet():
        registry = store.registry.proto().SerializeToString()
    resolver = (Path(__file__).parent / "resolver.py").read_bytes()
    settings = {
        "keys": spec["keys"],
        "feature_refs": spec["feature_refs"],
        "ttl_seconds": spec.get("ttl_seconds") or {},
        "on_missing": spec.get("on_missing", "reject"),
        "repo_config": repo_config,
    }
    requirements = [f"feast=={metadata.version('feast')}"]
    if online.get("type") == "redis":
        requirements.append(f"redis=={metadata.version('redis')}")
    where = "local to this machine (SQLite)" if online.get("type") == "sqlite" else online.get("type", "?")
    return ServingFeatures(
        keys=dict(spec["keys"]),
        provides=[ref.split(":", 1)[1] for ref in spec["feature_refs"]],
        files={
            f"{RESOLVER_MODULE}.py": resolver,
            "feast_serving.json": json.dumps(settings, indent=2).encode(),
            "registry.db": registry,
        },
        module=RESOLVER_MODULE,
        requirements=requirements,
        description=f"feast {spec.get('feature_service')}, online store {where}",
    )
