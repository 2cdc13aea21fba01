"""Connecting to MLflow: the tracking URI, the embedded store, timeouts, telemetry, locks.

Imported only from hook bodies and commands. ``mlflow()`` imports MLflow itself, after the
environment it reads at import time (telemetry) is set.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import logging
import os
import sys
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import crispml
from crispml import CrispmlError

EMBEDDED_DB = "mlflow.db"
ARTIFACTS_DIR = "mlartifacts"
STORE_DIR = ".crispml"

# MLflow's client is partly global (the fluent API that ``log_model`` uses reads the global
# tracking URI, and so does its registry when it registers a logged model): operations that rely
# on that state hold this lock for their whole length (``process_uris_kept``).
FLUENT_LOCK = threading.RLock()
_INITIALISED: set[str] = set()


# Set before MLflow is first imported (it reads some at import time): no telemetry (which would
# also write an installation id under ~/.config), short HTTP backoff.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", "0")
# MLflow prints "View run ... at: <tracking URI>" to stdout, password included; the manifest's
# links (and `crispml show`) give the run's URL with the password masked instead.
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")


class TrackingServerError(CrispmlError):
    """The MLflow tracking server did not answer (or answered with an error)."""


class StoreError(CrispmlError):
    """The embedded MLflow store is empty, truncated or corrupt: a backend failure (exit 1) that
    names the file, never a fresh registry silently put in its place."""


SQLITE_HEADER = b"SQLite format 3\x00"


def mlflow() -> ModuleType:
    """Import MLflow with telemetry off and its INFO chatter quiet."""
    import mlflow as _mlflow

    if "MLFLOW_LOGGING_LEVEL" not in os.environ:
        logging.getLogger("mlflow").setLevel(logging.WARNING)
        logging.getLogger("alembic").setLevel(logging.WARNING)
    return _mlflow


_URI_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
_scopes = 0  # how deep the current ``process_uris_kept`` scopes are nested (under FLUENT_LOCK)


@contextlib.contextmanager
def process_uris_kept() -> Iterator[None]:
    """The scope of one crispml operation that points MLflow's process-global URIs at its store
    (``fluent``): the register stage, a ``load_model``. When the outermost scope ends, the
    process's own tracking and registry URIs, and the ``MLFLOW_TRACKING_URI`` and
    ``MLFLOW_REGISTRY_URI`` that ``set_tracking_uri``/``set_registry_uri`` export, are what they
    were before it began — so that a notebook's ``MlflowClient()``, or the next test in the same
    process, reads its own store and not the last run's.

    Not at the end of ``fluent`` itself: MLflow goes on reading the globals after
    ``log_model`` returns (its SQL registry resolves the logged model ``models:/m-…`` through a
    bare ``MlflowClient()`` in ``create_model_version``), so they must stay until the operation
    that needed them is over. The scope holds ``FLUENT_LOCK`` throughout: another thread's
    operation cannot repoint (or restore) the globals in the middle of this one. Take it before
    any file lock (``register`` does), never after, so that two threads cannot wait on each other.
    """
    global _scopes
    with FLUENT_LOCK:
        if _scopes:  # nested (fluent inside the register stage): the outermost scope restores
            _scopes += 1
            try:
                yield
            finally:
                _scopes -= 1
            return
        tracking, registry = _global_uris()
        environment = {k: os.environ.get(k) for k in _URI_VARIABLES}
        _scopes = 1
        try:
            yield
        finally:
            _scopes = 0
            _restore_global_uris(tracking, registry)
            _restore_environment(environment)


_TRACKING_UTILS = "mlflow.tracking._tracking_service.utils"
_REGISTRY_UTILS = "mlflow.tracking._model_registry.utils"


def _global_uris() -> tuple[str | None, str | None]:
    """MLflow's global URIs as set, not as resolved (``get_tracking_uri`` would turn "never set"
    into a default, pinned from then on if put back); private names, MLflow has no public
    "unset". Both ``None`` while MLflow is not imported: a scope that finds nothing of MLflow
    loaded (a ``load_model`` of a reference that is not this plugin's) does not import it."""
    tracking_utils, registry_utils = sys.modules.get(_TRACKING_UTILS), sys.modules.get(_REGISTRY_UTILS)
    return (
        getattr(tracking_utils, "_tracking_uri", None),
        getattr(registry_utils, "_registry_uri", None),
    )


def _restore_global_uris(tracking: str | None, registry: str | None) -> None:
    tracking_utils, registry_utils = sys.modules.get(_TRACKING_UTILS), sys.modules.get(_REGISTRY_UTILS)
    if tracking_utils is not None and tracking_utils._tracking_uri != tracking:
        # Through set_tracking_uri: it also resets the tracer provider that caches the URI.
        tracking_utils.set_tracking_uri(tracking)
    if registry_utils is not None:
        registry_utils._registry_uri = registry


def _restore_environment(saved: dict[str, str | None]) -> None:
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@contextlib.contextmanager
def fluent(uri: str) -> Iterator[ModuleType]:
    """MLflow's fluent API pointed at ``uri`` for the duration (``log_model`` and
    ``pyfunc.load_model`` read the global URIs), inside a ``process_uris_kept`` scope: the
    globals stay on ``uri`` until the operation around it ends (alone, until this ends).
    ``set_tracking_uri`` also exports ``MLFLOW_TRACKING_URI``: the environment is restored as
    this ends, so that it never leaks into the next run's choice of store."""
    with process_uris_kept():
        saved = {k: os.environ.get(k) for k in _URI_VARIABLES}
        module = mlflow()
        try:
            module.set_tracking_uri(uri)
            module.set_registry_uri(uri)
            yield module
        finally:
            _restore_environment(saved)


def set_http_limits(timeout: int, max_retries: int) -> None:
    """Bound every HTTP request MLflow makes from here on (read by MLflow per request)."""
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(timeout)
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(max_retries)


def embedded_uri(project_dir: Path) -> str:
    return f"sqlite:///{project_dir / STORE_DIR / EMBEDDED_DB}"


def tracking_uri(option: str | None, project_dir: Path) -> str:
    """The option, else ``$MLFLOW_TRACKING_URI``, else the embedded store of the project."""
    return option or os.environ.get("MLFLOW_TRACKING_URI") or embedded_uri(project_dir)


def is_remote(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def sqlite_path(uri: str) -> Path | None:
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri.removeprefix("sqlite:///"))


def safe_uri(uri: str) -> str:
    """The URI without a password (``http://user:***@host``), fit for logs and tags."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    netloc = f"{parts.username}:***@{host}" if parts.username else f"***@{host}"
    return urlunsplit(parts._replace(netloc=netloc))


def artifact_root(uri: str, project_dir: Path) -> str | None:
    """Where new experiments keep artifacts: next to a SQLite store; the server's default else."""
    db = sqlite_path(uri)
    if db is not None:
        return str(db.parent / ARTIFACTS_DIR)
    if is_remote(uri):
        return None
    return str(project_dir / STORE_DIR / ARTIFACTS_DIR)


file_lock = crispml.file_lock  # kept as a name here: the registry modules and the tests use it


def lock_path(project_dir: Path, what: str) -> Path:
    digest = hashlib.sha256(what.encode()).hexdigest()[:16]
    return project_dir / STORE_DIR / "locks" / f"mlflow-{digest}.lock"


def _init_sqlite(uri: str, project_dir: Path) -> None:
    """Create (or check) a SQLite store once per process, under a lock: two processes starting
    at once would otherwise both run the migrations.

    A new store is migrated under a temporary name and renamed into place, so ``mlflow.db``
    either does not exist or is complete: an existing one that is empty, or not a readable
    MLflow store, was damaged after the fact and is refused (``check_sqlite``) rather than
    replaced by an empty registry whose first model would become champion. The store's default
    artifact root is set here so that MLflow's default experiment does not create ``./mlruns``
    in the working directory."""
    if uri in _INITIALISED:
        return
    db = sqlite_path(uri)
    assert db is not None
    db.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(db.with_name(db.name + ".lock")), warnings.catch_warnings():
        if db.exists():
            check_sqlite(db)
        else:
            warnings.filterwarnings("ignore", message=".*noload.*", category=DeprecationWarning)
            mlflow()
            from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

            for leftover in db.parent.glob(f"{db.name}.creating-*"):
                leftover.unlink(missing_ok=True)  # a creator killed before its rename (we hold the lock)
            creating = db.with_name(f"{db.name}.creating-{os.getpid()}")
            try:
                store = SqlAlchemyStore(f"sqlite:///{creating}", artifact_root(uri, project_dir))
                store.engine.dispose()
                os.replace(creating, db)
            finally:
                creating.unlink(missing_ok=True)
    _INITIALISED.add(uri)


def _shown(path: Path) -> str:
    """``path`` as the user would type it from here: relative when under the working directory."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def check_sqlite(db: Path) -> None:
    """Refuse, in one line naming the file, an embedded store that is empty, not SQLite,
    truncated or corrupt, or not MLflow's: whatever crispml would do with it next (read a
    champion, register a first model) would be wrong."""
    where = _shown(db)
    restore = "restore it from a backup, or move it aside to start a new, empty registry"
    if db.stat().st_size == 0:
        raise StoreError(
            f"mlflow: {where} is empty (0 bytes), not an MLflow store; crispml will not start a new registry "
            f"over it (its first model would become champion): {restore}"
        )
    with db.open("rb") as f:
        header = f.read(len(SQLITE_HEADER))
    if header != SQLITE_HEADER:
        raise StoreError(f"mlflow: {where} is not an SQLite database (corrupt or overwritten): {restore}")
    import sqlite3

    try:
        with contextlib.closing(sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=30)) as conn:
            problem = conn.execute("PRAGMA quick_check").fetchone()[0]
            if problem != "ok":
                raise sqlite3.DatabaseError(str(problem).splitlines()[0])
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc):
            raise  # busy, not damaged: an ordinary backend failure
        raise StoreError(f"mlflow: {where} is corrupt or truncated ({exc}): {restore}") from None
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"mlflow: {where} is corrupt or truncated ({exc}): {restore}") from None
    if not {"alembic_version", "experiments", "registered_models"} <= tables:
        raise StoreError(f"mlflow: {where} is an SQLite database but not an MLflow store: {restore}")


def client(uri: str, project_dir: Path, *, timeout: int = 10, max_retries: int = 1) -> Any:
    """An ``MlflowClient`` for ``uri`` (tracking and registry alike), its store ready."""
    mlflow()
    set_http_limits(timeout, max_retries)
    if sqlite_path(uri) is not None:
        _init_sqlite(uri, project_dir)
        with warnings.catch_warnings():
            # SQLAlchemy 2.1 deprecates a loader option MLflow's store uses, at import.
            warnings.filterwarnings("ignore", message=".*noload.*", category=DeprecationWarning)
            importlib.import_module("mlflow.store.tracking.sqlalchemy_store")
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def check_reachable(mlflow_client: Any, uri: str, timeout: int, max_retries: int) -> None:
    """Fail fast, and clearly, when a tracking server does not answer."""
    if not is_remote(uri):
        return
    try:
        mlflow_client.search_experiments(max_results=1)
    except Exception as exc:
        raise TrackingServerError(
            f"mlflow: the tracking server at {safe_uri(uri)} did not answer "
            f"(timeout {timeout}s, {max_retries} retries): {crispml.one_line(exc)}"
        ) from None


def user() -> str:
    try:
        import getpass

        name = getpass.getuser()
    except Exception:
        name = "unknown"
    import socket

    return f"{name}@{socket.gethostname()}"
