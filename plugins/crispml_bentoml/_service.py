"""The BentoML service that serves one registered model version.

crispml copies this file, unchanged, as ``service.py`` into a release folder beside a
``spec.json`` it writes (model tag, lineage, the input schema from the model's signature) and
``flavors.py`` (how the model's files load), then runs ``bentoml serve service:Predictor``
there. It imports BentoML, pandas, pydantic and the model's own library, never crispml: a bento
built from the same folder (``crispml build``) runs where crispml is not installed.

Request:   ``POST /predict  {"records": [{"tenure_months": 3, "contract": "month-to-month", ...}]}``
           — or, for a model trained on a feature store's data, the entity keys
           (``{"records": [{"customer_id": 1042}]}``): the release's ``features/`` resolver
           fetches the features (an unknown key is a 400), and the log records them.
Response:  ``{"predictions": [...], "probabilities": [{"0": 0.8, "1": 0.2}, ...], "model": {...}}``
           and the header ``x-crispml-model: <name>/<version>``.

A record with a missing field, a field of the wrong JSON type, or a field the model does not know
is rejected with HTTP 400 and pydantic's message, before the model sees it. Every answered
request is appended (inputs, outputs, model version, training run, time) to a JSONL prediction
log rotated by size — crispml's versioned format (``"schema": 1``, read by
``crispml.prediction_records``) — unless it carries the ``x-crispml-smoke`` header (crispml's
own smoke test).
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import bentoml
from flavors import NATIVE, frame, is_classifier, load
from pydantic import BaseModel, ConfigDict, Field, create_model

HERE = Path(__file__).resolve().parent
SPEC: dict[str, Any] = json.loads((HERE / "spec.json").read_text())
MODEL: dict[str, Any] = SPEC["model"]
SMOKE_HEADER = "x-crispml-smoke"
LOG_SCHEMA = 1
"""The prediction log's line format (docs/plugins/bentoml.md); bump it with crispml's reader."""

# MLflow column types → JSON types a record's field must have (strict: "3" is not a number).
_TYPES: dict[str, Any] = {
    "long": int,
    "integer": int,
    "double": float,
    "float": float,
    "string": str,
    "boolean": bool,
    "datetime": str,
}


def _record_model() -> type[BaseModel]:
    fields: dict[str, Any] = {}
    # Serving by key: the request carries the entity keys (and any column no store provides).
    for i, column in enumerate(SPEC.get("request_columns") or SPEC["columns"]):
        kind = _TYPES.get(column["type"], Any)
        if column.get("required", True):
            fields[f"f{i}"] = (kind, Field(alias=column["name"]))
        else:
            fields[f"f{i}"] = (kind | None, Field(None, alias=column["name"]))
    config = ConfigDict(extra="forbid", strict=True, populate_by_name=False)
    return create_model("Record", __config__=config, **fields)


Record = _record_model()
COLUMNS = [c["name"] for c in SPEC["columns"]]
MAX_RECORDS = int(SPEC.get("max_records", 10_000))


class PredictRequest(BaseModel):
    """``{"records": [...]}``: one or more rows, each with exactly the model's input columns."""

    model_config = ConfigDict(extra="forbid")
    records: Annotated[list[Record], Field(min_length=1, max_length=MAX_RECORDS)]  # type: ignore[valid-type]


class _PredictionLog:
    """Append-only JSONL, rotated when it would grow past ``max_bytes`` (``log``, ``log.1`` …).

    Writers (BentoML workers) serialise on an ``flock`` so that rotation and appends never interleave.
    """

    def __init__(self, path: str | None, max_bytes: int, backups: int) -> None:
        self.path = Path(path) if path else None
        self.max_bytes = max_bytes
        self.backups = max(backups, 1)
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def append(self, entry: dict[str, Any]) -> None:
        if self.path is None:
            return
        line = (json.dumps(entry, default=str, separators=(",", ":")) + "\n").encode()
        with open(str(self.path) + ".lock", "a") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                size = self.path.stat().st_size if self.path.exists() else 0
                if size and size + len(line) > self.max_bytes:
                    for i in range(self.backups - 1, 0, -1):
                        older = Path(f"{self.path}.{i}")
                        if older.exists():
                            os.replace(older, f"{self.path}.{i + 1}")
                    os.replace(self.path, f"{self.path}.1")
                with open(self.path, "ab") as fh:
                    fh.write(line)
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def _log_settings() -> tuple[str | None, int, int]:
    settings = SPEC.get("prediction_log") or {}
    path = os.environ.get("CRISPML_PREDICTION_LOG", settings.get("path")) or None
    return path, int(settings.get("max_bytes", 10_000_000)), int(settings.get("backups", 5))


def _jsonable(values: Any) -> list[Any]:
    out = values.tolist() if hasattr(values, "tolist") else list(values)
    return [v.item() if hasattr(v, "item") else v for v in out]


def _plain(value: Any) -> Any:
    """A JSON value (numpy scalars unwrapped, NaN as null)."""
    value = value.item() if hasattr(value, "item") else value
    return None if isinstance(value, float) and value != value else value


def _resolver() -> Any:
    """The feature store's resolver shipped in this release (``features/``), or ``None``."""
    features = SPEC.get("features")
    if not features:
        return None
    import importlib
    import sys

    folder = HERE / features["folder"]
    sys.path.insert(0, str(folder))
    try:
        module = importlib.import_module(features["module"])
    finally:
        sys.path.remove(str(folder))
    return module.Resolver(folder)


@bentoml.service(name=SPEC["service_name"], workers=int(SPEC.get("workers", 1)), traffic={"timeout": 60})
class Predictor:
    model_ref = bentoml.models.BentoModel(SPEC["bento_tag"])

    def __init__(self) -> None:
        flavor = SPEC["flavor"]
        model = load(Path(self.model_ref.path_of(SPEC.get("model_dir", "model"))), flavor)
        self.native: Any = model if flavor in NATIVE else None
        self.pyfunc = None if self.native is not None else model
        self.classes: list[Any] | None = None
        if self.native is not None and SPEC.get("classifier") and is_classifier(model, flavor):
            self.classes = _jsonable(self.native.classes_)
        self.log = _PredictionLog(*_log_settings())
        self.lineage = {
            k: MODEL.get(k) for k in ("name", "version", "uri", "run_id", "crispml_run_id", "data_fingerprint")
        }
        self.label = f"{MODEL['name']}/{MODEL['version']}"
        self.resolver = _resolver()

    def _frame(self, rows: list[dict[str, Any]]) -> Any:
        return frame(rows, SPEC["columns"])

    def _with_features(self, rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
        """Rows with the feature store's values for their keys (when serving by key)."""
        if self.resolver is None:
            return rows, None
        try:
            features, missing = self.resolver.fetch(rows)
        except ValueError as exc:  # a key of the wrong type or range: the caller's to fix
            raise bentoml.exceptions.InvalidArgument(str(exc)) from None
        if missing and self.resolver.on_missing != "null":
            raise bentoml.exceptions.InvalidArgument(self.resolver.describe_missing(rows, missing))
        fetched = [{k: _plain(v) for k, v in r.items()} for r in features.to_dict(orient="records")]
        return [{**row, **feats} for row, feats in zip(rows, fetched, strict=True)], fetched

    @bentoml.api(route="/predict", input_spec=PredictRequest)
    def predict(self, records: list[Any], ctx: bentoml.Context) -> dict[str, Any]:
        rows = [r.model_dump(by_alias=True) for r in records]
        full, fetched = self._with_features(rows)
        frame = self._frame(full)
        try:
            if self.native is not None:
                # A pipeline's transforms run once for both predict and predict_proba (what
                # Pipeline.predict does, without paying for the preprocessing twice).
                final, features = self.native, frame
                if self.classes is not None and len(getattr(self.native, "steps", ())) > 1:
                    final, features = self.native[-1], self.native[:-1].transform(frame)
                predictions = _jsonable(final.predict(features))
                probabilities = None
                if self.classes is not None:
                    proba = final.predict_proba(features)
                    keys = [str(c) for c in self.classes]
                    probabilities = [dict(zip(keys, map(float, row), strict=True)) for row in proba]
            else:
                assert self.pyfunc is not None
                predictions = _jsonable(self.pyfunc.predict(frame))
                probabilities = None
        except (ValueError, TypeError, KeyError) as exc:
            # The record had the right shape but values the model cannot use: the caller's to fix.
            raise bentoml.exceptions.InvalidArgument(f"the model cannot predict these records: {exc}") from None
        out: dict[str, Any] = {"predictions": predictions}
        if probabilities is not None:
            out["probabilities"] = probabilities
        out["model"] = self.lineage
        ctx.response.headers["x-crispml-model"] = self.label
        if SMOKE_HEADER not in ctx.request.headers:
            self.log.append(
                {
                    "schema": LOG_SCHEMA,
                    "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
                    "ts": time.time(),
                    "deployment": SPEC["deployment"],
                    "model": self.label,
                    "training_run": MODEL.get("crispml_run_id"),
                    "inputs": rows,
                    **({"features": fetched} if fetched is not None else {}),
                    "outputs": {k: v for k, v in out.items() if k != "model"},
                }
            )
        return out
