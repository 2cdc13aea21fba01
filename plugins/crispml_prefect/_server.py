"""``crispml server``: a managed ``prefect server start --host 127.0.0.1`` for this project.

Schedules need a real Prefect server (Prefect's ephemeral API cannot run a scheduler); this one
keeps its database in ``.crispml/prefect`` (SQLite) unless ``--database-url`` names another (e.g.
``postgresql+asyncpg://…``). Its record, ``.crispml/prefect/server.json``, holds the pid and the
process's start time: ``psutil`` tells a live server from a recycled pid, so ``stop`` never
signals someone else's process.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from crispml import UsageError, atomic_write_json
from crispml_prefect._env import healthy, prefect_home, read_server, server_file

MARKER = "server"
DEFAULT_PORT = 4200


def mask_url(url: str) -> str:
    """``scheme://user:***@host/db``: the record and the terminal never show a password."""
    import re

    return re.sub(r"(://[^:/@]+):[^@/]*@", r"\1:***@", url)


def port_free(port: int) -> bool:
    """Can a server listen on 127.0.0.1:``port``? (``SO_REUSEADDR`` as servers set it: a port a
    stopped server left in TIME_WAIT is free, one another process listens on is not.)"""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def process_of(record: dict[str, Any] | None) -> Any:
    """The record's process when it is still that process (same pid and start time), else None."""
    import psutil

    if not record or not record.get("pid"):
        return None
    try:
        proc = psutil.Process(int(record["pid"]))
        if abs(proc.create_time() - float(record.get("create_time", 0))) > 1.0:
            return None
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc
    except (psutil.Error, ValueError, TypeError):
        return None


def stop_tree(proc: Any, timeout: float = 20.0) -> None:
    """SIGTERM a process and its descendants; SIGKILL what is left after ``timeout``."""
    import psutil

    try:
        family = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return
    for p in family:
        with contextlib.suppress(psutil.Error):
            p.terminate()
    _, alive = psutil.wait_procs(family, timeout=timeout)
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(alive, timeout=5)


def prefect_exe() -> list[str]:
    exe = Path(sys.executable).with_name("prefect")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "prefect"]


def server_env(project: Path, database_url: str | None) -> dict[str, str]:
    env = {
        **os.environ,
        "PREFECT_HOME": str(prefect_home(project)),
        "DO_NOT_TRACK": "true",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": os.environ.get("PREFECT_UI_ENABLED", "true"),
    }
    env.pop("PREFECT_API_URL", None)
    if database_url:
        env["PREFECT_API_DATABASE_CONNECTION_URL"] = database_url
    return env


def status(project: Path) -> dict[str, Any]:
    record = read_server(project) or {}
    proc = process_of(record)
    answering = bool(record.get("api_url")) and healthy(str(record["api_url"]), timeout=2.0)
    state = "running" if proc is not None and answering else "starting" if proc is not None else "stopped"
    return {
        "status": state,
        "pid": record.get("pid") if proc is not None else None,
        "port": record.get("port"),
        "api_url": record.get("api_url"),
        "ui_url": record.get("ui_url"),
        "database": record.get("database"),
        "log": str(prefect_home(project) / "server.log"),
    }


def start(
    project: Path, *, port: int = DEFAULT_PORT, database_url: str | None = None, timeout: float = 180
) -> dict[str, Any]:
    """Start the project's server (or return the running one's record) and wait until it answers."""
    record = read_server(project)
    if process_of(record) is not None and record and healthy(str(record.get("api_url")), timeout=2.0):
        return {**record, "already_running": True}
    if process_of(record) is not None:
        stop(project)
    if not port_free(port):
        raise UsageError(f"port {port} is in use (crispml server start --port N)")
    home = prefect_home(project)
    home.mkdir(parents=True, exist_ok=True)
    log_path = home / "server.log"
    cmd = [*prefect_exe(), "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=server_env(project, database_url),
            cwd=project,
            start_new_session=True,
        )
    import psutil

    api_url = f"http://127.0.0.1:{port}/api"
    record = {
        "pid": proc.pid,
        "create_time": psutil.Process(proc.pid).create_time(),
        "port": port,
        "api_url": api_url,
        "ui_url": f"http://127.0.0.1:{port}",
        "database": mask_url(database_url) if database_url else f"sqlite in {home}",
        "started": time.time(),
        "marker": MARKER,
    }
    atomic_write_json(server_file(project), record)
    deadline = time.monotonic() + timeout
    while not healthy(api_url, timeout=2.0):
        if proc.poll() is not None or time.monotonic() > deadline:
            why = "exited" if proc.poll() is not None else f"did not answer within {timeout:g} s"
            stop(project)
            tail = _last_line(log_path)
            raise RuntimeError(f"prefect server {why} (log: {log_path}){': ' + tail if tail else ''}")
        time.sleep(0.5)
    return record


def _last_line(path: Path) -> str:
    try:
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return mask_url(lines[-1])[:300] if lines else ""


def stop(project: Path) -> bool:
    """Stop the project's server if this record's process still runs; forget the record."""
    record = read_server(project)
    proc = process_of(record)
    if proc is not None:
        stop_tree(proc)
    server_file(project).unlink(missing_ok=True)
    return proc is not None
