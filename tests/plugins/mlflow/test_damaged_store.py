"""A damaged embedded store (``.crispml/mlflow.db``): refused in one line naming the file.

Empty (0 bytes), not SQLite, truncated, or SQLite but not MLflow's: a run fails (exit 1, its
record kept), ``crispml models`` fails (exit 1), and the file is left exactly as it was: an empty
file never silently becomes a fresh registry whose first model becomes champion.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import crispml

CRISPML = str(Path(sys.executable).with_name("crispml"))
REGISTER = {"use": "mlflow", "model_name": "churn", "compare_on": "roc_auc"}


def damage(kind: str, db: Path, template: Path) -> None:
    db.parent.mkdir(parents=True, exist_ok=True)
    if kind == "empty":
        db.write_bytes(b"")
    elif kind == "not sqlite":
        db.write_bytes(os.urandom(4096))
    elif kind == "truncated":
        data = template.read_bytes()
        db.write_bytes(data[: len(data) // 2])
    elif kind == "not mlflow":
        with sqlite3.connect(db) as conn:
            conn.execute("CREATE TABLE notes (text)")
        sqlite3.connect(db).close()
    else:  # pragma: no cover
        raise AssertionError(kind)


EXPECTED = {
    "empty": "is empty (0 bytes)",
    "not sqlite": "is not an SQLite database",
    "truncated": "is corrupt or truncated",
    "not mlflow": "is an SQLite database but not an MLflow store",
}


@pytest.mark.parametrize("kind", list(EXPECTED))
def test_a_damaged_store_is_refused_in_one_line(
    kind: str,
    project: Path,
    mlflow_db_template: Path,
    write_recipe: Callable[..., Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    db = project / ".crispml" / "mlflow.db"
    damage(kind, db, mlflow_db_template)
    before = db.read_bytes()

    from crispml.cli import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["models"])
    out, err = capsys.readouterr()
    assert exit_info.value.code == 1, (out, err)
    assert len(err.strip().splitlines()) == 1, err
    assert ".crispml/mlflow.db" in err and EXPECTED[kind] in err, err
    assert "Traceback" not in err

    result = crispml.run(write_recipe(register=REGISTER))
    assert result.status == "failed"
    error = str(result.manifest["error"])
    assert "stage 'register' (plugin 'mlflow')" in error and ".crispml/mlflow.db" in error, error
    assert EXPECTED[kind] in error and "\n" not in error, error
    assert db.read_bytes() == before  # left as it was: no registry started in its place
    assert not (project / ".crispml" / "mlartifacts").exists()


def test_an_empty_store_fails_a_real_run_with_exit_1(
    project: Path, mlflow_db_template: Path, write_recipe: Callable[..., Path]
) -> None:
    db = project / ".crispml" / "mlflow.db"
    damage("empty", db, mlflow_db_template)
    write_recipe(tracking=["mlflow"], register=REGISTER)
    env = {**os.environ, "COLUMNS": "400", "CRISPML_PROJECT": str(project)}
    done = subprocess.run(
        [CRISPML, "run", "recipe.yaml"], cwd=project, capture_output=True, text=True, timeout=300, env=env
    )
    assert done.returncode == 1, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("run failed") and ".crispml/mlflow.db is empty (0 bytes)" in last, done.stderr
    assert "Traceback" not in done.stderr
    assert db.stat().st_size == 0
    (manifest,) = crispml.RunStore(project).list_runs()
    assert manifest["status"] == "failed"  # the run record is kept


KILLED_MIGRATING = """
import os, signal, sys
import mlflow.store.db.utils as db_utils
from crispml_mlflow import _backend

def killed(engine):  # the tables exist, the migrations have not run: a half-made store
    os.kill(os.getpid(), signal.SIGKILL)

db_utils._upgrade_db = killed
project = __import__("pathlib").Path(sys.argv[1])
_backend.client(_backend.embedded_uri(project), project)
"""


def test_a_store_killed_while_being_created_is_not_left_half_made(project: Path) -> None:
    """Killed inside MLflow's migrations: no ``mlflow.db`` at all (it is made under a temporary
    name and renamed), so the next start creates a whole one instead of refusing a broken one."""
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    done = subprocess.run(
        [sys.executable, "-c", KILLED_MIGRATING, str(project)], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == -9, done.stderr
    folder = project / ".crispml"
    assert not (folder / "mlflow.db").exists()
    assert [p.name for p in folder.glob("mlflow.db.creating-*")]  # what the killed process left

    from crispml_mlflow import _backend

    _backend.client(_backend.embedded_uri(project), project).search_experiments()
    assert sorted(p.name for p in folder.iterdir()) == ["mlflow.db", "mlflow.db.lock"]
    _backend.check_sqlite(folder / "mlflow.db")
