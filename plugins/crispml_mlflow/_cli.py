"""``crispml models``, ``promote``, ``rollback`` and ``ui``.

Each command imports MLflow in its body: ``crispml --help`` builds these commands without it.
The registry is ``--tracking-uri``, else ``$MLFLOW_TRACKING_URI``, else the project's embedded
store (``.crispml/mlflow.db``).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

import click

_URI = click.option(
    "--tracking-uri",
    default=None,
    metavar="URI",
    help="MLflow tracking/registry URI (default: $MLFLOW_TRACKING_URI, else .crispml/mlflow.db).",
)


def _connect(tracking_uri: str | None, *, create: bool = False) -> tuple[Any, Path, str] | None:
    from crispml import find_project
    from crispml_mlflow import _backend

    project = find_project()
    uri = _backend.tracking_uri(tracking_uri, project)
    db = _backend.sqlite_path(uri)
    if db is not None and not db.exists() and not create:
        return None
    client = _backend.client(uri, project)
    _backend.check_reachable(client, uri, 10, 1)
    return client, project, uri


def _no_registry(what: str) -> Any:
    from crispml import UsageError

    raise UsageError(f"no MLflow registry in this project yet (.crispml/mlflow.db): {what}")


def add_commands(cli: click.Group) -> None:
    cli.add_command(models)
    cli.add_command(promote)
    cli.add_command(rollback)
    cli.add_command(ui)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@_URI
def models(as_json: bool, tracking_uri: str | None) -> None:
    """Registered models (mlflow): versions, aliases and their metrics."""
    from crispml import print_rows
    from crispml_mlflow._listing import list_models

    found = _connect(tracking_uri)
    models = list_models(found[0]) if found is not None else []
    rows = [{"model": m["name"], **v} for m in models for v in m["versions"]]
    print_rows(
        rows,
        {
            "model": "model",
            "version": "version",
            "aliases": lambda v: ", ".join(v["aliases"]),
            "metrics": lambda v: "  ".join(f"{k}={val:.4g}" for k, val in sorted(v["metrics"].items())),
            "run": "crispml_run_id",
            "created": lambda v: v["created"].replace("T", " ")[:19],
        },
        as_json=as_json,
        json_value=models,
        empty="no registered models yet (add a register step: {use: mlflow, model_name: ...})",
    )


@click.command()
@click.argument("model")
@click.argument("version")
@click.option("--reason", default="by hand", show_default=True, help="Why, for the audit trail.")
@_URI
def promote(model: str, version: str, reason: str, tracking_uri: str | None) -> None:
    """Make VERSION of MODEL the champion (mlflow), recorded as a manual promotion."""
    from crispml_mlflow import _champion

    found = _connect(tracking_uri)
    if found is None:
        _no_registry(f"cannot promote '{model}'")
    client, project, uri = found  # type: ignore[misc]
    _champion.promote(client, project, uri, model, version, reason)
    click.echo(f"{model}: version {version} is now champion")


@click.command()
@click.argument("model")
@_URI
def rollback(model: str, tracking_uri: str | None) -> None:
    """Move MODEL's champion back to the previous champion (mlflow)."""
    from crispml_mlflow import _champion

    found = _connect(tracking_uri)
    if found is None:
        _no_registry(f"cannot roll back '{model}'")
    client, project, uri = found  # type: ignore[misc]
    old, new = _champion.rollback(client, project, uri, model)
    click.echo(f"{model}: champion rolled back from version {old} to version {new}")


@click.command()
@click.option("--port", default=5000, show_default=True, help="Port on 127.0.0.1.")
def ui(port: int) -> None:
    """MLflow's UI on this project's embedded store, on 127.0.0.1 only."""
    from crispml import find_project
    from crispml_mlflow import _backend

    project = find_project()
    uri = _backend.embedded_uri(project)
    _backend.client(uri, project)  # create the store if this is the first use
    exe = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or shutil.which("mlflow")
    argv = [exe] if exe else [sys.executable, "-m", "mlflow"]
    argv += [
        "ui",
        "--backend-store-uri",
        uri,
        "--default-artifact-root",
        str(project / _backend.STORE_DIR / _backend.ARTIFACTS_DIR),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
    click.echo(f"MLflow UI on http://127.0.0.1:{port} (store {uri}); Ctrl-C stops it", err=True)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(argv[0], argv, env)
