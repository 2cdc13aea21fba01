"""What a run records about where it ran: versions, Python, git commit and dirty flag."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path
from typing import Any


def _version(dist: str) -> str | None:
    from crispml.declarations import _distribution_version

    return _distribution_version(dist)


def git_state(path: Path) -> dict[str, Any]:
    """``{"commit": sha or None, "dirty": bool or None}`` of the git work tree holding ``path``."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(path), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        if commit.returncode != 0:
            return {"commit": None, "dirty": None}
        status = subprocess.run(
            ["git", "-C", str(path), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def environment(project_dir: Path, backend_distributions: list[str]) -> dict[str, Any]:
    """The environment section of a run manifest."""
    return {
        "crispml": _version("crispml"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "backends": {d: _version(d) for d in sorted(set(backend_distributions))},
        "git": git_state(project_dir),
    }
