"""Hook specifications: the single source of truth for what a crispml plugin can do.

Every hook is prefixed ``crispml_``. ``docs/hooks.md`` is generated from the docstrings below
(``python -m crispml._docgen``); a test fails when it is stale.

A plugin implements any subset of these with ``@crispml.hookimpl``, and each implementation may
accept any subset of the hook's parameters (pluggy passes only the ones it names).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from crispml._markers import _hookspec

if TYPE_CHECKING:
    import click
    from pydantic import BaseModel

    from crispml._session import Session
    from crispml.context import RunContext
    from crispml.declarations import Declaration
    from crispml.manifest import CandidateRecord
    from crispml.plan import RunPlan
    from crispml.results import (
        Dataset,
        Deployment,
        Evaluation,
        ModelVersion,
        MonitorReport,
        ResolvedModel,
        Result,
        ServingFeatures,
        TrainedModel,
        ValidationReport,
    )


# --------------------------------------------------------------------------------------------
# Declaration
# --------------------------------------------------------------------------------------------


@_hookspec
def crispml_declare() -> Declaration:
    """Declare what this plugin provides.

    Called once per plugin when a recipe is checked and by ``crispml plugins``. Must not import
    the backend library: declare the options models and name the backend, nothing more.

    :return: a :class:`crispml.Declaration` naming the stages the plugin implements with a
        pydantic options model for each, whether it is a tracker or a runner, and the backend
        distributions it needs (with the extra that installs them).
    """
    raise NotImplementedError


@_hookspec
def crispml_environment(project_dir: Path) -> dict[str, str] | None:
    """Environment variables this plugin's backend needs before it is imported.

    The core sets them (with its own: ``XDG_CONFIG_HOME``/``XDG_CACHE_HOME``/``XDG_DATA_HOME``/
    ``XDG_STATE_HOME`` under ``.crispml/home/`` and ``DO_NOT_TRACK=true``) when plugins load and
    again when a run starts in a project, so that the backend — in this process and in every
    process crispml starts, which inherit them — keeps its config, caches and stores in the
    project, never in the home directory, and sends no telemetry. Return paths inside
    ``project_dir / ".crispml"`` and the backend's telemetry switches; do not create anything
    (a recipe that turns out invalid must leave ``.crispml/`` unwritten). A variable the user has
    set already is left as it is. Called for every plugin; must not import the backend.

    :param project_dir: the project folder (its ``.crispml/`` holds the run store).
    :return: ``{"NAME": "value"}``, or ``None``.
    """


# --------------------------------------------------------------------------------------------
# Stage hooks — the runner calls each one restricted to the plugin the recipe's step names.
# --------------------------------------------------------------------------------------------


@_hookspec(firstresult=True)
def crispml_load(options: BaseModel, context: RunContext) -> Dataset | None:
    """Load the data a recipe works on.

    :param options: the step's options, validated against the plugin's declared model.
    :param context: the run context (run id, recipe, artifact directory, logger).
    :return: a :class:`crispml.Dataset`. The runner applies the recipe's seeded ``split`` to it.

    Stops at first non-None result.
    """


@_hookspec(firstresult=True)
def crispml_validate(options: BaseModel, dataset: Dataset, context: RunContext) -> ValidationReport | None:
    """Validate a dataset before anything is trained on it.

    :param options: the step's validated options.
    :param dataset: the loaded dataset (all rows, before the split is used).
    :param context: the run context.
    :return: a :class:`crispml.ValidationReport`; set its ``rejection`` to stop the run as
        rejected when the data must not be trained on.

    Stops at first non-None result.
    """


@_hookspec(firstresult=True)
def crispml_train(options: BaseModel, dataset: Dataset, context: RunContext) -> TrainedModel | None:
    """Fit a model on the training split.

    :param options: the step's validated options.
    :param dataset: the dataset; train on ``dataset.train_frame``.
    :param context: the run context.
    :return: a :class:`crispml.TrainedModel`.

    Stops at first non-None result.
    """


@_hookspec(firstresult=True)
def crispml_evaluate(
    options: BaseModel, model: TrainedModel, dataset: Dataset, context: RunContext
) -> Evaluation | None:
    """Measure a trained model on the held-out split.

    :param options: the step's validated options.
    :param model: the trained model.
    :param dataset: the dataset; evaluate on ``dataset.test_frame``.
    :param context: the run context; write plots under ``context.artifact_dir``.
    :return: a :class:`crispml.Evaluation` whose ``metrics`` the step's ``gate`` tests.

    Stops at first non-None result.
    """


@_hookspec(firstresult=True)
def crispml_register(
    options: BaseModel,
    model: TrainedModel,
    evaluation: Evaluation | None,
    dataset: Dataset,
    context: RunContext,
) -> ModelVersion | None:
    """Register a model version in a model registry (and decide whether it is promoted).

    :param options: the step's validated options.
    :param model: the trained model.
    :param evaluation: its evaluation, if the recipe has an ``evaluate`` step.
    :param dataset: the dataset it was trained on, for lineage.
    :param context: the run context.
    :return: a :class:`crispml.ModelVersion`; set ``rejection`` when a champion/challenger
        comparison says no, and leave the registry's aliases as they were.

    Stops at first non-None result.
    """


@_hookspec(firstresult=True)
def crispml_deploy(
    options: BaseModel,
    model_version: ModelVersion | None,
    model: TrainedModel | None,
    context: RunContext,
) -> Deployment | None:
    """Serve a model version.

    :param options: the step's validated options.
    :param model_version: the registered version, if the recipe has a ``register`` step.
    :param model: the trained model, if the recipe trained one.
    :param context: the run context.
    :return: a :class:`crispml.Deployment`; set ``rejection`` when a smoke test fails, and
        leave the previous deployment serving.

    Stops at first non-None result.
    """


@_hookspec(firstresult=True)
def crispml_monitor(
    options: BaseModel,
    dataset: Dataset | None,
    model_version: ModelVersion | None,
    deployment: Deployment | None,
    context: RunContext,
) -> MonitorReport | None:
    """Compare production data with reference data (drift, quality).

    :param options: the step's validated options.
    :param dataset: the reference dataset, if the recipe loads one.
    :param model_version: the model version being monitored, if known.
    :param deployment: the deployment being monitored, if known.
    :param context: the run context.
    :return: a :class:`crispml.MonitorReport`; ``retrain=True`` asks for retraining.

    Stops at first non-None result.
    """


# --------------------------------------------------------------------------------------------
# Event hooks — called on every plugin (trackers only when the recipe names them).
# --------------------------------------------------------------------------------------------


@_hookspec
def crispml_before_run(context: RunContext) -> None:
    """A run is about to execute its first stage.

    :param context: the run context; ``context.recipe`` is the resolved recipe.
    """


@_hookspec
def crispml_after_run(context: RunContext, status: str, error: BaseException | None) -> None:
    """A run has ended.

    :param context: the run context.
    :param status: ``succeeded``, ``rejected`` or ``failed``.
    :param error: the error that failed the run, if it failed.
    """


@_hookspec
def crispml_before_stage(stage: str, plugin: str, context: RunContext) -> None:
    """A stage is about to run (or to be served from the cache).

    :param stage: the stage name (``load``, ``train``…).
    :param plugin: the plugin the recipe binds it to.
    :param context: the run context.
    """


@_hookspec
def crispml_after_stage(
    stage: str,
    plugin: str,
    status: str,
    result: Result,
    duration: float,
    context: RunContext,
) -> None:
    """A stage has produced its result.

    :param stage: the stage name.
    :param plugin: the plugin that ran it.
    :param status: ``succeeded``, ``cached`` (reused from an earlier run) or ``rejected``.
    :param result: the stage's result; its files are under ``context.artifact_dir(stage)``.
    :param duration: wall time in seconds.
    :param context: the run context.
    """


@_hookspec
def crispml_after_candidates(
    stage: str,
    plugin: str,
    candidates: list[CandidateRecord],
    selected: int | None,
    context: RunContext,
) -> None:
    """A step's training candidates (``grid:`` or ``candidates:``) have all been trained and
    evaluated, before the stage hands on the best one. Trackers record each as a run of its own
    (MLflow: a run nested under the run's).

    :param stage: the stage name (``train``).
    :param plugin: the plugin that trained them.
    :param candidates: every candidate in order: its ``index``, ``overrides``, ``options``,
        ``status`` (``succeeded``, ``cached`` or ``failed``), evaluation ``metrics``, ``duration``
        and ``error``.
    :param selected: the ``index`` of the candidate that won; ``None`` when one failed (the
        stage then fails).
    :param context: the run context.
    """


@_hookspec
def crispml_on_stage_error(stage: str, plugin: str, error: BaseException, context: RunContext) -> None:
    """A stage raised an error; the run will end ``failed``.

    :param stage: the stage name.
    :param plugin: the plugin that raised.
    :param error: the exception.
    :param context: the run context.
    """


# --------------------------------------------------------------------------------------------
# Models, runners and the command line
# --------------------------------------------------------------------------------------------


@_hookspec(firstresult=True)
def crispml_load_model(reference: str, project_dir: Path) -> Any | None:
    """Load a registered model by reference, for serving and batch scoring.

    ``crispml.load_model("churn@champion")`` asks every plugin in turn; a registry plugin that
    knows the reference returns an object with ``predict``, the others return ``None``.

    :param reference: ``name@alias`` or ``name/version`` (a registry plugin may accept more).
    :param project_dir: the project whose embedded stores to use by default.
    :return: the loaded model, or ``None`` when this plugin does not know the reference.

    Stops at first non-None result.
    """


@_hookspec(firstresult=True)
def crispml_execute(plan: RunPlan, options: BaseModel) -> str | None:
    """Execute a run plan: call ``plan.run_stage(name)`` for each of ``plan.stage_names``.

    The runner named by the recipe's ``runner:`` is the only one called. A runner decides how
    and where stages execute (in-process, as Prefect tasks with retries); the plan does the
    rest (caching, gates, events, the run store).

    A stage that raised ``StageError`` may be run again (a retry: another attempt in its
    record); ``plan.needs(name)`` says which stages must be done first, so independent ones may
    run side by side; ``crispml.run_stage(project, run_id, name)`` runs a stage of this run in
    another process (a worker), reading its inputs from the run store.

    :param plan: the run plan.
    :param options: the runner's validated options.
    :return: the run's status (``plan.finish()``'s value).

    Stops at first non-None result.
    """


@_hookspec
def crispml_register_commands(cli: click.Group, session: Session) -> None:
    """Add commands to the ``crispml`` command line.

    Import the backend inside each command's body, never at module level: every command
    (including ``crispml --help``) loads every plugin.

    :param cli: the root ``click.Group``; call ``cli.add_command(...)`` or decorate with
        ``@cli.command()``.
    :param session: the command line's :class:`crispml.Session` (its plugin manager's hooks,
        ``resolve_model``, ``deployment``): a command reaches other plugins' work through it,
        never by importing them. ``crispml.session()`` returns the same object inside a command.
    """


# --------------------------------------------------------------------------------------------
# Services between plugins — one plugin's work, asked for by another through the core
# --------------------------------------------------------------------------------------------


@_hookspec(firstresult=True)
def crispml_resolve_model(reference: str, project_dir: Path, context: RunContext | None) -> ResolvedModel | None:
    """Describe a registered model version: where its files are, what loads them, its lineage.

    ``crispml.resolve_model("churn@champion")`` asks every plugin in turn; a registry plugin
    that knows the reference returns a :class:`crispml.ResolvedModel` whose ``path`` is a local
    folder with the model's files (downloaded if the registry is remote), the others return
    ``None``. A serving plugin deploys through this hook and never talks to a registry itself.

    A reference the plugin recognises as its own (its syntax, its registry) but cannot find is a
    :class:`crispml.UsageError` naming what exists; an unreachable registry, a ``CrispmlError``
    in one line. Return ``None`` only for references that are not this plugin's.

    :param reference: ``name@alias`` or ``name/version`` (a registry may accept more, e.g.
        ``models:/name/3``).
    :param project_dir: the project whose embedded stores to use by default.
    :param context: the run context when a stage asks (a registry may then use its own step's
        or tracker's options, e.g. a registry URI); ``None`` from a command.
    :return: the resolved version, or ``None`` when the reference is not this plugin's.

    Stops at first non-None result.
    """


@_hookspec(firstresult=True)
def crispml_serving_features(spec: dict[str, Any], project_dir: Path) -> ServingFeatures | None:
    """Tell a serving plugin how to fetch a model's features by entity key.

    ``crispml.serving_features(spec)`` calls this on the plugin ``spec["plugin"]`` names only:
    the feature store plugin whose load step wrote the spec (``Dataset.serving``), which a
    registry kept with the model version (``ResolvedModel.serving``). The serving plugin never
    imports the feature store.

    A spec the plugin can no longer honour (a feature it names was removed or changed type since
    training) is a :class:`crispml.CrispmlError` whose ``exit_code`` is ``ExitCode.REJECTED``,
    saying which: the serving plugin rejects the deploy and the running deployment keeps serving.

    :param spec: the serving spec recorded at training; a serving plugin may add ``model``, the
        version's label (``churn/3``), for the plugin's messages.
    :param project_dir: the project whose stores (registry, online store) to use.
    :return: a :class:`crispml.ServingFeatures`.

    Stops at first non-None result.
    """


@_hookspec(firstresult=True)
def crispml_deployment(name: str, project_dir: Path) -> Deployment | None:
    """Describe a deployment by name: the version it serves, its URL, status and prediction log.

    ``crispml.deployment("churn")`` asks every plugin in turn; the serving plugin that owns the
    deployment answers, the others return ``None``. A monitor reads the answer's
    ``prediction_log`` with :func:`crispml.prediction_records`, never the serving plugin's files.

    :param name: the deployment's name.
    :param project_dir: the project whose deployments to look in.
    :return: a :class:`crispml.Deployment` with ``model`` (``name/version``), ``training_run``,
        ``url``, ``status`` and ``prediction_log`` filled in, or ``None``.

    Stops at first non-None result.
    """


@_hookspec
def crispml_deployment_names(project_dir: Path) -> list[str] | None:
    """The names of the deployments this plugin serves in ``project_dir``.

    Every serving plugin answers; the answers are joined. ``crispml.deployment`` uses them to
    say which names exist when one does not (``no deployment named 'chrun' (deployments:
    churn)``), so that a typo in a recipe is one line that shows the fix.

    :param project_dir: the project whose deployments to list.
    :return: names, or ``None`` when this plugin serves nothing.
    """


def _all_hook_names() -> list[str]:
    """Every hookspec name, in definition order (used by the docs generator and tests)."""
    return [name for name, value in globals().items() if name.startswith("crispml_") and callable(value)]
