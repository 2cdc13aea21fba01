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
    from crispml._process import ProcessIdentity, processes_in, stop_tree
    from crispml._redact import flatten, redact
    from crispml._session import Session, session
    from crispml._yaml import YamlProblem, load_yaml
    from crispml.candidates import MAX_CANDIDATES, CandidateJob, CandidateOutcome
    from crispml.check_cache import backend_check
    from crispml.context import RunContext
    from crispml.declarations import (
        Backend,
        CheckInputs,
        Declaration,
        ExistingPath,
        Options,
        RetrainPolicy,
        Secret,
    )
    from crispml.durations import parse_duration
    from crispml.errors import (
        BackendError,
        CrispmlError,
        ExitCode,
        MissingBackendError,
        PluginError,
        RecipeError,
        StageError,
        UsageError,
        clip,
        one_line,
    )
    from crispml.fingerprint import hash_file
    from crispml.gates import Gate
    from crispml.manifest import Attempt, CandidateRecord, Manifest, ProductionWindow, StageRecord
    from crispml.models import deployment, load_model, resolve_model, serving_features
    from crispml.monitoring import MonitorResult, monitor, retrain_recipe
    from crispml.plan import RunPlan
    from crispml.plugins import Plugins, get_plugins
    from crispml.predictions import PREDICTION_LOG_SCHEMA, prediction_records
    from crispml.production_data import ValidateDataResult, validate_data, window_dataset, window_frame
    from crispml.recipe import Recipe, Runner, Split, Step
    from crispml.results import (
        Dataset,
        Deployment,
        Evaluation,
        ExpectationResult,
        ModelVersion,
        MonitorReport,
        ResolvedModel,
        Result,
        ServingFeatures,
        TrainedModel,
        ValidationReport,
    )
    from crispml.runner_api import finish_run, run_candidate, run_stage, start_run
    from crispml.runs import RunResult, check, resume, run
    from crispml.store import RunStore, atomic_write_bytes, atomic_write_json, file_lock, find_project
    from crispml.tables import print_json, print_rows

_LAZY = {
    "RunContext": "crispml.context",
    "Backend": "crispml.declarations",
    "CheckInputs": "crispml.declarations",
    "backend_check": "crispml.check_cache",
    "Declaration": "crispml.declarations",
    "ExistingPath": "crispml.declarations",
    "Options": "crispml.declarations",
    "RetrainPolicy": "crispml.declarations",
    "parse_duration": "crispml.durations",
    "MonitorResult": "crispml.monitoring",
    "monitor": "crispml.monitoring",
    "retrain_recipe": "crispml.monitoring",
    "ValidateDataResult": "crispml.production_data",
    "validate_data": "crispml.production_data",
    "window_dataset": "crispml.production_data",
    "window_frame": "crispml.production_data",
    "BackendError": "crispml.errors",
    "Secret": "crispml.declarations",
    "CrispmlError": "crispml.errors",
    "ExitCode": "crispml.errors",
    "one_line": "crispml.errors",
    "MissingBackendError": "crispml.errors",
    "PluginError": "crispml.errors",
    "RecipeError": "crispml.errors",
    "StageError": "crispml.errors",
    "UsageError": "crispml.errors",
    "clip": "crispml.errors",
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
    "ResolvedModel": "crispml.results",
    "Result": "crispml.results",
    "ServingFeatures": "crispml.results",
    "TrainedModel": "crispml.results",
    "ValidationReport": "crispml.results",
    "finish_run": "crispml.runner_api",
    "run_candidate": "crispml.runner_api",
    "CandidateJob": "crispml.candidates",
    "CandidateOutcome": "crispml.candidates",
    "MAX_CANDIDATES": "crispml.candidates",
    "CandidateRecord": "crispml.manifest",
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
    "resolve_model": "crispml.models",
    "deployment": "crispml.models",
    "serving_features": "crispml.models",
    "prediction_records": "crispml.predictions",
    "PREDICTION_LOG_SCHEMA": "crispml.predictions",
    "Session": "crispml._session",
    "session": "crispml._session",
    "print_json": "crispml.tables",
    "print_rows": "crispml.tables",
    "Attempt": "crispml.manifest",
    "Manifest": "crispml.manifest",
    "ProductionWindow": "crispml.manifest",
    "StageRecord": "crispml.manifest",
    "redact": "crispml._redact",
    "flatten": "crispml._redact",
    "ProcessIdentity": "crispml._process",
    "processes_in": "crispml._process",
    "stop_tree": "crispml._process",
    "YamlProblem": "crispml._yaml",
    "load_yaml": "crispml._yaml",
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
