"""``crispml_resolve_model``: a registered version described for whoever serves it.

A serving plugin asks ``crispml.resolve_model("churn@champion")`` and gets a
:class:`crispml.ResolvedModel`: the local folder of the MLflow model (the artifact folder itself
when it is on this machine, else a download under ``.crispml/mlflow/resolved/``), its flavor, its
signature as columns, its input example as records, its lineage from crispml's version tags, and
the serving spec a feature store recorded with it (``metadata["crispml"]["serving"]``). Nothing
outside this plugin reads MLflow's files, tags or options.

References: ``name@alias``, ``name/version``, and both with a ``models:/`` prefix. A reference
that is not of that shape, a project without an embedded registry, or a model name the registry
does not hold gives ``None``: another registry plugin may know it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from crispml import CrispmlError, ResolvedModel, RunContext, UsageError
from crispml_mlflow import _backend
from crispml_mlflow._tags import not_found

_REF = re.compile(r"^(?:models:/)?(?P<name>[A-Za-z][A-Za-z0-9_.-]*)(?:@(?P<alias>[A-Za-z0-9_-]+)|/(?P<version>\d+))$")
_RESOLVED_DIR = "resolved"


def parse(reference: str) -> tuple[str, str | None, str | None] | None:
    """``[models:/]name@alias`` → (name, alias, None); ``[models:/]name/3`` → (name, None, "3")."""
    match = _REF.match(reference.strip())
    if not match:
        return None
    return match["name"], match["alias"], match["version"]


def registry_uri(project_dir: Path, context: RunContext | None) -> str:
    """In a run, this plugin's own options decide (the register step's ``tracking_uri``, else the
    tracker's); else ``$MLFLOW_TRACKING_URI``, else the project's embedded registry."""
    option = None
    if context is not None:
        register = context.step_options("register", "mlflow")  # this plugin's own step, if any
        option = getattr(register, "tracking_uri", None)
        if option is None:
            tracker = context.tracker_options("mlflow")  # this plugin's own tracker options
            option = getattr(tracker, "tracking_uri", None)
    return _backend.tracking_uri(option, project_dir)


@contextlib.contextmanager
def _one_line(uri: str, reference: str) -> Iterator[None]:
    """Any failure of the registry or its artifacts (unreachable, broken) as one line."""
    try:
        yield
    except UsageError:
        raise
    except Exception as exc:
        from mlflow.exceptions import MlflowException

        if not isinstance(exc, MlflowException | OSError | CrispmlError):
            raise
        message = " ".join(str(exc).split()) or type(exc).__name__
        raise CrispmlError(
            f"cannot resolve {reference} (MLflow registry {_backend.safe_uri(uri)}): {message[:300]}"
        ) from None


def resolve(reference: str, project_dir: Path, context: RunContext | None) -> ResolvedModel | None:
    parsed = parse(reference)
    if parsed is None:
        return None
    uri = registry_uri(project_dir, context)
    db = _backend.sqlite_path(uri)
    if db is not None and not db.exists():
        return None  # no embedded registry in this project: do not create one to look
    with _one_line(uri, reference):
        client = _backend.client(uri, project_dir)
        _backend.check_reachable(client, uri, 10, 1)
        return _resolve(client, uri, project_dir, reference, *parsed)


def _resolve(
    client: Any, uri: str, project_dir: Path, reference: str, name: str, alias: str | None, version: str | None
) -> ResolvedModel | None:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException as exc:
        if not_found(exc):
            return None
        raise
    try:
        mv = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, version)
    except MlflowException as exc:
        if not not_found(exc):
            raise
        known = sorted(int(v.version) for v in client.search_model_versions(f"name='{name}'"))
        what = f"alias '{alias}'" if alias else f"version {version}"
        raise UsageError(
            f"model '{name}' has no {what} (versions: {', '.join(map(str, known)) or 'none'}; see: crispml models)"
        ) from None
    folder = _local_folder(client, uri, project_dir, mv)
    return describe(reference, name, str(mv.version), folder, mv, uri)


def _artifact_location(client: Any, mv: Any) -> str:
    """Where the version's files are, without MLflow's global URIs (which resolving a
    ``models:/`` URI would read): a logged model's artifact location, else the version's source."""
    source = str(mv.source)
    model_id = getattr(mv, "model_id", None)
    if source.startswith("models:/m-") or (model_id and source.startswith("models:/")):
        logged = client.get_logged_model(model_id or source.removeprefix("models:/").split("/")[0])
        return str(logged.artifact_location)
    return source


def _local_path(location: str) -> Path | None:
    parts = urlsplit(location)
    if parts.scheme == "file":
        return Path(parts.path)
    if parts.scheme == "" and location.startswith("/"):
        return Path(location)
    return None


def _local_folder(client: Any, uri: str, project_dir: Path, mv: Any) -> Path:
    location = _artifact_location(client, mv)
    local = _local_path(location)
    if local is not None and (local / "MLmodel").is_file():
        return local
    digest = hashlib.sha256(f"{_backend.safe_uri(uri)}|{mv.name}|{mv.version}|{location}".encode()).hexdigest()[:16]
    target = project_dir / ".crispml" / "mlflow" / _RESOLVED_DIR / f"{mv.name}-{mv.version}-{digest}"
    if (target / "MLmodel").is_file():
        return target
    import mlflow.artifacts

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".download-", dir=target.parent))
    try:
        if location.startswith("runs:/"):
            run_id, _, path = location.removeprefix("runs:/").partition("/")
            got = mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=path, dst_path=str(staging), tracking_uri=uri
            )
        else:
            got = mlflow.artifacts.download_artifacts(artifact_uri=location, dst_path=str(staging), tracking_uri=uri)
        with contextlib.suppress(OSError):  # another process got there first: theirs is complete
            os.replace(got, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _signature(mlmodel: Any) -> list[dict[str, Any]] | None:
    signature = mlmodel.signature
    if signature is None or signature.inputs is None:
        return None
    from mlflow.types.schema import ColSpec

    columns = []
    for spec in signature.inputs.inputs:
        if not isinstance(spec, ColSpec) or spec.name is None:
            return None  # tensors, or unnamed columns: not a table a request can name
        columns.append(
            {
                "name": spec.name,
                "type": getattr(spec.type, "name", str(spec.type)),
                "required": bool(getattr(spec, "required", True)),
            }
        )
    return columns


def _input_example(mlmodel: Any, folder: Path) -> list[dict[str, Any]] | None:
    try:
        example = mlmodel.load_input_example(str(folder))
    except Exception:
        return None
    if example is None or not hasattr(example, "to_json"):
        return None
    records = json.loads(example.to_json(orient="records"))
    return records if isinstance(records, list) else None


def _requirements(folder: Path) -> list[str]:
    path = folder / "requirements.txt"
    if not path.is_file():
        return []
    lines = (line.strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith(("#", "-"))]


def describe(reference: str, name: str, version: str, folder: Path, mv: Any, uri: str) -> ResolvedModel:
    from mlflow.models import Model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mlmodel = Model.load(str(folder))
    tags = mv.tags or {}
    crispml_meta = (mlmodel.metadata or {}).get("crispml") or {}
    return ResolvedModel(
        reference=reference,
        name=name,
        version=version,
        path=folder,
        flavor="mlflow.sklearn" if "sklearn" in mlmodel.flavors else "mlflow.pyfunc",
        signature=_signature(mlmodel),
        lineage={
            "training_run": tags.get("crispml.run_id"),
            "data_fingerprint": tags.get("crispml.data_fingerprint"),
            "registry": "mlflow",
            "uri": f"models:/{name}/{version}",
            "run_id": mv.run_id,
        },
        input_example=_input_example(mlmodel, folder),
        serving=crispml_meta.get("serving"),
        metadata={
            "tracking_uri": _backend.safe_uri(uri),
            "model_id": getattr(mv, "model_id", None),
            "source": str(mv.source),
            "requirements": _requirements(folder),
            "key_example": crispml_meta.get("key_example"),
        },
    )
