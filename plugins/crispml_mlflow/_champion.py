"""Moving ``champion``: the gate's promotion, ``crispml promote`` and ``crispml rollback``.

A move records what it is about to change (``_journal``), writes its audit tags and history, moves
the alias last and deletes the record: if a write fails or the process is killed, the change is
undone (or, if the alias got there, finished) and aliases and tags agree again.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from crispml import UsageError
from crispml_mlflow import _backend, _journal
from crispml_mlflow._tags import CHAMPION, HISTORY, champion_of, history, history_tag, lock_for, not_found, timestamp

PROMOTION_TAGS = (
    "crispml.champion_since",
    "crispml.promoted_by",
    "crispml.promotion_reason",
    "crispml.promoted_from_run",
)
"""Written on the version that becomes champion."""
REPLACED_TAGS = ("crispml.champion_until", "crispml.replaced_by")
"""Written on the champion it replaces."""
ENDED_TAGS = (*REPLACED_TAGS, "crispml.rolled_back")
"""Say a version's time as champion ended: removed when it becomes champion again."""


def _clear_ended(client: Any, name: str, mv: Any) -> None:
    for key in ENDED_TAGS:
        if key in (mv.tags or {}):
            client.delete_model_version_tag(name, str(mv.version), key)


def before(mv: Any, keys: tuple[str, ...]) -> dict[str, str | None]:
    """What ``keys`` hold on version ``mv`` now (``None``: absent), for a pending-move record."""
    tags = mv.tags or {}
    return {key: tags.get(key) for key in keys}


def set_champion(
    client: Any,
    name: str,
    version: str,
    reason: str,
    *,
    by: str,
    run: str | None,
    previous: Any | None = None,
    journaled: bool = False,
) -> None:
    """Move ``champion`` to ``version`` and record who, when, why and from which run.

    The audit tags and the history are written first and the alias moved last, after a
    pending-move record (``_journal``): if a write fails, or the process dies, the change is
    undone (here, or by the next writer) and the previous champion stays champion. ``journaled``:
    the caller (register) has begun the record, with ``previous`` the champion it read."""
    now = timestamp()
    if not journaled:
        previous = champion_of(client, name)
    target = client.get_model_version(name, version)
    old_history = history_tag(client, name)
    entries = history(client, name)
    entries.append({"version": str(version), "at": now, "by": by, "reason": reason, "run": run})
    replaced = None if previous is None or str(previous.version) == str(version) else str(previous.version)
    if not journaled:
        tags = {str(version): before(target, PROMOTION_TAGS + ENDED_TAGS)}
        if replaced is not None:
            tags[replaced] = before(previous, REPLACED_TAGS)
        _journal.begin(client, name, {"op": "promote", "version": str(version), "tags": tags}, old_history)
    try:
        values = dict(zip(PROMOTION_TAGS, (now, by, reason, run or "-"), strict=True))
        for key, val in values.items():
            client.set_model_version_tag(name, str(version), key, val)
        _clear_ended(client, name, target)
        if replaced is not None:
            client.set_model_version_tag(name, replaced, "crispml.champion_until", now)
            client.set_model_version_tag(name, replaced, "crispml.replaced_by", str(version))
        client.set_registered_model_tag(name, HISTORY, json.dumps(entries[-200:]))
        client.set_registered_model_alias(name, CHAMPION, str(version))
        if not journaled:
            _journal.end(client, name)
    except BaseException:
        if not journaled:
            undo_after_failure(client, name)
        raise


def undo_after_failure(client: Any, name: str) -> None:
    """Reconcile this process's own cut-off change now; if the registry does not answer, the
    record stays and the next writer reconciles it."""
    with contextlib.suppress(Exception):
        _journal.reconcile(client, name, force=True)


def _model(client: Any, name: str) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_registered_model(name)
    except MlflowException as exc:
        if not_found(exc):
            raise UsageError(f"no registered model named '{name}' (see: crispml models)") from None
        raise


def promote(client: Any, project_dir: Path, uri: str, name: str, version: str, reason: str) -> str:
    """A manual promotion: ``crispml promote MODEL VERSION``."""
    from mlflow.exceptions import MlflowException

    _model(client, name)
    if not version.isdigit():
        raise UsageError(f"version must be a number, got '{version}'")
    with _backend.file_lock(lock_for(project_dir, uri, name)):
        _journal.reconcile(client, name)
        try:
            client.get_model_version(name, version)
        except MlflowException as exc:
            if not not_found(exc):
                raise
            known = sorted(int(v.version) for v in client.search_model_versions(f"name='{name}'"))
            raise UsageError(
                f"model '{name}' has no version {version} (versions: {', '.join(map(str, known)) or 'none'})"
            ) from None
        current = champion_of(client, name)
        if current is not None and str(current.version) == version:
            raise UsageError(f"version {version} of '{name}' is already the champion")
        set_champion(client, name, version, f"manual promotion: {reason}", by=_backend.user(), run=None)
    return version


def rollback(client: Any, project_dir: Path, uri: str, name: str) -> tuple[str, str]:
    """Move ``champion`` back to the previous champion; return ``(from, to)``."""
    _model(client, name)
    with _backend.file_lock(lock_for(project_dir, uri, name)):
        _journal.reconcile(client, name)
        current = champion_of(client, name)
        if current is None:
            raise UsageError(f"model '{name}' has no champion: nothing to roll back")
        entries = history(client, name)
        # The promotions before the current champion's latest one, newest first.
        positions = [i for i, e in enumerate(entries) if str(e.get("version")) == str(current.version)]
        earlier = entries[: positions[-1]] if positions else entries
        target, keep = None, 0
        for i in range(len(earlier) - 1, -1, -1):
            candidate = str(earlier[i].get("version"))
            if candidate == str(current.version):
                continue
            try:
                client.get_model_version(name, candidate)
            except Exception:
                continue  # deleted since: go further back
            target, keep = candidate, i + 1
            break
        if target is None:
            raise UsageError(
                f"model '{name}' has no previous champion to roll back to (champion is version {current.version})"
            )
        now = timestamp()
        by = _backend.user()
        reason = f"rollback from version {current.version}"
        # Drop the rolled-back promotion(s) from the history, so a second rollback goes further.
        old_history = history_tag(client, name)
        entries = entries[:keep]
        entries[-1] = {**entries[-1], "rollback": {"at": now, "by": by, "from": str(current.version)}}
        target_mv = client.get_model_version(name, target)
        keys = ("crispml.champion_since", "crispml.promoted_by", "crispml.promotion_reason")
        marks = ("crispml.champion_until", "crispml.rolled_back")
        tags = {target: before(target_mv, keys + ENDED_TAGS), str(current.version): before(current, marks)}
        _journal.begin(client, name, {"op": "rollback", "version": target, "tags": tags}, old_history)
        try:
            for key, val in zip(keys, (now, by, reason), strict=True):
                client.set_model_version_tag(name, target, key, val)
            _clear_ended(client, name, target_mv)
            for key in marks:
                client.set_model_version_tag(name, str(current.version), key, now)
            client.set_registered_model_tag(name, HISTORY, json.dumps(entries[-200:]))
            # The alias last: if anything before fails, the current champion stays champion.
            client.set_registered_model_alias(name, CHAMPION, target)
            _journal.end(client, name)
        except BaseException:
            undo_after_failure(client, name)
            raise
    return str(current.version), target
