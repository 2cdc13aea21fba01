"""Fetching a model's features by entity key from Feast's online store, inside a served model.

This file is copied into a release (as ``crispml_feast_resolver.py``) next to
``feast_serving.json`` and ``registry.db``: it imports Feast and pandas, never crispml, so a
built release runs where crispml is not installed.

``Resolver(folder).fetch(rows)`` asks for the **feature references recorded at training** (not
the feature service's current definition) and returns ``(frame, missing)``: one row of features
per input row, and the positions of rows whose keys the online store does not know
(``NOT_FOUND``: not materialized?). Values older than the view's ttl (``OUTSIDE_MAX_AGE``) are
null, as the point-in-time join made them at training.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

CONFIG = "feast_serving.json"
REGISTRY = "registry.db"

_INTEGER = {"int32", "int64"}
_FLOAT = {"float", "float32", "float64", "double"}


class BadKey(ValueError):
    """A request row lacks a key or has one of the wrong type (the client's mistake: HTTP 400)."""


def _coerce(name: str, kind: str, value: Any) -> Any:
    if value is None:
        raise BadKey(f"key '{name}' is null")
    if kind in _INTEGER:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise BadKey(f"key '{name}' must be an integer, got {value!r:.40}")
        if not -(2**63) <= value < 2**63:
            raise BadKey(f"key '{name}' is out of the int64 range")
        return value
    if kind in _FLOAT:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise BadKey(f"key '{name}' must be a finite number, got {value!r:.40}")
        return float(value)
    if not isinstance(value, str):
        raise BadKey(f"key '{name}' must be a string, got {value!r:.40}")
    return value


class Resolver:
    """The online features of one trained model, by entity key."""

    def __init__(self, folder: str | Path) -> None:
        from feast import FeatureStore, RepoConfig
        from feast.repo_config import RegistryConfig

        folder = Path(folder)
        spec = json.loads((folder / CONFIG).read_text())
        self.keys: dict[str, str] = dict(spec["keys"])
        self.feature_refs: list[str] = list(spec["feature_refs"])
        self.provides: list[str] = [ref.split(":", 1)[1] for ref in self.feature_refs]
        self.on_missing: str = spec.get("on_missing", "reject")
        # Feast's online read does not apply a view's ttl (0.67): a value older than the ttl
        # would be served where the point-in-time join gave null. Applied here instead.
        self.ttl: dict[str, float | None] = dict(spec.get("ttl_seconds") or {})
        self.view_of = {ref.split(":", 1)[1]: ref.split(":", 1)[0] for ref in self.feature_refs}
        config = dict(spec["repo_config"])
        config["registry"] = RegistryConfig(registry_type="file", path=str(folder / REGISTRY), cache_ttl_seconds=0)
        self.store = FeatureStore(config=RepoConfig(repo_path=folder, **config), repo_path=str(folder))

    def entity_rows(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The key fields of each request row, checked and typed."""
        out = []
        for i, row in enumerate(rows):
            if not isinstance(row, dict):
                raise BadKey(f"record {i}: expected an object with {', '.join(self.keys)}")
            absent = [k for k in self.keys if k not in row]
            if absent:
                raise BadKey(f"record {i}: missing key {', '.join(repr(k) for k in absent)}")
            try:
                out.append({k: _coerce(k, kind, row[k]) for k, kind in self.keys.items()})
            except BadKey as exc:
                raise BadKey(f"record {i}: {exc}") from None
        return out

    def fetch(self, rows: list[dict[str, Any]]) -> tuple[Any, list[int]]:
        """``(frame, missing)``: the features of each row, and the rows whose keys are unknown."""
        import pandas as pd
        from feast.protos.feast.serving.ServingService_pb2 import FieldStatus

        entity_rows = self.entity_rows(rows)
        if not entity_rows:
            return pd.DataFrame(columns=self.provides), []
        response = self.store.get_online_features(features=self.feature_refs, entity_rows=entity_rows)
        names = list(response.proto.metadata.feature_names.val)
        data = response.to_dict()
        now = time.time()
        columns: dict[str, list[Any]] = {}
        found = [False] * len(entity_rows)
        for name, result in zip(names, response.proto.results, strict=True):
            if name not in self.provides:
                continue  # the entity keys echoed back
            ttl = self.ttl.get(self.view_of.get(name, ""))
            stamps = list(result.event_timestamps)
            cleaned = []
            for i, (value, status) in enumerate(zip(data[name], result.statuses, strict=True)):
                known = status in (FieldStatus.PRESENT, FieldStatus.NULL_VALUE, FieldStatus.OUTSIDE_MAX_AGE)
                found[i] = found[i] or known
                stale = status == FieldStatus.OUTSIDE_MAX_AGE or (
                    ttl is not None
                    and i < len(stamps)
                    and stamps[i].seconds > 0
                    and now - (stamps[i].seconds + stamps[i].nanos / 1e9) > ttl
                )
                # Stale: null, as the point-in-time join made it at training.
                cleaned.append(value if status == FieldStatus.PRESENT and not stale else None)
            columns[name] = cleaned
        frame = pd.DataFrame({name: columns.get(name, [None] * len(entity_rows)) for name in self.provides})
        missing = [i for i, ok in enumerate(found) if not ok]
        return frame, missing

    def describe_missing(self, rows: list[dict[str, Any]], missing: list[int]) -> str:
        """``no online features for customer_id=99999 (not materialized?)``."""
        shown = []
        for i in missing[:5]:
            shown.append(", ".join(f"{k}={rows[i].get(k)!r}".replace("'", "") for k in self.keys))
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        return f"no online features for {'; '.join(shown)}{more} (not materialized?)"
