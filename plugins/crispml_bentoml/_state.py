"""The deployments registry under ``<project>/.crispml/``, and the processes it records.

    .crispml/bentoml/                     BENTOML_HOME: the model store and built bentos
    .crispml/deployments/<name>/
        deployment.json                   the record (atomic writes): port, pids, model, history
        upstream.json                     the backend the proxy forwards to (atomic writes)
        proxy.log                         the proxy's output
        predictions.jsonl[.1 …]           the prediction log, rotated by size
        releases/<n>-v<version>/          one per deploy: spec.json, service.py, the MLflow
                                          model, server.log (the backend's output)
        .lock                             held while a deploy, rollback or undeploy runs

No backend here: ``crispml deployments`` reads records and probes pids and ports only.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import crispml
from crispml import UsageError, atomic_write_json

STORE = ".crispml"
NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
PROXY_MARKER = "crispml_bentoml._proxy"
BACKEND_MARKER = "bentoml"  # the launcher (crispml_bentoml._launch), then `bentoml serve`


def check_name(name: str) -> str:
    if not NAME.match(name):
        raise UsageError(
            f"invalid deployment name {name!r}: use lowercase letters, digits, '-' or '_' "
            "(at most 63 characters, starting with a letter or digit)"
        )
    return name


def bentoml_home(project: Path) -> Path:
    return project / STORE / "bentoml"


def deployments_dir(project: Path) -> Path:
    return project / STORE / "deployments"


def folder(project: Path, name: str) -> Path:
    return deployments_dir(project) / name


def record_path(project: Path, name: str) -> Path:
    return folder(project, name) / "deployment.json"


def read_record(project: Path, name: str) -> dict[str, Any] | None:
    path = record_path(project, name)
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def write_record(project: Path, name: str, record: dict[str, Any]) -> None:
    atomic_write_json(record_path(project, name), record)


def all_records(project: Path) -> list[dict[str, Any]]:
    root = deployments_dir(project)
    if not root.is_dir():
        return []
    out = []
    for path in sorted(root.glob("*/deployment.json")):
        record = read_record(project, path.parent.name)
        if record is not None:
            out.append(record)
    return out


def require_record(project: Path, name: str) -> dict[str, Any]:
    record = read_record(project, name)
    if record is None:
        known = ", ".join(r["name"] for r in all_records(project)) or "none"
        raise UsageError(f"no deployment named '{name}' (deployments: {known}; see: crispml deployments)")
    return record


@contextlib.contextmanager
def locked(project: Path, name: str) -> Iterator[None]:
    """One deploy, rollback or undeploy of ``name`` at a time on this machine."""
    with crispml.file_lock(folder(project, name) / ".lock"):
        yield


# -- processes ----------------------------------------------------------------------------------
# On crispml's process helpers (psutil): the same code on Linux and macOS.


def alive(pid: int | None, marker: str | None = None) -> bool:
    """Is ``pid`` a running (not zombie) process — and, given ``marker``, still the one we started
    (its command line contains it; guards against a recycled pid)?"""
    process = crispml.ProcessIdentity.from_token(pid, None)
    if process is None or not process.alive():
        return False
    if marker is None:
        return True
    cmdline = process.command_line()
    return cmdline is not None and marker in cmdline  # unreadable: another user's process


def identity(pid: int | None) -> str | None:
    """What tells ``pid`` apart from a later process given the same pid (its start time), as a
    string for the record; ``None`` if gone."""
    process = crispml.ProcessIdentity.of(pid) if pid else None
    return process.token() if process is not None else None


def ours(pid: int | None, marker: str | None = None, ident: str | None = None) -> bool:
    """Is ``pid`` alive and still the process a record names: its command line contains
    ``marker`` and (when the record has one) its :func:`identity` is the recorded one."""
    if not alive(pid, marker):
        return False
    process = crispml.ProcessIdentity.from_token(pid, ident)
    return ident is None or (process is not None and process.alive())


def stop_group(
    pid: int | None,
    timeout: float = 20.0,
    folder: Path | None = None,
    *,
    marker: str | None = None,
    ident: str | None = None,
) -> None:
    """Stop ``pid`` and everything it started (and, given ``folder``, every process working
    there): SIGTERM first, so BentoML finishes the requests in flight; SIGKILL what is left after
    ``timeout``. Reaps ``pid`` if it is our child.

    BentoML's workers run in sessions of their own, so a process group does not hold them; and a
    worker whose arbiter was killed is re-parented but keeps its working directory (the release
    folder), which is how it is still found.

    ``marker`` / ``ident`` (see :func:`ours`) say which process a record meant: a pid that no
    longer matches them (recycled, e.g. after a reboot) is someone else's and is not signalled,
    nor its group or descendants; only the processes working in ``folder`` are stopped then."""
    if not pid:
        return
    mine = (marker is None and ident is None) or ours(pid, marker, ident)
    leader = crispml.ProcessIdentity.from_token(pid, ident) if mine else None
    crispml.stop_tree(leader, timeout=timeout, also=crispml.processes_in(folder) if folder else ())
    if folder is not None:  # a worker restarted while its arbiter stopped
        crispml.stop_tree(None, timeout=5, also=crispml.processes_in(folder))


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes] | None:
    """``(status, body)``, or ``None`` when nothing answered. Never uses a configured proxy."""
    # Imported here: every crispml command imports this module (the environment hook), and
    # most never ask a server anything.
    import http.client
    import urllib.error
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()
    except (OSError, ValueError, http.client.HTTPException):
        # HTTPException: something not HTTP holds the port (e.g. a ZeroMQ socket of BentoML's
        # process manager, which binds random local ports): no answer from a server of ours.
        return None


def status(record: dict[str, Any]) -> str:
    """``up`` (proxy and backend alive, ``/readyz`` answers through the public port), ``down``
    (a recorded process is gone), or ``unhealthy`` (alive but not answering)."""
    proxy, backend = record.get("proxy") or {}, record.get("backend") or {}
    if not ours(proxy.get("pid"), PROXY_MARKER, proxy.get("ident")) or not ours(
        backend.get("pid"), BACKEND_MARKER, backend.get("ident")
    ):
        return "down"
    answer = http_get(f"{record['url']}/readyz", timeout=2.0)
    return "up" if answer is not None and answer[0] == 200 else "unhealthy"
