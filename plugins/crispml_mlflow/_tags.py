"""The registry's vocabulary: crispml's aliases and tags on MLflow versions, and small lookups.

Every version carries ``crispml.*`` tags (which run, which data, its metrics, who registered it
and when, the gate's decision); a version that becomes champion gets ``crispml.champion_since``,
``crispml.promoted_by`` and ``crispml.promotion_reason``; the one it replaces gets
``crispml.champion_until``. The registered model's ``crispml.champion_history`` tag lists every
promotion in order, which is what ``rollback`` walks back.

Writes to one registered model (register, promote, rollback) hold its file lock (``lock_for``).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from crispml_mlflow import _backend

CHAMPION = "champion"
CHALLENGER = "challenger"
HISTORY = "crispml.champion_history"
METRIC_TAG = "crispml.metric."
MODEL_TAG = "crispml.model_fingerprint"


def timestamp() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def not_found(exc: BaseException) -> bool:
    """Whether an MLflow error means "no such model/version/alias" (file and REST stores differ)."""
    code = getattr(exc, "error_code", "")
    return code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND") or "not found" in str(exc).lower()


def lock_for(project_dir: Path, uri: str, name: str) -> Path:
    """The file lock serialising every registry write to model ``name`` on store ``uri``."""
    return _backend.lock_path(project_dir, f"{_backend.safe_uri(uri)}|{name}")


def champion_of(client: Any, name: str) -> Any | None:
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except Exception as exc:
        if not_found(exc):
            return None
        raise


def history_tag(client: Any, name: str) -> str | None:
    return (client.get_registered_model(name).tags or {}).get(HISTORY)


def history(client: Any, name: str) -> list[dict[str, Any]]:
    try:
        value = json.loads(history_tag(client, name) or "[]")
    except ValueError:
        return []
    return value if isinstance(value, list) else []
