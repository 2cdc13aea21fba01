"""Content hashes: of files, of JSON-able values, and of the code a stage runs.

A stage's cache key is a hash of everything that could change its result. Code counts twice
over: the plugin's own source files, and every Python module of the user's project that was
loaded when the stage ran (recorded with the cached result and re-hashed before it is reused),
so that editing a helper that a step calls invalidates the step even when the step's own
function did not change.
"""

from __future__ import annotations

import hashlib
import hmac
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
    return hash_bytes(_canonical(value))


def keyed_hash_json(key: bytes, value: Any) -> str:
    """HMAC-SHA256 under ``key`` of a JSON-able value (canonical as in :func:`hash_json`).

    For values that hold a secret: a plain hash of a password can be found again by hashing
    guesses, a keyed one only by whoever holds the key (``crispml.store.project_key``)."""
    return hmac.new(key, _canonical(value), "sha256").hexdigest()


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, default=str, separators=(",", ":")).encode()


_SOURCE_HASHES: dict[tuple[Any, ...], str] = {}


def module_source_hash(module: ModuleType) -> str:
    """Hash of a module's source: for a package, of every ``.py`` file under it.

    Remembered per process while no file's size or modification time changes.
    """
    file = getattr(module, "__file__", None)
    if not file:
        return "builtin"
    path = Path(file)
    if path.name == "__init__.py":
        files = sorted(f for f in path.parent.rglob("*.py") if "__pycache__" not in f.parts)
        root = path.parent
    else:
        files, root = [path], path.parent
    stats = tuple((str(f), st.st_size, st.st_mtime_ns) for f in files for st in [f.stat()])
    if stats not in _SOURCE_HASHES:
        digest = hashlib.sha256()
        for f in files:
            digest.update(str(f.relative_to(root)).encode())
            digest.update(f.read_bytes())
        _SOURCE_HASHES[stats] = digest.hexdigest()
    return _SOURCE_HASHES[stats]


def _is_project_file(path: Path, roots: Iterable[Path]) -> bool:
    if _EXCLUDED_PARTS.intersection(path.parts):
        return False
    return any(path.is_relative_to(root) for root in roots)


def _project_file(module: ModuleType | None, roots: list[Path]) -> Path | None:
    file = getattr(module, "__file__", None) if module is not None else None
    if not file or not file.endswith(".py"):
        return None
    path = Path(file).resolve()
    return path if _is_project_file(path, roots) and path.exists() else None


def _imported_names(path: Path, package: str | None = None) -> set[str]:
    """Module names a source file imports (statically), with ``from x import y`` also as
    ``x.y`` (y may be a submodule); relative imports are resolved against ``package``."""
    import ast

    names: set[str] = set()
    try:
        tree = ast.parse(path.read_text())
    except (OSError, SyntaxError, ValueError):
        return names
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                base = node.module or ""
            elif package:
                parts = package.split(".")
                if node.level - 1 > len(parts):
                    continue
                base = ".".join(parts[: len(parts) - (node.level - 1)])
                base = f"{base}.{node.module}" if node.module else base
            else:
                continue
            if base:
                names.add(base)
                names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def code_dependencies(
    plugin_module: ModuleType | None, roots: Iterable[Path], imported_during: Iterable[str] = ()
) -> dict[str, str]:
    """``{file: sha256}`` of the project's own code a stage ran.

    That is the plugin's module when it lives in the project, every project module it imports
    (followed transitively through the modules already loaded), and every project module first
    imported while the stage ran. Installed packages are excluded: their version and source
    are part of the cache key already.
    """
    roots = [r.resolve() for r in roots]
    found: dict[str, str] = {}
    queue = [plugin_module, *(sys.modules.get(n) for n in imported_during)]
    while queue:
        module = queue.pop()
        path = _project_file(module, roots)
        if path is None or str(path) in found:
            continue
        found[str(path)] = hash_file(path)
        queue.extend(sys.modules.get(n) for n in _imported_names(path, getattr(module, "__package__", None)))
    return found


def unchanged(hashes: dict[str, str]) -> bool:
    """True when every recorded file still has the recorded hash."""
    for file, digest in hashes.items():
        path = Path(file)
        if not path.exists() or hash_file(path) != digest:
            return False
    return True
