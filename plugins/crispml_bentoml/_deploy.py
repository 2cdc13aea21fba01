"""Deploy, roll back, undeploy: a resolved model version behind a smoke gate, no downtime.

A deploy, step by step (everything before step 5 leaves the running deployment untouched):

1. Resolve the reference through ``crispml_resolve_model`` (whichever registry plugin knows it:
   this plugin never talks to a registry itself); check the public port.
2. Package a new release from the resolved version (:mod:`_release`). A feature store's check
   there (an error whose exit code is ``REJECTED``) rejects the deploy before any server starts.
3. Start ``bentoml serve`` for the release on a private port, in its own process group
   (:mod:`_process`; its launcher first imports the model into BentoML's store under
   ``.crispml/bentoml``).
4. **Smoke gate** (:mod:`_smoke`): ``/readyz`` answers, and the new server predicts the
   version's input example exactly as the model does. Else the new server is stopped and the
   deploy is *rejected*.
5. Switch (:mod:`_switch`): the deployment's proxy (started on the public port on first deploy,
   beside the backend in step 3, answering 503 until now) is pointed at the new backend; once the
   old backend has no request in flight it is stopped.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from crispml import CrispmlError, ExitCode, ResolvedModel, UsageError, atomic_write_json
from crispml_bentoml import _state, _tether
from crispml_bentoml._process import WarmLauncher, probe_host, start_backend, stop_backend, wait_ready
from crispml_bentoml._release import model_record, prepare_release
from crispml_bentoml._smoke import smoke
from crispml_bentoml._switch import drain, restore, start_proxy, wait_switched

Resolver = Callable[[str], ResolvedModel]
"""``reference → ResolvedModel``: ``crispml.session().resolve_model`` from a command,
``context.session.resolve_model`` (with the run's context) from the stage."""


def default_name(model_name: str) -> str:
    """A deployment's name when none is given: the model's, lowercased, dots as dashes."""
    return model_name.lower().replace(".", "-")


def default_workers() -> int:
    """Half the machine's cores, at least one: each worker predicts in a thread of its own while
    its event loop parses requests, and the proxy needs a share too (docs/performance.md)."""
    return max(1, (os.cpu_count() or 1) // 2)


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class Settings:
    """What a deploy needs besides the model: the stage's options or the command's flags."""

    name: str
    port: int | None = None
    host: str = "127.0.0.1"
    ready_timeout: float = 120.0
    drain_timeout: float = 30.0
    workers: int | None = None
    """``None``: the deployment's (with ``inherit``), else :func:`default_workers`."""
    max_body_bytes: int = 4 * 1024 * 1024
    max_records: int = 10_000
    log_max_bytes: int = 10_000_000
    log_backups: int = 5
    inherit: bool = False
    """Take workers, body and record limits and log rotation from the deployment's record (the
    command line's redeploys and rollbacks keep what the recipe set)."""

    KEPT = ("workers", "max_body_bytes", "max_records", "log_max_bytes", "log_backups")

    def kept(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.KEPT}


@dataclass
class Outcome:
    """What happened: ``rejection`` set means nothing switched."""

    record: dict[str, Any] | None
    model: dict[str, Any]
    rejection: str | None = None
    changed: bool = True
    timings: dict[str, float] = field(default_factory=dict)


# -- deploy -------------------------------------------------------------------------------------


def deploy(
    project: Path, settings: Settings, reference: str, resolve: Resolver, *, history_pop: bool = False
) -> Outcome:
    """Deploy ``reference`` (resolved by ``resolve``) as ``settings.name``. ``history_pop``: a
    rollback (the target is the last entry of the history, which it leaves).

    When nothing serves the deployment yet, its backend's launcher starts first, so that BentoML's
    import overlaps the registry's resolve (``_launch``, "Warm start"): nothing answers on the
    public port until the new server does, so every second of a first deploy is a user's wait. A
    redeploy, whose old version keeps serving meanwhile, starts its launcher after the resolve
    (a resolve that finds the version already served then costs no process)."""
    started = time.monotonic()
    warm = WarmLauncher(project) if _serves_nothing(project, settings.name or _guess_name(reference)) else None
    try:
        return _deploy(project, settings, reference, resolve, history_pop, started, warm)
    finally:
        if warm is not None:
            warm.discard()  # unless a backend was started from it (then it is that backend)


def _guess_name(reference: str) -> str:
    """The deployment name a reference will likely get (``default_name`` of its model part), to
    decide on a warm start before the resolve says; a wrong guess only costs or misses it."""
    model = reference.removeprefix("models:/").split("@", 1)[0].split("/", 1)[0]
    return default_name(model) if model else ""


def _serves_nothing(project: Path, name: str) -> bool:
    try:
        _state.check_name(name)
    except UsageError:
        return False  # the deploy will say why; no process for it
    proxy = (_state.read_record(project, name) or {}).get("proxy") or {}
    return not _state.ours(proxy.get("pid"), _state.PROXY_MARKER, proxy.get("ident"))


def _deploy(
    project: Path,
    settings: Settings,
    reference: str,
    resolve: Resolver,
    history_pop: bool,
    started: float,
    warm: WarmLauncher | None,
) -> Outcome:
    resolved = resolve(reference)  # the registry's business, outside this deployment's lock
    if not settings.name:
        settings.name = default_name(resolved.name)
    _state.check_name(settings.name)
    with _state.locked(project, settings.name):
        current = _state.read_record(project, settings.name)
        recorded_proxy = (current or {}).get("proxy") or {}
        proxy_up = current is not None and _state.ours(
            recorded_proxy.get("pid"), _state.PROXY_MARKER, recorded_proxy.get("ident")
        )
        if proxy_up:
            assert current is not None
            port = int(current["port"])
            if settings.port is not None and settings.port != port:
                raise UsageError(
                    f"deployment '{settings.name}' serves on port {port}; "
                    f"undeploy it first to move it to {settings.port}"
                )
            host = current.get("host", settings.host)
        else:
            port = settings.port if settings.port is not None else int((current or {}).get("port") or 3000)
            host = settings.host
            if not _state.port_free(host, port):
                raise UsageError(
                    f"port {port} on {host} is already in use: choose another (--port, or port: in the recipe)"
                )
        if settings.inherit and current is not None:
            for key, value in (current.get("settings") or {}).items():
                if key == "workers" and settings.workers is not None:
                    continue  # asked for on the command line
                if key in Settings.KEPT:
                    setattr(settings, key, value)
        if settings.workers is None:
            settings.workers = default_workers()
        model = model_record(resolved)
        public = f"http://{probe_host(host)}:{port}"
        if (
            proxy_up
            and current is not None
            and current["model"].get("uri") == model["uri"]
            and _state.status(current) == "up"
        ):
            return Outcome(record=current, model=model, changed=False)

        try:
            prepared = prepare_release(project, settings, resolved)
        except CrispmlError as exc:
            if exc.exit_code != ExitCode.REJECTED:
                raise
            # A check before any server starts said no (a feature store: a feature the version
            # was trained on is gone): rejected like a failed smoke test, nothing switched.
            why = str(exc)
            if current is not None:
                current["last_rejected"] = {"model": model, "at": now(), "why": why}
                _state.write_record(project, settings.name, current)
            rejection = f"deployment '{settings.name}' not switched to {model['name']}/{model['version']}: {why}"
            return Outcome(record=current, model=model, rejection=rejection)
        release, spec = prepared.release, prepared.spec
        model = {**model, "bento_tag": spec["bento_tag"]}
        try:
            proc, backend_port = start_backend(project, release, host, warm)
        except OSError as exc:
            raise CrispmlError(f"deployment '{settings.name}': cannot start the new server: {exc}") from None
        backend_ident = _state.identity(proc.pid)
        backend_url = f"http://{probe_host(host)}:{backend_port}"
        timings: dict[str, float] = {}
        switched = False
        new_proxy: subprocess.Popen[bytes] | None = None
        upstream = _state.folder(project, settings.name) / "upstream.json"
        previous_upstream: bytes | None = None
        rewritten = False
        try:
            if not proxy_up:
                # No proxy yet (a first deploy, or onto a down deployment): it starts now, beside
                # the backend, so its start-up overlaps the model's load. Until the switch it has
                # no upstream and answers 503; a stale upstream.json is put back if the deploy fails.
                with contextlib.suppress(FileNotFoundError):
                    previous_upstream = upstream.read_bytes()
                    upstream.unlink()
                rewritten = True
                try:
                    new_proxy = start_proxy(project, settings.name, host, port, settings.max_body_bytes)
                except OSError as exc:
                    raise CrispmlError(f"deployment '{settings.name}': cannot start the proxy: {exc}") from None
            t0 = time.monotonic()
            why = wait_ready(proc, backend_url, settings.ready_timeout, release / "server.log")
            timings["ready_seconds"] = round(time.monotonic() - t0, 3)
            prepared.reference()  # loaded meanwhile; a model that cannot load stops here
            model["classifier"] = spec["classifier"]
            if why is None:
                t0 = time.monotonic()
                why = smoke(backend_url, prepared)
                timings["smoke_seconds"] = round(time.monotonic() - t0, 3)
            if why is not None:
                rejection = f"deployment '{settings.name}' not switched to {model['name']}/{model['version']}: {why}"
                if current is not None:
                    current["last_rejected"] = {"model": model, "at": now(), "why": why, "release": str(release)}
                    _state.write_record(project, settings.name, current)
                return Outcome(record=current, model=model, rejection=rejection, timings=timings)

            # The gate passed: from here the new server (and a new proxy) outlive this process
            # even if it is killed (_tether); before, they would have died with it.
            _tether.keep(proc)
            _tether.keep(new_proxy)
            # The switch: the only step that changes what the public port serves. Until the proxy
            # confirms it, every way out (the `finally` below) puts the previous upstream back.
            if not rewritten:
                with contextlib.suppress(FileNotFoundError):
                    previous_upstream = upstream.read_bytes()
                rewritten = True
            atomic_write_json(
                upstream,
                {"port": backend_port, "model": f"{model['name']}/{model['version']}", "release": str(release)},
            )
            old_backend = (current or {}).get("backend") or {}
            if proxy_up:
                assert current is not None
                proxy_pid, proxy_ident = int(recorded_proxy["pid"]), recorded_proxy.get("ident")
                why = wait_switched(public, backend_port, None, 10.0)
            else:
                assert new_proxy is not None
                proxy_pid, proxy_ident = new_proxy.pid, _state.identity(new_proxy.pid)
                why = wait_switched(public, backend_port, new_proxy, 30.0)
                if why is not None and not _state.port_free(host, port):
                    raise UsageError(
                        f"deployment '{settings.name}': port {port} on {host} was taken while the new server "
                        f"started ({why})"
                    )
            if why is not None:
                raise CrispmlError(f"deployment '{settings.name}' not switched to {model['uri']}: {why}")
            switched = True
            timings["first_answer_seconds"] = round(time.monotonic() - started, 3)
            if old_backend.get("pid") and old_backend.get("pid") != proc.pid:
                drain(public, int(old_backend.get("port") or 0), settings.drain_timeout)
                stop_backend(old_backend)

            history = list((current or {}).get("history") or [])
            if history_pop:
                history = history[:-1]
            elif current is not None:
                history.append({"model": current["model"], "since": current.get("since"), "until": now()})
            record = {
                "name": settings.name,
                "url": public,
                "host": host,
                "port": port,
                "since": now(),
                "created": (current or {}).get("created") or now(),
                "model": model,
                "proxy": {
                    "pid": proxy_pid,
                    "ident": proxy_ident,
                    "log": str(_state.folder(project, settings.name) / "proxy.log"),
                },
                "backend": {
                    "pid": proc.pid,
                    "ident": backend_ident,
                    "port": backend_port,
                    "log": str(release / "server.log"),
                    "release": str(release),
                },
                "prediction_log": spec["prediction_log"]["path"],
                "settings": settings.kept(),
                "history": history[-50:],
                "bento": (current or {}).get("bento"),
            }
            _state.write_record(project, settings.name, record)
            timings["deploy_seconds"] = round(time.monotonic() - started, 3)
            return Outcome(record=record, model=model, timings=timings)
        finally:
            if not switched:
                if rewritten:
                    restore(upstream, previous_upstream)
                if new_proxy is not None:
                    _state.stop_group(new_proxy.pid)
                _state.stop_group(proc.pid, folder=release)


def rollback(project: Path, settings: Settings, resolve: Resolver) -> Outcome:
    record = _state.require_record(project, settings.name)
    history = record.get("history") or []
    if not history:
        raise UsageError(
            f"deployment '{settings.name}' has no previous version to roll back to "
            f"(it serves {record['model']['name']}/{record['model']['version']})"
        )
    target = history[-1]["model"]
    return deploy(project, settings, f"{target['name']}/{target['version']}", resolve, history_pop=True)


def undeploy(project: Path, name: str) -> dict[str, Any]:
    record = _state.require_record(project, name)
    with _state.locked(project, name):
        proxy = record.get("proxy") or {}
        _state.stop_group(proxy.get("pid"), marker=_state.PROXY_MARKER, ident=proxy.get("ident"))
        stop_backend(record.get("backend") or {})
        folder = _state.folder(project, name)
        with contextlib.suppress(FileNotFoundError):
            (folder / "upstream.json").unlink()
        record["undeployed"] = now()
        atomic_write_json(folder / f"undeployed-{time.strftime('%Y%m%d-%H%M%S')}.json", record)
        _state.record_path(project, name).unlink()
    return record
