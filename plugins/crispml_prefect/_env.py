"""Where Prefect keeps its state and which API it talks to — decided before Prefect is imported.

Importing Prefect creates ``$PREFECT_HOME`` (``~/.prefect`` by default) and snapshots its settings
from the environment, so the environment is set first: ``PREFECT_HOME`` in the project's
``.crispml/prefect``, telemetry off, crispml's loggers sent to Prefect's run logs (the plugin's
``crispml_environment`` answer, :func:`environment`, which the core applies when plugins load). Afterwards,
:func:`prefect_settings` applies the same values through Prefect's own settings context, for a
process that imported Prefect earlier (a notebook, a test session) with other values.

The API, in order: the project's managed server when it answers (``crispml server start``), else
``$PREFECT_API_URL``, else Prefect's ephemeral API (a temporary server started in this process,
10-25 s on its first call).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

STORE = ".crispml"
EXTRA_LOGGER = "crispml"

_TELEMETRY_OFF = {"DO_NOT_TRACK": "true", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
# Prefect waits 20 s for its ephemeral API by default; on a busy 2-core machine its start took
# longer than that (measured 10-35 s), and a run that fails for it has done nothing wrong.
_DEFAULTS = {
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    # crispml prints its own progress, one line per stage; Prefect's console lines (INFO for every
    # state, ERROR with a traceback for a failed attempt) would repeat it. They still reach the
    # run's logs in the API; set this variable to INFO to see them on the terminal as well.
    "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "CRITICAL",
    # crispml's loggers reach a flow run's logs through Prefect's API handler; outside a flow run
    # (a local run or a plugin's line after a Prefect run, in the same process) there is no run
    # to send them to, and the handler's default ("warn") warns once per line.
    "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
}


def prefect_home(project: Path) -> Path:
    return project / STORE / "prefect"


def server_file(project: Path) -> Path:
    return prefect_home(project) / "server.json"


def read_server(project: Path) -> dict[str, Any] | None:
    """The managed server's record (``.crispml/prefect/server.json``), if one was started."""
    path = server_file(project)
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def healthy(api_url: str, timeout: float = 2.0) -> bool:
    """Does a Prefect API answer ``/health`` at ``api_url`` (``http://host:port/api``)?"""
    import urllib.request  # here, not at the top: every crispml command reads environment()

    try:
        with urllib.request.urlopen(api_url.rstrip("/") + "/health", timeout=timeout) as resp:
            return bool(resp.status == 200)
    except (OSError, ValueError):
        return False


def managed_api_url(project: Path) -> str | None:
    """The project's managed server's API URL, when its record names one that answers."""
    record = read_server(project)
    if not record or not record.get("api_url"):
        return None
    url = str(record["api_url"])
    return url if healthy(url, timeout=1.0) else None


def choose_api(project: Path) -> tuple[str | None, str]:
    """``(api_url, kind)``: kind is ``managed``, ``env`` or ``ephemeral`` (``api_url`` None)."""
    url = managed_api_url(project)
    if url:
        return url, "managed"
    env = os.environ.get("PREFECT_API_URL")
    if env:
        return env, "env"
    return None, "ephemeral"


def environment(project: Path) -> dict[str, str]:
    """Prefect's variables for ``project``: the plugin's answer to the core's
    ``crispml_environment`` hook, so the core sets them (in every process crispml starts, before
    any import of Prefect) like every other backend's. Creates nothing."""
    return {
        "PREFECT_HOME": str(prefect_home(project)),
        "PREFECT_LOGGING_EXTRA_LOGGERS": EXTRA_LOGGER,
        **_TELEMETRY_OFF,
        **_DEFAULTS,
    }


def prepare_environment(project: Path) -> None:
    """Set Prefect's environment for ``project`` right before Prefect is used — effective only
    before Prefect's first import. The core has set :func:`environment` already for the project
    crispml was started in; this covers a command or run aimed at another project folder, and a
    user's own ``PREFECT_LOGGING_EXTRA_LOGGERS`` (crispml's logger is added to it)."""
    home = prefect_home(project)
    home.mkdir(parents=True, exist_ok=True)
    wanted = environment(project)
    if "prefect" not in sys.modules:
        os.environ["PREFECT_HOME"] = wanted["PREFECT_HOME"]
        extra = [n for n in os.environ.get("PREFECT_LOGGING_EXTRA_LOGGERS", "").split(",") if n]
        if EXTRA_LOGGER not in extra:
            os.environ["PREFECT_LOGGING_EXTRA_LOGGERS"] = ",".join([*extra, EXTRA_LOGGER])
    for key in (*_TELEMETRY_OFF, *_DEFAULTS):
        os.environ.setdefault(key, wanted[key])


class _Plain(logging.StreamHandler):  # type: ignore[type-arg]
    """The runner's own lines (a retry, the ephemeral API starting) on stderr, unformatted.

    Writes to whatever ``sys.stderr`` is at the time (a test's capture replaces it)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def attach_crispml_logger() -> None:
    """Send the ``crispml`` loggers to Prefect's run logs, also when Prefect was set up before
    ``PREFECT_LOGGING_EXTRA_LOGGERS`` named them (it copies ``prefect.extra``'s handlers); and
    the runner's own lines to stderr."""
    runner = logging.getLogger("crispml.prefect")
    if not any(isinstance(h, _Plain) for h in runner.handlers):
        handler = _Plain(sys.stderr)
        handler.setLevel(logging.INFO)
        handler.setFormatter(logging.Formatter("  prefect: %(message)s"))
        runner.addHandler(handler)
    import prefect.main  # noqa: F401  (sets Prefect's logging up: its handlers exist from here on)

    target = logging.getLogger(EXTRA_LOGGER)
    for handler in logging.getLogger("prefect.extra").handlers:
        if handler not in target.handlers:
            target.addHandler(handler)
    if target.level == logging.NOTSET or target.level > logging.INFO:
        target.setLevel(logging.INFO)


@contextlib.contextmanager
def prefect_settings(project: Path, *, api_url: str | None, heartbeat: bool) -> Iterator[None]:
    """Prefect's settings for one crispml run or command in ``project``.

    ``heartbeat=False`` turns the flow-run heartbeat off: a sync flow joins its heartbeat thread,
    which sleeps in 1 s steps, so each run costs ~1 s more with it (measured: 1.1 s vs 0.2 s).
    """
    prepare_environment(project)
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
        PREFECT_HOME,
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
        temporary_settings,
    )

    updates: dict[Any, Any] = {
        PREFECT_HOME: str(prefect_home(project)),
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS: int(
            os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"]
        ),
    }
    restore: list[Any] = []
    if api_url:
        updates[PREFECT_API_URL] = api_url
    else:
        restore.append(PREFECT_API_URL)
    if not heartbeat:
        updates[PREFECT_FLOWS_HEARTBEAT_FREQUENCY] = None
    attach_crispml_logger()
    with temporary_settings(updates=updates, restore_defaults=restore):
        yield
