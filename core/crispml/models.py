"""Registered models and deployments, from whichever plugin knows them.

``crispml.load_model``, ``crispml.resolve_model`` and ``crispml.deployment`` call a
*firstresult* hook on every plugin: the one that knows the reference (a registry) or the name (a
serving plugin) answers. No plugin needs to import another to use its models or deployments.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from crispml._isolation import isolate
from crispml.errors import PluginError, UsageError
from crispml.store import find_project

if TYPE_CHECKING:
    from crispml.context import RunContext
    from crispml.plugins import Plugins
    from crispml.results import Deployment, ResolvedModel, ServingFeatures


def _plugins(plugins: Plugins | None, context: RunContext | None = None) -> Plugins:
    if plugins is not None:
        return plugins
    if context is not None:
        return context.session.plugins
    from crispml._session import session

    return session().plugins


def _project(project: str | Path | None) -> Path:
    return Path(project).resolve() if project else find_project()


def load_model(reference: str, *, project: str | Path | None = None, plugins: Plugins | None = None) -> Any:
    """Load ``name@alias`` or ``name/version`` from the model registry a plugin provides.

    :return: an object with ``predict`` (for MLflow, a ``pyfunc`` model).
    """
    pl = _plugins(plugins)
    project_dir = _project(project)
    isolate(project_dir, pl)  # the registry's backend loads in this process: its state in the project
    model = pl.pm.hook.crispml_load_model(reference=reference, project_dir=project_dir)
    if model is None:
        raise UsageError(
            f"no installed plugin knows the model '{reference}' "
            "(is a model-registry plugin installed, and is the name right?)"
        )
    return model


def resolve_model(
    reference: str,
    project_dir: str | Path | None = None,
    *,
    context: RunContext | None = None,
    plugins: Plugins | None = None,
) -> ResolvedModel:
    """Where a registered version's files are, what loads them, its signature and lineage.

    :param reference: ``name@alias`` or ``name/version`` (a registry plugin may accept more).
    :param project_dir: the project (default: the run's, else the current one).
    :param context: the run context, when a stage asks (lets the registry use its own options).
    :raises UsageError: no installed plugin resolves the reference.
    """
    from crispml.results import ResolvedModel

    pl = _plugins(plugins, context)
    project = _project(project_dir if project_dir is not None else (context.project_dir if context else None))
    isolate(project, pl)
    resolved = pl.pm.hook.crispml_resolve_model(reference=reference, project_dir=project, context=context)
    if resolved is None:
        raise UsageError(
            f"no installed plugin resolves the model '{reference}' "
            "(is a model-registry plugin installed, and is the reference right? e.g. churn@champion)"
        )
    if not isinstance(resolved, ResolvedModel):
        raise PluginError(
            f"crispml_resolve_model returned {type(resolved).__name__} for '{reference}', "
            "expected crispml.ResolvedModel"
        )
    return resolved


def deployment(name: str, project_dir: str | Path | None = None, *, plugins: Plugins | None = None) -> Deployment:
    """The deployment ``name``: served version, training run, URL, status, prediction log.

    :raises UsageError: no installed plugin has a deployment of that name.
    """
    from crispml.results import Deployment

    pl = _plugins(plugins)
    project = _project(project_dir)
    isolate(project, pl)
    found = pl.pm.hook.crispml_deployment(name=name, project_dir=project)
    if found is None:
        known = deployment_names(project, plugins=pl)
        listed = f"deployments: {', '.join(known)}" if known else "there are no deployments"
        raise UsageError(f"no deployment named '{name}' ({listed})")
    if not isinstance(found, Deployment):
        raise PluginError(
            f"crispml_deployment returned {type(found).__name__} for '{name}', expected crispml.Deployment"
        )
    return found


def deployment_names(project_dir: str | Path | None = None, *, plugins: Plugins | None = None) -> list[str]:
    """Every deployment name the installed serving plugins know in the project, sorted."""
    pl = _plugins(plugins)
    answers = pl.pm.hook.crispml_deployment_names(project_dir=_project(project_dir))
    return sorted({str(n) for answer in answers for n in (answer or [])})


def serving_features(
    spec: dict[str, Any],
    project_dir: str | Path | None = None,
    *,
    plugins: Plugins | None = None,
) -> ServingFeatures:
    """How to fetch a model's features by entity key, from the plugin ``spec["plugin"]`` names.

    :param spec: a serving spec (``Dataset.serving``, kept by a registry as ``ResolvedModel.serving``).
    :param project_dir: the project whose stores to use (default: the current one).
    :raises UsageError: the spec names no plugin, or one that is not installed or cannot serve it.
    """
    from crispml.results import ServingFeatures

    name = spec.get("plugin") if isinstance(spec, dict) else None
    if not isinstance(name, str) or not name:
        raise UsageError(f"a serving spec names the plugin that fetches its features ('plugin'), got {spec!r:.120}")
    pl = _plugins(plugins)
    if pl.get(name) is None:
        raise UsageError(f"the model's features come from plugin '{name}', which is not installed")
    found = pl.call_only("crispml_serving_features", name, spec=spec, project_dir=_project(project_dir))
    if found is None:
        raise UsageError(f"plugin '{name}' cannot fetch features for serving (no crispml_serving_features)")
    if not isinstance(found, ServingFeatures):
        raise PluginError(
            f"crispml_serving_features of '{name}' returned {type(found).__name__}, expected crispml.ServingFeatures"
        )
    return found
