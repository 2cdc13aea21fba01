"""The ``feast`` plugin: point-in-time training data from a Feast feature service.

    load:
      use: feast
      repo: features/                 # Feast definitions (*.py); feature_store.yaml optional
      feature_service: churn_v1
      entities: data/labels.parquet   # keys, event time, label (CSV/Parquet)
      target: churned

The ``load`` stage returns one row per entity row, with the feature values as of that row's
time (``get_historical_features``); keys and time are the dataset's ``key_columns``, never
features. Commands: ``crispml features RECIPE`` and ``crispml materialize RECIPE``. With a
``deploy`` step and ``materialize: true``, the online store is materialized before deploying.

This module only declares; Feast (≈6 s to import) is imported when a recipe using the plugin is
checked — its definitions are read to check the options — or a stage or command runs.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, ValidationInfo, field_validator

from crispml import Backend, Dataset, Declaration, ExistingPath, Options, RunContext, ServingFeatures, hookimpl

if TYPE_CHECKING:
    import click

__version__ = "0.1.0"

log = logging.getLogger("crispml.feast")


def read_header(path: Path) -> list[str]:
    """The column names of a CSV or Parquet file, from its header alone."""
    if path.suffix.lower() in {".parquet", ".pq"}:
        import pyarrow.parquet as pq

        return list(pq.read_schema(path).names)
    with path.open(newline="") as fh:
        return next(csv.reader(fh), [])


def _release_metrics_dir() -> None:
    """Keep Feast's metrics folder out of the processes crispml starts next.

    Importing Feast (0.67) makes a temporary folder for prometheus_client, names it in
    ``PROMETHEUS_MULTIPROCESS_DIR``/``PROMETHEUS_MULTIPROC_DIR`` and deletes it when this
    process exits. A process started afterwards with this environment (a BentoML backend from
    ``crispml run``, the Prefect serve process from ``crispml schedule``) would inherit a folder
    about to vanish; its next Feast import then fails (``FileNotFoundError: …/gauge_liveall_<pid>.db``).
    Dropping the two names from the environment lets such a process make its own folder; this
    process keeps the one prometheus_client already opened."""
    import os
    import sys

    metrics = sys.modules.get("feast.metrics")
    if metrics is None or not getattr(metrics, "_owns_mp_dir", False) or metrics._owner_pid != os.getpid():
        return
    for name in ("PROMETHEUS_MULTIPROCESS_DIR", "PROMETHEUS_MULTIPROC_DIR"):
        if os.environ.get(name) == metrics._prometheus_mp_dir:
            del os.environ[name]


def _read_definitions(repo: Path | None) -> Any:
    from crispml_feast._definitions import DefinitionError, load_definitions

    if repo is None:
        return None
    try:
        return load_definitions(repo)
    except DefinitionError as exc:
        raise ValueError(str(exc)) from None
    finally:
        _release_metrics_dir()


class LoadOptions(Options):
    # Fields are validated in this order: each check reads the ones before it (info.data).
    repo: ExistingPath
    """The Feast repository: definition files (``*.py``), and optionally a ``feature_store.yaml``."""
    feature_service: str
    """The feature service whose features the dataset gets (the unit of training and serving)."""
    entities: ExistingPath
    """A CSV or Parquet file: the entity keys, an event time and (for training) the label."""
    timestamp_column: str = Field(default="event_timestamp", validate_default=True)
    """The entities file's time column; renamed ``event_timestamp`` in the dataset."""
    target: str | None = None
    """The column to predict, from the entities file."""
    filter_by_created_timestamp: bool = False
    """Ignore feature rows created after the entity row's time (hides later backfills)."""
    materialize: bool = False
    """Before a ``deploy`` step runs, materialize the online store up to now."""
    on_missing: Literal["reject", "null"] = "reject"
    """At serving, keys the online store does not know: ``reject`` (HTTP 400 naming them) or
    ``null`` (the model gets nulls, as training rows without features had). Training keeps such
    rows either way (gate on ``share_without_features`` to refuse too many)."""
    online_store: dict[str, Any] | None = None
    """Feast's ``online_store`` settings (``{type: redis, connection_string: ...}``) for the
    embedded configuration; default: SQLite under ``.crispml/feast/<project>/``."""
    project: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_]*$")
    """The Feast project name of the embedded configuration (default: the repo folder's name)."""
    name: str | None = None
    """The dataset's name (default: the feature service's)."""

    @field_validator("repo")
    @classmethod
    def _repo_has_definitions(cls, repo: Path) -> Path:
        if not repo.is_dir():
            raise ValueError(f"expected a folder of Feast definitions, got a file: {repo}")
        _read_definitions(repo)
        return repo

    @field_validator("feature_service")
    @classmethod
    def _service_is_defined(cls, name: str, info: ValidationInfo) -> str:
        definitions = _read_definitions(info.data.get("repo"))
        if definitions is not None and definitions.service(name) is None:
            services = ", ".join(definitions.service_names()) or "none"
            raise ValueError(f"no feature service '{name}' in {definitions.shown} (services: {services})")
        return name

    @field_validator("entities")
    @classmethod
    def _entities_have_keys(cls, path: Path, info: ValidationInfo) -> Path:
        if path.is_dir():
            raise ValueError(f"expected a CSV or Parquet file, got a folder: {path}")
        columns = _header(path)
        definitions = _read_definitions(info.data.get("repo"))
        name = info.data.get("feature_service")
        if definitions is not None and name is not None:
            service = definitions.service(name)
            for key in definitions.join_keys(service):
                if key not in columns:
                    raise ValueError(
                        f"{path.name} lacks entity column '{key}' that {name} needs (columns: {', '.join(columns)})"
                    )
            provided = [ref.split(":", 1)[1] for ref in definitions.feature_refs(service)]
            clash = [c for c in columns if c in provided]
            if clash:
                raise ValueError(
                    f"{path.name} has column(s) {', '.join(clash)} that {name} provides: "
                    "rename or drop them (the feature store's values are the ones served)"
                )
        return path

    @field_validator("timestamp_column")
    @classmethod
    def _timestamp_in_entities(cls, column: str, info: ValidationInfo) -> str:
        path = info.data.get("entities")
        if path is None:
            return column
        columns = _header(path)
        if column not in columns:
            hint = "" if "timestamp_column" in (info.data or {}) else " (set load.timestamp_column)"
            raise ValueError(f"{path.name} has no time column '{column}'{hint} (columns: {', '.join(columns)})")
        if column != "event_timestamp" and "event_timestamp" in columns:
            raise ValueError(
                f"{path.name} has both '{column}' and 'event_timestamp': the time column is renamed "
                "event_timestamp, so rename or drop the other"
            )
        return column

    @field_validator("target")
    @classmethod
    def _target_in_entities(cls, target: str | None, info: ValidationInfo) -> str | None:
        path = info.data.get("entities")
        if target is None or path is None:
            return target
        columns = _header(path)
        if target not in columns:
            raise ValueError(f"column '{target}' is not in {path.name} (columns: {', '.join(columns)})")
        if target == info.data.get("timestamp_column"):
            raise ValueError(f"'{target}' is the time column, it cannot be the target")
        return target

    @field_validator("online_store")
    @classmethod
    def _online_store_is_feasts(cls, online: dict[str, Any] | None, info: ValidationInfo) -> dict[str, Any] | None:
        repo = info.data.get("repo")
        if online is None or repo is None:
            return online
        from crispml_feast._store import YAML

        if (repo / YAML).is_file():
            raise ValueError(f"{repo.name}/{YAML} configures the store: set the online store there, not here")
        if "type" not in online:
            raise ValueError("expected Feast's online_store settings with a 'type' (sqlite, redis, ...)")
        from feast import RepoConfig

        try:
            config = RepoConfig(
                project="check", provider="local", registry="registry.db", online_store=online, repo_path=repo
            )
            _ = config.online_store  # resolving the property validates the settings
        except Exception as exc:
            raise ValueError(f"not a valid Feast online store: {str(exc).splitlines()[0]}") from None
        return online

    def external_inputs(self) -> list[Path]:
        # The entities file, every definition file, the store's YAML and the local files the
        # feature views read: a change to any of them re-runs the load.
        from crispml_feast._definitions import load_definitions
        from crispml_feast._store import YAML

        definitions = load_definitions(self.repo)
        extra = [self.repo / YAML] if (self.repo / YAML).is_file() else []
        return [self.entities, *definitions.files, *extra, *definitions.source_files()]

    def provided_columns(self) -> tuple[list[str], str] | None:
        """The dataset's columns, known before the join runs: the entities file's (its time
        column renamed ``event_timestamp``), then the feature service's features."""
        from crispml_feast._definitions import load_definitions

        try:
            definitions = load_definitions(self.repo)
            service = definitions.service(self.feature_service)
            features = [ref.split(":", 1)[1] for ref in definitions.feature_refs(service)]
            header = ["event_timestamp" if c == self.timestamp_column else c for c in read_header(self.entities)]
        except Exception:
            return None  # the load step reports it when it runs
        return [*header, *(f for f in features if f not in header)], f"{self.feature_service} × {self.entities.name}"

    def provided_metrics(self) -> list[str]:
        return ["rows", "rows_without_features", "share_without_features"]


def _header(path: Path) -> list[str]:
    try:
        return read_header(path)
    except Exception as exc:
        raise ValueError(f"cannot read the header of {path.name}: {exc}") from None


@hookimpl
def crispml_declare() -> Declaration:
    return Declaration(
        stages={"load": LoadOptions},
        backends=(
            Backend("feast", "feast", extra="feast"),
            Backend("duckdb", "duckdb", extra="feast"),
            Backend("ibis-framework", "ibis", extra="feast"),
        ),
        description="Point-in-time training data from a Feast feature service; materialize the online store.",
    )


@hookimpl
def crispml_load(options: LoadOptions, context: RunContext) -> Dataset:
    from crispml_feast._load import load_dataset

    try:
        return load_dataset(options, context)
    finally:
        _release_metrics_dir()


@hookimpl
def crispml_before_stage(stage: str, context: RunContext) -> None:
    """With ``materialize: true`` on a feast load step, materialize before ``deploy``: one
    ``crispml run`` on a fresh clone then serves (and ``load`` stays cacheable)."""
    if stage != "deploy":
        return
    options = context.step_options("load", "feast")
    if not isinstance(options, LoadOptions) or not options.materialize:
        return
    from crispml_feast._materialize import materialize_for_run

    try:
        materialize_for_run(options, context)
    finally:
        _release_metrics_dir()


@hookimpl
def crispml_serving_features(spec: dict[str, Any], project_dir: Path) -> ServingFeatures:
    """The resolver, its configuration and a registry snapshot for a model trained on a feast
    load step — refused when a recorded feature was removed or changed type since."""
    from crispml_feast._serving import serving_features

    try:
        return serving_features(spec, project_dir)
    finally:
        _release_metrics_dir()


@hookimpl
def crispml_register_commands(cli: click.Group) -> None:
    from crispml_feast._cli import features, materialize

    cli.add_command(features)
    cli.add_command(materialize)
