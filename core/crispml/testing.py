"""A small test kit for plugin authors (like pytest's ``pytester``), also used by crispml's tests.

from crispml.testing import Recorder, run_with
recorder = Recorder()
result = run_with(recipe, project=tmp_path, plugins={"mine": MyPlugin(), "rec": recorder})
assert recorder.names() == ["crispml_before_run", ...]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from crispml._markers import hookimpl
from crispml.plugins import Plugins, get_plugins
from crispml.recipe import Recipe
from crispml.runs import RunResult, run


class Recorder:
    """An observer plugin that records every event hook call, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]

    def events(self) -> list[str]:
        """Calls as short strings: ``before_stage:train``, ``after_stage:train:cached``."""
        out = []
        for name, kw in self.calls:
            short = name.removeprefix("crispml_")
            if "stage" in kw:
                short += f":{kw['stage']}"
            if "status" in kw:
                short += f":{kw['status']}"
            out.append(short)
        return out

    @hookimpl
    def crispml_before_run(self, context: Any) -> None:
        self.calls.append(("crispml_before_run", {}))

    @hookimpl
    def crispml_after_run(self, status: str) -> None:
        self.calls.append(("crispml_after_run", {"status": status}))

    @hookimpl
    def crispml_before_stage(self, stage: str) -> None:
        self.calls.append(("crispml_before_stage", {"stage": stage}))

    @hookimpl
    def crispml_after_stage(self, stage: str, status: str) -> None:
        self.calls.append(("crispml_after_stage", {"stage": stage, "status": status}))

    @hookimpl
    def crispml_on_stage_error(self, stage: str, error: BaseException) -> None:
        self.calls.append(("crispml_on_stage_error", {"stage": stage}))


def plugins_with(plugins: dict[str, object] | None = None, *, entry_points: bool = True) -> Plugins:
    """A plugin manager with the installed plugins plus ``plugins`` (name → plugin object)."""
    pl = get_plugins(entry_points=entry_points)
    for name, obj in (plugins or {}).items():
        if not pl.pm.is_registered(obj):  # an installed plugin testing itself is already there
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
