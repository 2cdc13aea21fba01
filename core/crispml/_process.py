"""Processes crispml (or a plugin) started and recorded: is it still that process, and stopping it
with everything it started. One implementation, on psutil, for Linux and macOS.

A pid alone does not name a process: after it exits (or after a reboot) the system may give the
same number to another one. A :class:`ProcessIdentity` is the pid plus the process's start time;
a recorded identity is *alive* only while a process with that pid *and* that start time runs.
Record ``ProcessIdentity.of(pid).token()`` when you start something; later,
``ProcessIdentity.from_token(pid, token).alive()`` tells whether it is still yours, and
:func:`stop_tree` stops it with its descendants.

psutil is imported on first use: ``import crispml`` and ``crispml --help`` never pay for it.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

_TOKEN_PREFIX = "t"
CREATE_TIME_TOLERANCE = 1.0
"""Seconds two readings of one process's start time may differ by. On Linux psutil derives it
from the boot time, which the kernel reports to the second; a pid is not reused within a second."""


@dataclass(frozen=True)
class ProcessIdentity:
    """A process as recorded: its pid and its start time (seconds since the epoch)."""

    pid: int
    created: float | None
    """``None`` for a record written before start times were kept: the pid alone is checked."""

    @classmethod
    def of(cls, pid: int) -> ProcessIdentity | None:
        """The identity of the running process ``pid``; ``None`` if there is none."""
        proc = _process(pid)
        if proc is None:
            return None
        try:
            return cls(pid, proc.create_time())
        except _errors():
            return None

    @classmethod
    def current(cls) -> ProcessIdentity:
        """This process."""
        identity = cls.of(os.getpid())
        assert identity is not None
        return identity

    def token(self) -> str:
        """A string to keep in a JSON record (``from_token`` reads it back)."""
        return f"{_TOKEN_PREFIX}{self.created:.3f}" if self.created is not None else ""

    @classmethod
    def from_token(cls, pid: int | None, token: Any) -> ProcessIdentity | None:
        """The identity a record keeps; ``None`` without a pid. A token in another format (an
        older record's) gives an identity no process matches."""
        if not pid:
            return None
        if token is None or token == "":
            return cls(int(pid), None)
        text = str(token)
        try:
            created = float(text[len(_TOKEN_PREFIX) :]) if text.startswith(_TOKEN_PREFIX) else -1.0
        except ValueError:
            created = -1.0
        return cls(int(pid), created)

    def process(self) -> Any | None:
        """The ``psutil.Process`` this identity names, if it still runs (not a zombie)."""
        proc = _process(self.pid)
        if proc is None:
            return None
        try:
            if proc.status() == _psutil().STATUS_ZOMBIE:
                return None
            if self.created is not None and abs(proc.create_time() - self.created) > CREATE_TIME_TOLERANCE:
                return None  # the pid now belongs to another process
        except _errors():
            return None
        return proc

    def alive(self) -> bool:
        """Is the recorded process still running (same pid, same start time, not a zombie)?"""
        return self.process() is not None

    def command_line(self) -> str | None:
        """Its command line joined by spaces; ``None`` if gone or not ours to read."""
        proc = self.process()
        if proc is None:
            return None
        try:
            return " ".join(proc.cmdline())
        except _errors():
            return None


def _psutil() -> Any:
    import psutil

    return psutil


def _errors() -> tuple[type[BaseException], ...]:
    psutil = _psutil()
    return (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, OSError)


def _process(pid: int | None) -> Any | None:
    if not pid or int(pid) <= 0:
        return None
    try:
        return _psutil().Process(int(pid))
    except _errors():
        return None


def descendants(pid: int | None) -> list[Any]:
    """Every process ``pid`` started, and they started (``psutil.Process`` objects)."""
    proc = _process(pid)
    if proc is None:
        return []
    try:
        return list(proc.children(recursive=True))
    except _errors():
        return []


def processes_in(folder: str | os.PathLike[str]) -> list[Any]:
    """Processes of this user whose working directory is ``folder`` or inside it (a server's
    workers that lost their parent keep their working directory)."""
    psutil = _psutil()
    prefix = os.path.realpath(folder)
    found = []
    for proc in psutil.process_iter(["pid"]):
        if proc.pid == os.getpid():
            continue
        try:
            cwd = proc.cwd()
        except _errors():
            continue
        if cwd == prefix or cwd.startswith(prefix + os.sep):
            found.append(proc)
    return found


def stop_tree(
    identity: ProcessIdentity | None,
    *,
    timeout: float = 20.0,
    also: Iterable[Any] = (),
    group: bool = True,
) -> None:
    """Stop a recorded process and everything it started: SIGTERM (to its process group, when it
    leads one and ``group``), wait up to ``timeout`` seconds, then SIGKILL what is left.

    An identity that no longer matches (its pid recycled) is someone else's process: neither it,
    its group nor its descendants are signalled. ``also``: more ``psutil.Process`` objects to
    stop with it (e.g. :func:`processes_in` a server's folder). Reaps the leader if it is our child.
    """
    psutil = _psutil()
    leader = identity.process() if identity is not None else None
    procs: dict[int, Any] = {}
    if leader is not None:
        procs[leader.pid] = leader
        for child in descendants(leader.pid):
            procs[child.pid] = child
    for extra in also:
        procs.setdefault(extra.pid, extra)
    procs.pop(os.getpid(), None)
    if not procs:
        return
    if leader is not None:
        # The leader stops what it started, gracefully (a server finishes requests in flight);
        # signalled directly, its workers might be restarted by it before it stops.
        leads = False
        with contextlib.suppress(OSError):
            leads = group and os.getpgid(leader.pid) == leader.pid
        if leads:
            with contextlib.suppress(OSError):
                os.killpg(leader.pid, signal.SIGTERM)
        else:
            with contextlib.suppress(*_errors()):
                leader.send_signal(signal.SIGTERM)
    else:  # nobody left to stop the others gracefully: ask each one
        for proc in procs.values():
            with contextlib.suppress(*_errors()):
                proc.send_signal(signal.SIGTERM)
    _, left = psutil.wait_procs(list(procs.values()), timeout=timeout)
    if leader is not None:  # what started meanwhile (a worker restarted) goes too
        for child in descendants(leader.pid):
            if child.pid not in procs:
                left.append(child)
    for proc in left:
        with contextlib.suppress(*_errors()):
            proc.kill()
    psutil.wait_procs(left, timeout=5)
