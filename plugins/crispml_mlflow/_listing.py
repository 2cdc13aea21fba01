"""``crispml models``: every registered model with its versions, aliases and crispml metrics."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from crispml_mlflow._tags import METRIC_TAG


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
