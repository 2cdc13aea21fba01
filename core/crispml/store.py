"""The run store: ``.crispml/runs/<id>/`` (manifests, stage results, artifacts) and the cache.

Every write goes to a temporary file in the same folder, is flushed to disk, then renamed over
the target: a reader, or a process killed with ``kill -9`` at any moment, sees the old file or
the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import secrets
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crispml.errors import UsageError

if TYPE_CHECKING:
    from crispml.manifest import Manifest

STORE_DIR = ".crispml"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that the file is never seen half-written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _atomic_link(source: Path, target: Path) -> None:
    """Make ``target`` the same file as ``source`` (a hard link, else a copy), atomically."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    try:
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copy2(source, tmp)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def file_lock(path: Path, *, blocking: bool = True) -> Iterator[None]:
    """An exclusive lock between processes on this machine (``fcntl.flock`` on ``path``).

    For plugins that must serialise a read-decide-write against shared state: moving a registry
    alias, switching a deployment. The lock goes with the open file, so a process killed with
    ``kill -9`` releases it. With ``blocking=False``, a lock another process holds raises
    ``BlockingIOError`` at once (for "one at a time, skip the rest": a retrain per recipe).
    POSIX only (Linux, macOS): ``fcntl`` is imported here, on first use, so that nothing else in
    crispml depends on it.
    """
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX if blocking else fcntl.LOCK_EX | fcntl.LOCK_NB)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def atomic_write_json(path: Path, value: Any) -> None:
    atomic_write_bytes(path, json.dumps(value, indent=2, default=str).encode())


PROJECT_KEY = "hmac.key"
"""Under ``.crispml/``: the project's random key for keyed digests (:func:`project_key`)."""

_KEY_BYTES = 32


def read_project_key(root: Path) -> bytes | None:
    """The project's key (``root`` is its ``.crispml/``), or ``None`` when there is none yet (or
    only a torn one: a short key is no key)."""
    try:
        value = (root / PROJECT_KEY).read_bytes()
    except OSError:
        return None
    return value if len(value) == _KEY_BYTES else None


def project_key(root: Path) -> bytes:
    """The project's random key for keyed digests (HMAC-SHA256), made on first need.

    Whatever a digest of a secret is written into (a cache entry's name, a manifest's
    fingerprint) then cannot be turned back into the secret by hashing guesses: without this
    key, a digest of ``hunter2`` looks like any other. The file, ``.crispml/hmac.key``, is
    readable by its owner only (0600). It is written whole to a temporary file, then linked
    into place: a process killed half-way leaves no short key behind, and two processes making
    it at once agree on the first one's.
    """
    existing = read_project_key(root)
    if existing is not None:
        return existing
    path = root / PROJECT_KEY
    root.mkdir(parents=True, exist_ok=True)
    value = secrets.token_bytes(_KEY_BYTES)
    fd, tmp = tempfile.mkstemp(dir=root, prefix=f".{PROJECT_KEY}.")  # mode 0600
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(value)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)  # never over another process's key
        except FileExistsError:
            existing = read_project_key(root)
            if existing is not None:
                return existing
            os.replace(tmp, path)  # an unreadable or short one: replace it
    finally:
        Path(tmp).unlink(missing_ok=True)
    return value


def find_project(start: Path | None = None) -> Path:
    """The project folder: ``$CRISPML_PROJECT``, else the nearest ancestor holding ``.crispml/``,
    else the current folder (like git finds its work tree)."""
    env = os.environ.get("CRISPML_PROJECT")
    if env:
        return Path(env).resolve()
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / STORE_DIR).is_dir():
            return folder
    return here


def _plain_name(run_id: str) -> bool:
    """A run id names a folder directly under ``runs/``: no separators, no ``..``."""
    return bool(run_id) and run_id not in (".", "..") and "/" not in run_id and os.sep not in run_id


def new_run_id() -> str:
    """Sortable and unique: ``20261123-101502-3fa9c1``."""
    return time.strftime("%Y%m%d-%H%M%S", time.localtime()) + "-" + secrets.token_hex(3)


class RunStore:
    """Reads and writes one project's ``.crispml/`` folder."""

    def __init__(self, project_dir: Path) -> None:
        self.project_dir = project_dir
        self.root = project_dir / STORE_DIR
        self.runs_dir = self.root / "runs"
        self.cache_dir = self.root / "cache"

    # -- runs ----------------------------------------------------------------------------

    def run_dir(self, run_id: str) -> Path:
        return self.runs_dir / run_id

    def manifest_path(self, run_id: str) -> Path:
        return self.run_dir(run_id) / "manifest.json"

    def write_manifest(self, run_id: str, manifest: Manifest) -> None:
        atomic_write_json(self.manifest_path(run_id), manifest.to_dict())

    def read_manifest(self, run_id: str) -> Manifest:
        """The run's manifest (of any ``schema_version``); a ``UsageError`` naming the latest
        runs when there is no such run."""
        from pydantic import ValidationError

        from crispml.manifest import Manifest

        path = self.run_dir(run_id) / "manifest.json"
        if not _plain_name(run_id) or not path.is_file():
            known = ", ".join(r.run_id for r in self.list_runs()[:5]) or "none"
            shown = run_id if len(run_id) <= 80 else run_id[:77] + "..."
            raise UsageError(f"run {shown!r} not found in {self.runs_dir} (latest: {known}; see 'crispml runs')")
        try:
            return Manifest.load(json.loads(path.read_text()))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise UsageError(f"{path}: not a crispml manifest: {where}: {first['msg']}") from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise UsageError(f"{path}: not a crispml manifest (unreadable JSON: {exc})") from None

    def list_runs(self) -> list[Manifest]:
        """Every readable manifest, newest first."""
        from pydantic import ValidationError

        from crispml.manifest import Manifest

        if not self.runs_dir.is_dir():
            return []
        out = []
        for path in sorted(self.runs_dir.glob("*/manifest.json"), reverse=True):
            try:
                out.append(Manifest.load(json.loads(path.read_text())))
            except (OSError, ValueError, TypeError, ValidationError):
                continue
        return out

    def result_path(self, run_id: str, stage: str) -> Path:
        return self.run_dir(run_id) / "stages" / f"{stage}.pkl"

    def save_result(self, run_id: str, stage: str, result: Any) -> Path:
        path = self.result_path(run_id, stage)
        atomic_write_bytes(path, pickle.dumps(result))
        return path

    def link_result(self, run_id: str, stage: str, source: Path) -> None:
        """Store a stage's result by linking an existing pickle (a cache entry's): no re-pickling."""
        _atomic_link(source, self.result_path(run_id, stage))

    def load_result(self, run_id: str, stage: str) -> Any | None:
        path = self.run_dir(run_id) / "stages" / f"{stage}.pkl"
        if not path.is_file():
            return None
        with path.open("rb") as fh:
            return pickle.load(fh)

    def artifact_dir(self, run_id: str, stage: str) -> Path:
        return self.run_dir(run_id) / "artifacts" / stage

    # -- cache ---------------------------------------------------------------------------

    def _entry(self, key: str) -> Path:
        return self.cache_dir / key[:2] / key

    def cache_get(self, key: str) -> tuple[Any, dict[str, str], Path] | None:
        """``(result, recorded code hashes, entry folder)`` stored under ``key``, if any.

        The entry folder holds ``result.pkl`` and ``artifacts/``."""
        entry = self._entry(key)
        meta = entry / "meta.json"
        if not meta.is_file():
            return None
        try:
            deps = json.loads(meta.read_text())["code"]
            with (entry / "result.pkl").open("rb") as fh:
                result = pickle.load(fh)
        except (OSError, ValueError, KeyError, pickle.UnpicklingError, EOFError):
            return None
        return result, deps, entry

    def cache_put(self, key: str, result_file: Path, code: dict[str, str], artifacts: Path) -> None:
        """Store a run's result file under ``key`` (linked, not copied, where the file system allows).
        ``meta.json`` is written last: it marks the entry whole."""
        entry = self._entry(key)
        _atomic_link(result_file, entry / "result.pkl")
        target = entry / "artifacts"
        if artifacts.is_dir():
            tmp = entry / f".artifacts.{secrets.token_hex(4)}"
            shutil.copytree(artifacts, tmp)
            shutil.rmtree(target, ignore_errors=True)
            os.replace(tmp, target)
        atomic_write_json(entry / "meta.json", {"code": code, "created": time.time()})
