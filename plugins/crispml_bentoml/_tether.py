"""A server process that dies with the deploy that started it, until that deploy keeps it.

A deploy starts a backend (and, on a first deploy, the proxy) seconds before it knows whether
they will serve: the smoke gate decides. If the deploying process is killed meanwhile
(``kill -9``, a closed terminal, a CI job cancelled), its ``finally`` never runs, and an
unkept proxy would hold the public port, answering 503, with no record naming it. So each such
process is started with a pipe on its standard input: the deploy writes ``keep`` once the smoke
gate passed, just before the switch; an end of input with no ``keep`` means the deploy is gone,
and the process stops itself (SIGTERM to itself: uvicorn and BentoML's arbiter shut down
cleanly, workers included). The kernel closes the pipe when its writer dies, however it dies.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import BinaryIO

KEEP = b"keep\n"


def keep(proc: subprocess.Popen[bytes] | None) -> None:
    """The deploy's side: ``proc`` outlives this process from now on."""
    if proc is None or proc.stdin is None or proc.stdin.closed:
        return
    with contextlib.suppress(OSError):  # it exited: the switch finds out and says so
        proc.stdin.write(KEEP)
        proc.stdin.flush()
    with contextlib.suppress(OSError):
        proc.stdin.close()


GRACE_SECONDS = 5.0
"""How long the process has to stop itself on SIGTERM before what is left is killed."""


def watch(stream: BinaryIO | None = None, folder: Path | None = None) -> None:
    """The server's side: a daemon thread that waits for ``keep``; anything else, or the end of
    the input, stops this process — SIGTERM to itself first; after :data:`GRACE_SECONDS`, SIGKILL
    to what it started and to every process working in ``folder``, then it exits. The second
    step is needed: BentoML's arbiter gives a worker that ignores SIGTERM while it starts up a
    day to stop, and nothing was ever served here that a graceful stop would finish."""
    source = stream if stream is not None else sys.stdin.buffer

    def wait() -> None:
        try:
            line = source.readline()
        except (OSError, ValueError):
            line = b""
        if line == KEEP:
            return
        import psutil

        import crispml

        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(GRACE_SECONDS)
        left = [*psutil.Process().children(recursive=True), *(crispml.processes_in(folder) if folder else [])]
        crispml.stop_tree(None, timeout=1.0, also=left)
        os._exit(1)

    threading.Thread(target=wait, name="crispml-tether", daemon=True).start()
