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
is rejected with HTTP 400 and pydantic's message, before the model sees it; so are a number out
of its column's range (an integer past int64, a float past float32 for a float column), ``NaN``
and ``Infinity`` (not JSON: nothing non-standard may reach the model or the log), and a body not
sent as ``application/json``. A category value the model never saw is answered (the model's
encoder ignores it) and flagged in the log entry's ``unseen`` list, for the monitor. Every
answered request is appended (inputs, outputs, model version, training run, time) to a JSONL
prediction log rotated by size — crispml's versioned format (``"schema": 1``, read by
``crispml.prediction_records``) — unless it carries the ``x-crispml-smoke`` header (crispml's
own smoke test).

The prediction log locks with ``fcntl`` directly, not ``crispml.file_lock``: this file runs where
crispml is not installed (a built bento).
"""

from __future__ import annotations

import fcntl
import json
import math
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


# The range of a column's values, by MLflow type when the spec names no numpy dtype.
_DEFAULT_DTYPES = {"long": "int64", "integer": "int32", "double": "float64", "float": "float32"}


def _bounds(column: dict[str, Any]) -> dict[str, Any]:
    """``ge``/``le`` for a numeric column: what its dtype holds (a bigger integer would fail the
    ``astype`` with a 500; a bigger float would become infinity)."""
    import numpy as np

    name = column.get("dtype") or _DEFAULT_DTYPES.get(column["type"])
    if not name:
        return {}
    try:
        dtype = np.dtype(name)
    except TypeError:
        return {}
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return {"ge": int(info.min), "le": int(info.max)}
    if dtype.kind == "f":
        limit = float(np.finfo(dtype).max)
        return {"ge": -limit, "le": limit}
    return {}


def _record_model() -> type[BaseModel]:
    fields: dict[str, Any] = {}
    # Serving by key: the request carries the entity keys (and any column no store provides).
    for i, column in enumerate(SPEC.get("request_columns") or SPEC["columns"]):
        kind = _TYPES.get(column["type"], Any)
        bounds = _bounds(column) if kind in (int, float) else {}
        if column.get("required", True):
            fields[f"f{i}"] = (kind, Field(alias=column["name"], **bounds))
        else:
            fields[f"f{i}"] = (kind | None, Field(None, alias=column["name"], **bounds))
    config = ConfigDict(extra="forbid", strict=True, populate_by_name=False, allow_inf_nan=False)
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
        line = (json.dumps(_finite(entry), default=str, separators=(",", ":"), allow_nan=False) + "\n").encode()
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
    return [_finite(v.item() if hasattr(v, "item") else v) for v in out]


def _finite(value: Any) -> Any:
    """``value`` with every NaN or infinite float (a model's output may hold one) made ``None``:
    the answer and the log stay standard JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _known_categories(model: Any) -> dict[str, set[Any]]:
    """Column → the categories the model's fitted encoders saw, for a scikit-learn model whose
    encoders sit in a ``ColumnTransformer`` (what crispml's sklearn plugin builds). Empty when
    the model does not say."""
    found: dict[str, set[Any]] = {}

    def visit(estimator: Any, columns: list[str] | None) -> None:
        if hasattr(estimator, "transformers_"):
            for _, transformer, cols in estimator.transformers_:
                if isinstance(transformer, str):  # "drop", "passthrough"
                    continue
                names = [cols] if isinstance(cols, str) else list(cols) if isinstance(cols, list | tuple) else None
                if names is not None and all(isinstance(c, str) for c in names):
                    visit(transformer, names)
        elif hasattr(estimator, "steps"):
            for _, step in estimator.steps:
                visit(step, columns)
        elif hasattr(estimator, "categories_") and columns is not None:
            categories = list(estimator.categories_)
            if len(categories) == len(columns):
                for column, values in zip(columns, categories, strict=True):
                    found[column] = set(values.tolist() if hasattr(values, "tolist") else values)

    try:
        visit(model, None)
    except Exception:  # a model shaped in a way not foreseen here: no flags, never a failure
        return {}
    return found


def _unseen(rows: list[dict[str, Any]], known: dict[str, set[Any]]) -> list[dict[str, Any]]:
    """``[{"record": i, "column": c, "value": v}]`` for each value no encoder saw in training."""
    out = []
    for i, row in enumerate(rows):
        for column, values in known.items():
            value = row.get(column)
            if value is not None and value not in values:
                out.append({"record": i, "column": column, "value": value})
    return out


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
        self.dtypes = {c["name"]: c["dtype"] for c in SPEC["columns"] if c.get("dtype")}
        self.known = _known_categories(self.native) if self.native is not None else {}
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
        except Exception as exc:  # the feature store is down: the server's fault, said plainly
            raise bentoml.exceptions.ServiceUnavailable(f"feature store: {exc}") from None
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
                    probabilities = [_finite(dict(zip(keys, map(float, row), strict=True))) for row in proba]
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
            entry = {
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
            unseen = _unseen(full, self.known)
            if unseen:
                entry["unseen"] = unseen
            self.log.append(entry)
        return out


class JsonOnly:
    """ASGI middleware: a ``POST /predict`` whose body is not declared ``application/json`` is
    answered 400 ``{"error": ...}`` before BentoML reads it. BentoML would otherwise accept form
    fields, multipart parts and bodies with no type (and answer some of their errors as a list):
    a client that did not mean to send JSON is told so, not answered."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope.get("type") == "http" and scope.get("method") == "POST" and scope.get("path") == "/predict":
            types = [v for k, v in scope.get("headers") or [] if k.lower() == b"content-type"]
            kind = types[-1].split(b";")[0].strip().lower().decode("latin-1") if types else ""
            if kind != "application/json":
                body = json.dumps({"error": f"expected a body of content-type application/json, got {kind or 'none'}"})
                await send(
                    {
                        "type": "http.response.start",
                        "status": 400,
                        "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))],
                    }
                )
                await send({"type": "http.response.body", "body": body.encode()})
                return
        await self.app(scope, receive, send)


Predictor.add_asgi_middleware(JsonOnly)  # type: ignore[attr-defined]
