"""Keeping every backend's state in the project and its telemetry off.

Backends keep config and caches in the home directory (``~/.config/...``, ``~/.cache/...``) and
some report usage unless told not to. Before any backend is imported, the core points the XDG
base directories into ``.crispml/home/``, sets ``DO_NOT_TRACK``, and applies what each plugin's
``crispml_environment`` hook asks for (its backend's own variables). Processes crispml starts
(servers, workers) inherit the environment, so the same holds for them.

Nothing is created here: a variable names a folder; the backend makes it when it first writes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from crispml.plugins import Plugins

HOME_DIR = "home"
"""``.crispml/home/``: the home-directory state of backends that follow the XDG conventions."""

_applied: dict[str, str] = {}
"""What this process set, so that a later project (``crispml.run(project=...)``) can move it."""


def project_environment(project_dir: Path, plugins: Plugins | None = None) -> dict[str, str]:
    """The variables crispml sets for a project: the core's, then every plugin's."""
    home = project_dir / ".crispml" / HOME_DIR
    wanted = {
        "XDG_CONFIG_HOME": str(home / "config"),
        "XDG_CACHE_HOME": str(home / "cache"),
        "XDG_DATA_HOME": str(home / "data"),
        "XDG_STATE_HOME": str(home / "state"),
        "DO_NOT_TRACK": "true",
    }
    if plugins is not None:
        for answer in reversed(plugins.pm.hook.crispml_environment(project_dir=project_dir)):
            wanted.update({str(k): str(v) for k, v in (answer or {}).items()})
    return wanted


def isolate(project_dir: Path, plugins: Plugins | None = None) -> dict[str, str]:
    """Set the project's variables in ``os.environ``; return those set now. A variable the user
    set is kept; one crispml set for another project is moved to this one."""
    changed = {}
    for name, value in project_environment(project_dir, plugins).items():
        current = os.environ.get(name)
        if current is None or _applied.get(name) == current:
            os.environ[name] = value
            _applied[name] = value
            changed[name] = value
    return changed
