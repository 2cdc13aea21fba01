"""Release packaging: a folder that ``bentoml serve`` (and ``crispml build``) runs on its own.

A release is made from a :class:`crispml.ResolvedModel` — whichever registry plugin resolved
it — and holds the model's files (``model/``), ``spec.json`` (deployment, lineage, the request
schema from the model's signature, the prediction log's settings, the feature store's serving
spec when there is one), and copies of ``_service.py`` and ``_flavors.py``. Nothing in it
imports crispml, so a bento built from it runs where crispml is not installed.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crispml import CrispmlError, ResolvedModel, UsageError, atomic_write_json
from crispml_bentoml import _flavors, _state

if TYPE_CHECKING:
    from crispml_bentoml._deploy import Settings

SERVICE_SOURCE = Path(__file__).with_name("_service.py")
FLAVORS_SOURCE = Path(__file__).with_name("_flavors.py")
MODEL_DIR = "model"
"""The model's files inside a release (and inside the BentoML model)."""
FEATURES_DIR = "features"
"""A feature store's resolver and its configuration inside a release (serving by key)."""


@dataclass
class Prepared:
    """A release folder ready to start, and what the smoke gate compares the server with."""

    release: Path
    spec: dict[str, Any]
    loading: Future[Any]
    """The model, being loaded in this process from the release's files (in a thread: it overlaps
    the new server's start-up, which does not need it); :meth:`reference` waits for it."""
    label: str
    example: list[dict[str, Any]] | None
    """The version's input example (records), or ``None`` when the registry has none. With
    features from a store: the example's keys (and request-time columns), what clients send."""
    resolver: Any = None
    """With features from a store: the release's own resolver, loaded here (the smoke gate
    fetches the example's features with it, as the server will)."""

    def reference(self) -> Any:
        """The model as loaded here; the first call also records in ``spec.json`` whether it is a
        classifier (the server decides that from its own copy; the record and a build read it)."""
        try:
            model = self.loading.result()
        except Exception as exc:
            message = " ".join(str(exc).split())[:300]
            raise CrispmlError(
                f"cannot load {self.label} here for the smoke test: {type(exc).__name__}: {message}"
            ) from None
        if self.spec.get("classifier") is None:
            self.spec["classifier"] = _flavors.is_classifier(model, self.spec["flavor"])
            atomic_write_json(self.release / "spec.json", self.spec)
        return model


def model_record(resolved: ResolvedModel) -> dict[str, Any]:
    """What a deployment records (and the service answers) about the version it serves."""
    lineage = resolved.lineage or {}
    return {
        "name": resolved.name,
        "version": resolved.version,
        "reference": resolved.reference,
        "uri": lineage.get("uri") or resolved.label,
        "registry": lineage.get("registry"),
        "run_id": lineage.get("run_id"),
        "crispml_run_id": lineage.get("training_run"),
        "data_fingerprint": lineage.get("data_fingerprint"),
        "flavor": resolved.flavor,
    }


def bento_tag(resolved: ResolvedModel) -> str:
    name = re.sub(r"[^a-z0-9_.-]", "-", resolved.name.lower()).strip("-._") or "model"
    key = "|".join(
        str(x) for x in (resolved.lineage.get("registry"), resolved.lineage.get("uri"), resolved.label, resolved.path)
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:8]
    version = re.sub(r"[^A-Za-z0-9_.-]", "-", resolved.version)
    return f"{name}:v{version}-{digest}"


def columns(resolved: ResolvedModel) -> list[dict[str, Any]]:
    """The request schema: the signature's columns, each with the dtype it is cast to."""
    if not resolved.signature:
        raise UsageError(
            f"{resolved.label}: the registry gives no signature (named input columns): "
            "crispml cannot derive a request schema"
        )
    out = []
    for column in resolved.signature:
        if not isinstance(column, dict) or not isinstance(column.get("name"), str) or "type" not in column:
            raise UsageError(f"{resolved.label}: a signature column must be {{name, type}}, got {column!r}")
        kind = str(column["type"])
        out.append(
            {
                "name": column["name"],
                "type": kind,
                "dtype": _flavors.DTYPES.get(kind),
                "required": bool(column.get("required", True)),
            }
        )
    return out


def prepare_release(project: Path, settings: Settings, resolved: ResolvedModel) -> Prepared:
    """A new release folder: the model's files, ``spec.json``, ``service.py``, ``flavors.py``."""
    if resolved.flavor not in _flavors.SUPPORTED:
        raise UsageError(
            f"{resolved.label}: bentoml cannot serve a model of flavor '{resolved.flavor}' "
            f"(it serves: {', '.join(_flavors.SUPPORTED)})"
        )
    request_columns = columns(resolved)
    if not Path(resolved.path).is_dir():
        raise CrispmlError(f"{resolved.label}: the registry's folder {resolved.path} is not there")
    releases = _state.folder(project, settings.name) / "releases"
    releases.mkdir(parents=True, exist_ok=True)
    number = 1 + max((int(p.name.split("-", 1)[0]) for p in releases.iterdir() if p.name[:1].isdigit()), default=0)
    release = releases / f"{number}-v{re.sub(r'[^A-Za-z0-9_.-]', '-', resolved.version)}"
    release.mkdir()
    try:
        return _fill(release, project, settings, resolved, request_columns)
    except BaseException:
        shutil.rmtree(release, ignore_errors=True)  # nothing was started from it
        raise


def _fill(
    release: Path, project: Path, settings: Settings, resolved: ResolvedModel, request_columns: list[dict[str, Any]]
) -> Prepared:
    try:
        shutil.copytree(resolved.path, release / MODEL_DIR)
    except OSError as exc:
        raise CrispmlError(f"cannot copy {resolved.label} from {resolved.path}: {exc}") from None
    pool = ThreadPoolExecutor(1, thread_name_prefix="crispml-reference")
    loading = pool.submit(_flavors.load, release / MODEL_DIR, resolved.flavor)
    pool.shutdown(wait=False)  # the thread ends when the load does
    spec = {
        "deployment": settings.name,
        "service_name": f"crispml-{settings.name}".replace("_", "-"),
        "bento_tag": bento_tag(resolved),
        "model": model_record(resolved),
        "model_dir": MODEL_DIR,
        "flavor": resolved.flavor,
        "columns": request_columns,
        "classifier": None,  # known once the reference is loaded (Prepared.reference)
        "requirements": list(resolved.metadata.get("requirements") or []),
        "serving": resolved.serving,
        "workers": settings.workers,
        "max_records": settings.max_records,
        "prediction_log": {
            "path": str(_state.folder(project, settings.name) / "predictions.jsonl"),
            "max_bytes": settings.log_max_bytes,
            "backups": settings.log_backups,
        },
    }
    example, resolver = resolved.input_example, None
    if resolved.serving is not None:
        example, resolver = _features(release, project, resolved, spec)
    atomic_write_json(release / "spec.json", spec)
    shutil.copyfile(SERVICE_SOURCE, release / "service.py")
    shutil.copyfile(FLAVORS_SOURCE, release / "flavors.py")
    return Prepared(
        release=release, spec=spec, loading=loading, label=resolved.label, example=example, resolver=resolver
    )


_KEY_TYPES = {"int64": "long", "int32": "integer", "double": "double", "float64": "double", "string": "string"}


def _features(
    release: Path, project: Path, resolved: ResolvedModel, spec: dict[str, Any]
) -> tuple[list[dict[str, Any]] | None, Any]:
    """Serve by entity key: the feature store's plugin (whichever it is) gives the files that
    fetch features by key; clients send the keys plus the model's columns no one provides."""
    from crispml import serving_features

    assert resolved.serving is not None
    try:
        # ``model``: the version's label, for the store plugin's messages ("changed since churn/3
        # was trained"); an error whose exit code is REJECTED is the deploy's verdict (_deploy).
        features = serving_features({**resolved.serving, "model": resolved.label}, project)
    except UsageError as exc:  # e.g. a feature removed since training: name the version
        raise UsageError(f"{resolved.label}: {exc}") from None
    folder = release / FEATURES_DIR
    folder.mkdir()
    for name, content in features.files.items():
        if Path(name).name != name:
            raise CrispmlError(f"serving features: refusing a file name with a folder in it: {name!r}")
        (folder / name).write_bytes(content)
    provided = set(features.provides)
    spec["features"] = {
        "folder": FEATURES_DIR,
        "module": features.module,
        "provides": list(features.provides),
        "keys": dict(features.keys),
        "description": features.description,
    }
    spec["request_columns"] = [
        {"name": k, "type": _KEY_TYPES.get(t, "string"), "dtype": None, "required": True}
        for k, t in features.keys.items()
    ] + [c for c in spec["columns"] if c["name"] not in provided and c["name"] not in features.keys]
    spec["requirements"] = list(dict.fromkeys([*spec["requirements"], *features.requirements]))
    try:
        resolver = load_resolver(folder, features.module)
    except Exception as exc:
        raise CrispmlError(f"serving features ({features.description}): {type(exc).__name__}: {exc}") from None
    example = resolved.metadata.get("key_example")
    return (list(example) if isinstance(example, list) else None), resolver


def load_resolver(folder: Path, module: str) -> Any:
    """``module.Resolver(folder)`` from a release's feature files, imported by path (under a
    name of its own: two releases in one process never share a module)."""
    import importlib.util
    import sys

    name = f"_crispml_release_{hashlib.sha256(str(folder).encode()).hexdigest()[:12]}_{module}"
    spec = importlib.util.spec_from_file_location(name, folder / f"{module}.py")
    if spec is None or spec.loader is None:
        raise CrispmlError(f"no module {module}.py in {folder}")
    loaded = importlib.util.module_from_spec(spec)
    sys.modules[name] = loaded
    spec.loader.exec_module(loaded)
    return loaded.Resolver(folder)
