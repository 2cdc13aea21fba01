"""Fixtures for the mlflow plugin's tests: real MLflow, on SQLite and on a real server.

* ``mlflow_db_template``: one migrated SQLite store per session; ``mlflow_project`` copies it
  into a fresh project's ``.crispml/mlflow.db`` (migrating a new store costs ~2 s each).
* ``write_recipe``: the quickstart recipe, with tracking/register options, into the project.
* ``mlflow_server``: a real ``mlflow server`` on 127.0.0.1 whose backend store is a PostgreSQL
  database created for the session (skipped with its reason, or failed under CI=true, when
  PostgreSQL does not answer); dropped at the end.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from services import require_service
from suite_helpers import free_port

QUICKSTART = Path(__file__).resolve().parents[3] / "examples" / "quickstart"

os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
PG_HOST, PG_PORT = "127.0.0.1", 5432


@pytest.fixture(scope="session")
def mlflow_db_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from crispml_mlflow import _backend

    folder = tmp_path_factory.mktemp("mlflow-template") / ".crispml"
    uri = _backend.embedded_uri(folder.parent)
    _backend.client(uri, folder.parent)
    return folder / _backend.EMBEDDED_DB


@pytest.fixture
def mlflow_project(project: Path, mlflow_db_template: Path) -> Path:
    """A fresh project whose embedded MLflow store already exists (copied, not migrated)."""
    (project / ".crispml").mkdir()
    shutil.copy(mlflow_db_template, project / ".crispml" / "mlflow.db")
    return project


@pytest.fixture
def write_recipe(project: Path) -> Callable[..., Path]:
    """``write_recipe(tracking=..., register=..., **top_level)`` → the quickstart, changed."""

    def write(name: str = "recipe.yaml", **changes: Any) -> Path:
        recipe = yaml.safe_load((QUICKSTART / "recipe.yaml").read_text())
        recipe["load"]["path"] = str(QUICKSTART / "data" / "churn.csv")
        # The quickstart's own tracking/register/validate/deploy are not what these tests are
        # about (validate would import Great Expectations: seconds per process; deploy would
        # serve the champion with BentoML on port 3000, and cannot check without register).
        for key in ("validate", "tracking", "register", "deploy"):
            recipe.pop(key, None)
        for key, value in changes.items():
            if value is None:
                recipe.pop(key, None)
            else:
                recipe[key] = value
        path = project / name
        path.write_text(yaml.safe_dump(recipe, sort_keys=False))
        return path

    return write


def _pg_connect(dbname: str) -> Any:
    import psycopg2

    last: Exception | None = None
    for user in ("postgres", "root"):
        try:
            conn = psycopg2.connect(host=PG_HOST, port=PG_PORT, user=user, dbname=dbname)
            conn.autocommit = True
            return conn, user
        except Exception as exc:
            last = exc
    raise RuntimeError(f"cannot connect to PostgreSQL on {PG_HOST}:{PG_PORT}: {last}")


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    require_service(PG_HOST, PG_PORT, "PostgreSQL")
    database = f"crispml_mlflow_{secrets.token_hex(4)}"
    admin, user = _pg_connect("test")
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{database}"')
    folder = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    exe = str(Path(sys.executable).with_name("mlflow"))
    log = (folder / "server.log").open("w")
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "HOME": str(folder)}
    proc = subprocess.Popen(
        [
            exe,
            "server",
            "--backend-store-uri",
            f"postgresql+psycopg2://{user}@{PG_HOST}:{PG_PORT}/{database}",
            "--artifacts-destination",
            str(folder / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {(folder / 'server.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("mlflow server did not answer /health within 120 s")
            time.sleep(0.5)
        yield uri
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        admin.close()
