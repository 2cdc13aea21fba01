"""The flagship (examples/churn/) as `make demo` runs it: demo.py on free ports, HOME empty.

One run of the whole demo (train and serve by customer id, traffic, no drift, a shifted world,
drift → retrain → churn/2 served, a Prefect server and schedule), then what it must leave
behind: two registered versions with churn/2 champion, the drift report, Prefect's flow runs
readable in the project's database, nothing written into HOME, and no process still running.
A taken port stops it before any work, in one line.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from suite_helpers import free_port, run_cli

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable

pytestmark = pytest.mark.slow


def _copy(tmp_path: Path) -> Path:
    target = tmp_path / "churn"
    shutil.copytree(
        REPO / "examples" / "churn",
        target,
        ignore=shutil.ignore_patterns(".crispml", "data", "*.parquet", "__pycache__"),
    )
    return target


# None of the variables that keep backends out of HOME (as in test_quickstart): crispml sets them.
_HIDING = ("XDG_", "MPL", "MLFLOW_", "BENTOML_", "GX_", "PREFECT_", "DO_NOT_TRACK", "FEAST_", "PROMETHEUS_")


def _env(project: Path, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_HIDING)}
    return {**env, "HOME": str(home), "CRISPML_PROJECT": str(project), "COLUMNS": "200"}


def _ours(project: Path) -> list[str]:
    """Processes still running that belong to the demo's project (by command line or folder)."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "cwd"]):
        try:
            text = " ".join(proc.info["cmdline"] or []) + " " + (proc.info["cwd"] or "")
        except (psutil.Error, TypeError):
            continue
        if str(project) in text and proc.pid != os.getpid():
            found.append(f"{proc.pid}: {' '.join(proc.info['cmdline'] or [])[:120]}")
    return found


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.timeout(1800)  # ≤ 6 min on an idle 2-core machine; a busy one is 2-4x slower
def test_the_demo_end_to_end(tmp_path: Path) -> None:
    project = _copy(tmp_path)
    home = tmp_path / "home"
    home.mkdir()
    port, prefect_port = free_port(), free_port()
    timings = tmp_path / "timings.json"
    try:
        done = subprocess.run(
            [PYTHON, "demo.py", "--port", str(port), "--prefect-port", str(prefect_port), "--timings", str(timings)],
            cwd=project,
            env=_env(project, home),
            capture_output=True,
            text=True,
            timeout=1500,
        )
        out = done.stdout
        assert done.returncode == 0, out[-4000:] + done.stderr[-4000:]

        # Two versions, churn/2 champion; it was served after the retrain (the header said so).
        from mlflow import MlflowClient

        store = f"sqlite:///{project / '.crispml' / 'mlflow.db'}"
        client = MlflowClient(tracking_uri=store, registry_uri=store)
        versions = sorted(int(v.version) for v in client.search_model_versions("name='churn'"))
        assert versions == [1, 2]
        assert str(client.get_model_version_by_alias("churn", "champion").version) == "2"
        champion = client.get_model_version("churn", "2")
        first = client.get_model_version("churn", "1")
        assert (
            client.get_run(champion.run_id).data.metrics["roc_auc"]
            > client.get_run(first.run_id).data.metrics["roc_auc"]
        )
        assert "x-crispml-model: churn/1" in out and "x-crispml-model: churn/2" in out
        deployment = project / ".crispml" / "deployments" / "churn"
        assert not (deployment / "deployment.json").exists(), "undeployed at the end"
        (record,) = (json.loads(p.read_text()) for p in deployment.glob("undeployed-*.json"))
        assert str(record["model"]["version"]) == "2"
        last = json.loads((deployment / "predictions.jsonl").read_text().splitlines()[-1])
        assert last["model"] == "churn/2" and set(last["inputs"][0]) == {"customer_id"} and last["features"]

        # The monitor runs: one without drift, one with drift that retrained; the report exists.
        runs = {r["run_id"]: r for r in json.loads(_cli(project, home, "runs", "--json", "--limit", "50"))}
        monitors = sorted(
            (rid for rid, r in runs.items() if list(r["stages"]) == ["monitor"]), key=lambda rid: runs[rid]["started"]
        )
        # quiet (step 3), drifted (step 4), and the one the --monitor schedule ran (step 5)
        assert len(monitors) == 3
        reports = [project / ".crispml" / "runs" / rid / "artifacts" / "monitor" for rid in monitors[:2]]
        quiet, drifted = (json.loads((r / "drift.json").read_text()) for r in reports)
        assert not quiet["dataset_drift"] and drifted["dataset_drift"]
        assert drifted["drift_share"] >= drifted["drift_share_threshold"]
        assert all((r / "drift.html").stat().st_size > 100_000 for r in reports)
        retrain = json.loads(_cli(project, home, "show", monitors[1], "--json"))["links"]["retrain_run"]
        assert runs[retrain]["status"] == "succeeded"

        # Prefect's flow runs (the ephemeral API's and the server's) are in the project's database.
        with sqlite3.connect(project / ".crispml" / "prefect" / "prefect.db") as db:
            flow_runs = dict(db.execute("SELECT name, state_type FROM flow_run").fetchall())
        assert flow_runs[retrain] == "COMPLETED"
        scheduled = [
            m
            for m in runs.values()
            if "prefect_flow_run_url" in json.loads(_cli(project, home, "show", m["run_id"], "--json"))["links"]
        ]
        assert [m["run_id"] for m in scheduled] == [monitors[2]], "the monitor the schedule ran, linked to Prefect's UI"
        assert all(flow_runs.get(m["run_id"]) == "COMPLETED" for m in scheduled)

        # The summary, and how to explore the stores afterwards.
        assert "drift, per monitor run" in out and "drift.html" in out
        assert out.rstrip().splitlines()[-2].strip().startswith("cd examples/churn && ../../.venv/bin/crispml ui")
        assert set(json.loads(timings.read_text())) >= {"total"}
    finally:
        subprocess.run([PYTHON, "simulate.py", "--reset"], cwd=project, env=_env(project, home), timeout=300)
    # Nothing written into HOME; nothing left running; the ports free again.
    assert list(home.iterdir()) == []
    assert _ours(project) == []
    assert _port_free(port) and _port_free(prefect_port)


def test_a_taken_port_stops_it_before_any_work(tmp_path: Path) -> None:
    project = _copy(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [PYTHON, "demo.py", "--port", str(port), "--prefect-port", str(free_port())],
            cwd=project,
            env=_env(project, tmp_path),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 2
    assert done.stderr == f"port {port} is in use: make demo PORT={port + 100}\n" and done.stdout == ""
    assert not (project / ".crispml").exists() and not (project / "data").exists()


def _cli(project: Path, home: Path, *args: str) -> str:
    """The stdout of a command that must succeed, in the demo's environment (HOME empty)."""
    return run_cli(project, *args, base_env=_env(project, home), timeout=None, check=True).stdout


def test_a_failing_step_is_one_line_and_stops_the_demo(tmp_path: Path) -> None:
    project = _copy(tmp_path)
    recipe = project / "recipe.yaml"
    text = recipe.read_text()
    assert "n_estimators: 100" in text
    recipe.write_text(text.replace("n_estimators: 100", "n_estimators: many"))
    port = free_port()
    done = subprocess.run(
        [PYTHON, "demo.py", "--port", str(port), "--prefect-port", str(free_port())],
        cwd=project,
        env=_env(project, tmp_path / "home"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        f"demo failed: `crispml run recipe.yaml --set deploy.port={port}` exited 2; everything it started is stopped"
    )
    assert "n_estimators" in done.stdout + done.stderr  # the command's own error, shown
    assert "$ crispml undeploy churn" in done.stdout and "2. ask the served model" not in done.stdout
    assert _ours(project) == [] and _port_free(port)
