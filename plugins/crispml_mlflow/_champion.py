"""Moving ``champion``: the gate's promotion, ``crispml promote`` and ``crispml rollback``.

A move writes its audit tags and history first and the alias last, and undoes its earlier writes
if one fails: the previous champion stays champion.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from crispml import UsageError
from crispml_mlflow import _backend
from crispml_mlflow._tags import CHAMPION, HISTORY, champion_of, history, history_tag, lock_for, not_found, timestamp


class _Undoable:
    """The registry writes of one champion move, each with how to undo it. If a write fails,
    ``undo`` puts back what the earlier ones changed (newest first): a move happens entirely
    or not at all (as far as the registry still answers)."""

    def __init__(self, client: Any, name: str) -> None:
        self.client, self.name = client, name
        self.undos: list[Callable[[], None]] = []

    def version_tag(self, version: str, key: str, value: str, before: dict[str, str]) -> None:
        c, name, old = self.client, self.name, before.get(key)
        if old is None:
            self.undos.append(lambda: c.delete_model_version_tag(name, version, key))
        else:
            self.undos.append(lambda: c.set_model_version_tag(name, version, key, old))
        c.set_model_version_tag(name, version, key, value)

    def model_tag(self, key: str, value: str, old: str | None) -> None:
        c, name = self.client, self.name
        if old is None:
            self.undos.append(lambda: c.delete_registered_model_tag(name, key))
        else:
            self.undos.append(lambda: c.set_registered_model_tag(name, key, old))
        c.set_registered_model_tag(name, key, value)

    def alias(self, alias: str, version: str, old: str | None) -> None:
        c, name = self.client, self.name
        if old is None:
            self.undos.append(lambda: c.delete_registered_model_alias(name, alias))
        else:
            self.undos.append(lambda: c.set_registered_model_alias(name, alias, old))
        c.set_registered_model_alias(name, alias, version)

    def undo(self) -> None:
        for step in reversed(self.undos):
            with contextlib.suppress(Exception):
                step()
        self.undos.clear()


def set_champion(client: Any, name: str, version: str, reason: str, *, by: str, run: str | None) -> None:
    """Move ``champion`` to ``version`` and record who, when, why and from which run.

    The audit tags and the history are written first and the alias moved last; if any write
    fails, the earlier ones are undone and the previous champion stays champion."""
    now = timestamp()
    previous = champion_of(client, name)
    target = client.get_model_version(name, version)
    old_history = history_tag(client, name)
    entries = history(client, name)
    entries.append({"version": str(version), "at": now, "by": by, "reason": reason, "run": run})
    writes = _Undoable(client, name)
    try:
        for key, val in {
            "crispml.champion_since": now,
            "crispml.promoted_by": by,
            "crispml.promotion_reason": reason,
            "crispml.promoted_from_run": run or "-",
        }.items():
            writes.version_tag(str(version), key, val, target.tags or {})
        if previous is not None and str(previous.version) != str(version):
            before = previous.tags or {}
            writes.version_tag(str(previous.version), "crispml.champion_until", now, before)
            writes.version_tag(str(previous.version), "crispml.replaced_by", str(version), before)
        writes.model_tag(HISTORY, json.dumps(entries[-200:]), old_history)
        writes.alias(CHAMPION, str(version), None if previous is None else str(previous.version))
    except BaseException:
        writes.undo()
        raise


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
        current = champion_of(client, name)
        if current is None:
            raise UsageError(f"model '{name}' has no champion: nothing to roll back")
        entries = history(client, name)
        # The promotions before the current champion's latest one, newest first.
        positions = [i for i, e in enumerate(entries) if str(e.get("version")) == str(current.version)]
        before = entries[: positions[-1]] if positions else entries
        target, keep = None, 0
        for i in range(len(before) - 1, -1, -1):
            candidate = str(before[i].get("version"))
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
        before = client.get_model_version(name, target).tags or {}
        writes = _Undoable(client, name)
        try:
            for key, val in {
                "crispml.champion_since": now,
                "crispml.promoted_by": by,
                "crispml.promotion_reason": reason,
            }.items():
                writes.version_tag(target, key, val, before)
            for key in ("crispml.champion_until", "crispml.rolled_back"):
                writes.version_tag(str(current.version), key, now, current.tags or {})
            writes.model_tag(HISTORY, json.dumps(entries[-200:]), old_history)
            # The alias last: if anything before fails, the current champion stays champion.
            writes.alias(CHAMPION, target, str(current.version))
        except BaseException:
            writes.undo()
            raise
    return str(current.version), target
