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


def watch(stream: BinaryIO | None = None) -> None:
    """The server's side: a daemon thread that waits for ``keep``; anything else, or the end of
    the input, stops this process."""
    source = stream if stream is not None else sys.stdin.buffer

    def wait() -> None:
        try:
            line = source.readline()
        except (OSError, ValueError):
            line = b""
        if line != KEEP:
            os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=wait, name="crispml-tether", daemon=True).start()
