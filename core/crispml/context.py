"""The run context: what every hook receives about the run it is part of."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crispml._redact import Redactor

if TYPE_CHECKING:
    from pydantic import BaseModel

    from crispml.manifest import Manifest
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
    secrets: Redactor = field(default_factory=Redactor, repr=False)
    """What this run's options hold that must not be written down (from ``crispml.resolve``)."""

    @property
    def run_dir(self) -> Path:
        return self.store.run_dir(self.run_id)

    def artifact_dir(self, stage: str) -> Path:
        """The folder for ``stage``'s files (created on first use)."""
        path = self.store.artifact_dir(self.run_id, stage)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def logger(self, stage: str | None = None) -> logging.LoggerAdapter[logging.Logger]:
        """A logger for this run whose messages have its secrets masked."""
        return self.secrets.logger(logging.getLogger("crispml" + (f".{stage}" if stage else "")))

    def redact(self, value: Any) -> Any:
        """A copy of ``value`` (text, dicts, lists, options models) fit to leave the run store:
        values read from ``${env:NAME}`` shown as the reference, declared secrets and URL
        passwords as ``***``. Call it on anything a plugin sends elsewhere or prints."""
        return self.secrets(value)

    def redacted_recipe(self) -> dict[str, Any]:
        """The recipe as the manifest keeps it (``Recipe.to_dict`` with secrets masked)."""
        return self.secrets.recipe(self.recipe.to_dict())

    def tracker_options(self, name: str) -> BaseModel | None:
        return self.trackers.get(name)

    def manifest(self) -> Manifest:
        """The run's manifest as last written (a :class:`crispml.Manifest`: read attributes)."""
        return self.store.read_manifest(self.run_id)
