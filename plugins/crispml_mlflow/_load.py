"""``crispml.load_model("name@alias")`` and ``"name/3"``: a registered version as a pyfunc model."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from crispml import UsageError
from crispml_mlflow import _backend
from crispml_mlflow._resolve import parse
from crispml_mlflow._tags import not_found


def parse_reference(reference: str) -> tuple[str, str | None, str | None] | None:
    """``[models:/]name@alias`` → (name, alias, None); ``[models:/]name/3`` → (name, None, "3");
    else ``None``. One grammar for loading and resolving (``_resolve.parse``)."""
    return parse(reference)


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
        if not_found(exc):
            return None
        raise
    try:
        if alias is not None:
            client.get_model_version_by_alias(name, alias)
        else:
            client.get_model_version(name, str(version))
    except MlflowException as exc:
        if not_found(exc):
            what = f"alias '{alias}'" if alias else f"version {version}"
            raise UsageError(f"model '{name}' has no {what} (see: crispml models)") from None
        raise
    with warnings.catch_warnings():
        # mlflow.pyfunc's import infers types of its own pydantic models and warns about their
        # ``Any`` hints: MLflow's to fix, and not the caller's (the first load in a process).
        warnings.filterwarnings("ignore", message=".*Any type hint is inferred", category=UserWarning)
        import mlflow.pyfunc

    with _backend.fluent(uri):
        target = f"models:/{name}@{alias}" if alias else f"models:/{name}/{version}"
        return mlflow.pyfunc.load_model(target)
