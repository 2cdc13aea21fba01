"""The pending-move record: a registry change cut off half-way (``kill -9``, a lost connection)
is finished or undone by the next writer, so aliases and tags always end up agreeing.

A registry change is several MLflow writes (a version, its tags, the ``challenger`` alias, the
previous champion's tags, the history, the ``champion`` alias) and MLflow has no transaction
across them. So before its first write a change records on the registered model what it is
about to do and what each value it will touch was before (``crispml.pending``; the champion
history, which can be long, goes in ``crispml.pending.history``). Its last write deletes the
record. Whoever next takes the model's lock (register, promote, rollback) and finds a record
whose writer is gone reconciles it:

* **finished**: the decision had already taken effect (the ``champion`` alias, always moved
  last, reached the new champion; or a version was kept out and its decision tag is written):
  only the record goes;
* **undone**: otherwise every touched tag, the history and the ``challenger`` alias are put back
  and a version the change created is deleted: as if the change had never started.

A version that a register creates carries ``crispml.registration`` (a token the record names),
set in the same call that creates it, so a version created just before the kill is found.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import socket
from datetime import UTC, datetime, timedelta
from typing import Any

from crispml import CrispmlError
from crispml_mlflow._tags import CHALLENGER, CHAMPION, HISTORY, not_found, timestamp

PENDING = "crispml.pending"
PENDING_HISTORY = "crispml.pending.history"
REGISTRATION = "crispml.registration"
DECISION = "crispml.decision"

STALE_ELSEWHERE = timedelta(minutes=10)
"""A record left by another machine is taken as abandoned after this long: a registration takes
seconds, and crispml's lock cannot see processes on other machines."""


class RegistryBusyError(CrispmlError):
    """Another live process is changing this registered model right now."""


def _me() -> dict[str, Any]:
    import psutil

    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "pid_started": psutil.Process(pid).create_time()}


def _writer_alive(record: dict[str, Any]) -> bool:
    """Whether the process that wrote ``record`` may still be writing (a recycled pid is not it)."""
    if record.get("host") != socket.gethostname():
        try:
            at = datetime.fromisoformat(str(record.get("at")))
        except ValueError:
            return False
        return datetime.now(UTC) - at < STALE_ELSEWHERE
    import psutil

    try:
        process = psutil.Process(int(record.get("pid", -1)))
        if process.pid == os.getpid():
            return False  # this process: a change it started earlier and did not finish
        return abs(process.create_time() - float(record.get("pid_started", 0))) < 1.0
    except (psutil.Error, ValueError, TypeError):
        return False


def new_token() -> str:
    return secrets.token_hex(8)


def begin(client: Any, name: str, record: dict[str, Any], history_before: str | None) -> None:
    """Record the change about to be made. ``record`` names the op and, for every version tag it
    will write, the value before (``None``: absent): ``{"tags": {version: {key: old}}, ...}``."""
    record = {**record, **_me(), "at": timestamp(), "history": history_before is not None}
    if history_before is not None:
        client.set_registered_model_tag(name, PENDING_HISTORY, history_before)
    client.set_registered_model_tag(name, PENDING, json.dumps(record))


def end(client: Any, name: str) -> None:
    """The change is complete: its record goes (the history copy after it: harmless if left)."""
    client.delete_registered_model_tag(name, PENDING)
    with contextlib.suppress(Exception):
        client.delete_registered_model_tag(name, PENDING_HISTORY)


def pending(client: Any, name: str) -> dict[str, Any] | None:
    try:
        tags = client.get_registered_model(name).tags or {}
    except Exception as exc:
        if not_found(exc):
            return None
        raise
    raw = tags.get(PENDING)
    if raw is None:
        return None
    try:
        record = json.loads(raw)
    except ValueError:
        record = None
    if not isinstance(record, dict):
        record = {"op": "unreadable"}
    record["_history"] = tags.get(PENDING_HISTORY)
    return record


def _registered_version(client: Any, name: str, token: str | None) -> Any | None:
    if not token:
        return None
    for mv in client.search_model_versions(f"name='{name}'"):
        if (mv.tags or {}).get(REGISTRATION) == token:
            return mv
    return None


def _alias(client: Any, name: str, alias: str) -> str | None:
    value = (client.get_registered_model(name).aliases or {}).get(alias)
    return None if value is None else str(value)


def reconcile(client: Any, name: str, *, force: bool = False) -> str | None:
    """Finish or undo a change to ``name`` that was cut off; return what was done, or ``None``.

    Call it holding the model's lock. ``force`` reconciles this process's own record (after
    an exception inside the change) without asking whether its writer is alive. What it did is
    logged as a warning (on stderr): the user learns that an earlier change was cut off."""
    done = _reconcile(client, name, force=force)
    if done is not None and not force:
        logging.getLogger("crispml_mlflow").warning("mlflow: model '%s': %s", name, done)
    return done


def _reconcile(client: Any, name: str, *, force: bool) -> str | None:
    record = pending(client, name)
    if record is None:
        return None
    if not force and _writer_alive(record):
        raise RegistryBusyError(
            f"model '{name}' is being changed by process {record.get('pid')} on {record.get('host')} "
            f"(started {record.get('at')}); try again when it has finished"
        )
    op = record.get("op")
    if op not in ("register", "promote", "rollback"):
        # Not written by this crispml (edited by hand, or a future format): nothing here says
        # what to put back, and guessing could undo a good champion. Dropped, aliases untouched.
        end(client, name)
        return f"dropped an unreadable {PENDING} record"
    champion = _alias(client, name, CHAMPION)
    if op == "register":
        mv = _registered_version(client, name, record.get("token"))
        version = None if mv is None else str(mv.version)
        decision = None if mv is None else (mv.tags or {}).get(DECISION)
        done = bool(decision) and (decision.startswith("kept") or champion == version)  # type: ignore[union-attr]
    else:
        mv, version = None, str(record.get("version"))
        done = champion == version and op in ("promote", "rollback")
    if done:
        end(client, name)
        return f"finished the {op} of version {version} that was cut off"
    _undo(client, name, record, version if op == "register" else None)
    end(client, name)
    what = f"version {version}" if version else "a version not yet created"
    return f"undid the {op} of {what} that was cut off"


def _undo(client: Any, name: str, record: dict[str, Any], created: str | None) -> None:
    """Put back everything ``record`` says was about to change, and delete the version the change
    created (``created``, a register's). The ``champion`` alias needs no undoing: it is the last
    write, and the change did not reach it."""
    for version, before in (record.get("tags") or {}).items():
        if str(version) == created:
            continue  # deleted below
        for key, old in before.items():
            try:
                if old is None:
                    client.delete_model_version_tag(name, str(version), key)
                else:
                    client.set_model_version_tag(name, str(version), key, str(old))
            except Exception as exc:
                if not not_found(exc):
                    raise
    if record.get("history"):
        old_history = record.get("_history")
        if old_history is not None:
            client.set_registered_model_tag(name, HISTORY, old_history)
    else:
        with contextlib.suppress(Exception):
            client.delete_registered_model_tag(name, HISTORY)
    if record.get("op") == "register":
        challenger = record.get("challenger")
        if challenger is not None and challenger != created:
            client.set_registered_model_alias(name, CHALLENGER, str(challenger))
        elif _alias(client, name, CHALLENGER) is not None:
            client.delete_registered_model_alias(name, CHALLENGER)
        if created is not None:
            client.delete_model_version(name, created)
