"""The ``load`` stage: a point-in-time join of a feature service onto an entities file.

``get_historical_features(entity_df, features=store.get_feature_service(name)).to_df()``, with
what makes it safe to train on:

* one row out per entity row in, in the file's order (rows with no features kept, with nulls;
  duplicates kept) — checked, not assumed;
* the timestamp column renamed ``event_timestamp`` (else Feast guesses one and prints that it
  did) and made ``datetime64[us, UTC]``; naive times are UTC; sub-microsecond parts, which
  duckdb refuses, are truncated and the run's log says how many;
* a time that does not parse fails the stage naming the column, the row and the value.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from crispml import Dataset, RunContext
from crispml_feast._definitions import load_definitions
from crispml_feast._serving import key_types, spec_for
from crispml_feast._store import open_store, quiet, store_spec

if TYPE_CHECKING:
    from crispml_feast import LoadOptions

log = logging.getLogger("crispml.feast")

TIMESTAMP = "event_timestamp"
_ROW = "__crispml_row__"


def read_entities(path: Path) -> pd.DataFrame:
    if path.suffix.lower() in {".parquet", ".pq"}:
        return pd.read_parquet(path)
    return pd.read_csv(path)


def event_times(values: pd.Series, column: str) -> pd.Series:
    """``values`` as ``datetime64[us, UTC]``; naive times are UTC. Raises ``ValueError`` naming
    the first row (1 = the first data row) whose value is not a time."""
    if pd.api.types.is_datetime64_any_dtype(values):
        parsed = values if getattr(values.dt, "tz", None) is not None else values.dt.tz_localize("UTC")
        parsed = parsed.dt.tz_convert("UTC")
    elif pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        raise ValueError(
            f"column '{column}' holds numbers ({values.dtype}), expected times: write them as ISO 8601 text "
            "(2026-01-31T12:00:00Z) or store a timestamp column"
        )
    else:
        parsed = pd.to_datetime(values, utc=True, errors="coerce", format="ISO8601")
    bad = parsed.isna().to_numpy()
    if bad.any():
        row = int(bad.argmax())
        value = values.iloc[row]
        shown = "empty" if pd.isna(value) else repr(str(value))[:80]
        raise ValueError(f"column '{column}' row {row + 1}: {shown} is not a time")
    sub_micro = int((parsed.dt.nanosecond != 0).sum())
    if sub_micro:
        log.warning(
            "feast: %d of %d times in column '%s' had sub-microsecond parts, truncated to whole microseconds "
            "(the duckdb offline store refuses them)",
            sub_micro,
            len(parsed),
            column,
        )
        parsed = parsed.dt.floor("us")
    return parsed.astype("datetime64[us, UTC]")


def entity_frame(options: LoadOptions) -> pd.DataFrame:
    """The entities file, its time column renamed ``event_timestamp`` and parsed."""
    frame = read_entities(options.entities)
    if len(frame) == 0:
        raise ValueError(f"{options.entities.name} has no rows: nothing to join features onto")
    times = event_times(frame[options.timestamp_column], options.timestamp_column)
    frame = frame.rename(columns={options.timestamp_column: TIMESTAMP})
    # The array itself: ``to_numpy()`` of tz-aware times is an object array of Timestamps,
    # seconds per million rows (measured: bench_feast.py).
    frame[TIMESTAMP] = times.array
    return frame


def fingerprint(frame: pd.DataFrame) -> str:
    """A hash of the joined data itself (values, column names and types), not of its inputs."""
    digest = hashlib.sha256()
    digest.update("\0".join(f"{c}:{t}" for c, t in frame.dtypes.astype(str).items()).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()


def historical(store: Any, service: Any, entities: pd.DataFrame, filter_by_created_timestamp: bool) -> pd.DataFrame:
    """The point-in-time join, one row per entity row, in the entity rows' order."""
    entities = entities.assign(**{_ROW: range(len(entities))})
    with quiet():
        job = store.get_historical_features(
            entity_df=entities, features=service, filter_by_created_timestamp=filter_by_created_timestamp
        )
        joined = job.to_df()
    rows = joined.pop(_ROW).to_numpy()  # in place: no copy of the feature columns
    order = np.argsort(rows, kind="stable")
    if len(joined) != len(entities) or not np.array_equal(rows[order], np.arange(len(entities))):
        raise RuntimeError(
            f"the offline store returned {len(joined)} rows for {len(entities)} entity rows: "
            "labels would no longer match their rows"
        )
    # Vectorised (one take, no set of a million ints): the load stage stays within a few
    # percent of Feast's own join (bench_feast.py).
    joined = joined.take(order)
    joined.index = pd.RangeIndex(len(joined))
    if joined[TIMESTAMP].dtype != "datetime64[us, UTC]":
        joined[TIMESTAMP] = joined[TIMESTAMP].astype("datetime64[us, UTC]")
    return joined


def load_dataset(options: LoadOptions, context: RunContext) -> Dataset:
    definitions = load_definitions(options.repo)
    spec = store_spec(options.repo, context.project_dir, project=options.project, online_store=options.online_store)
    store = open_store(spec, definitions)
    with quiet():
        service = store.get_feature_service(options.feature_service)
    entities = entity_frame(options)
    frame = historical(store, service, entities, options.filter_by_created_timestamp)
    features = [ref.split(":", 1)[1] for ref in definitions.feature_refs(service)]
    present = [f for f in features if f in frame.columns]
    without = int(frame[present].isna().all(axis=1).sum()) if present else len(frame)
    share = without / len(frame)
    keys = definitions.join_keys(service)
    serving = spec_for(options, spec.project, service, store, key_types(frame, keys), redact=context.secrets)
    return Dataset(
        frame=frame,
        target=options.target,
        name=options.name or options.feature_service,
        source=f"feast:{spec.project}/{options.feature_service} × {options.entities}",
        fingerprint=fingerprint(frame),
        key_columns=(*keys, TIMESTAMP),
        serving=serving,
        metrics={"rows": float(len(frame)), "rows_without_features": float(without), "share_without_features": share},
    )
