"""Content hashes: of files, of JSON-able values, and of the code a stage runs.

A stage's cache key is a hash of everything that could change its result. Code counts twice
over: the plugin's own source files, and every Python module of the user's project that was
loaded when the stage ran (recorded with the cached result and re-hashed before it is reused),
so that editing a helper that a step calls invalidates the step even when the step's own
function did not change.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType
from typing import Any

_CHUNK = 1 << 20
_EXCLUDED_PARTS = {"site-packages", "dist-packages", ".venv", "venv", ".crispml", ".tox"}


def hash_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def hash_file(path: Path) -> str:
    """sha256 of a file's bytes (a folder: of its files' relative names and contents)."""
    digest = hashlib.sha256()
    if path.is_dir():
        for sub in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(str(sub.relative_to(path)).encode())
            digest.update(hash_file(sub).encode())
        return digest.hexdigest()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def hash_json(value: Any) -> str:
    """A stable hash of a JSON-able value (keys sorted, non-JSON values by ``str``)."""
    text = json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))
    return hash_bytes(text.encode())


def module_source_hash(module: ModuleType) -> str:
    """Hash of a module's source: for a package, of every ``.py`` file under it."""
    file = getattr(module, "__file__", None)
    if not file:
        return "builtin"
    path = Path(file)
    if path.name == "__init__.py":
        files = sorted(path.parent.rglob("*.py"))
        root = path.parent
    else:
        files, root = [path], path.parent
    digest = hashlib.sha256()
    for f in files:
        if "__pycache__" in f.parts:
            continue
        digest.update(str(f.relative_to(root)).encode())
        digest.update(f.read_bytes())
    return digest.hexdigest()


def _is_project_file(path: Path, roots: Iterable[Path]) -> bool:
    if _EXCLUDED_PARTS.intersection(path.parts):
        return False
    return any(path.is_relative_to(root) for root in roots)


def project_module_hashes(roots: Iterable[Path]) -> dict[str, str]:
    """``{file: sha256}`` of every loaded module whose file lies under one of ``roots``.

    Virtual environments and the run store are excluded: their code is versioned by package.
    """
    roots = [r.resolve() for r in roots]
    out: dict[str, str] = {}
    for module in list(sys.modules.values()):
        file = getattr(module, "__file__", None)
        if not file or not file.endswith(".py"):
            continue
        path = Path(file).resolve()
        if _is_project_file(path, roots) and path.exists():
            out[str(path)] = hash_file(path)
    return out


def unchanged(hashes: dict[str, str]) -> bool:
    """True when every recorded file still has the recorded hash."""
    for file, digest in hashes.items():
        path = Path(file)
        if not path.exists() or hash_file(path) != digest:
            return False
    return True
