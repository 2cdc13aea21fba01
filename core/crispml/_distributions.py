"""Installed distributions, found the cheap way: their metadata folders on ``sys.path``.

Every ``crispml`` command looks up its plugins' entry points, and a run the versions of its
backends. ``importlib.metadata`` does both by importing the ``email`` package, parsing every
distribution's ``METADATA`` with it and reading every ``entry_points.txt`` — a fixed cost of tens
of milliseconds on each command, ``--help`` included. The folders' names already say which
distributions are installed; this module reads only the few files it needs, line by line.
Anything it cannot read this way (a zipped path entry, an ``.egg-info`` without a version) is
asked of ``importlib.metadata``, so the answers are the same, only cheaper.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

_SUFFIXES = (".dist-info", ".egg-info")
_scanned: tuple[tuple[tuple[str, tuple[int, int]], ...], dict[str, Path]] | None = None
_indexes: dict[str, tuple[tuple[int, int], dict[str, Path]]] = {}


@dataclass(frozen=True)
class EntryPoint:
    """One entry point of a group: ``name = value`` in ``entry_points.txt``."""

    name: str
    value: str
    """``module`` or ``module:attribute``."""
    distribution: str | None
    version: str | None

    def load(self) -> object:
        import importlib

        module, _, attribute = self.value.partition(":")
        target: object = importlib.import_module(module.strip())
        for part in attribute.split("[")[0].strip().split(".") if attribute.strip() else ():
            target = getattr(target, part)
        return target


def normalize(name: str) -> str:
    """A distribution name as PEP 503 compares them (``Scikit_Learn`` is ``scikit-learn``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _folder_index(folder: str, mtime: tuple[int, int]) -> dict[str, Path]:
    """Normalized name → metadata folder of the distributions directly in ``folder``."""
    cached = _indexes.get(folder)
    if cached is not None and cached[0] == mtime:
        return cached[1]
    found: dict[str, Path] = {}
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        names = []
    for item in names:
        if item.endswith(_SUFFIXES):
            stem = item.rsplit(".", 1)[0]
            found.setdefault(normalize(stem.split("-", 1)[0]), Path(folder) / item)
    _indexes[folder] = (mtime, found)
    return found


def _folders() -> dict[str, Path]:
    """Normalized name → metadata folder; the first on ``sys.path`` wins, as for imports.

    Each folder is listed again only when its modification time changed (an install), and
    the whole is rebuilt when ``sys.path`` changed (a recipe's folder, a test's path)."""
    global _scanned
    stamp = []
    for entry in sys.path:
        try:
            st = os.stat(entry or ".")
        except OSError:
            continue
        stamp.append((entry, (st.st_mtime_ns, st.st_nlink)))  # a new metadata folder changes both
    key = tuple(stamp)
    if _scanned is not None and _scanned[0] == key:
        return _scanned[1]
    found: dict[str, Path] = {}
    for entry, mtime in key:
        for name, path in _folder_index(entry or ".", mtime).items():
            found.setdefault(name, path)
    _scanned = (key, found)
    return found


def _headers(folder: Path) -> dict[str, str]:
    """``Name`` and ``Version`` from a metadata folder's ``METADATA`` (or ``PKG-INFO``)."""
    for file in ("METADATA", "PKG-INFO"):
        try:
            with (folder / file).open(encoding="utf-8", errors="replace") as fh:
                out: dict[str, str] = {}
                for line in fh:
                    if not line.strip():
                        break  # the headers end at the first blank line
                    key, sep, value = line.partition(":")
                    if sep and key in ("Name", "Version"):
                        out.setdefault(key, value.strip())
                return out
        except OSError:
            continue
    return {}


def version(distribution: str) -> str | None:
    """The installed version of ``distribution``, or ``None`` when it is not installed."""
    folder = _folders().get(normalize(distribution))
    if folder is not None:
        found = _headers(folder).get("Version")
        if found:
            return found
    from importlib import metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def entry_points(group: str) -> list[EntryPoint]:
    """Every entry point in ``group``, of every installed distribution, in ``sys.path`` order."""
    out: list[EntryPoint] = []
    for folder in _folders().values():
        try:
            text = (folder / "entry_points.txt").read_text(encoding="utf-8")
        except OSError:
            continue
        section = None
        points = []
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("[") and line.endswith("]"):
                section = line[1:-1].strip()
                continue
            name, sep, value = line.partition("=")
            if section == group and sep:
                points.append((name.strip(), value.strip()))
        if points:
            headers = _headers(folder)
            for name, value in points:
                out.append(EntryPoint(name, value, headers.get("Name"), headers.get("Version")))
    return out
