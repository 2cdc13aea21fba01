"""``crispml deploy``, ``deployments``, ``undeploy``, ``predictions`` and ``build``.

Only click and the plugin's state module load with these commands; ``deploy`` finds the model
through the session (``crispml_resolve_model``: whichever registry plugin knows it), BentoML runs
only in the processes the commands start.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from crispml_bentoml import _state

if TYPE_CHECKING:
    from crispml import Session

BUILD_TIMEOUT_ENV = "CRISPML_BENTOML_BUILD_TIMEOUT"
"""Seconds ``bentoml build`` and ``bentoml export`` may take each (default 600)."""


def _bentoml(args: list[str], *, cwd: Path, project: Path, what: str) -> str:
    """Run ``bentoml ARGS`` (the project's store, no telemetry); its stdout, or a one-line error."""
    from crispml import BackendError, CrispmlError, UsageError
    from crispml_bentoml._process import backend_env

    raw = os.environ.get(BUILD_TIMEOUT_ENV, "600")
    try:
        timeout = float(raw)
    except ValueError:
        raise UsageError(f"{BUILD_TIMEOUT_ENV}={raw!r} is not a number of seconds") from None
    try:
        done = subprocess.run(
            [sys.executable, "-m", "bentoml", *args],
            cwd=cwd,
            env=backend_env(project),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        raise CrispmlError(
            f"{what} did not finish within {timeout:g} s (stopped; set {BUILD_TIMEOUT_ENV} to allow more)"
        ) from None
    except OSError as exc:
        raise BackendError.of(f"{what}: cannot run bentoml", exc) from None
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()
        raise BackendError.of(f"{what} failed", detail[-1] if detail else f"exit code {done.returncode}")
    return done.stdout


def add_commands(cli: click.Group, session: Session | None = None) -> None:
    """Add the commands; they reach other plugins through ``crispml.session()`` (``session``)."""
    for command in (deploy, deployments, undeploy, predictions, build):
        cli.add_command(command)


def _project() -> Path:
    from crispml import find_project

    return find_project()


@click.command()
@click.argument("reference", required=False, metavar="MODEL@ALIAS|MODEL/VERSION")
@click.option("--name", default=None, help="Deployment name (default: the model's name).")
@click.option("--port", type=click.IntRange(1, 65535), default=None, help="Public port (default: current, else 3000).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option(
    "--rollback",
    "rollback_name",
    default=None,
    metavar="NAME",
    help="Deploy NAME's previous model version again, through the same smoke gate.",
)
@click.option("--ready-timeout", type=float, default=120.0, show_default=True, help="Seconds to wait for /readyz.")
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=None,
    help="BentoML workers (default: the deployment's, else half the cores, at least 1).",
)
def deploy(
    reference: str | None,
    name: str | None,
    port: int | None,
    host: str,
    rollback_name: str | None,
    ready_timeout: float,
    workers: int | None,
) -> None:
    """Serve a registered model version (bentoml), switching only after a smoke test passes.

    Exit 0: serving; 2: bad input (nothing changed); 3: rejected by the smoke gate (the previous
    deployment keeps serving).
    """
    from crispml import UsageError, session
    from crispml_bentoml._deploy import Settings, rollback
    from crispml_bentoml._deploy import deploy as do_deploy

    project = _project()
    resolve = session().resolve_model  # whichever registry plugin knows the reference
    if rollback_name is not None:
        if reference is not None:
            raise UsageError("give either a model reference or --rollback NAME, not both")
        settings = Settings(
            name=rollback_name,
            port=port,
            host=host,
            ready_timeout=ready_timeout,
            workers=workers,
            inherit=True,
        )
        outcome = rollback(project, settings, resolve)
    else:
        if reference is None:
            raise UsageError("name the model version to deploy, e.g. crispml deploy churn@champion")
        settings = Settings(
            name=name or "",  # empty: the resolved model's name
            port=port,
            host=host,
            ready_timeout=ready_timeout,
            workers=workers,
            inherit=True,
        )
        outcome = do_deploy(project, settings, reference, resolve)
    label = f"{outcome.model['name']}/{outcome.model['version']}"
    if outcome.rejection is not None:
        click.echo(f"rejected: {outcome.rejection}", err=True)
        record = outcome.record
        if record is not None:
            click.echo(
                f"{settings.name}: still serving {record['model']['name']}/{record['model']['version']} "
                f"at {record['url']}",
                err=True,
            )
        from crispml import ExitCode

        sys.exit(ExitCode.REJECTED)
    record = outcome.record or {}
    if not outcome.changed:
        click.echo(f"{settings.name}: already serving {label} at {record.get('url')}")
        return
    timings = outcome.timings
    click.echo(
        f"{settings.name}: serving {label} at {record.get('url')}/predict "
        f"(proxy pid {record['proxy']['pid']}, backend pid {record['backend']['pid']}; "
        f"ready in {timings.get('ready_seconds', 0):.1f} s, "
        f"switched after {timings.get('first_answer_seconds', 0):.1f} s)"
    )


def _rows(project: Path) -> list[dict[str, Any]]:
    rows = []
    for record in _state.all_records(project):
        model = record.get("model") or {}
        rows.append(
            {
                "name": record["name"],
                "model": f"{model.get('name')}/{model.get('version')}",
                "model_uri": model.get("uri"),
                "url": record.get("url"),
                "port": record.get("port"),
                "pid": (record.get("proxy") or {}).get("pid"),
                "backend_pid": (record.get("backend") or {}).get("pid"),
                "backend_port": (record.get("backend") or {}).get("port"),
                "status": _state.status(record),
                "since": record.get("since"),
                "log": (record.get("backend") or {}).get("log"),
                "prediction_log": record.get("prediction_log"),
                "lineage": {k: model.get(k) for k in ("run_id", "crispml_run_id", "data_fingerprint", "bento_tag")},
                "previous": [f"{h['model']['name']}/{h['model']['version']}" for h in record.get("history") or []],
                "bento": record.get("bento"),
            }
        )
    return rows


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def deployments(as_json: bool) -> None:
    """Deployments (bentoml): model version, URL, pid, status (up, down, unhealthy), since."""
    from crispml import print_rows

    colours = {"up": "green", "down": "red", "unhealthy": "yellow"}
    print_rows(
        _rows(_project()),
        {
            "name": "name",
            "model": "model",
            "url": "url",
            "pid": "pid",
            "status": lambda row: f"[{colours.get(row['status'], 'white')}]{row['status']}[/]",
            "since": "since",
        },
        as_json=as_json,
        empty="no deployments (deploy one: crispml deploy churn@champion)",
    )


@click.command()
@click.argument("name")
def undeploy(name: str) -> None:
    """Stop a deployment (its proxy and server); its prediction log is kept."""
    from crispml_bentoml._deploy import undeploy as do_undeploy

    record = do_undeploy(_project(), name)
    click.echo(
        f"{name}: stopped (was serving {record['model']['name']}/{record['model']['version']} at {record['url']})"
    )


def log_files(path: Path) -> list[Path]:
    """The prediction log's files, oldest first (``log.5`` … ``log.1``, ``log``)."""
    rotated = sorted(
        (p for p in path.parent.glob(path.name + ".*") if p.suffix[1:].isdigit()),
        key=lambda p: int(p.suffix[1:]),
        reverse=True,
    )
    return [*rotated, path] if path.exists() else rotated


def tail(path: Path, count: int) -> list[dict[str, Any]]:
    lines: deque[str] = deque(maxlen=count)
    for file in log_files(path):
        with file.open(errors="replace") as fh:
            for line in fh:
                if line.strip():
                    lines.append(line)
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except ValueError:
            continue  # a line cut short by a crash: skip it
    return out


@click.command()
@click.argument("name")
@click.option(
    "--tail",
    "count",
    type=click.IntRange(1, 100_000),
    default=10,
    show_default=True,
    help="How many of the latest requests.",
)
def predictions(name: str, count: int) -> None:
    """The latest requests a deployment answered: inputs, outputs, model version, time (JSONL)."""
    from crispml import UsageError

    _state.check_name(name)
    project = _project()
    path = _state.folder(project, name) / "predictions.jsonl"
    if not log_files(path):
        if not _state.folder(project, name).is_dir():
            raise UsageError(f"no deployment named '{name}' (see: crispml deployments)")
        return
    for entry in tail(path, count):
        click.echo(json.dumps(entry, separators=(",", ":")))


def _requirements(spec: dict[str, Any]) -> list[str]:
    """The model's pinned requirements (as its registry gave them) plus what the service imports."""
    from importlib import metadata

    lines: dict[str, str] = {}
    for line in spec.get("requirements") or []:
        line = str(line).strip()
        if line and not line.startswith(("#", "-")):
            key = line.split("==")[0].split(">")[0].split("<")[0].split("[")[0].strip().lower()
            lines[key] = line
    needed = ["bentoml", "pandas", "pydantic"]
    if str(spec.get("flavor", "")).startswith("mlflow."):
        needed.append("mlflow")
    for dist in needed:
        if dist not in lines:
            try:
                lines[dist] = f"{dist}=={metadata.version(dist)}"
            except metadata.PackageNotFoundError:
                continue
    return sorted(lines.values())


@click.command()
@click.argument("name")
@click.option(
    "--export",
    "export_to",
    type=click.Path(dir_okay=False),
    default=None,
    help="Where to write the self-contained archive (default: .crispml/deployments/NAME/bentos/).",
)
def build(name: str, export_to: str | None) -> None:
    """Build a bento of a deployment's current release: service, model, pinned requirements.

    The bento (in .crispml/bentoml/bentos) is ready for `bentoml containerize`; the exported
    archive carries the model too (`bentoml import` it where the image is built).
    """
    from crispml import UsageError

    project = _project()
    record = _state.require_record(project, name)
    release = Path((record.get("backend") or {}).get("release") or "")
    if not record.get("backend", {}).get("release") or not (release / "spec.json").is_file():
        raise UsageError(f"deployment '{name}': release folder {release} is gone; deploy again")
    # BentoML refuses a build context under a hidden folder (.crispml): build from a temporary
    # one; the bento itself is stored in .crispml/bentoml/bentos.
    with tempfile.TemporaryDirectory(prefix="crispml-bento-") as tmp:
        tag, requirements, seconds = _build_in(Path(tmp), project, name, record, release)
    model = record["model"]
    with _state.locked(project, name):
        current = _state.read_record(project, name)
        if current is not None:
            current["bento"] = {
                "tag": tag,
                "built": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "model": f"{model['name']}/{model['version']}",
                "requirements": requirements,
            }
            _state.write_record(project, name, current)
    home = _state.bentoml_home(project)
    bento_name, bento_version = tag.split(":", 1)
    archive = (
        Path(export_to)
        if export_to
        else _state.folder(project, name) / "bentos" / f"{bento_name}-{bento_version}.bento"
    )
    archive.parent.mkdir(parents=True, exist_ok=True)
    _bentoml(["export", tag, str(archive.resolve())], cwd=project, project=project, what="bentoml export")
    with _state.locked(project, name):
        current = _state.read_record(project, name)
        if current is not None and current.get("bento"):
            current["bento"]["archive"] = str(archive.resolve())
            _state.write_record(project, name, current)
    click.echo(
        f"built bento {tag} ({model['name']}/{model['version']}, {len(requirements)} pinned requirements) "
        f"in {seconds:.1f} s"
    )
    click.echo(f"archive with the model: {archive}")
    click.echo(f"container image: BENTOML_HOME={home} bentoml containerize {tag}")


def _build_in(
    context: Path, project: Path, name: str, record: dict[str, Any], release: Path
) -> tuple[str, list[str], float]:
    from crispml import CrispmlError, atomic_write_json

    try:
        spec = json.loads((release / "spec.json").read_text())
    except (OSError, ValueError) as exc:
        raise CrispmlError(f"deployment '{name}': cannot read {release / 'spec.json'}: {exc}") from None
    # In a container the project's paths mean nothing: the log goes where $CRISPML_PREDICTION_LOG says.
    spec["prediction_log"] = {**spec["prediction_log"], "path": None}
    atomic_write_json(context / "spec.json", spec)
    shutil.copyfile(release / "service.py", context / "service.py")
    include = ["service.py", "spec.json"]
    if (release / "flavors.py").is_file():  # a release made before flavors.py has none to ship
        shutil.copyfile(release / "flavors.py", context / "flavors.py")
        include.append("flavors.py")
    features = spec.get("features")
    if features:  # serving by key: the feature store's resolver, its configuration and registry
        shutil.copytree(release / features["folder"], context / features["folder"])
        include.append(f"{features['folder']}/*")
    requirements = _requirements(spec)
    (context / "requirements.txt").write_text("\n".join(requirements) + "\n")
    model = record["model"]
    python_version = f"{sys.version_info.major}.{sys.version_info.minor}"
    bentofile = {
        "service": "service:Predictor",
        "include": include,
        "labels": {
            "crispml.deployment": name,
            "crispml.model": str(model["name"]),
            "crispml.version": str(model["version"]),
        },
        "python": {"requirements_txt": "requirements.txt", "lock_packages": False},
        "docker": {"python_version": python_version},
    }
    (context / "bentofile.yaml").write_text(json.dumps(bentofile, indent=2))  # JSON is YAML
    started = time.monotonic()
    out = _bentoml(
        ["build", str(context), "-f", str(context / "bentofile.yaml"), "--output", "tag"],
        cwd=context,
        project=project,
        what="bentoml build",
    )
    lines = out.strip().splitlines()
    if not lines:
        raise CrispmlError("bentoml build printed no bento tag")
    tag = lines[-1].strip().removeprefix("__tag__:")
    return tag, requirements, time.monotonic() - started
