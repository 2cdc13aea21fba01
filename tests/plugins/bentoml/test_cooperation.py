"""bentoml cooperating through hooks only: a registry that is not MLflow, and a monitor's view.

A small registry plugin (a folder of pickled scikit-learn pipelines with a JSON signature and
input example) is installed as a third-party entry point, and the mlflow plugin is disabled:
``crispml run`` (the stage) and ``crispml deploy`` (the command) serve its versions with real
``bentoml serve`` processes, knowing nothing of where they came from. Then the deployment is
read the way a monitor reads it: ``crispml.deployment`` and ``crispml.prediction_records``,
never the serving plugin's files.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from suite_helpers import free_port, run_cli
from test_bentoml import CHURN, ROW, predict, stop_everything_under

import crispml

pytestmark = pytest.mark.slow

FOLDER_REGISTRY = '''
"""A model registry that is a folder: models/<name>/<version>/{model.pkl, model.json}."""
import json
from pathlib import Path

import crispml


@crispml.hookimpl
def crispml_resolve_model(reference, project_dir):
    name, sep, version = reference.partition("/")
    if not sep or not version.isdigit():
        return None
    folder = Path(project_dir) / "models" / name / version
    if not (folder / "model.json").is_file():
        return None
    meta = json.loads((folder / "model.json").read_text())
    return crispml.ResolvedModel(
        reference=reference,
        name=name,
        version=version,
        path=Path(meta.get("path", folder)),
        flavor=meta.get("flavor", "pickle"),
        signature=meta["signature"],
        lineage={"training_run": meta["training_run"], "registry": "folder", "uri": f"folder:{name}/{version}"},
        input_example=meta["example"],
        metadata={"requirements": ["scikit-learn"]},
    )
'''

SIGNATURE = [
    {"name": "tenure_months", "type": "long"},
    {"name": "contract", "type": "string"},
    {"name": "internet", "type": "string"},
    {"name": "payment_method", "type": "string"},
    {"name": "monthly_charges", "type": "double"},
    {"name": "total_charges", "type": "double"},
    {"name": "support_calls", "type": "long"},
]


def _fit(C: float) -> Any:
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    frame = pd.read_csv(CHURN)
    categorical = ["contract", "internet", "payment_method"]
    numeric = [c["name"] for c in SIGNATURE if c["name"] not in categorical]
    pipe = Pipeline(
        [
            (
                "prep",
                ColumnTransformer(
                    [("cat", OneHotEncoder(handle_unknown="ignore"), categorical), ("num", StandardScaler(), numeric)]
                ),
            ),
            ("clf", LogisticRegression(C=C, max_iter=500)),
        ]
    )
    pipe.fit(frame[[c["name"] for c in SIGNATURE]], frame["churned"])
    return pipe, frame


@dataclass
class Project:
    """A project whose only registry is the folder one (``folder_registry_project``), served on
    ``port``; ``env`` is the environment of its commands."""

    path: Path
    port: int
    env: dict[str, str]
    models: dict[str, Any]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return run_cli(self.path, *args, timeout=timeout, base_env=self.env, columns=None)


def folder_registry_project(root: Path, **modules: str) -> tuple[Path, Path, dict[str, str]]:
    """Under ``root``: a ``site`` folder where the folder registry is installed as a third-party
    entry point (with ``modules``, name → source, beside it), an empty ``project`` (its
    ``.crispml/``), and the environment its commands run in — the site on ``PYTHONPATH``, the
    mlflow plugin disabled (the folder is the only registry), ``HOME`` an empty folder.
    ``(site, project, env)``; this module's tests and ``test_batching`` serve from it."""
    site, project = root / "site", root / "project"
    dist = site / "crispml_folder_registry-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: crispml-folder-registry\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[crispml]\nfolder = tp_folder_registry\n")
    (site / "tp_folder_registry.py").write_text(FOLDER_REGISTRY)
    for name, source in modules.items():
        (site / f"{name}.py").write_text(source)
    (project / ".crispml").mkdir(parents=True)
    env = {
        **os.environ,
        "PYTHONPATH": str(site),
        "CRISPML_PROJECT": str(project),
        "CRISPML_DISABLE_PLUGINS": "mlflow",  # no MLflow anywhere: the folder is the only registry
        "HOME": str(root / "home"),
    }
    (root / "home").mkdir()
    return site, project, env


@pytest.fixture(scope="module")
def folder_project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    root = tmp_path_factory.mktemp("folder-registry")
    _, project, env = folder_registry_project(root)
    models = {}
    for version, C in (("1", 1.0), ("2", 0.01)):
        model, frame = _fit(C)
        folder = project / "models" / "churn" / version
        folder.mkdir(parents=True)
        (folder / "model.pkl").write_bytes(pickle.dumps(model))
        example = json.loads(frame[[c["name"] for c in SIGNATURE]].head(5).to_json(orient="records"))
        meta = {"signature": SIGNATURE, "training_run": f"train-run-{version}", "example": example}
        (folder / "model.json").write_text(json.dumps(meta))
        models[version] = model
    # Versions a registry may describe but bentoml cannot serve.
    for version, changes in (
        ("3", {"flavor": "onnx"}),
        ("4", {"signature": None}),
        ("5", {"path": str(root / "gone")}),
    ):
        folder = project / "models" / "churn" / version
        folder.mkdir(parents=True)
        meta = {"signature": SIGNATURE, "training_run": "x", "example": [], **changes}
        (folder / "model.json").write_text(json.dumps(meta))
    port = free_port()
    recipe = {
        "name": "serve-folder-model",
        "load": {"use": "files", "path": str(CHURN), "target": "churned"},
        "deploy": {
            "use": "bentoml",
            "name": "folderchurn",
            "model": "churn/1",
            "port": port,
            "prediction_log_mb": 0.004,
            "prediction_log_backups": 50,
        },
    }
    (project / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    try:
        yield Project(path=project, port=port, env=env, models=models)
    finally:
        stop_everything_under(project)


def _expected(model: Any, rows: list[dict[str, Any]]) -> tuple[list[int], list[dict[str, float]]]:
    import pandas as pd

    frame = pd.DataFrame.from_records(rows, columns=[c["name"] for c in SIGNATURE])
    predictions = [int(v) for v in model.predict(frame)]
    keys = [str(c) for c in model.classes_]
    probabilities = [dict(zip(keys, map(float, p), strict=True)) for p in model.predict_proba(frame)]
    return predictions, probabilities


_CASES = [(1, "month-to-month"), (70, "two-year"), (20, "one-year"), (5, "month-to-month"), (40, "two-year")]
ROWS = [{**ROW, "tenure_months": t, "support_calls": t % 7, "contract": c} for t, c in _CASES]


def test_a_registry_that_is_not_mlflow_is_served_by_the_recipe_and_the_command(folder_project: Project) -> None:
    done = folder_project.cli("run", "recipe.yaml")
    assert done.returncode == 0, done.stdout + done.stderr
    status, headers, body = predict(folder_project.url, *ROWS)
    assert status == 200, body
    assert headers["x-crispml-model"] == "churn/1"
    want_predictions, want_probabilities = _expected(folder_project.models["1"], ROWS)
    assert body["predictions"] == want_predictions
    for got, want in zip(body["probabilities"], want_probabilities, strict=True):
        assert got.keys() == want.keys() and all(abs(got[k] - want[k]) < 1e-9 for k in want)
    assert body["model"]["crispml_run_id"] == "train-run-1" and body["model"]["uri"] == "folder:churn/1"
    # The command finds the same registry through the session and switches to version 2.
    done = folder_project.cli("deploy", "churn/2", "--name", "folderchurn")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "serving churn/2" in done.stdout
    status, headers, body = predict(folder_project.url, *ROWS)
    assert status == 200 and headers["x-crispml-model"] == "churn/2"
    assert body["predictions"] == _expected(folder_project.models["2"], ROWS)[0]
    # Nothing of MLflow was made or asked: no embedded registry, nothing in HOME.
    assert not (folder_project.path / ".crispml" / "mlflow.db").exists()
    assert list(Path(folder_project.env["HOME"]).rglob("*")) == []
    # A version the folder does not hold is one clear line, and nothing changes.
    done = folder_project.cli("deploy", "churn/7", "--name", "folderchurn")
    assert done.returncode == 2 and "no installed plugin resolves the model 'churn/7'" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert predict(folder_project.url, ROW)[1]["x-crispml-model"] == "churn/2"


@pytest.mark.parametrize(
    ("version", "code", "message"),
    [
        ("3", 2, "bentoml cannot serve a model of flavor 'onnx'"),
        ("4", 2, "the registry gives no signature"),
        ("5", 1, "is not there"),
    ],
)
def test_a_version_bentoml_cannot_serve_is_one_line_and_changes_nothing(
    folder_project: Project, version: str, code: int, message: str
) -> None:
    releases = folder_project.path / ".crispml" / "deployments" / "other" / "releases"
    done = folder_project.cli("deploy", f"churn/{version}", "--name", "other", "--port", str(free_port()))
    assert done.returncode == code, done.stdout + done.stderr
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not releases.exists() or not any(releases.iterdir())
    assert not (folder_project.path / ".crispml" / "deployments" / "other" / "deployment.json").exists()


def test_deployment_and_prediction_records_read_what_was_served(folder_project: Project) -> None:
    """Real requests to the served model, read back through the core's contract: one record per
    predicted row, in order across rotated files, bounded by ``since`` and ``last``."""
    done = folder_project.cli("deploy", "churn/2", "--name", "folderchurn")
    assert done.returncode == 0, done.stdout + done.stderr
    deployment = _deployment(folder_project)
    assert deployment.model == "churn/2" and deployment.training_run == "train-run-2"
    assert deployment.status == "up" and deployment.url == folder_project.url
    assert deployment.prediction_log is not None
    before = len(crispml.prediction_records(deployment))
    started = datetime.now(UTC)
    time.sleep(0.02)
    sent: list[dict[str, Any]] = []
    for i in range(30):  # single records, enough to rotate a 4 kB log several times
        row = {**ROW, "tenure_months": 100 + i}
        assert predict(folder_project.url, row)[0] == 200
        sent.append(row)
    assert predict(folder_project.url, *ROWS)[0] == 200  # one request, five records
    sent.extend(ROWS)
    time.sleep(0.02)
    mark = datetime.now(UTC)
    time.sleep(0.02)
    late = [{**ROW, "tenure_months": 900 + i} for i in range(3)]
    assert predict(folder_project.url, *late)[0] == 200

    files = sorted(p.name for p in deployment.prediction_log.parent.glob(deployment.prediction_log.name + ".*"))
    assert len([f for f in files if f.rsplit(".", 1)[-1].isdigit()]) >= 3, files
    window = crispml.prediction_records(deployment, since=started)
    assert [r["inputs"] for r in window] == sent + late, "every record, in order, across rotated files"
    assert len(crispml.prediction_records(deployment)) == before + len(sent) + len(late)
    predictions, probabilities = _expected(folder_project.models["2"], sent + late)
    assert [r["prediction"] for r in window] == predictions
    assert all(abs(r["probabilities"]["1"] - p["1"]) < 1e-9 for r, p in zip(window, probabilities, strict=True))
    for r in window:
        assert r["model"] == "churn/2" and r["training_run"] == "train-run-2" and r["features"] is None
        assert r["time"].tzinfo is not None and started <= r["time"] <= datetime.now(UTC)
    assert [r["inputs"] for r in crispml.prediction_records(deployment, since=mark)] == late
    assert [r["inputs"] for r in crispml.prediction_records(deployment, last=4)] == [ROWS[-1], *late]
    assert [r["inputs"] for r in crispml.prediction_records(deployment, since=timedelta(minutes=10), last=2)] == late[
        1:
    ]
    # A writer killed mid-line leaves a torn last line: the reader skips it, the rest stands.
    with deployment.prediction_log.open("ab") as fh:
        fh.write(b'{"schema": 1, "time": "2030-01-01T00:00:00+00:00", "inputs": [{"tenure')
    assert [r["inputs"] for r in crispml.prediction_records(deployment, last=3)] == late


def _deployment(project: Project) -> crispml.Deployment:
    """``crispml.deployment`` in a process that has the folder registry installed, like a monitor's."""
    code = (
        "import pickle, sys, crispml\nd = crispml.deployment(sys.argv[1])\nsys.stdout.buffer.write(pickle.dumps(d))\n"
        "try:\n    crispml.deployment('folderchrun')\n"
        "except crispml.UsageError as exc:\n    print(exc, file=sys.stderr)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, "folderchurn"], capture_output=True, timeout=120, env=project.env, cwd=project.path
    )
    assert done.returncode == 0, done.stderr.decode()
    # A wrong name lists the names the serving plugin knows (crispml_deployment_names).
    unknown = done.stderr.decode().strip().splitlines()[-1]
    assert unknown.startswith("no deployment named 'folderchrun' (deployments: ") and "folderchurn" in unknown
    deployment = pickle.loads(done.stdout)
    assert isinstance(deployment, crispml.Deployment)
    return deployment


def test_what_a_release_runs_imports_neither_crispml_nor_a_registry() -> None:
    """``service.py`` and ``flavors.py`` run inside a bento where crispml is not installed, and
    load a model by flavor, never through a registry client."""
    import ast

    import crispml_bentoml

    folder = Path(crispml_bentoml.__file__).parent
    for name in ("_service.py", "_flavors.py"):
        tree = ast.parse((folder / name).read_text())
        top = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                top.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                top.add(node.module.split(".")[0])
        assert not {n for n in top if n.startswith("crispml")}, (name, top)
        assert not any("MlflowClient" in ast.unparse(n) for n in ast.walk(tree) if isinstance(n, ast.Name)), name
