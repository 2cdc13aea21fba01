"""The Feast feature store a recipe uses: its configuration, and applying its definitions.

Without a ``feature_store.yaml`` in the repository the configuration is built here (the embedded
default): provider ``local``, registry and SQLite online store under
``.crispml/feast/<project>/``, offline store **duckdb**. Not Feast's default ``file`` (dask)
store: it silently drops entity rows with no feature value within the TTL and collapses
duplicate entity rows (feast-dev/feast#6787), unpairing labels from rows; duckdb returns one
row per entity row. With a ``feature_store.yaml`` the repository is used as written.

Definitions are applied with ``FeatureStore.apply(objects, objects_to_delete=…, partial=False)``
under a file lock, only when their content (or the configuration) changed since the last apply.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import re
import socket
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from crispml import CrispmlError, atomic_write_json, file_lock
from crispml_feast._definitions import Definitions
from crispml_feast.resolver import with_timeouts  # the served resolver bounds Redis the same way

log = logging.getLogger("crispml.feast")

STATE_DIR = Path(".crispml") / "feast"
YAML = "feature_store.yaml"


def default_project(repo: Path) -> str:
    """A Feast project name from the repository's folder name (letters, digits, underscores)."""
    name = re.sub(r"\W+", "_", repo.resolve().name).strip("_")
    return name or "features"


@dataclass(frozen=True)
class StoreSpec:
    """How to open one repository's store, and where crispml keeps its state for it."""

    repo: Path
    config: Any
    """A ``feast.RepoConfig``."""
    state: Path
    """``.crispml/feast/<project>/``."""
    fingerprint: str
    """Changes whenever the configuration does (part of the apply decision)."""
    embedded: bool

    @property
    def project(self) -> str:
        return str(self.config.project)


def store_spec(
    repo: Path,
    project_dir: Path,
    *,
    project: str | None = None,
    online_store: dict[str, Any] | None = None,
) -> StoreSpec:
    """The configuration of ``repo``'s store for a crispml project."""
    from feast import RepoConfig
    from feast.repo_config import RegistryConfig, load_repo_config

    repo = repo.resolve()
    yaml_file = repo / YAML
    if yaml_file.is_file():
        config = load_repo_config(repo, yaml_file)
        state = project_dir / STATE_DIR / str(config.project)
        fingerprint = hashlib.sha256(yaml_file.read_bytes()).hexdigest()
        return StoreSpec(repo, config, state, fingerprint, embedded=False)
    name = project or default_project(repo)
    state = project_dir / STATE_DIR / name
    online = with_timeouts(dict(online_store)) if online_store else {"type": "sqlite", "path": str(state / "online.db")}
    raw = {
        "project": name,
        "provider": "local",
        "registry": str(state / "registry.db"),
        "online_store": online,
        "offline_store": {"type": "duckdb"},
        "entity_key_serialization_version": 3,
    }
    config = RepoConfig(
        project=name,
        provider="local",
        registry=RegistryConfig(registry_type="file", path=raw["registry"]),
        online_store=online,
        offline_store=raw["offline_store"],
        entity_key_serialization_version=3,
        repo_path=repo,
    )
    fingerprint = hashlib.sha256(json.dumps(raw, sort_keys=True).encode()).hexdigest()
    return StoreSpec(repo, config, state, fingerprint, embedded=True)


def check_reachable(spec: StoreSpec, timeout: float = 3.0) -> None:
    """Fail in seconds, in one line, when a Redis online store does not answer.

    redis-py retries a failed connection ten times with backoff: half a minute or more before
    Feast reports anything. One plain TCP connect, bounded, comes first instead (for the
    commands and stages that need the online store; training does not).
    """
    online = spec.config.online_store
    if getattr(online, "type", None) != "redis":
        return
    first = str(online.connection_string).split(",")[0]
    host, _, port = first.rpartition(":")
    try:
        with socket.create_connection((host or "localhost", int(port or 6379)), timeout=timeout):
            return
    except (OSError, ValueError) as exc:
        raise CrispmlError(
            f"feast online store: Redis at {first} does not answer within {timeout:g} s ({exc})"
        ) from None


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Feast's own chatter (stdout prints, colour codes, deprecation warnings of its
    dependencies) goes to the debug log instead of the user's terminal or their test run."""
    out = io.StringIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", UserWarning)
        try:
            with contextlib.redirect_stdout(out):
                yield
        finally:
            text = out.getvalue().strip()
            if text:
                log.debug("feast: %s", re.sub(r"\x1b\[[0-9;]*m", "", text))


def open_store(spec: StoreSpec, definitions: Definitions) -> Any:
    """A ``feast.FeatureStore`` whose registry holds ``definitions`` (applied if they changed)."""
    from feast import FeatureStore

    spec.state.mkdir(parents=True, exist_ok=True)
    store = FeatureStore(config=spec.config, repo_path=str(spec.repo))
    apply_if_changed(store, spec, definitions)
    return store


def _wanted(spec: StoreSpec, definitions: Definitions) -> str:
    from feast import __version__ as feast_version

    material = f"{definitions.content_hash()}\n{spec.fingerprint}\n{feast_version}"
    return hashlib.sha256(material.encode()).hexdigest()


def _registry_readable(path: Path) -> bool:
    """Whether the embedded registry parses. Feast writes it in place (not atomically): a
    process killed mid-write leaves a torn file that would fail every later run. A torn file is
    set aside (``registry.db.torn-<time>``) and the definitions are applied again (they are the
    registry's source; materialization intervals restart from the views' ttl)."""
    if not path.is_file():
        return False
    from feast.protos.feast.core.Registry_pb2 import Registry as RegistryProto

    try:
        RegistryProto().ParseFromString(path.read_bytes())
        return True
    except Exception as exc:
        aside = path.with_name(f"{path.name}.torn-{datetime.now(UTC):%Y%m%dT%H%M%S}")
        path.replace(aside)
        log.warning("feast: the registry %s could not be read (%s): set aside as %s, applying again", path, exc, aside)
        return False


def _applied(spec: StoreSpec) -> str | None:
    marker = spec.state / "applied.json"
    if spec.embedded and not _registry_readable(spec.state / "registry.db"):
        return None  # the registry is gone or torn: whatever the marker says, apply again
    try:
        return str(json.loads(marker.read_text())["hash"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def apply_if_changed(store: Any, spec: StoreSpec, definitions: Definitions) -> bool:
    """Apply ``definitions`` unless the last apply was of the same content; ``True`` if applied.

    Decided and done under ``.crispml/feast/<project>/apply.lock``: two runs starting together
    apply once, and a run never reads a registry half-way through another's apply.
    """
    wanted = _wanted(spec, definitions)
    if _applied(spec) == wanted:
        return False
    from feast.repo_operations import extract_objects_for_apply_delete

    with file_lock(spec.state / "apply.lock"):
        if _applied(spec) == wanted:
            return False
        with quiet():
            to_apply, to_delete, _, _ = extract_objects_for_apply_delete(
                spec.project,
                store.registry,
                definitions.repo_contents(spec.project, getattr(spec.config, "project_description", None) or ""),
            )
            store.apply(to_apply, objects_to_delete=to_delete, partial=False)
        atomic_write_json(
            spec.state / "applied.json",
            {
                "hash": wanted,
                "applied": datetime.now(UTC).isoformat(timespec="seconds"),
                "files": [str(p.relative_to(definitions.folder)) for p in definitions.files],
                "applied_objects": sorted(f"{type(o).__name__}:{o.name}" for o in to_apply),
                "deleted_objects": sorted(f"{type(o).__name__}:{o.name}" for o in to_delete),
            },
        )
    log.info("feast: applied %s (%d objects, %d deleted)", definitions.shown, len(to_apply), len(to_delete))
    return True
