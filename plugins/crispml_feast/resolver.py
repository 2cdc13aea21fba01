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
import os
import re
import time
from pathlib import Path
from typing import Any

CONFIG = "feast_serving.json"
REGISTRY = "registry.db"

REDIS_TIMEOUTS = {"socket_connect_timeout": "3", "socket_timeout": "3"}
"""Seconds a Redis online store may take to connect and to answer (unless the connection
string says otherwise): an unreachable store is an error in seconds, never a hang."""

ENV_REFERENCE = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}")


class StoreUnavailable(RuntimeError):
    """The online store did not answer (or refused): the server's fault, not the client's."""


def expand_env(online_store: dict[str, Any], environ: Any = None) -> dict[str, Any]:
    """``online_store`` with each ``${env:NAME}`` replaced by the environment's value.

    A secret (a Redis password) stays a reference in everything written down — the model's
    metadata, the release, the bento — and is read from the serving process's environment.
    """
    environ = os.environ if environ is None else environ

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in environ:
            raise KeyError(name)
        return str(environ[name])

    out: dict[str, Any] = {}
    for key, item in online_store.items():
        if isinstance(item, str):
            try:
                item = ENV_REFERENCE.sub(value, item)
            except KeyError as missing:
                raise StoreUnavailable(
                    f"online_store.{key} refers to ${{env:{missing.args[0]}}}, which is not set in this environment"
                ) from None
        out[key] = item
    return out


def with_timeouts(online_store: dict[str, Any]) -> dict[str, Any]:
    """A Redis online store whose connection string bounds connecting and reading."""
    if online_store.get("type") != "redis":
        return online_store
    parts = str(online_store.get("connection_string", "localhost:6379")).split(",")
    given = {p.split("=", 1)[0] for p in parts if "=" in p}
    parts += [f"{k}={v}" for k, v in REDIS_TIMEOUTS.items() if k not in given]
    return {**online_store, "connection_string": ",".join(parts)}


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
        config["online_store"] = with_timeouts(expand_env(config["online_store"]))
        self.where = _where(config["online_store"])
        config["registry"] = RegistryConfig(registry_type="file", path=str(folder / REGISTRY), cache_ttl_seconds=0)
        self.store = FeatureStore(config=RepoConfig(repo_path=folder, **config), repo_path=str(folder))
        if config["online_store"].get("type") == "redis":
            _retry_once(self.store)

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
        try:
            response = self.store.get_online_features(features=self.feature_refs, entity_rows=entity_rows)
        except ValueError:  # keys Feast refuses: the request's fault (HTTP 400)
            raise
        except Exception as exc:  # redis.ConnectionError, TimeoutError, …: not the request's fault
            text = " ".join(str(exc).split())[:200]
            raise StoreUnavailable(f"online store {self.where} unavailable: {type(exc).__name__}: {text}") from None
        names = list(response.proto.metadata.feature_names.val)
        data = response.to_dict()
        present, null_value, outside = FieldStatus.PRESENT, FieldStatus.NULL_VALUE, FieldStatus.OUTSIDE_MAX_AGE
        now = time.time()
        columns: dict[str, list[Any]] = {}
        found = [False] * len(entity_rows)
        for name, result in zip(names, response.proto.results, strict=True):
            if name not in self.provides:
                continue  # the entity keys echoed back
            ttl = self.ttl.get(self.view_of.get(name, ""))
            # Read once per feature, as plain floats and ints: protobuf access per value is slow.
            times = [t.seconds + t.nanos / 1e9 for t in result.event_timestamps]
            statuses = list(result.statuses)
            oldest = None if ttl is None else now - ttl
            cleaned = []
            for i, (value, status) in enumerate(zip(data[name], statuses, strict=True)):
                when = times[i] if i < len(times) else 0.0
                # Redis answers an unknown key with PRESENT empty values and no timestamp
                # (Feast 0.67): a value without its row's event time was never materialized.
                stamped = not times or when > 0
                known = status == outside or (stamped and status in (present, null_value))
                if known:
                    found[i] = True
                # Stale (older than the view's ttl): null, as the point-in-time join made it.
                stale = status == outside or (oldest is not None and 0 < when < oldest)
                cleaned.append(value if known and status == present and not stale else None)
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


def _where(online_store: dict[str, Any]) -> str:
    """The store for messages: its type and, for Redis, host:port (never the rest: a password)."""
    kind = str(online_store.get("type", "?"))
    if kind == "redis":
        return f"redis at {str(online_store.get('connection_string', '')).split(',')[0]}"
    return kind


def _retry_once(store: Any) -> None:
    """Redis: one retry without backoff instead of redis-py's default (three, with up to 10 s of
    backoff each), so a request to a silent store fails within about twice the socket timeout."""
    try:
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        online = store._get_provider().online_store
        client = online._get_client(store.config.online_store)
        client.set_retry(Retry(NoBackoff(), 1))
    except Exception:  # another Feast or redis-py: the timeouts still bound each attempt
        return
