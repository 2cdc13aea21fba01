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

Concurrent requests are predicted together (:class:`_Batcher`): while the model works on one
batch, the requests that arrive queue, and the next batch takes them all (up to ``batch_max_rows``
rows, waiting at most ``batch_max_wait_ms`` for as many as the last batch had) — one frame, one
pass through the pipeline's transforms, one ``predict``/``predict_proba``, one append to the log —
and each request gets its own rows' answer back. A lone client's request waits for nothing. A
batch the model refuses is retried request by request, so one bad request is the only one
answered 400.

The prediction log locks with ``fcntl`` directly, not ``crispml.file_lock``: this file runs where
crispml is not installed (a built bento).
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import math
import os
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import anyio.to_thread
import bentoml
import numpy as np
from flavors import DTYPES, NATIVE, frame, is_classifier, load
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

    Writers (BentoML workers) serialise on an ``flock`` so that rotation and appends never
    interleave. The lock file and the log stay open between appends (one ``write`` of a whole
    batch's lines per lock); after another worker rotated the log, the path names a new file, and
    the next append reopens it.
    """

    def __init__(self, path: str | None, max_bytes: int, backups: int) -> None:
        self.path = Path(path) if path else None
        self.max_bytes = max_bytes
        self.backups = max(backups, 1)
        self._fd: int | None = None
        self._lock_fd: int | None = None
        self._guard = threading.Lock()
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def line(self, entry: dict[str, Any]) -> bytes:
        """One JSON line; a value JSON has not (NaN, infinity) is written ``null``."""
        try:
            text = json.dumps(entry, default=str, separators=(",", ":"), allow_nan=False)
        except ValueError:  # rare (inputs are validated finite, outputs made so): walk it only then
            text = json.dumps(_finite(entry), default=str, separators=(",", ":"), allow_nan=False)
        return (text + "\n").encode()

    def append(self, entry: dict[str, Any]) -> None:
        self.append_lines([self.line(entry)])

    def append_lines(self, lines: list[bytes]) -> None:
        if self.path is None or not lines:
            return
        data = b"".join(lines)
        with self._guard:
            if self._lock_fd is None:
                self._lock_fd = os.open(f"{self.path}.lock", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            try:
                fd = self._current()
                size = os.fstat(fd).st_size
                if size and size + len(data) > self.max_bytes:
                    self._rotate()
                    fd = self._current()
                os.write(fd, data)
            finally:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _current(self) -> int:
        """The open log, reopened if the path now names another file (rotated, or removed)."""
        assert self.path is not None
        if self._fd is not None:
            try:
                same = os.path.samestat(os.fstat(self._fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                return self._fd
            os.close(self._fd)
            self._fd = None
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        return self._fd

    def _rotate(self) -> None:
        assert self.path is not None
        for i in range(self.backups - 1, 0, -1):
            older = Path(f"{self.path}.{i}")
            if older.exists():
                os.replace(older, f"{self.path}.{i + 1}")
        os.replace(self.path, f"{self.path}.1")


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


@dataclass
class _Job:
    """One request's rows on their way through a batch, and what it gets back."""

    rows: list[dict[str, Any]]
    log: bool
    future: asyncio.Future[Any]
    full: list[dict[str, Any]] = field(default_factory=list)
    fetched: list[dict[str, Any]] | None = None
    out: dict[str, Any] | None = None
    error: Exception | None = None


class _Batcher:
    """Requests that arrive while the model is busy are predicted together, in one thread call.

    The requests that arrive during a ``predict`` form the next batch, up to ``max_rows`` rows (a
    bigger request runs alone). Under concurrent load the requests of one round do not reach the
    worker at the same instant (each crosses the proxy in turn): so when the last batch had
    company, the next one waits — at most ``max_wait`` seconds — until as many requests are
    there. A lone client's request (last batch: one) never waits. So a request waits at most for
    the batch in progress plus ``max_wait``, and eight requests in flight cost about one
    ``predict``. BentoML's ``batchable`` APIs instead answer each request with a slice of one list
    (no per-request body, header or 400), see docs/plugins/bentoml.md.
    """

    def __init__(self, work: Any, max_rows: int, max_wait: float) -> None:
        self.work = work
        self.max_rows = max_rows
        self.max_wait = max_wait
        self.expect = 1
        """How many requests the last batch held: how many to wait for."""
        self.pending: list[_Job] = []
        self.task: asyncio.Task[None] | None = None
        self.arrived: asyncio.Event | None = None

    def submit(self, job: _Job) -> asyncio.Future[Any]:
        self.pending.append(job)
        if self.arrived is not None and len(self.pending) >= self.expect:
            self.arrived.set()
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._drain())
        return job.future

    async def _gather(self) -> None:
        if self.max_wait <= 0 or len(self.pending) >= self.expect:
            return
        if sum(len(job.rows) for job in self.pending) >= self.max_rows:
            return
        self.arrived = asyncio.Event()
        try:
            await asyncio.wait_for(self.arrived.wait(), self.max_wait)
        except TimeoutError:
            pass
        except BaseException:  # cancelled (the worker stops): nobody is left waiting
            for job in self.pending:
                job.future.cancel()
            raise
        finally:
            self.arrived = None

    async def _drain(self) -> None:
        while self.pending:
            await self._gather()
            batch = [self.pending.pop(0)]
            rows = len(batch[0].rows)
            while self.pending and rows + len(self.pending[0].rows) <= self.max_rows:
                rows += len(self.pending[0].rows)
                batch.append(self.pending.pop(0))
            self.expect = len(batch)
            try:
                await anyio.to_thread.run_sync(self.work, batch)
            except Exception as exc:  # a bug, not the caller's: every request of the batch hears of it
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(exc)
                continue
            except BaseException:  # cancelled (the worker stops): nobody is left waiting
                for job in [*batch, *self.pending]:
                    job.future.cancel()
                raise
            for job in batch:
                if job.future.done():  # the client went away
                    continue
                if job.error is not None:
                    job.future.set_exception(job.error)
                else:
                    job.future.set_result(job.out)


@bentoml.service(
    name=SPEC["service_name"],
    workers=int(SPEC.get("workers", 1)),
    traffic={"timeout": 60},
    # Per request, BentoML would write an access-log line to server.log and open a (never
    # exported) trace span: the prediction log is the record of requests, and both cost CPU the
    # model needs. Metrics (/metrics) stay.
    logging={"access": {"enabled": False}},
    tracing={"excluded_urls": ["/predict"]},
)
class Predictor:
    model_ref = bentoml.models.BentoModel(SPEC["bento_tag"])

    def __init__(self) -> None:
        flavor = SPEC["flavor"]
        model = load(Path(self.model_ref.path_of(SPEC.get("model_dir", "model"))), flavor, direct=True)
        self.native: Any = model if flavor in NATIVE else None
        self.pyfunc = None if self.native is not None else model
        self.classes: list[Any] | None = None
        if self.native is not None and is_classifier(model, flavor):
            self.classes = _jsonable(self.native.classes_)
        self.known = _known_categories(self.native) if self.native is not None else {}
        self.log = _PredictionLog(*_log_settings())
        self.lineage = {
            k: MODEL.get(k) for k in ("name", "version", "uri", "run_id", "crispml_run_id", "data_fingerprint")
        }
        self.label = f"{MODEL['name']}/{MODEL['version']}"
        self.resolver = _resolver()
        # Columns cast to a dtype only when no value is missing (``flavors.frame``): a value that
        # may be missing (optional, or fetched from a store) would make one request's ``None``
        # change the dtype another request is predicted with; such batches run request by request.
        self.nullable = [
            c["name"]
            for c in SPEC["columns"]
            if DTYPES.get(c["type"]) and (not c.get("required", True) or self.resolver is not None)
        ]
        self.batcher = _Batcher(
            self._work, int(SPEC.get("batch_max_rows", 1000)), float(SPEC.get("batch_max_wait_ms", 2)) / 1000
        )

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

    def _predict(self, rows: list[dict[str, Any]]) -> tuple[list[Any], list[dict[str, Any]] | None]:
        """Predictions (and probabilities, for a classifier) of ``rows``, in order."""
        frame = self._frame(rows)
        if self.native is None:
            assert self.pyfunc is not None
            return _jsonable(self.pyfunc.predict(frame)), None
        # A pipeline's transforms run once for both predict and predict_proba (what
        # Pipeline.predict does, without paying for the preprocessing twice).
        final, features = self.native, frame
        if self.classes is not None and len(getattr(self.native, "steps", ())) > 1:
            final, features = self.native[-1], self.native[:-1].transform(frame)
        predictions = _jsonable(final.predict(features))
        if self.classes is None:
            return predictions, None
        keys = [str(c) for c in self.classes]
        proba = final.predict_proba(features)
        probabilities = [dict(zip(keys, row, strict=True)) for row in proba.astype(float).tolist()]
        return predictions, probabilities if bool(np.isfinite(proba).all()) else _finite(probabilities)

    def _answer(self, jobs: list[_Job]) -> None:
        """Predict the jobs' rows in one call and hand each job its own slice."""
        rows = [row for job in jobs for row in job.full]
        predictions, probabilities = self._predict(rows)
        start = 0
        for job in jobs:
            end = start + len(job.full)
            out: dict[str, Any] = {"predictions": predictions[start:end]}
            if probabilities is not None:
                out["probabilities"] = probabilities[start:end]
            out["model"] = self.lineage
            job.out = out
            start = end

    def _batchable(self, jobs: list[_Job]) -> bool:
        if len(jobs) < 2 or not self.nullable:
            return True
        return not any(row.get(c) is None for job in jobs for row in job.full for c in self.nullable)

    def _work(self, jobs: list[_Job]) -> None:
        """A batch, in a worker thread: features, one prediction, one log append."""
        ready = []
        for job in jobs:
            try:
                job.full, job.fetched = self._with_features(job.rows)
                ready.append(job)
            except bentoml.exceptions.InvalidArgument as exc:
                job.error = exc
        groups = [ready] if self._batchable(ready) else [[job] for job in ready]
        for group in groups:
            if not group:
                continue
            try:
                self._answer(group)
            except (ValueError, TypeError, KeyError) as exc:
                if len(group) > 1:  # find the request(s) the model refuses: only they get a 400
                    groups.extend([job] for job in group)
                    continue
                # The record had the right shape but values the model cannot use: the caller's to fix.
                group[0].error = bentoml.exceptions.InvalidArgument(f"the model cannot predict these records: {exc}")
        now, ts = datetime.now(UTC).isoformat(timespec="milliseconds"), time.time()
        lines = []
        for job in ready:
            if job.out is None or not job.log:
                continue
            entry = {
                "schema": LOG_SCHEMA,
                "time": now,
                "ts": ts,
                "deployment": SPEC["deployment"],
                "model": self.label,
                "training_run": MODEL.get("crispml_run_id"),
                "inputs": job.rows,
                **({"features": job.fetched} if job.fetched is not None else {}),
                "outputs": {k: v for k, v in job.out.items() if k != "model"},
            }
            unseen = _unseen(job.full, self.known)
            if unseen:
                entry["unseen"] = unseen
            lines.append(self.log.line(entry))
        self.log.append_lines(lines)

    @bentoml.api(route="/predict", input_spec=PredictRequest)
    async def predict(self, records: list[Any], ctx: bentoml.Context) -> dict[str, Any]:
        rows = [r.model_dump(by_alias=True) for r in records]
        logged = SMOKE_HEADER not in ctx.request.headers
        job = _Job(rows=rows, log=logged, future=asyncio.get_running_loop().create_future())
        try:
            out: dict[str, Any] = await self.batcher.submit(job)
        except bentoml.exceptions.InvalidArgument as exc:
            # Answered here, not raised: BentoML would answer a raised one as a list
            # ``[{"error": ...}]``; every refusal is an object with its ``error``.
            ctx.response.status_code = 400
            return {"error": str(exc)}
        ctx.response.headers["x-crispml-model"] = self.label
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
