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
import fcntl
import json
import os
import re
import signal
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from crispml import UsageError, atomic_write_json

STORE = ".crispml"
NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


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
    path = folder(project, name) / ".lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


# -- processes ----------------------------------------------------------------------------------


def alive(pid: int | None, marker: str | None = None) -> bool:
    """Is ``pid`` a running (not zombie) process — and, given ``marker``, still the one we started
    (its command line contains it; guards against a recycled pid)?"""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False  # someone else's process now holds that pid
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] in ("Z", "X"):
            return False
        if marker is not None:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            return marker in cmdline
    except (OSError, IndexError):
        pass
    return True


def _proc_table() -> dict[int, tuple[int, str]]:
    """pid → (parent pid, state) of every process."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        table[int(entry.name)] = (int(fields[1]), fields[0])
    return table


def members(pid: int, folder: Path | None = None) -> set[int]:
    """``pid``, its descendants, and (given ``folder``) every process working in ``folder``.

    BentoML's workers run in sessions of their own, so a process group does not hold them; and a
    worker whose arbiter was killed is re-parented to init but keeps its working directory (the
    release folder), which is how it is still found."""
    table = _proc_table()
    children: dict[int, list[int]] = {}
    for child, (parent, _) in table.items():
        children.setdefault(parent, []).append(child)
    found = {pid} if pid in table else set()
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found:
                found.add(child)
                stack.append(child)
    if folder is not None:
        prefix = str(folder)
        for other in table:
            try:
                cwd = os.readlink(f"/proc/{other}/cwd")
            except OSError:
                continue
            if cwd == prefix or cwd.startswith(prefix + os.sep):
                found.add(other)
    found.discard(os.getpid())
    return {m for m in found if table.get(m, (0, "X"))[1] not in ("Z", "X")}


def stop_group(pid: int | None, timeout: float = 20.0, folder: Path | None = None) -> None:
    """Stop ``pid`` and everything it started (and, given ``folder``, every process working
    there): SIGTERM first, so BentoML finishes the requests in flight; SIGKILL what is left after
    ``timeout``. Reaps ``pid`` if it is our child."""
    if not pid:
        return
    procs = members(pid, folder)
    leader_alive = pid in procs
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    if not leader_alive:  # nobody left to stop the workers gracefully: ask each one
        for member in procs:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(member, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap(pid)
        if not any(alive(m) for m in procs):
            return
        time.sleep(0.05)
    for member in procs | members(pid, folder):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(member, signal.SIGKILL)
    for _ in range(100):
        _reap(pid)
        if not any(alive(m) for m in procs):
            return
        time.sleep(0.05)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


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
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()
    except (OSError, ValueError):
        return None


def status(record: dict[str, Any]) -> str:
    """``up`` (proxy and backend alive, ``/readyz`` answers through the public port), ``down``
    (a recorded process is gone), or ``unhealthy`` (alive but not answering)."""
    proxy, backend = record.get("proxy") or {}, record.get("backend") or {}
    if not alive(proxy.get("pid"), "crispml_bentoml._proxy") or not alive(backend.get("pid"), "bentoml"):
        return "down"
    answer = http_get(f"{record['url']}/readyz", timeout=2.0)
    return "up" if answer is not None and answer[0] == 200 else "unhealthy"
