"""The run context: what every hook receives about the run it is part of."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import BaseModel

    from crispml._session import Session
    from crispml.manifest import Manifest
    from crispml.plugins import Plugins
    from crispml.recipe import Recipe
    from crispml.store import RunStore


@dataclass
class RunContext:
    """One run: its id, recipe, folders, and a place for plugins to leave links.

    Plugins read it; the runner owns it.
    """

    run_id: str
    recipe: Recipe
    project_dir: Path
    recipe_dir: Path
    store: RunStore
    trackers: dict[str, BaseModel] = field(default_factory=dict)
    """Enabled trackers' validated options, by plugin name."""
    links: dict[str, Any] = field(default_factory=dict)
    """Identifiers in other systems (``{"mlflow_run_id": ...}``), saved in the manifest."""
    resumed: bool = False
    steps: dict[str, tuple[str, BaseModel]] = field(default_factory=dict, repr=False)
    """Each stage's plugin and validated options (``${env:...}`` resolved): read them with
    :meth:`step_options`."""
    plugins: Plugins | None = field(default=None, repr=False)
    """The run's plugin manager (reach it through :attr:`session`)."""

    @property
    def session(self) -> Session:
        """The run's :class:`crispml.Session`: how a stage asks other plugins for their work
        (``context.session.resolve_model(...)``) without importing them."""
        from crispml._session import Session, session

        if self.plugins is None:
            return session()
        return Session(self.plugins, self.project_dir)

    @property
    def run_dir(self) -> Path:
        return self.store.run_dir(self.run_id)

    def artifact_dir(self, stage: str) -> Path:
        """The folder for ``stage``'s files (created on first use)."""
        path = self.store.artifact_dir(self.run_id, stage)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def logger(self, stage: str | None = None) -> logging.Logger:
        return logging.getLogger("crispml" + (f".{stage}" if stage else ""))

    def tracker_options(self, name: str) -> BaseModel | None:
        """A tracker's options, for that tracker's own plugin: a plugin never reads another's
        (ask through a hook instead, e.g. ``crispml_resolve_model``)."""
        return self.trackers.get(name)

    def step_options(self, stage: str, plugin: str) -> BaseModel | None:
        """A stage's validated options when the recipe binds it to ``plugin``, for that plugin's
        own use outside the stage (its registry URI, say); ``None`` otherwise. Like
        :meth:`tracker_options`, a plugin asks only for its own."""
        bound = self.steps.get(stage)
        return bound[1] if bound is not None and bound[0] == plugin else None

    def manifest(self) -> Manifest:
        """The run's manifest as last written (a :class:`crispml.Manifest`: read attributes)."""
        return self.store.read_manifest(self.run_id)
