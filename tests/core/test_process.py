"""Process identity and stopping (``crispml._process``, on psutil): a recycled pid is never taken
for the process a record names, and a stopped tree is really gone."""

from __future__ import annotations

import ast
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

import crispml
from crispml import ProcessIdentity, processes_in, stop_tree
from crispml.manifest import Manifest
from crispml.runs import run_state

from conftest import basic_recipe

REPO = Path(__file__).resolve().parents[2]

# A parent that starts a child ignoring SIGTERM, prints the child's pid, then waits.
STUBBORN = """
import signal, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(300)"],
    stdout=subprocess.PIPE, text=True)
child.stdout.readline()
print(child.pid, flush=True)
time.sleep(300)
"""


@pytest.fixture
def stubborn(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], int]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", STUBBORN], stdout=subprocess.PIPE, text=True, cwd=tmp_path, start_new_session=True
    )
    assert proc.stdout is not None
    child = int(proc.stdout.readline())
    try:
        yield proc, child
    finally:
        for pid in (proc.pid, child):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.wait(timeout=10)
        proc.stdout.close()


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_an_identity_names_one_process() -> None:
    me = ProcessIdentity.current()
    assert me.alive()
    again = ProcessIdentity.from_token(me.pid, me.token())
    assert again is not None and again.alive()
    # The same pid with another start time: what a recycled pid looks like from a record.
    assert not ProcessIdentity(me.pid, (me.created or 0) - 3600).alive()
    assert not ProcessIdentity.from_token(me.pid, "another-boot:12345").alive()  # type: ignore[union-attr]
    assert ProcessIdentity.from_token(None, me.token()) is None


def test_an_exited_or_zombie_process_is_not_alive() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    identity = ProcessIdentity.of(proc.pid)
    deadline = time.monotonic() + 30
    while psutil.Process(proc.pid).status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
        time.sleep(0.05)
    assert identity is not None and not identity.alive()  # a zombie: exited, not yet reaped
    proc.wait()
    assert not identity.alive() and ProcessIdentity.of(proc.pid) is None


def test_stop_tree_stops_children_that_ignore_sigterm(stubborn: tuple[subprocess.Popen[str], int]) -> None:
    parent, child = stubborn
    identity = ProcessIdentity.of(parent.pid)
    started = time.monotonic()
    stop_tree(identity, timeout=1.0)
    assert gone(parent.pid) and gone(child), "SIGKILL must follow an ignored SIGTERM"
    assert time.monotonic() - started < 15


def test_stop_tree_leaves_a_recycled_pid_alone(stubborn: tuple[subprocess.Popen[str], int]) -> None:
    parent, child = stubborn
    real = ProcessIdentity.of(parent.pid)
    assert real is not None and real.created is not None
    stop_tree(ProcessIdentity(parent.pid, real.created - 3600), timeout=1.0)
    time.sleep(0.3)
    assert parent.poll() is None and not gone(child), "someone else's process must survive"


def test_processes_in_finds_a_process_by_its_working_folder(
    stubborn: tuple[subprocess.Popen[str], int], tmp_path: Path
) -> None:
    parent, child = stubborn
    found = {p.pid for p in processes_in(tmp_path)}
    assert {parent.pid, child} <= found
    stop_tree(None, timeout=1.0, also=processes_in(tmp_path))
    assert gone(parent.pid) and gone(child)


def test_a_run_whose_pid_was_recycled_is_interrupted_and_resumable(
    project: Path, fakes: dict[str, object], stubborn: tuple[subprocess.Popen[str], int]
) -> None:
    """A manifest left 'running' by a killed run, whose pid another process now holds: shown as
    interrupted and resumable, not 'still running' forever."""
    done = crispml.run(basic_recipe(), extra_plugins=fakes)
    path = done.run_dir / "manifest.json"
    manifest = json.loads(path.read_text())
    assert manifest["pid_created"] == pytest.approx(ProcessIdentity.current().created)
    other, _ = stubborn
    real = ProcessIdentity.of(other.pid)
    assert real is not None and real.created is not None
    manifest.update(status="running", pid=other.pid)

    manifest["pid_created"] = real.created  # that process really is the run: still running
    path.write_text(json.dumps(manifest))
    assert run_state(Manifest.load(manifest)) == "running"
    with pytest.raises(crispml.UsageError, match="is still running"):
        crispml.resume(done.run_id, extra_plugins=fakes)

    manifest["pid_created"] = real.created - 3600  # the run's process died; its pid was reused
    path.write_text(json.dumps(manifest))
    assert run_state(Manifest.load(manifest)) == "interrupted"
    assert crispml.resume(done.run_id, extra_plugins=fakes).status == "succeeded"


def _sources() -> Iterator[Path]:
    for root in (REPO / "core", REPO / "plugins"):
        yield from root.rglob("*.py")


def test_nothing_reads_proc() -> None:
    """Linux and macOS: process facts come from psutil, never from the /proc file system."""
    offenders = [str(p) for p in _sources() if "/proc" in p.read_text()]
    assert offenders == []


def test_fcntl_is_imported_only_where_a_lock_is_taken() -> None:
    """``crispml.file_lock`` holds the core's only use of fcntl, imported when a lock is taken.
    The served model's ``service.py`` is the exception: it runs where crispml is not installed."""
    allowed = {("store.py", "file_lock"), ("_service.py", None)}
    for path in _sources():
        tree = ast.parse(path.read_text())
        for func in [None, *[n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]]:
            body = tree.body if func is None else func.body
            for node in body:
                if isinstance(node, ast.Import) and any(a.name == "fcntl" for a in node.names):
                    where = (path.name, None if func is None else func.name)
                    assert where in allowed, f"{path}: fcntl imported in {where[1] or 'the module'}"


def test_readme_states_the_supported_systems() -> None:
    text = (REPO / "README.md").read_text()
    assert "Linux" in text and "macOS" in text
