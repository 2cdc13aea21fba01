"""crispml — a thin, pluggable core for the CRISP-ML(Q) lifecycle.

The public API is what this module exports. Names load on first use (PEP 562), so that
``import crispml`` and ``from crispml import hookimpl`` in a plugin stay cheap: a plugin module
is imported by every ``crispml`` command, including ``--help``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from crispml._markers import hookimpl
from crispml._version import __version__

if TYPE_CHECKING:
    from crispml._redact import flatten, redact
    from crispml.context import RunContext
    from crispml.declarations import Backend, Declaration, ExistingPath, Options, Secret
    from crispml.errors import (
        CrispmlError,
        MissingBackendError,
        PluginError,
        RecipeError,
        StageError,
        UsageError,
    )
    from crispml.fingerprint import hash_file
    from crispml.gates import Gate
    from crispml.manifest import Attempt, Manifest, StageRecord
    from crispml.models import load_model
    from crispml.plan import RunPlan
    from crispml.plugins import Plugins, get_plugins
    from crispml.recipe import Recipe, Runner, Split, Step
    from crispml.results import (
        Dataset,
        Deployment,
        Evaluation,
        ExpectationResult,
        ModelVersion,
        MonitorReport,
        Result,
        TrainedModel,
        ValidationReport,
    )
    from crispml.runner_api import finish_run, run_stage, start_run
    from crispml.runs import RunResult, check, resume, run
    from crispml.store import RunStore, atomic_write_bytes, atomic_write_json, file_lock, find_project

_LAZY = {
    "RunContext": "crispml.context",
    "Backend": "crispml.declarations",
    "Declaration": "crispml.declarations",
    "ExistingPath": "crispml.declarations",
    "Options": "crispml.declarations",
    "Secret": "crispml.declarations",
    "CrispmlError": "crispml.errors",
    "MissingBackendError": "crispml.errors",
    "PluginError": "crispml.errors",
    "RecipeError": "crispml.errors",
    "StageError": "crispml.errors",
    "UsageError": "crispml.errors",
    "Gate": "crispml.gates",
    "hash_file": "crispml.fingerprint",
    "RunPlan": "crispml.plan",
    "Plugins": "crispml.plugins",
    "get_plugins": "crispml.plugins",
    "Recipe": "crispml.recipe",
    "Runner": "crispml.recipe",
    "Split": "crispml.recipe",
    "Step": "crispml.recipe",
    "Dataset": "crispml.results",
    "Deployment": "crispml.results",
    "Evaluation": "crispml.results",
    "ExpectationResult": "crispml.results",
    "ModelVersion": "crispml.results",
    "MonitorReport": "crispml.results",
    "Result": "crispml.results",
    "TrainedModel": "crispml.results",
    "ValidationReport": "crispml.results",
    "finish_run": "crispml.runner_api",
    "run_stage": "crispml.runner_api",
    "start_run": "crispml.runner_api",
    "RunResult": "crispml.runs",
    "check": "crispml.runs",
    "resume": "crispml.runs",
    "run": "crispml.runs",
    "RunStore": "crispml.store",
    "atomic_write_bytes": "crispml.store",
    "atomic_write_json": "crispml.store",
    "find_project": "crispml.store",
    "file_lock": "crispml.store",
    "load_model": "crispml.models",
    "Attempt": "crispml.manifest",
    "Manifest": "crispml.manifest",
    "StageRecord": "crispml.manifest",
    "redact": "crispml._redact",
    "flatten": "crispml._redact",
}

__all__ = ["__version__", "hookimpl", *sorted(_LAZY)]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'crispml' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
