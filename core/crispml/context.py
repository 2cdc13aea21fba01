"""The run context: what every hook receives about the run it is part of."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crispml._redact import Redactor

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
    secrets: Redactor = field(default_factory=Redactor, repr=False)
    """What this run's options hold that must not be written down (from ``crispml.resolve``)."""
    steps: dict[str, tuple[str, BaseModel]] = field(default_factory=dict, repr=False)
    """Each stage's plugin and validated options (``${env:...}`` resolved): read them with
    :meth:`step_options`."""
    plugins: Plugins | None = field(default=None, repr=False)
    """The run's plugin manager (reach it through :attr:`session`)."""
    candidate: str | None = None
    """Set while a training candidate runs (``candidates/train-3``): its stages' files go to
    their own folders, so that candidates running side by side never share one."""

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
        path = self.store.artifact_dir(self.run_id, f"{self.candidate}/{stage}" if self.candidate else stage)
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
        """A tracker's options, for that tracker's own plugin: a plugin never reads another's
        (ask through a hook instead, e.g. ``crispml_resolve_model``)."""
        return self.trackers.get(name)

    def step_options(self, stage: str, plugin: str) -> BaseModel | None:
        """A stage's validated options when the recipe binds it to ``plugin``, for that plugin's
        own use outside the stage (its registry URI, say); ``None`` otherwise. Like
        :meth:`tracker_options`, a plugin asks only for its own."""
        bound = self.steps.get(stage)
        return bound[1] if bound is not None and bound[0] == plugin else None

    def apply_step(self, stage: str, **inputs: Any) -> Any:
        """Apply the recipe's ``stage`` step, as the recipe configures it, to other inputs:
        ``context.apply_step("validate", dataset=window)`` checks production data with the same
        suite the training data passed. The step's plugin is called directly — no cache, no
        gate, no stage record; its files land under ``artifact_dir(stage)`` of this run.

        :raises UsageError: the recipe has no such step.
        """
        from crispml.errors import PluginError, UsageError
        from crispml.stages import BY_NAME

        bound = self.steps.get(stage)
        if bound is None or self.plugins is None or stage not in BY_NAME:
            raise UsageError(f"the recipe has no '{stage}' step to apply")
        plugin, options = bound
        spec = BY_NAME[stage]
        args = {name: inputs.get(name) for name in spec.inputs}
        result = self.plugins.call_only(spec.hook, plugin, options=options, context=self, **args)
        if not isinstance(result, spec.result_type):
            raise PluginError(
                f"plugin '{plugin}' returned {type(result).__name__} from {spec.hook}, "
                f"expected crispml.{spec.result_type.__name__}"
            )
        return result

    def manifest(self) -> Manifest:
        """The run's manifest as last written (a :class:`crispml.Manifest`: read attributes)."""
        return self.store.read_manifest(self.run_id)
