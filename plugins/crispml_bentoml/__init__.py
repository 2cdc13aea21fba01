"""The ``bentoml`` plugin: serve registered model versions with BentoML, behind a smoke gate.

    deploy: {use: bentoml, name: churn, port: 3000}        # after a register step

    crispml deploy churn@champion            crispml deployments [--json]
    crispml deploy --rollback churn          crispml undeploy churn
    crispml predictions churn --tail 20      crispml build churn

A deployment is a stable reverse proxy on the public port (127.0.0.1:3000) in front of one
``bentoml serve`` process per release on a private port. A new release takes over only after it
answers ``/readyz`` and predicts the version's logged input example exactly as the registered
model does; the old one serves until then, and stops once drained. Every request is logged
(JSONL, rotated by size) under ``.crispml/deployments/<name>/``. BentoML's state lives in
``.crispml/bentoml``; telemetry is off. See ``docs/plugins/bentoml.md``.

The version to serve comes from whichever registry plugin resolves its reference
(``crispml_resolve_model``): this plugin never talks to a registry, nor reads another plugin's
options or files. It answers ``crispml_deployment`` (what a deployment serves, its training
run, its prediction log) for monitors, and writes the prediction log in crispml's versioned
format (read with ``crispml.prediction_records``).

This module only declares: BentoML (and the model's own library) are imported by submodules and
by the processes the plugin starts, never when crispml loads its plugins.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field, ValidationInfo, field_validator, model_validator

from crispml import (
    Backend,
    Declaration,
    Deployment,
    ModelVersion,
    Options,
    RunContext,
    TrainedModel,
    UsageError,
    hookimpl,
)

if TYPE_CHECKING:
    import click

    from crispml import Session

__version__ = "0.1.0"


class DeployOptions(Options):
    """``deploy: {use: bentoml, ...}``."""

    name: str | None = None
    """The deployment's name (default: the registered model's name, lowercased)."""
    port: int | None = Field(None, ge=1, le=65535)
    """The public port (default: the deployment's current port, else 3000)."""
    host: str = "127.0.0.1"
    """The interface to listen on. Loopback by default; the built bento is the way out."""
    alias: str | None = "champion"
    """With a register step: deploy this alias of the registered model (so a challenger that
    was not promoted is not deployed). ``null``: deploy the version the run registered."""
    model: str | None = None
    """Without a register step: the version to deploy, ``name@alias`` or ``name/version`` (any
    reference a registry plugin resolves)."""
    ready_timeout: float = Field(120.0, gt=0, le=3600)
    """Seconds the new server may take to answer ``/readyz``."""
    drain_timeout: float = Field(30.0, ge=0, le=3600)
    """Seconds to wait for the old server's requests in flight before stopping it."""
    workers: int | None = Field(None, ge=1, le=64)
    """BentoML worker processes (default: half the machine's cores, at least one — the proxy and
    the workers' prediction threads use the rest)."""
    max_body_mb: float = Field(4.0, gt=0, le=1024)
    """Larger request bodies get HTTP 413 at the proxy."""
    max_records: int = Field(10_000, ge=1)
    """Most records one request may carry (more: HTTP 400)."""
    prediction_log_mb: float = Field(10.0, gt=0)
    """The prediction log rotates past this size…"""
    prediction_log_backups: int = Field(5, ge=1, le=100)
    """…keeping this many older files."""

    @field_validator("name")
    @classmethod
    def _valid_name(cls, name: str | None) -> str | None:
        if name is not None:
            from crispml_bentoml._state import check_name

            try:
                check_name(name)
            except UsageError as exc:
                raise ValueError(str(exc)) from None
        return name

    @model_validator(mode="after")
    def _model_or_register(self, info: ValidationInfo) -> DeployOptions:
        if not self.host.strip():
            raise ValueError("host is empty")
        steps = (info.context or {}).get("steps")
        if self.model is None and steps is not None and steps.get("register") is None:
            raise ValueError("without a register step, name the version to deploy: model: churn@champion")
        return self


@hookimpl
def crispml_declare() -> Declaration:
    return Declaration(
        stages={"deploy": DeployOptions},
        backends=(Backend("bentoml", "bentoml", extra="bentoml"),),
        description="Serve registered models with BentoML: smoke gate, no-downtime switch, prediction log.",
    )


def settings_from(options: DeployOptions, name: str) -> Any:
    from crispml_bentoml._deploy import Settings

    return Settings(
        name=name,
        port=options.port,
        host=options.host,
        ready_timeout=options.ready_timeout,
        drain_timeout=options.drain_timeout,
        workers=options.workers,
        max_body_bytes=int(options.max_body_mb * 1024 * 1024),
        max_records=options.max_records,
        log_max_bytes=int(options.prediction_log_mb * 1_000_000),
        log_backups=options.prediction_log_backups,
    )


@hookimpl
def crispml_environment(project_dir: Path) -> dict[str, str]:
    """BentoML's model store and bentos in the project, not ``~/bentoml``; telemetry off."""
    from crispml_bentoml import _state

    return {"BENTOML_HOME": str(_state.bentoml_home(project_dir)), "BENTOML_DO_NOT_TRACK": "True"}


@hookimpl
def crispml_deploy(
    options: DeployOptions,
    model_version: ModelVersion | None,
    model: TrainedModel | None,
    context: RunContext,
) -> Deployment:
    from crispml_bentoml._deploy import default_name, deploy

    if model_version is not None:
        reference = (
            f"{model_version.name}@{options.alias}"
            if options.alias
            else f"{model_version.name}/{model_version.version}"
        )
        name = options.name or default_name(model_version.name)
    elif options.model is not None:
        reference = options.model
        name = options.name or ""  # the resolved model's name
    else:
        raise UsageError("deploy (bentoml): no registered model version to deploy: add a register step, or set model:")
    settings = settings_from(options, name)
    session = context.session
    outcome = deploy(context.project_dir, settings, reference, lambda ref: session.resolve_model(ref, context=context))
    record = outcome.record or {}
    context.links["bentoml_deployment"] = name
    metrics = dict(outcome.timings)
    metrics["switched"] = 1.0 if outcome.changed and outcome.rejection is None else 0.0
    log = record.get("prediction_log")
    return Deployment(
        name=name,
        url=str(record.get("url", "")),
        model_uri=outcome.model["uri"],
        pid=(record.get("proxy") or {}).get("pid"),
        model=f"{outcome.model['name']}/{outcome.model['version']}",
        training_run=outcome.model.get("crispml_run_id"),
        prediction_log=Path(log) if log else None,
        metrics=metrics,
        rejection=outcome.rejection,
    )


@hookimpl
def crispml_deployment(name: str, project_dir: Path) -> Deployment | None:
    from crispml_bentoml._answer import describe

    return describe(name, project_dir)


@hookimpl
def crispml_deployment_names(project_dir: Path) -> list[str]:
    from crispml_bentoml._state import all_records

    return [str(r["name"]) for r in all_records(project_dir) if r.get("name")]


@hookimpl
def crispml_register_commands(cli: click.Group, session: Session) -> None:
    from crispml_bentoml._cli import add_commands

    add_commands(cli, session)
