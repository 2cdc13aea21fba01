"""What a plugin declares about itself, and the base class of every options model.

A plugin's ``crispml_declare`` hook returns a :class:`Declaration`. Recipes are validated
against it before anything runs; ``crispml plugins`` shows it. Nothing here imports a backend:
``Backend`` names a distribution and its top-level module so that the core can tell whether it
is installed (``importlib.util.find_spec``) without importing it.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, SecretStr, ValidationInfo

from crispml.errors import clip

Secret = SecretStr
"""Declare an option secret: ``password: crispml.Secret`` (pydantic's ``SecretStr``; any pydantic
secret type counts). The plugin reads ``options.password.get_secret_value()``; everything crispml
writes or prints shows ``***`` (or the ``${env:NAME}`` reference the value came from)."""

if TYPE_CHECKING:
    from crispml.context import RunContext


class Options(BaseModel):
    """Base class of a plugin's options model: unknown fields are errors, not silence."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    def external_inputs(self) -> list[Path]:
        """Files outside the run store this step reads (data files, suites).

        Their contents are part of the step's cache key, so a changed file re-runs the step.
        Override in an options model whose step reads files.
        """
        return []

    def check_inputs(self) -> CheckInputs:
        """What checking these options reads besides the options themselves: files, and
        distributions beyond the plugin's declared backends (whose versions always count).

        A recipe check that passed is remembered under a key of these files' contents and
        versions (``crispml.check_cache``), so validators marked :func:`crispml.backend_check`
        are skipped — and their backend left unimported — until one changes. The default is
        :meth:`external_inputs` and :meth:`code_references`; override it when those are costly
        to compute (they must not import the backend) or when the check reads more.
        """
        return CheckInputs(files=tuple(self.external_inputs()), modules=tuple(self.code_references()))

    def code_references(self) -> list[str]:
        """Modules this step runs code from that its plugin does not import itself (a user's
        estimator class named by import path). Their source — and the project modules they
        import — is part of the step's cache key."""
        return []

    def retrain_policy(self) -> RetrainPolicy | None:
        """For a ``monitor`` step: when and how the core may retrain on drift (``None``: never).

        Read by the core before a monitor runs (the overrides are checked against the recipe)
        and after a :class:`crispml.MonitorReport` asks for a retrain.
        """
        return None

    def ready(self, context: RunContext) -> None:
        """Checks of the project's current state that a command running this step alone makes
        before anything is written (``crispml monitor``: the deployment it watches exists).

        Raise :class:`crispml.UsageError` with one line; the command exits 2 and no run is
        recorded. A full recipe run does not call it (its deploy step may create what is checked).
        """
        return None

    def provided_columns(self) -> tuple[list[str], str] | None:
        """A load step's columns, if known before it runs (a file's header), and a short name
        for its data (``churn.csv``), so that other steps can check a recipe against them
        without knowing which plugin loads the data. ``None``: unknown until the step runs.
        """
        return None

    def provided_metrics(self) -> list[str] | None:
        """The metric names this step's result will carry, if known before it runs.

        When known, a ``gate:`` naming any other metric is a recipe error. ``None``: unknown.
        """
        return None


@dataclass(frozen=True)
class CheckInputs:
    """What a step's recipe check depends on besides its options (``Options.check_inputs``)."""

    files: tuple[Path, ...] = ()
    """Files or folders the check reads (a suite, a folder of definitions): their content counts."""
    distributions: tuple[str, ...] = ()
    """Installed distributions whose version counts, besides the plugin's declared backends."""
    modules: tuple[str, ...] = ()
    """Project modules the check imports (a user's estimator): their source counts."""


@dataclass(frozen=True)
class RetrainPolicy:
    """How a monitor's drift becomes a training run (``crispml monitor``).

    The core runs the recipe again without its monitor step, with ``overrides`` applied (as
    ``--set`` would), once ``after`` consecutive monitor runs of the recipe drifted and no
    retrain of it started in the last ``cooldown`` seconds; one retrain per recipe at a time.
    """

    overrides: tuple[str, ...] = ()
    after: int = 1
    cooldown: float = 0.0
    source: str = "monitor.retrain"
    """The recipe field the policy came from, for error messages."""


def _resolve_path(value: Path, info: ValidationInfo) -> Path:
    base = (info.context or {}).get("base_dir")
    if not value.is_absolute() and base is not None:
        value = Path(base) / value
    try:
        found = value.exists()
    except OSError as exc:  # a name too long for the file system, say
        raise ValueError(f"not a usable path ({exc.strerror or exc}): {clip(str(value))}") from None
    if not found:
        raise ValueError(f"file not found: {clip(str(value), 200)}")
    return value


ExistingPath = Annotated[Path, AfterValidator(_resolve_path)]
"""A path option, resolved against the recipe's directory, that must exist when checked."""


@functools.lru_cache(maxsize=256)
def _distribution_version(distribution: str) -> str | None:
    """An installed distribution's version (looked up once per process: it scans sys.path)."""
    from crispml._distributions import version

    return version(distribution)


@dataclass(frozen=True)
class Backend:
    """A library a plugin drives, e.g. ``Backend("scikit-learn", "sklearn", extra="sklearn")``."""

    distribution: str
    module: str
    extra: str | None = None

    def installed(self) -> bool:
        return importlib.util.find_spec(self.module) is not None

    def version(self) -> str | None:
        return _distribution_version(self.distribution)

    def install_hint(self) -> str:
        return f"pip install 'crispml[{self.extra}]'" if self.extra else f"pip install {self.distribution}"

    def require(self, who: str) -> None:
        """Raise :class:`~crispml.MissingBackendError` naming the extra unless installed: for a
        plugin's command or hook that needs its backend outside a checked recipe."""
        if not self.installed():
            from crispml.errors import MissingBackendError

            raise MissingBackendError(
                f"{who} needs {self.distribution}, which is not installed: {self.install_hint()}", backend=self
            )


@dataclass(frozen=True)
class Declaration:
    """What one plugin provides."""

    stages: Mapping[str, type[Options]] = field(default_factory=dict)
    """Stage name → the options model its step is validated against."""
    tracker: type[Options] | None = None
    """Set for a tracker (an observer a recipe enables with ``tracking: [name]``)."""
    runner: type[Options] | None = None
    """Set for a runner (``runner: name``), which implements ``crispml_execute``."""
    backends: tuple[Backend, ...] = ()
    description: str = ""

    def missing_backends(self) -> list[Backend]:
        return [b for b in self.backends if not b.installed()]

    def as_json(self) -> dict[str, Any]:
        return {
            "stages": sorted(self.stages),
            "tracker": self.tracker is not None,
            "runner": self.runner is not None,
            "description": self.description,
            "backends": [
                {
                    "distribution": b.distribution,
                    "installed": b.installed(),
                    "version": b.version(),
                    "install": None if b.installed() else b.install_hint(),
                }
                for b in self.backends
            ],
        }
