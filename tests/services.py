"""Service checks shared by every test folder, importable by name (``tests/`` is on the path
through its root conftest; a ``conftest`` module is not, since each folder has its own).

``require_service(host, port, what)`` skips with a reason when a service does not answer — and
fails instead under ``CI=true``, where a skipped service test would hide a gap.
"""

from __future__ import annotations

import os
import socket

import pytest


def service_answers(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def require_service(host: str, port: int, what: str) -> None:
    """Skip (or, under CI=true, fail) when ``what`` does not answer on ``host:port``."""
    if service_answers(host, port):
        return
    reason = f"{what} does not answer on {host}:{port}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: a service test may not skip)")
    pytest.skip(reason)
