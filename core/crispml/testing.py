"""A small test kit for plugin authors (like pytest's ``pytester``), also used by crispml's tests.

from crispml.testing import Recorder, run_with
recorder = Recorder()
result = run_with(recipe, project=tmp_path, plugins={"mine": MyPlugin(), "rec": recorder})
assert recorder.events() == ["before_run", "before_stage:load", ...]
assert recorder.called("train")[0].plugins == ["mine"]
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pluggy

from crispml.plugins import Plugins, get_plugins
from crispml.recipe import Recipe
from crispml.runs import RunResult, run

EVENT_HOOKS = (
    "crispml_before_run",
    "crispml_before_stage",
    "crispml_after_stage",
    "crispml_on_stage_error",
    "crispml_after_run",
)
"""The hooks every plugin observes (tracking, lineage, alerts are built on them)."""


@dataclass
class Call:
    """One hook call: its name, arguments, the plugins it reached, and what it returned or raised."""

    name: str
    kwargs: dict[str, Any]
    plugins: list[str]
    result: Any = None
    error: BaseException | None = None


class Recorder:
    """Records every hook call a plugin manager makes, in order: stage hooks, ``crispml_execute``,
    declarations and events alike, through pluggy's hook-call monitoring (so a hook added to
    crispml is recorded without a change here).

    ``run_with(..., plugins={"rec": recorder})`` attaches it; elsewhere call
    ``recorder.attach(plugins.pm)`` (and ``detach()`` when done)."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self._open: list[Call] = []
        self._undo: Callable[[], None] | None = None

    def attach(self, pm: pluggy.PluginManager) -> Recorder:
        self.detach()
        self._undo = pm.add_hookcall_monitoring(self._before, self._after)
        return self

    def detach(self) -> None:
        if self._undo is not None:
            self._undo()
            self._undo = None

    def _before(self, hook_name: str, hook_impls: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
        call = Call(hook_name, dict(kwargs), [impl.plugin_name for impl in hook_impls])
        self.calls.append(call)
        self._open.append(call)

    def _after(self, outcome: Any, hook_name: str, hook_impls: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
        # Calls nest (crispml_execute runs the stage hooks), so the one ending is the newest open one.
        call = self._open.pop()
        call.error = outcome.exception
        call.result = None if outcome.exception is not None else outcome.get_result()

    def names(self, *, every: bool = True) -> list[str]:
        """Hook names in call order (``every=False``: event hooks only)."""
        return [c.name for c in self.calls if every or c.name in EVENT_HOOKS]

    def called(self, hook: str) -> list[Call]:
        """The calls of one hook, e.g. ``recorder.called("crispml_train")``."""
        name = hook if hook.startswith("crispml_") else f"crispml_{hook}"
        return [c for c in self.calls if c.name == name]

    def events(self, *, every: bool = False) -> list[str]:
        """Calls as short strings: ``before_stage:train``, ``after_stage:train:cached``. Event
        hooks only, unless ``every`` (then ``execute``, ``train``, ``declare``… too)."""
        out = []
        for call in self.calls:
            if not every and call.name not in EVENT_HOOKS:
                continue
            short = call.name.removeprefix("crispml_")
            if "stage" in call.kwargs:
                short += f":{call.kwargs['stage']}"
            if "status" in call.kwargs:
                short += f":{call.kwargs['status']}"
            out.append(short)
        return out


def plugins_with(plugins: dict[str, object] | None = None, *, entry_points: bool = True) -> Plugins:
    """A plugin manager with the installed plugins plus ``plugins`` (name → plugin object)."""
    pl = get_plugins(entry_points=entry_points)
    for name, obj in (plugins or {}).items():
        if isinstance(obj, Recorder):
            obj.attach(pl.pm)  # not a plugin: it watches the plugin manager's calls
        elif not pl.pm.is_registered(obj):  # an installed plugin testing itself is already there
            pl.register(obj, name, source="registered")
    return pl


def run_with(
    recipe: Recipe | str | Path,
    *,
    project: str | Path,
    plugins: dict[str, object] | None = None,
    **kwargs: Any,
) -> RunResult:
    """Run ``recipe`` in ``project`` with extra in-test plugins registered."""
    return run(recipe, project=project, plugins=plugins_with(plugins), **kwargs)
