"""The prediction log: what a deployment answered, as a versioned contract any plugin can read.

A serving plugin appends one JSON line per answered request to the file its
:class:`crispml.Deployment` names (``prediction_log``), rotating by size like ``logging``'s
``RotatingFileHandler`` (``log`` is the newest, then ``log.1``, ``log.2`` … the oldest). Each line,
schema version 1 (``docs/writing-plugins.md``)::

    {"schema": 1, "time": "2026-11-30T01:02:03.456+00:00", "deployment": "churn",
     "model": "churn/3", "training_run": "20261130-010203-ab12cd",
     "inputs": [{...}, ...],                       # the request's records
     "outputs": {"predictions": [...], "probabilities": [{"0": 0.8, "1": 0.2}, ...]},
     "features": [{...}, ...]}                     # optional: what the model saw, per record

:func:`prediction_records` turns that into one dict per predicted record, so that a monitor
plugin never opens another plugin's files nor knows how it rotates them. A writer appends and
rotates holding an exclusive ``flock`` on ``<log>.lock``; the reader holds it only while it opens
the files.
"""

from __future__ import annotations

import contextlib
import json
from collections import deque
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from crispml.errors import CrispmlError, UsageError
from crispml.store import file_lock

if TYPE_CHECKING:
    from crispml.results import Deployment

PREDICTION_LOG_SCHEMA = 1
"""The version of the line format this crispml writes and reads; a reader refuses newer ones."""


def log_files(path: Path) -> list[Path]:
    """A rotated log's files, oldest first: ``log.N`` … ``log.1``, ``log``."""
    rotated = [p for p in path.parent.glob(path.name + ".*") if p.suffix[1:].isdigit()]
    rotated.sort(key=lambda p: int(p.suffix[1:]), reverse=True)
    return [*rotated, path] if path.exists() else rotated


def _open_all(path: Path, stack: contextlib.ExitStack) -> list[tuple[Path, BinaryIO]]:
    """Every file of the log, opened oldest first under the writers' lock (``<log>.lock``), so
    that a rotation while we read can neither hide lines nor show them twice: an open file keeps
    its contents whatever it is renamed to. Without a lock file (no writer yet) or the right to
    take it (a reader that may not write there), the files are opened without it — and opened
    again under it if a writer started meanwhile."""
    lock = Path(f"{path}.lock")
    for _ in range(2):
        locked = lock.exists()
        with contextlib.ExitStack() as files:
            opened: list[tuple[Path, BinaryIO]] = []
            with contextlib.ExitStack() as locking:
                if locked:
                    with contextlib.suppress(OSError):
                        locking.enter_context(file_lock(lock))
                for file in log_files(path):
                    with contextlib.suppress(FileNotFoundError):
                        opened.append((file, files.enter_context(file.open("rb"))))
            if locked or not lock.exists():
                stack.enter_context(files.pop_all())
                return opened
    return []  # unreachable: the second pass found the lock file, which is never removed


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _since(since: datetime | timedelta | None) -> datetime | None:
    if since is None:
        return None
    if isinstance(since, timedelta):
        return datetime.now(UTC) - since
    if isinstance(since, datetime):
        return since.replace(tzinfo=UTC) if since.tzinfo is None else since.astimezone(UTC)
    raise UsageError(f"since must be a datetime or a timedelta, not {type(since).__name__}")


def _records(entry: dict[str, Any], when: datetime) -> list[dict[str, Any]]:
    inputs = entry.get("inputs")
    outputs = entry.get("outputs") or {}
    if not isinstance(inputs, list) or not isinstance(outputs, dict):
        return []
    predictions = outputs.get("predictions") or []
    probabilities = outputs.get("probabilities")
    features = entry.get("features")
    out = []
    for i, record in enumerate(inputs):
        out.append(
            {
                "time": when,
                "deployment": entry.get("deployment"),
                "model": entry.get("model"),
                "training_run": entry.get("training_run"),
                "inputs": record,
                "prediction": predictions[i] if i < len(predictions) else None,
                "probabilities": probabilities[i]
                if isinstance(probabilities, list) and i < len(probabilities)
                else None,
                "features": features[i] if isinstance(features, list) and i < len(features) else None,
            }
        )
    return out


def prediction_records(
    deployment: Deployment | str | Path,
    since: datetime | timedelta | None = None,
    last: int | None = None,
) -> list[dict[str, Any]]:
    """One dict per predicted record (a request with 5 records gives 5), oldest first.

    Each has ``time`` (an aware UTC datetime), ``deployment``, ``model`` (``name/version``),
    ``training_run``, ``inputs`` (that record's fields), ``prediction``, ``probabilities`` (a
    dict, or ``None``) and ``features`` (what the model saw when a feature store filled it in,
    or ``None``).

    Rotated files are read in order; a line cut short (a crash mid-write, a write in progress)
    is skipped; a line of a newer schema version is an error.

    :param deployment: a :class:`crispml.Deployment` (``crispml.deployment("churn")``), or the
        log's path.
    :param since: only records answered at or after this time (or within this long ago).
    :param last: only the last ``last`` records (after ``since``).
    """
    if last is not None and last < 0:
        raise UsageError(f"last must be 0 or more, not {last}")
    path = deployment if isinstance(deployment, str | Path) else deployment.prediction_log
    if path is None:
        name = getattr(deployment, "name", "?")
        raise UsageError(f"deployment '{name}' keeps no prediction log")
    cutoff = _since(since)
    kept: deque[dict[str, Any]] = deque(maxlen=last) if last is not None else deque()
    if last == 0:
        return []
    with contextlib.ExitStack() as stack:
        for file, fh in _open_all(Path(path), stack):
            for raw in fh:
                _take(file, raw, cutoff, kept)
    return list(kept)


def _take(file: Path, raw: bytes, cutoff: datetime | None, kept: deque[dict[str, Any]]) -> None:
    """Add one line's records to ``kept`` (skipping a blank, torn or foreign line)."""
    if not raw.strip():
        return
    try:
        entry = json.loads(raw)
    except ValueError:
        return  # torn: a crash mid-write, or the writer has not finished the line yet
    if not isinstance(entry, dict):
        return
    schema = entry.get("schema", 1)
    if not isinstance(schema, int) or schema > PREDICTION_LOG_SCHEMA:
        raise CrispmlError(
            f"{file}: prediction log schema {schema!r} is newer than this crispml reads "
            f"({PREDICTION_LOG_SCHEMA}): upgrade crispml"
        )
    when = _parse_time(entry.get("time"))
    if when is None or (cutoff is not None and when < cutoff):
        return
    kept.extend(_records(entry, when))
