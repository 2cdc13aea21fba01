"""Finding, loading and introspecting plugins.

Built-in plugins are found exactly as third-party ones: through the ``crispml`` entry-point
group. Entry points load one at a time, so one broken plugin is reported by name and the rest
still load (``CRISPML_STRICT_PLUGINS=1`` makes it fatal). Loading a plugin imports its module
only; plugins import their backend inside hook bodies, so this module's work stays cheap.

Registration order is chosen on purpose: the core's own plugins first, then entry points
sorted by name, then the modules a recipe names. pluggy calls the last registered first, so for
event hooks a user's module sees an event before the built-ins; stage hooks are routed to the
single plugin a step names, so order never decides which backend runs.

Environment switches:

* ``CRISPML_STRICT_PLUGINS=1`` — a plugin that fails to load is an error, not a warning.
* ``CRISPML_DISABLE_PLUGINS=a,b`` — do not load these entry points (to get past a broken one).
* ``CRISPML_TRACE_PLUGINS=1`` — print every hook call and its result to stderr.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import pluggy

from crispml import hookspecs
from crispml._distributions import entry_points
from crispml._markers import PROJECT
from crispml.declarations import Declaration
from crispml.errors import PluginError

ENTRY_POINT_GROUP = "crispml"
_DEFAULT_PLUGINS = (("local", "crispml._local_runner"),)

_IMPORTED_WITH: dict[str, frozenset[str]] = {}
"""Modules first imported while a recipe's plugin module was imported (in this process), by the
plugin module's name: what it loaded by ``importlib`` at import time, which no static import
names. The cache counts them as the plugin's code."""


@dataclass
class PluginInfo:
    """What ``crispml plugins`` shows about one plugin."""

    name: str
    source: str
    """``builtin`` (the core's own), ``entry point`` or ``recipe`` (a module a recipe names)."""
    module: str
    version: str | None = None
    distribution: str | None = None
    error: str | None = None
    hooks: list[str] = field(default_factory=list)
    declaration: Declaration | None = None

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "source": self.source,
            "module": self.module,
            "version": self.version,
            "distribution": self.distribution,
            "hooks": self.hooks,
            "error": self.error,
        }
        if self.declaration is not None:
            out.update(self.declaration.as_json())
        return out


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


class Plugins:
    """A pluggy ``PluginManager`` plus what crispml knows about each plugin it holds.

    Build one with :func:`get_plugins`; never at import time.
    """

    def __init__(self, *, strict: bool | None = None) -> None:
        self.strict = _env_flag("CRISPML_STRICT_PLUGINS") if strict is None else strict
        self.pm = pluggy.PluginManager(PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}
        self._declarations: dict[str, Declaration] = {}
        if _env_flag("CRISPML_TRACE_PLUGINS"):
            self.pm.trace.root.setwriter(sys.stderr.write)
            self.pm.enable_tracing()

    # -- registration --------------------------------------------------------------------

    def register(self, plugin: object, name: str, *, source: str = "registered", **info: Any) -> None:
        """Register ``plugin`` (a module or any object with hookimpls) under ``name``.

        Rejects, by name, a plugin whose hooks are misspelt or take unknown parameters.
        """
        if name in self.infos and self.infos[name].error is None:
            raise PluginError(f"plugin '{name}' is registered twice")
        module = getattr(plugin, "__name__", type(plugin).__module__)
        try:
            self.pm.register(plugin, name=name)
        except pluggy.PluginValidationError as exc:
            raise PluginError(f"plugin '{name}' ({module}): {exc}") from exc
        unknown = [hc.name for hc in self.pm.get_hookcallers(plugin) or [] if hc.spec is None]
        if unknown:
            self.pm.unregister(plugin)
            raise PluginError(f"plugin '{name}' ({module}) implements unknown hook(s): {', '.join(unknown)}")
        self.infos[name] = PluginInfo(name=name, source=source, module=module, **info)
        self.infos[name].hooks = sorted(hc.name for hc in self.pm.get_hookcallers(plugin) or [])
        self._declarations.pop(name, None)

    def _fail(self, info: PluginInfo, exc: BaseException) -> None:
        info.error = f"{type(exc).__name__}: {exc}"
        self.infos[info.name] = info
        if self.strict:
            raise PluginError(f"plugin '{info.name}' failed to load: {info.error}") from exc
        print(
            f"crispml: warning: plugin '{info.name}' ({info.module}) failed to load: {info.error}"
            " (set CRISPML_DISABLE_PLUGINS to skip it, CRISPML_STRICT_PLUGINS=1 to make this fatal)",
            file=sys.stderr,
        )

    def load_defaults(self) -> None:
        for name, module in _DEFAULT_PLUGINS:
            self.register(importlib.import_module(module), name, source="builtin")

    def load_entry_points(self) -> None:
        """Load every ``crispml`` entry point, one at a time."""
        disabled = {n.strip() for n in os.environ.get("CRISPML_DISABLE_PLUGINS", "").split(",")}
        eps = sorted(entry_points(ENTRY_POINT_GROUP), key=lambda ep: ep.name)
        for ep in eps:
            if ep.name in disabled or ep.name in self.infos:
                continue
            info = PluginInfo(
                name=ep.name,
                source="entry point",
                module=ep.value,
                version=ep.version,
                distribution=ep.distribution,
            )
            try:
                self.register(
                    ep.load(),
                    ep.name,
                    source="entry point",
                    version=info.version,
                    distribution=info.distribution,
                )
            except Exception as exc:
                self._fail(info, exc)

    def load_modules(self, modules: Iterable[str], *, source: str = "recipe") -> list[str]:
        """Import and register modules by dotted name (a recipe's ``plugins:``); return names.

        Unlike entry points, a module a recipe names must load: its failure is always an error.
        """
        names = []
        for dotted in modules:
            if dotted in self.infos and self.infos[dotted].error is None:
                names.append(dotted)
                continue
            before = set(sys.modules)
            module = importlib.import_module(dotted)
            if dotted not in before:
                _IMPORTED_WITH[dotted] = frozenset(set(sys.modules) - before)
            self.register(module, dotted, source=source, version=getattr(module, "__version__", None))
            if not self.infos[dotted].hooks:
                self.pm.unregister(module)
                del self.infos[dotted]
                raise PluginError(f"module '{dotted}' has no crispml hooks (functions marked @crispml.hookimpl)")
            names.append(dotted)
        return names

    # -- introspection -------------------------------------------------------------------

    def get(self, name: str) -> object | None:
        return self.pm.get_plugin(name)

    def names(self) -> list[str]:
        """Names of the plugins that loaded."""
        return [n for n, i in self.infos.items() if i.error is None]

    def declaration(self, name: str) -> Declaration:
        """The plugin's declaration (an empty one for a plugin without ``crispml_declare``)."""
        if name not in self._declarations:
            plugin = self.get(name)
            decl = Declaration()
            for impl in self.pm.hook.crispml_declare.get_hookimpls():
                if impl.plugin is plugin:
                    result = impl.function()
                    if not isinstance(result, Declaration):
                        raise PluginError(
                            f"plugin '{name}': crispml_declare returned {type(result).__name__},"
                            " expected crispml.Declaration"
                        )
                    decl = result
            self._declarations[name] = decl
            self.infos[name].declaration = decl
        return self._declarations[name]

    def providers(self, stage: str) -> list[str]:
        """Plugins that declare ``stage``."""
        return [n for n in self.names() if stage in self.declaration(n).stages]

    def describe(self) -> list[PluginInfo]:
        """Every plugin, loaded or broken, with its declaration filled in."""
        for name in self.names():
            self.declaration(name)
        return list(self.infos.values())

    # -- calling -------------------------------------------------------------------------

    def call_only(self, hook: str, plugin: str, **kwargs: Any) -> Any:
        """Call ``hook`` on one plugin only (pluggy's ``subset_hook_caller``)."""
        keep = self.get(plugin)
        others = [p for p in self.pm.get_plugins() if p is not keep]
        caller = self.pm.subset_hook_caller(hook, remove_plugins=others)
        return caller(**kwargs)

    def event_caller(self, hook: str, exclude: Iterable[str]) -> Any:
        """A caller for an event hook on every plugin but ``exclude`` (unselected trackers)."""
        removed = [p for p in (self.get(n) for n in exclude) if p is not None]
        if not removed:
            return getattr(self.pm.hook, hook)
        return self.pm.subset_hook_caller(hook, remove_plugins=removed)


def get_plugins(*, strict: bool | None = None, entry_points: bool = True) -> Plugins:
    """Build a plugin manager with the core's plugins and every installed entry-point plugin."""
    plugins = Plugins(strict=strict)
    plugins.load_defaults()
    if entry_points:
        plugins.load_entry_points()
    # Before any backend is imported (a stage, a plugin command): state in the project.
    from crispml._isolation import isolate
    from crispml.store import find_project

    isolate(find_project(), plugins)
    return plugins


def imported_with(module: str) -> frozenset[str]:
    """Modules first imported along with the plugin module ``module`` (see ``_IMPORTED_WITH``)."""
    return _IMPORTED_WITH.get(module, frozenset())


def module_of(plugin: object) -> ModuleType | None:
    """The module a plugin's code lives in (the plugin itself when it is a module)."""
    if isinstance(plugin, ModuleType):
        return plugin
    return sys.modules.get(type(plugin).__module__)
