"""A Feast repository's definition files (``*.py``), loaded by path.

Feast's own loader (``feast apply`` → ``apply_total``/``parse_repo``) changes the process's
working directory and can ``sys.exit(1)`` on a bad file: neither is acceptable inside a run or
a recipe check. Here each file is imported as Feast would name it (its path relative to the
repository, the repository first on ``sys.path`` only while importing), so definition files that
import each other share one object per definition; the objects are collected the way
``parse_repo`` collects them. A file that fails to import is reported with its name and line.

Imported when a recipe naming the ``feast`` plugin is checked, never at plugin load.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import sys
import threading
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from feast import Entity, FeatureService, FeatureView, OnDemandFeatureView, Project
from feast.data_source import DataSource
from feast.infra.offline_stores.file_source import FileSource
from feast.repo_contents import RepoContents
from feast.repo_operations import get_repo_files

log = logging.getLogger("crispml.feast")

# Module names this plugin imported, with the repository each came from: only these may be
# evicted from ``sys.modules`` to load a repository afresh (never a module someone else owns).
_OURS: dict[str, Path] = {}
_LOCK = threading.Lock()
_CACHE: dict[Path, tuple[tuple[Any, ...], Definitions]] = {}


class DefinitionError(ValueError):
    """The repository's definitions cannot be used (no files, a file that fails to import)."""


@dataclass
class Definitions:
    """The Feast objects a repository defines, and the files they came from."""

    folder: Path
    files: list[Path]
    entities: list[Any] = field(default_factory=list)
    feature_views: list[Any] = field(default_factory=list)
    on_demand_feature_views: list[Any] = field(default_factory=list)
    feature_services: list[Any] = field(default_factory=list)
    data_sources: list[Any] = field(default_factory=list)
    projects: list[Any] = field(default_factory=list)

    @property
    def shown(self) -> str:
        """The folder as a user named it in messages (``features/``)."""
        return self.folder.name + "/"

    def service_names(self) -> list[str]:
        return sorted(s.name for s in self.feature_services)

    def service(self, name: str) -> Any | None:
        return next((s for s in self.feature_services if s.name == name), None)

    def view(self, name: str) -> Any | None:
        return next((v for v in self.feature_views + self.on_demand_feature_views if v.name == name), None)

    def join_keys(self, service: Any) -> list[str]:
        """The entity columns an entity frame needs for ``service`` (in first-use order)."""
        by_name = {e.name: e for e in self.entities}
        keys: list[str] = []
        for projection in service.feature_view_projections:
            view = self.view(projection.name)
            if view is None or isinstance(view, OnDemandFeatureView):
                continue
            for entity_name in view.entities:
                entity = by_name.get(entity_name)
                key = entity.join_key if entity is not None else entity_name
                key = (projection.join_key_map or {}).get(key, key)
                if key not in keys and entity_name != "__dummy":
                    keys.append(key)
        return keys

    def feature_refs(self, service: Any) -> list[str]:
        """``view:feature`` for every feature ``service`` serves, in its order."""
        return [f"{p.name_to_use()}:{f.name}" for p in service.feature_view_projections for f in p.features]

    def source_files(self) -> list[Path]:
        """Local files the feature views read (so a changed file invalidates a cached load)."""
        out: list[Path] = []
        for source in self.data_sources:
            if isinstance(source, FileSource) and "://" not in source.path:
                path = Path(source.path)
                path = path if path.is_absolute() else self.folder / path
                if path.exists() and path not in out:
                    out.append(path)
        return out

    def content_hash(self) -> str:
        """A hash of every definition file's name and bytes."""
        digest = hashlib.sha256()
        for path in self.files:
            digest.update(f"{path.relative_to(self.folder)}\0".encode())
            digest.update(hashlib.sha256(path.read_bytes()).digest())
        return digest.hexdigest()

    def repo_contents(self, project: str, description: str = "") -> RepoContents:
        """The objects as Feast's ``feast apply`` reads them (for apply/delete planning): with a
        ``Project`` named as the store's configuration names it (defined here, else made)."""
        from feast.feature_view import DUMMY_ENTITY

        if len(self.projects) > 1:
            raise DefinitionError(f"{self.shown} defines {len(self.projects)} Feast projects: define at most one")
        if self.projects and self.projects[0].name != project:
            raise DefinitionError(
                f"{self.shown} defines project '{self.projects[0].name}' but the store's project is '{project}'"
            )
        return RepoContents(
            projects=list(self.projects) or [Project(name=project, description=description)],
            data_sources=list(self.data_sources),
            feature_views=list(self.feature_views),
            on_demand_feature_views=list(self.on_demand_feature_views),
            stream_feature_views=[],
            label_views=[],
            entities=[*self.entities, DUMMY_ENTITY],
            feature_services=list(self.feature_services),
            permissions=[],
        )


def load_definitions(folder: Path) -> Definitions:
    """The definitions in ``folder`` (remembered while no file changes)."""
    folder = folder.resolve()
    if not folder.is_dir():
        raise DefinitionError(f"not a folder: {folder}")
    files = get_repo_files(folder)
    if not files:
        raise DefinitionError(f"no Feast definitions (*.py) in {folder.name}/")
    stamp = tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in files)
    with _LOCK:
        cached = _CACHE.get(folder)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        definitions = _import(folder, files)
        _CACHE[folder] = (stamp, definitions)
        return definitions


def _module_name(folder: Path, path: Path) -> str:
    return ".".join(path.relative_to(folder).with_suffix("").parts)


def _evict(folder: Path, names: list[str]) -> None:
    for name in names:
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            prefix = ".".join(parts[:i])
            module = sys.modules.get(prefix)
            if module is None:
                continue
            if prefix in _OURS:
                del sys.modules[prefix]
                continue
            origin = getattr(module, "__file__", None) or ""
            if i == len(parts) or not Path(origin).resolve().is_relative_to(folder):
                shown = f"{folder.name}/{Path(*parts[:i])}" + (".py" if i == len(parts) else "/")
                raise DefinitionError(
                    f"{shown}: its module name '{prefix}' is already taken by "
                    f"{origin or 'a built-in module'}: rename the file"
                )


def _import(folder: Path, files: list[Path]) -> Definitions:
    names = [_module_name(folder, p) for p in files]
    _evict(folder, names)
    before = set(sys.modules)
    sys.path.insert(0, str(folder))
    modules = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for path, name in zip(files, names, strict=True):
                try:
                    modules.append(importlib.import_module(name))
                except Exception as exc:
                    raise DefinitionError(_describe_failure(folder, path, exc)) from None
        for w in caught:
            log.debug("%s:%s: %s: %s", w.filename, w.lineno, w.category.__name__, w.message)
    finally:
        if str(folder) in sys.path:
            sys.path.remove(str(folder))
        for name in set(sys.modules) - before:
            origin = getattr(sys.modules[name], "__file__", None) or ""
            path_attr = list(getattr(sys.modules[name], "__path__", []) or [])
            where = origin or (path_attr[0] if path_attr else "")
            if where and Path(where).resolve().is_relative_to(folder):
                _OURS[name] = folder
    return _collect(folder, files, modules)


def _describe_failure(folder: Path, path: Path, exc: BaseException) -> str:
    """``features/bad.py line 3: NameError: name 'x' is not defined``: the deepest line of a
    definition file in the traceback (the file that failed may be one another file imports)."""
    where, line = path, None
    if isinstance(exc, SyntaxError) and exc.filename:
        where, line = Path(exc.filename), exc.lineno
    else:
        for frame in traceback.extract_tb(exc.__traceback__):
            candidate = Path(frame.filename)
            if candidate.is_absolute() and candidate.resolve().is_relative_to(folder):
                where, line = candidate.resolve(), frame.lineno
    shown = f"{folder.name}/{where.relative_to(folder)}" if where.is_relative_to(folder) else str(where)
    at = f" line {line}" if line else ""
    message = str(exc).splitlines()[0] if str(exc) else ""
    return f"definition file {shown}{at} fails to import: {type(exc).__name__}: {message}".rstrip(": ")


def _collect(folder: Path, files: list[Path], modules: list[Any]) -> Definitions:
    found = Definitions(folder=folder, files=list(files))

    def add(target: list[Any], obj: Any) -> None:
        if not any(obj is seen for seen in target):
            target.append(obj)

    for module in modules:
        for attr in dir(module):
            obj = getattr(module, attr)
            if isinstance(obj, DataSource):
                add(found.data_sources, obj)
            elif isinstance(obj, FeatureView):
                add(found.feature_views, obj)
                if obj.batch_source is not None:
                    add(found.data_sources, obj.batch_source)
            elif isinstance(obj, OnDemandFeatureView):
                add(found.on_demand_feature_views, obj)
            elif isinstance(obj, Entity):
                add(found.entities, obj)
            elif isinstance(obj, FeatureService):
                add(found.feature_services, obj)
            elif isinstance(obj, Project):
                add(found.projects, obj)
    for kind in ("entities", "feature_views", "on_demand_feature_views", "feature_services"):
        names = [o.name for o in getattr(found, kind)]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise DefinitionError(f"{folder.name}/ defines {kind.replace('_', ' ')} named {', '.join(twice)} twice")
    return found
