"""Small helpers every test folder uses, importable by name (``from suite_helpers import …``) like
``services.py``: ``tests/`` is on the path through its root conftest, while a folder's
``conftest`` module is not importable from another folder (nor when several folders are passed
to one pytest command). Not ``helpers``: projects the tests write have their own ``helpers.py``,
and an in-process run must import that one.

* ``CRISPML``: the ``crispml`` command of the interpreter running the tests.
* ``free_port()``: a port nothing listens on, for a server a test starts.
* ``run_cli(cwd, *args, …)``: the real ``crispml`` command in a subprocess, as a user runs it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

CRISPML = str(Path(sys.executable).with_name("crispml"))


def free_port(host: str = "127.0.0.1") -> int:
    """A port free on ``host`` now: the OS picks it (bind to port 0), so parallel tests do not
    collide on a fixed one. Another process may take it before the server binds it; the tests
    accept that small race rather than pass sockets around."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def run_cli(
    cwd: Path,
    *args: str,
    timeout: float | None = 300,
    env: Mapping[str, str | None] | None = None,
    base_env: Mapping[str, str] | None = None,
    set_project: bool = True,
    columns: int | None = 200,
    check: bool = False,
) -> subprocess.CompletedProcess[str]:
    """``crispml *args`` run in ``cwd`` (output captured as text), the way the tests observe the
    command a user types: its exit code, stdout and stderr.

    The environment is ``base_env`` (default: this process's), then ``COLUMNS`` (unless
    ``columns`` is None: a wide terminal so that tables and messages are not wrapped), then
    ``CRISPML_PROJECT=cwd`` (unless ``set_project`` is false, for tests where the command must
    find its project itself), then ``env`` on top — where a ``None`` value removes a variable.
    ``check=True`` asserts exit code 0, with stdout and stderr in the failure message.
    """
    full: dict[str, str | None] = {**(os.environ if base_env is None else base_env)}
    if columns is not None:
        full["COLUMNS"] = str(columns)
    if set_project:
        full["CRISPML_PROJECT"] = str(cwd)
    full.update(env or {})
    done = subprocess.run(
        [CRISPML, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={k: v for k, v in full.items() if v is not None},
    )
    if check:
        assert done.returncode == 0, f"crispml {' '.join(args)}: " + done.stdout[-3000:] + done.stderr[-3000:]
    return done
