"""Deploy, roll back, undeploy: a registered MLflow model version behind a smoke gate, no downtime.

A deploy, step by step (everything before step 5 leaves the running deployment untouched):

1. Resolve ``name@alias`` / ``name/version`` in the MLflow registry; check the public port.
2. Download the version's MLflow model into a new release folder; write ``spec.json`` (its input
   schema from the MLflow signature, lineage, the prediction log) and ``service.py``.
3. Start ``bentoml serve`` for the release on a private port, in its own process group (its
   launcher first imports the model into BentoML's store under ``.crispml/bentoml``).
4. **Smoke gate**: ``/readyz`` answers, and the new server predicts the version's logged input
   example exactly as the registered model does (loaded here from the same artifacts). Else the
   new server is stopped and the deploy is *rejected*.
5. Switch: the deployment's proxy (started on the public port on first deploy) is pointed at the
   new backend; once the old backend has no request in flight it is stopped.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import logging
import math
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from crispml import CrispmlError, UsageError, atomic_write_json
from crispml_bentoml import _state

_REF = re.compile(r"^(?:models:/)?(?P<name>[A-Za-z][A-Za-z0-9_.-]*)(?:@(?P<alias>[A-Za-z0-9_-]+)|/(?P<version>\d+))$")
SERVICE_SOURCE = Path(__file__).with_name("_service.py")
SMOKE_HEADER = "x-crispml-smoke"
"""Marks the gate's own requests (sent to the backend directly), which the service does not log;
the proxy drops it from clients' requests."""
_DTYPES = {"long": "int64", "integer": "int32", "double": "float64", "float": "float32", "boolean": "bool"}


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def backend_env(project: Path) -> dict[str, str]:
    """The environment of every BentoML process crispml starts: state in the project, no telemetry."""
    env = dict(os.environ)
    env.update(
        {
            "BENTOML_HOME": str(_state.bentoml_home(project)),
            "BENTOML_DO_NOT_TRACK": "True",
            "DO_NOT_TRACK": "1",
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "MLFLOW_ENABLE_TELEMETRY": "false",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


@dataclass
class Settings:
    """What a deploy needs besides the model: the stage's options or the command's flags."""

    name: str
    port: int | None = None
    host: str = "127.0.0.1"
    tracking_uri: str | None = None
    ready_timeout: float = 120.0
    drain_timeout: float = 30.0
    workers: int = 1
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


# -- the MLflow side ----------------------------------------------------------------------------


def tracking_uri(option: str | None, project: Path) -> str:
    """The option, else ``$MLFLOW_TRACKING_URI``, else the project's embedded registry — the same
    order the mlflow plugin uses, so both see one registry."""
    return option or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{project / '.crispml' / 'mlflow.db'}"


def safe_uri(uri: str) -> str:
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


HTTP_BOUNDS = {
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
}
"""MLflow's own defaults (120 s a request, 7 retries with exponential backoff) keep a deploy
against an unreachable registry waiting for many minutes; these bound it. Set the variables to
override."""


@contextlib.contextmanager
def registry_calls(uri: str, what: str) -> Iterator[None]:
    """Around every call to the MLflow registry and its artifacts: bounded HTTP timeouts and
    retries, and any failure (unreachable registry, a broken artifact, …) as one line."""
    added = {k: v for k, v in HTTP_BOUNDS.items() if k not in os.environ}
    os.environ.update(added)
    quiet = [(logging.getLogger(n), logging.getLogger(n).level) for n in ("urllib3", "urllib3.connectionpool")]
    for logger, _ in quiet:  # urllib3 prints each retry on stderr otherwise
        logger.setLevel(logging.ERROR)
    try:
        yield
    except CrispmlError:
        raise
    except Exception as exc:
        if not _registry_failure(exc):
            raise
        message = " ".join(str(exc).split()) or type(exc).__name__
        if len(message) > 300:
            message = message[:300] + "…"
        raise CrispmlError(f"{what} (MLflow registry {safe_uri(uri)}): {message}") from None
    finally:
        for key in added:
            os.environ.pop(key, None)
        for logger, level in quiet:
            logger.setLevel(level)


def _registry_failure(exc: BaseException) -> bool:
    from mlflow.exceptions import MlflowException

    return isinstance(exc, MlflowException | OSError)


def _mlflow_client(uri: str) -> Any:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_TELEMETRY", "false")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        raise UsageError(f"no MLflow registry at {uri} (register a model first: register: {{use: mlflow, ...}})")
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def artifact_location(uri: str, model: dict[str, Any]) -> str:
    """Where the version's files are, without MLflow's global URIs (which resolving a
    ``models:/`` URI would read): a logged model's artifact location, else the version's source."""
    source = str(model["source"])
    if source.startswith("models:/m-"):
        client = _mlflow_client(uri)
        return str(client.get_logged_model(source.removeprefix("models:/").split("/")[0]).artifact_location)
    return source


def _not_found(exc: BaseException) -> bool:
    code = getattr(exc, "error_code", "")
    return code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND") or "not found" in str(exc).lower()


def resolve(reference: str, uri: str) -> dict[str, Any]:
    """``name@alias`` or ``name/version`` → the version's lineage, or a one-line ``UsageError``."""
    match = _REF.match(reference.strip())
    if not match:
        raise UsageError(f"not a model reference: {reference!r} (use NAME@ALIAS or NAME/VERSION, e.g. churn@champion)")
    name, alias, version = match["name"], match["alias"], match["version"]
    with registry_calls(uri, f"cannot resolve {reference}"):
        return _resolve(client=_mlflow_client(uri), uri=uri, name=name, alias=alias, version=version)


def _resolve(client: Any, uri: str, name: str, alias: str | None, version: str | None) -> dict[str, Any]:
    from mlflow.exceptions import MlflowException

    try:
        mv = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, version)
    except MlflowException as exc:
        if not _not_found(exc):
            raise
        try:
            known = sorted(int(v.version) for v in client.search_model_versions(f"name='{name}'"))
        except MlflowException as again:
            if not _not_found(again):
                raise
            known = []
        if not known:
            raise UsageError(f"no registered model named '{name}' in {safe_uri(uri)} (see: crispml models)") from None
        what = f"alias '{alias}'" if alias else f"version {version}"
        raise UsageError(
            f"model '{name}' has no {what} (versions: {', '.join(map(str, known))}; see: crispml models)"
        ) from None
    tags = mv.tags or {}
    return {
        "name": name,
        "version": str(mv.version),
        "uri": f"models:/{name}/{mv.version}",
        "run_id": mv.run_id,
        "crispml_run_id": tags.get("crispml.run_id"),
        "data_fingerprint": tags.get("crispml.data_fingerprint"),
        "model_id": getattr(mv, "model_id", None),
        "source": mv.source,
        "tracking_uri": safe_uri(uri),
    }


def _bento_tag(model: dict[str, Any], uri: str) -> str:
    name = re.sub(r"[^a-z0-9_.-]", "-", model["name"].lower()).strip("-._") or "model"
    digest = hashlib.sha256(f"{safe_uri(uri)}|{model['name']}|{model['version']}|{model['source']}".encode())
    return f"{name}:v{model['version']}-{digest.hexdigest()[:8]}"


def _columns(mlmodel: Any) -> list[dict[str, Any]]:
    signature = mlmodel.signature
    if signature is None or signature.inputs is None:
        raise UsageError("the model version has no signature: crispml cannot derive a request schema")
    from mlflow.types.schema import ColSpec

    columns = []
    for spec in signature.inputs.inputs:
        if not isinstance(spec, ColSpec) or spec.name is None:
            raise UsageError("the model's signature is not a table of named columns: cannot derive a request schema")
        kind = getattr(spec.type, "name", str(spec.type))
        columns.append(
            {
                "name": spec.name,
                "type": kind,
                "dtype": _DTYPES.get(kind),
                "required": bool(getattr(spec, "required", True)),
            }
        )
    return columns


def _reference_model(folder: Path, flavors: dict[str, Any]) -> tuple[Any, bool]:
    """The registered model, loaded here from its artifacts, and whether it gives probabilities."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if "sklearn" in flavors:
            import mlflow.sklearn

            native = mlflow.sklearn.load_model(str(folder))
            return native, hasattr(native, "predict_proba") and hasattr(native, "classes_")
        import mlflow.pyfunc

        return mlflow.pyfunc.load_model(str(folder)), False


def prepare_release(project: Path, settings: Settings, model: dict[str, Any], uri: str) -> tuple[Path, dict[str, Any]]:
    """A new release folder: the MLflow model, ``spec.json``, ``service.py``."""
    releases = _state.folder(project, settings.name) / "releases"
    releases.mkdir(parents=True, exist_ok=True)
    number = 1 + max((int(p.name.split("-", 1)[0]) for p in releases.iterdir() if p.name[:1].isdigit()), default=0)
    release = releases / f"{number}-v{model['version']}"
    release.mkdir()
    try:
        with registry_calls(uri, f"cannot fetch {model['name']}/{model['version']}"):
            return release, _fill_release(release, settings, model, uri, project)
    except BaseException:
        shutil.rmtree(release, ignore_errors=True)  # nothing was started from it
        raise


def _fill_release(release: Path, settings: Settings, model: dict[str, Any], uri: str, project: Path) -> dict[str, Any]:
    import mlflow.artifacts
    from mlflow.models import Model

    location = artifact_location(uri, model)
    staging = release / ".download"
    if location.startswith("runs:/"):
        run_id, _, path = location.removeprefix("runs:/").partition("/")
        local = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=path, dst_path=str(staging), tracking_uri=uri
        )
    else:
        local = mlflow.artifacts.download_artifacts(artifact_uri=location, dst_path=str(staging), tracking_uri=uri)
    os.replace(local, release / "mlflow_model")
    shutil.rmtree(staging, ignore_errors=True)
    mlmodel = Model.load(str(release / "mlflow_model"))
    flavors = dict(mlmodel.flavors)
    spec = {
        "deployment": settings.name,
        "service_name": f"crispml-{settings.name}".replace("_", "-"),
        "bento_tag": _bento_tag(model, uri),
        "model": model,
        "flavor": "sklearn" if "sklearn" in flavors else "pyfunc",
        "columns": _columns(mlmodel),
        "classifier": False,
        "workers": settings.workers,
        "max_records": settings.max_records,
        "prediction_log": {
            "path": str(_state.folder(project, settings.name) / "predictions.jsonl"),
            "max_bytes": settings.log_max_bytes,
            "backups": settings.log_backups,
        },
    }
    try:
        reference, classifier = _reference_model(release / "mlflow_model", flavors)
    except CrispmlError:
        raise
    except Exception as exc:
        message = " ".join(str(exc).split())[:300]
        raise CrispmlError(
            f"cannot load {model['name']}/{model['version']} here for the smoke test: {type(exc).__name__}: {message}"
        ) from None
    spec["classifier"] = classifier
    atomic_write_json(release / "spec.json", spec)
    shutil.copyfile(SERVICE_SOURCE, release / "service.py")
    return {"spec": spec, "reference": reference, "mlmodel": mlmodel}


# -- the backend process ------------------------------------------------------------------------


def start_backend(project: Path, release: Path, host: str) -> tuple[subprocess.Popen[bytes], int]:
    port = _state.free_port(host if host != "0.0.0.0" else "127.0.0.1")
    with (release / "server.log").open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "crispml_bentoml._launch", str(release), host, str(port)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=backend_env(project),
            cwd=release,
            start_new_session=True,
        )
    return proc, port


def _probe_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "") else host


def _tail(path: Path, lines: int = 6) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text[-lines:])


def wait_ready(proc: subprocess.Popen[bytes], url: str, timeout: float, log: Path) -> str | None:
    """``None`` once ``/readyz`` answers 200; else why not."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return f"the new server exited with code {proc.returncode} before it was ready: {_tail(log)}"
        answer = _state.http_get(f"{url}/readyz", timeout=1.0)
        if answer is not None and answer[0] == 200:
            return None
        time.sleep(0.1)
    return f"the new server did not answer /readyz within {timeout:g} s (log: {log})"


def post_json(url: str, value: Any, headers: dict[str, str] | None = None, timeout: float = 30.0) -> tuple[int, Any]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(
        url,
        data=json.dumps(value).encode(),
        method="POST",
        headers={"content-type": "application/json", **(headers or {})},
    )
    try:
        with opener.open(request, timeout=timeout) as resp:
            return int(resp.status), json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        body = exc.read()
        try:
            return int(exc.code), json.loads(body)
        except ValueError:
            return int(exc.code), body.decode(errors="replace")


def _jsonable(values: Any) -> list[Any]:
    out = values.tolist() if hasattr(values, "tolist") else list(values)
    return [v.item() if hasattr(v, "item") else v for v in out]


def smoke(url: str, prepared: dict[str, Any], release: Path) -> str | None:
    """``None`` when the new server predicts the logged input example as the registered model does."""
    mlmodel, reference, spec = prepared["mlmodel"], prepared["reference"], prepared["spec"]
    try:
        example = mlmodel.load_input_example(str(release / "mlflow_model"))
    except Exception as exc:
        return f"cannot read the model's input example: {exc}"
    if example is None or not hasattr(example, "to_json"):
        return "the model version has no logged input example (a table): cannot smoke-test it"
    records = json.loads(example.to_json(orient="records"))
    try:
        expected = _jsonable(reference.predict(example))
    except Exception as exc:
        return f"the registered model cannot predict its own input example: {type(exc).__name__}: {exc}"[:500]
    try:
        status, body = post_json(f"{url}/predict", {"records": records}, headers={SMOKE_HEADER: "1"})
    except (OSError, ValueError, http.client.HTTPException) as exc:  # died, hung, or answered garbage
        return f"smoke test: POST /predict with the input example failed: {type(exc).__name__}: {exc}"[:500]
    if status != 200 or not isinstance(body, dict):
        return f"smoke test: POST /predict with the input example answered {status}: {str(body)[:300]}"
    got = body.get("predictions")
    if not _same(got, expected):
        return (
            f"smoke test: served predictions {str(got)[:200]} differ from the registered model's {str(expected)[:200]}"
        )
    if spec["classifier"]:
        proba = reference.predict_proba(example)
        keys = [str(c) for c in _jsonable(reference.classes_)]
        want = [dict(zip(keys, map(float, row), strict=True)) for row in proba]
        served = body.get("probabilities")
        if (
            not isinstance(served, list)
            or len(served) != len(want)
            or not all(
                isinstance(s, dict) and s.keys() == w.keys() and all(math.isclose(s[k], w[k], abs_tol=1e-9) for k in w)
                for s, w in zip(served, want, strict=False)
            )
        ):
            return "smoke test: served probabilities differ from the registered model's"
    return None


def _same(got: Any, expected: list[Any]) -> bool:
    if not isinstance(got, list) or len(got) != len(expected):
        return False
    for a, b in zip(got, expected, strict=True):
        if isinstance(a, float) or isinstance(b, float):
            if (
                not isinstance(a, int | float)
                or not isinstance(b, int | float)
                or not math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
            ):
                return False
        elif a != b:
            return False
    return True


# -- the proxy ----------------------------------------------------------------------------------


def start_proxy(project: Path, name: str, host: str, port: int, max_body: int) -> subprocess.Popen[bytes]:
    folder = _state.folder(project, name)
    with (folder / "proxy.log").open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "crispml_bentoml._proxy", str(folder), host, str(port), str(max_body)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=backend_env(project),
            cwd=folder,
            start_new_session=True,
        )


def proxy_status(url: str) -> dict[str, Any] | None:
    answer = _state.http_get(f"{url}/-/crispml/proxy", timeout=2.0)
    if answer is None or answer[0] != 200:
        return None
    try:
        value = json.loads(answer[1])
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _wait_proxy(url: str, backend_port: int, proc: subprocess.Popen[bytes] | None, timeout: float) -> str | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return f"the proxy exited with code {proc.returncode}"
        status = proxy_status(url)
        if status is not None and (status.get("upstream") or {}).get("port") == backend_port:
            return None
        time.sleep(0.05)
    return f"the proxy at {url} did not switch within {timeout:g} s"


def _drain(url: str, old_port: int, timeout: float) -> None:
    """Wait until the proxy has no request in flight to ``old_port`` (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = proxy_status(url)
        if status is None or str(old_port) not in (status.get("inflight") or {}):
            return
        time.sleep(0.05)


# -- deploy -------------------------------------------------------------------------------------


def deploy(project: Path, settings: Settings, reference: str, *, history_pop: bool = False) -> Outcome:
    """Deploy ``reference`` as ``settings.name``. ``history_pop``: a rollback (the target is the
    last entry of the history, which it leaves)."""
    _state.check_name(settings.name)
    started = time.monotonic()
    uri = tracking_uri(settings.tracking_uri, project)
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
                if key in Settings.KEPT:
                    setattr(settings, key, value)
        model = resolve(reference, uri)
        public = f"http://{_probe_host(host)}:{port}"
        if (
            proxy_up
            and current is not None
            and current["model"].get("uri") == model["uri"]
            and _state.status(current) == "up"
        ):
            return Outcome(record=current, model=model, changed=False)

        release, prepared = prepare_release(project, settings, model, uri)
        spec = prepared["spec"]
        model = {**model, "bento_tag": spec["bento_tag"], "flavor": spec["flavor"], "classifier": spec["classifier"]}
        try:
            proc, backend_port = start_backend(project, release, host)
        except OSError as exc:
            raise CrispmlError(f"deployment '{settings.name}': cannot start the new server: {exc}") from None
        backend_ident = _state.identity(proc.pid)
        backend_url = f"http://{_probe_host(host)}:{backend_port}"
        timings: dict[str, float] = {}
        switched = False
        new_proxy: subprocess.Popen[bytes] | None = None
        upstream = _state.folder(project, settings.name) / "upstream.json"
        previous_upstream: bytes | None = None
        rewritten = False
        try:
            t0 = time.monotonic()
            why = wait_ready(proc, backend_url, settings.ready_timeout, release / "server.log")
            timings["ready_seconds"] = round(time.monotonic() - t0, 3)
            if why is None:
                t0 = time.monotonic()
                why = smoke(backend_url, prepared, release)
                timings["smoke_seconds"] = round(time.monotonic() - t0, 3)
            if why is not None:
                rejection = f"deployment '{settings.name}' not switched to {model['name']}/{model['version']}: {why}"
                if current is not None:
                    current["last_rejected"] = {"model": model, "at": now(), "why": why, "release": str(release)}
                    _state.write_record(project, settings.name, current)
                return Outcome(record=current, model=model, rejection=rejection, timings=timings)

            # The switch: the only step that changes what the public port serves. Until the proxy
            # confirms it, every way out (the `finally` below) puts the previous upstream back.
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
                why = _wait_proxy(public, backend_port, None, 10.0)
            else:
                try:
                    new_proxy = start_proxy(project, settings.name, host, port, settings.max_body_bytes)
                except OSError as exc:
                    raise CrispmlError(f"deployment '{settings.name}': cannot start the proxy: {exc}") from None
                proxy_pid, proxy_ident = new_proxy.pid, _state.identity(new_proxy.pid)
                why = _wait_proxy(public, backend_port, new_proxy, 30.0)
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
                _drain(public, int(old_backend.get("port") or 0), settings.drain_timeout)
                _stop_backend(old_backend)

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
                    _restore(upstream, previous_upstream)
                if new_proxy is not None:
                    _state.stop_group(new_proxy.pid)
                _state.stop_group(proc.pid, folder=release)


def _restore(upstream: Path, previous: bytes | None) -> None:
    """Point the proxy back where it was before a switch that did not complete (atomically, as a
    new file, so the proxy sees a change even within one mtime tick)."""
    if previous is None:
        with contextlib.suppress(FileNotFoundError):
            upstream.unlink()
        return
    staging = upstream.with_name(f".{upstream.name}.restore")
    staging.write_bytes(previous)
    os.replace(staging, upstream)


def _release_of(backend: dict[str, Any]) -> Path | None:
    release = backend.get("release")
    return Path(release) if release else None


def _stop_backend(backend: dict[str, Any]) -> None:
    """Stop a recorded backend — if its pid is still the process that was started (else only the
    processes still working in its release folder)."""
    _state.stop_group(
        backend.get("pid"), folder=_release_of(backend), marker=_state.BACKEND_MARKER, ident=backend.get("ident")
    )


def rollback(project: Path, settings: Settings) -> Outcome:
    record = _state.require_record(project, settings.name)
    history = record.get("history") or []
    if not history:
        raise UsageError(
            f"deployment '{settings.name}' has no previous version to roll back to "
            f"(it serves {record['model']['name']}/{record['model']['version']})"
        )
    target = history[-1]["model"]
    if settings.tracking_uri is None and not os.environ.get("MLFLOW_TRACKING_URI"):
        recorded = target.get("tracking_uri")
        if recorded and "***" not in recorded:
            settings.tracking_uri = recorded
    return deploy(project, settings, f"{target['name']}/{target['version']}", history_pop=True)


def undeploy(project: Path, name: str) -> dict[str, Any]:
    record = _state.require_record(project, name)
    with _state.locked(project, name):
        proxy = record.get("proxy") or {}
        _state.stop_group(proxy.get("pid"), marker=_state.PROXY_MARKER, ident=proxy.get("ident"))
        _stop_backend(record.get("backend") or {})
        folder = _state.folder(project, name)
        with contextlib.suppress(FileNotFoundError):
            (folder / "upstream.json").unlink()
        record["undeployed"] = now()
        atomic_write_json(folder / f"undeployed-{time.strftime('%Y%m%d-%H%M%S')}.json", record)
        _state.record_path(project, name).unlink()
    return record
