"""The bentoml plugin against real ``bentoml serve`` processes and real HTTP on 127.0.0.1.

The tests share one project with three registered versions of ``churn`` (1 the champion, 2 a
challenger, 3 a coin flip no smoke test passes) and its deployment ``churn``, deployed by the
recipe (``served``). Each test first brings that deployment to the state it needs
(:func:`serving`), so any one of them passes alone; in file order the set-up is mostly a no-op.
Everything a test starts is stopped at the end of the session, whatever happened.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml
from suite_helpers import CRISPML, free_port, run_cli

from crispml import hash_file

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[3]
CHURN = REPO / "examples" / "quickstart" / "data" / "churn.csv"

os.environ["BENTOML_DO_NOT_TRACK"] = "True"
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"


def recipe(name: str, *, C: float, register: dict[str, Any], deploy: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": name,
        "split": {"test_size": 0.25, "seed": 42, "stratify": "churned"},
        "load": {"use": "files", "path": str(CHURN), "target": "churned"},
        "train": {
            "use": "sklearn",
            "estimator": "sklearn.linear_model.LogisticRegression",
            "params": {"C": C, "max_iter": 500},
        },
        "evaluate": {"use": "sklearn", "metrics": ["accuracy", "roc_auc"], "plots": False},
        "register": register,
    }
    if deploy is not None:
        out["deploy"] = deploy
    return out


@dataclass
class Served:
    project: Path
    port: int
    url: str
    run_id: str
    home: Path
    """``$HOME`` of every command the tests run: an empty folder that must stay empty."""

    def cli(
        self, *args: str, timeout: float = 300, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return run_cli(self.project, *args, timeout=timeout, env={"HOME": str(self.home), **(env or {})})

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        """``crispml *args`` started in the background (to be killed mid-way), output discarded."""
        env = {**os.environ, "CRISPML_PROJECT": str(self.project), "HOME": str(self.home)}
        return subprocess.Popen(
            [CRISPML, *args], cwd=self.project, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )


def _our_processes(marker: str) -> list[int]:
    """Process groups whose leader (or any member) has ``marker`` in its command line."""
    groups = set()
    for proc in psutil.process_iter(["pid"]):
        if proc.pid == os.getpid():
            continue
        try:
            cmdline = " ".join(proc.cmdline())
            # BentoML's workers name no folder on their command line but work in the release's.
            if marker in cmdline or proc.cwd().startswith(marker):
                groups.add(os.getpgid(proc.pid))
        except (psutil.Error, OSError):
            continue
    groups.discard(os.getpgid(0))
    return sorted(groups)


def stop_everything_under(folder: Path) -> None:
    groups = _our_processes(str(folder))
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pgid in groups:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, sig)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _our_processes(str(folder)):
            time.sleep(0.1)
        groups = _our_processes(str(folder))
        if not groups:
            return


COIN_MODEL = '''
import mlflow
import numpy as np


class Coin(mlflow.pyfunc.PythonModel):
    """Predicts a coin flip: two calls never agree, so no smoke test can pass."""

    def predict(self, context, model_input, params=None):
        return np.random.default_rng().integers(0, 2, len(model_input))


mlflow.models.set_model(Coin())
'''

REGISTER_COIN = """
import sys, warnings
import mlflow, pandas as pd
from mlflow import MlflowClient
from mlflow.models import infer_signature

warnings.simplefilter("ignore")
uri, code, data, artifacts = sys.argv[1:5]
mlflow.set_tracking_uri(uri)
mlflow.set_registry_uri(uri)
client = MlflowClient(uri, uri)
exp = client.get_experiment_by_name("coin") or None
exp_id = exp.experiment_id if exp else client.create_experiment("coin", artifact_location=artifacts)
frame = pd.read_csv(data).drop(columns=["churned"]).head(64)  # 64 flips: never agree by chance
with mlflow.start_run(experiment_id=exp_id):
    info = mlflow.pyfunc.log_model(
        name="model", python_model=code, input_example=frame,
        signature=infer_signature(frame, [0, 1] * 32), pip_requirements=["mlflow"],
    )
mv = client.create_model_version("churn", info.model_uri, run_id=info.run_id, model_id=info.model_id)
print(mv.version)
"""


@pytest.fixture(scope="session")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    project = tmp_path_factory.mktemp("bentoml-project")
    home = tmp_path_factory.mktemp("bentoml-home")
    (project / ".crispml").mkdir()
    port = free_port()
    deploy = {"use": "bentoml", "name": "churn", "port": port, "prediction_log_mb": 0.02, "prediction_log_backups": 3}
    first = recipe(
        "churn-serve", C=1.0, register={"use": "mlflow", "model_name": "churn", "compare_on": "roc_auc"}, deploy=deploy
    )
    second = recipe("churn-challenger", C=0.001, register={"use": "mlflow", "model_name": "churn"})
    (project / "recipe.yaml").write_text(yaml.safe_dump(first, sort_keys=False))
    (project / "challenger.yaml").write_text(yaml.safe_dump(second, sort_keys=False))
    try:
        served = Served(project=project, port=port, url=f"http://127.0.0.1:{port}", run_id="", home=home)
        done = served.cli("run", "recipe.yaml")
        assert done.returncode == 0, done.stdout + done.stderr
        runs = sorted((project / ".crispml" / "runs").iterdir())
        served.run_id = runs[-1].name
        done = served.cli("run", "challenger.yaml")
        assert done.returncode == 0, done.stdout + done.stderr
        (project / "coin.py").write_text(COIN_MODEL)
        uri = f"sqlite:///{project / '.crispml' / 'mlflow.db'}"
        done = subprocess.run(
            [
                sys.executable,
                "-c",
                REGISTER_COIN,
                uri,
                str(project / "coin.py"),
                str(CHURN),
                str(project / ".crispml" / "mlartifacts"),
            ],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=project,
            env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"},
        )
        assert done.returncode == 0, done.stderr[-3000:]
        assert done.stdout.strip().splitlines()[-1] == "3", done.stdout
        yield served
    finally:
        stop_everything_under(project)


ROW = {
    "tenure_months": 3,
    "contract": "month-to-month",
    "internet": "fiber",
    "payment_method": "check",
    "monthly_charges": 95.5,
    "total_charges": 286.5,
    "support_calls": 4,
}


def request(
    url: str,
    method: str = "POST",
    path: str = "/predict",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30,
) -> tuple[int, dict[str, str], Any]:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request(method, path, body=body, headers={"content-type": "application/json", **(headers or {})})
        resp = conn.getresponse()
        raw = resp.read()
        try:
            payload = json.loads(raw)
        except ValueError:
            payload = raw.decode(errors="replace")
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, payload
    finally:
        conn.close()


def predict(url: str, *rows: dict[str, Any]) -> tuple[int, dict[str, str], Any]:
    return request(url, body=json.dumps({"records": list(rows or [ROW])}).encode())


def record(served: Served, name: str = "churn") -> dict[str, Any]:
    return json.loads((served.project / ".crispml" / "deployments" / name / "deployment.json").read_text())


def deploy_version(served: Served, version: str) -> None:
    done = served.cli("deploy", f"churn/{version}", "--name", "churn", "--port", str(served.port))
    assert done.returncode == 0, done.stdout + done.stderr


def serving(served: Served, version: str | None = None, previous: str | None = None) -> dict[str, Any]:
    """Bring ``churn`` to serving ``version`` (any, if ``None``) with ``previous`` the last entry of
    its history (if given), deploying what is missing; its record."""
    path = served.project / ".crispml" / "deployments" / "churn" / "deployment.json"
    rec = json.loads(path.read_text()) if path.is_file() else None
    up = False
    if rec is not None:
        with contextlib.suppress(OSError):
            up = predict(served.url)[0] == 200
    history = [h["model"]["version"] for h in (rec or {}).get("history") or []]
    if (
        up
        and rec is not None
        and (version is None or rec["model"]["version"] == version)
        and (previous is None or history[-1:] == [previous])
    ):
        return rec
    if previous is not None:
        deploy_version(served, previous)
    deploy_version(served, version or "1")
    return record(served)


def other_version(rec: dict[str, Any]) -> str:
    """A version of ``churn`` that passes the smoke gate and is not the one ``rec`` serves."""
    return "2" if rec["model"]["version"] == "1" else "1"


def newest_release(served: Served) -> Path:
    releases = served.project / ".crispml" / "deployments" / "churn" / "releases"
    return max(releases.iterdir(), key=lambda p: int(p.name.split("-", 1)[0]))


def log_snapshot(served: Served) -> dict[str, bytes]:
    folder = served.project / ".crispml" / "deployments" / "churn"
    return {f.name: f.read_bytes() for f in folder.glob("predictions.jsonl*") if not f.name.endswith(".lock")}


def listing(served: Served) -> list[dict[str, Any]]:
    done = served.cli("deployments", "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def alive(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def processes_working_in(folder: Path) -> list[int]:
    out = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if proc.cwd() == str(folder):
                out.append(proc.pid)
        except (psutil.Error, OSError):
            continue
    return out


def processes_naming(marker: str) -> list[int]:
    out = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if marker in " ".join(proc.cmdline()):
                out.append(proc.pid)
        except (psutil.Error, OSError):
            continue
    return out


# -- the plugin loads without its backend --------------------------------------------------------


def test_loading_plugins_imports_no_bentoml() -> None:
    code = (
        "import sys, crispml\n"
        "from crispml.cli import cli\n"
        "infos = crispml.get_plugins().describe()\n"
        "assert 'bentoml' in [i.name for i in infos]\n"
        "cli._add_plugin_commands()\n"
        "assert {'deploy', 'deployments', 'undeploy', 'predictions', 'build'} <= set(cli.commands)\n"
        "bad = [m for m in ('bentoml', 'mlflow', 'httpx', 'uvicorn', 'pandas') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_recipe_without_register_needs_a_model(tmp_path: Path) -> None:
    import crispml

    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "name": "x",
                "load": {"use": "files", "path": str(CHURN), "target": "churned"},
                "deploy": {"use": "bentoml", "name": "churn"},
            }
        )
    )
    with pytest.raises(crispml.RecipeError, match="model: churn@champion"):
        crispml.check(recipe)


# -- deploy through the recipe ------------------------------------------------------------------


def test_recipe_deploys_the_champion_with_lineage(served: Served) -> None:
    rec = serving(served, "1")
    assert rec["model"]["version"] == "1" and rec["port"] == served.port
    status, headers, body = predict(served.url, ROW, {**ROW, "tenure_months": 70, "contract": "two-year"})
    assert status == 200, body
    assert headers["x-crispml-model"] == "churn/1"
    assert len(body["predictions"]) == 2 and set(body["predictions"]) <= {0, 1}
    assert all(abs(sum(p.values()) - 1) < 1e-9 and set(p) == {"0", "1"} for p in body["probabilities"])
    # Lineage: response → model version → its MLflow run → the crispml run → the data fingerprint.
    model = body["model"]
    assert model["version"] == "1" and model["uri"] == "models:/churn/1"
    assert model["crispml_run_id"] == served.run_id
    assert model["data_fingerprint"] == hash_file(CHURN)
    manifest = json.loads((served.project / ".crispml" / "runs" / served.run_id / "manifest.json").read_text())
    deploy = next(s for s in manifest["stages"] if s["name"] == "deploy")
    assert deploy["status"] == "succeeded" and deploy["summary"]["model_uri"] == "models:/churn/1"
    assert model["run_id"] == manifest["links"]["mlflow_register_run_id"]
    assert hash_file(CHURN) in json.dumps(manifest["data"])
    # The store lives in the project; nothing in the home directory (every command, and so every
    # process the deploy started, ran with HOME set to an empty folder).
    assert any((served.project / ".crispml" / "bentoml" / "models" / "churn").iterdir())
    assert sorted(served.home.rglob("*")) == []
    (row,) = listing(served)
    assert row["status"] == "up" and row["model"] == "churn/1" and row["url"] == served.url
    assert row["pid"] == rec["proxy"]["pid"] and row["since"]


def test_same_version_again_changes_nothing(served: Served) -> None:
    before = serving(served, "1")  # the champion
    done = served.cli("deploy", "churn@champion")
    assert done.returncode == 0, done.stderr
    assert "already serving churn/1" in done.stdout
    assert record(served)["backend"]["pid"] == before["backend"]["pid"]


# -- bad input: 4xx with a message, never 5xx, the server stays up --------------------------------

BAD = {
    "missing field": json.dumps({"records": [{k: v for k, v in ROW.items() if k != "contract"}]}).encode(),
    "wrong type": json.dumps({"records": [{**ROW, "tenure_months": "three"}]}).encode(),
    "string for a number": json.dumps({"records": [{**ROW, "monthly_charges": "95.5"}]}).encode(),
    "extra field": json.dumps({"records": [{**ROW, "favourite_colour": "blue"}]}).encode(),
    "extra top-level field": json.dumps({"records": [ROW], "debug": True}).encode(),
    "no records": json.dumps({"records": []}).encode(),
    "records not a list": json.dumps({"records": ROW}).encode(),
    "a bare list": json.dumps([ROW]).encode(),
    "empty body": b"",
    "malformed json": b'{"records": [{"tenure_months": 3,',
    "not json at all": b"tenure_months=3",
    "null": b"null",
    "10 MB body": b'{"records": [' + b" " * (10 * 1024 * 1024) + b"]}",
    # Numbers the columns cannot hold, and numbers JSON does not have.
    "integer past int64": json.dumps({"records": [{**ROW, "tenure_months": 2**63}]}).encode(),
    "integer of 40 digits": json.dumps({"records": [{**ROW, "support_calls": -(10**40)}]}).encode(),
    "NaN": json.dumps({"records": [{**ROW, "monthly_charges": float("nan")}]}).encode(),
    "Infinity": json.dumps({"records": [{**ROW, "total_charges": float("inf")}]}).encode(),
    "-Infinity": json.dumps({"records": [{**ROW, "total_charges": float("-inf")}]}).encode(),
    "a float that overflows to infinity": b'{"records": [{"tenure_months": 3, "contract": "month-to-month", '
    b'"internet": "fiber", "payment_method": "check", "monthly_charges": 1e400, "total_charges": 1.0, '
    b'"support_calls": 4}]}',
    "NaN for an integer": json.dumps({"records": [{**ROW, "tenure_months": float("nan")}]}).encode(),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_a_4xx_with_a_message(served: Served, case: str) -> None:
    serving(served)
    status, _, body = request(served.url, body=BAD[case])
    assert 400 <= status < 500, (status, body)
    assert isinstance(body, dict) and body.get("error"), body
    status, _, _ = predict(served.url)
    assert status == 200


def test_bad_numbers_never_reach_the_log(served: Served) -> None:
    """Refused input is not logged, and the log stays standard JSON (no NaN, no Infinity)."""
    serving(served)
    before = log_snapshot(served)
    for case in ("NaN", "Infinity", "-Infinity", "integer past int64", "a float that overflows to infinity"):
        status, _, body = request(served.url, body=BAD[case])
        assert status == 400 and isinstance(body, dict) and body.get("error"), (case, status, body)
    assert log_snapshot(served) == before
    for content in before.values():
        for line in content.decode().splitlines():
            json.loads(line, parse_constant=lambda name: pytest.fail(f"non-standard JSON in the log: {name}"))


def _raw_request(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    """A POST with exactly ``headers`` (``request`` always sends a content-type)."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.putrequest("POST", "/predict")
        for key, value in {**headers, "content-length": str(len(body))}.items():
            conn.putheader(key, value)
        conn.endheaders(body)
        resp = conn.getresponse()
        raw = resp.read()
        try:
            return resp.status, json.loads(raw)
        except ValueError:
            return resp.status, raw.decode(errors="replace")
    finally:
        conn.close()


VALID = json.dumps({"records": [ROW]}).encode()
BOUNDARY = "crispmlboundary"
CONTENT_TYPES = {
    "text/plain": (VALID, {"content-type": "text/plain"}),
    "no content-type": (VALID, {}),
    "a form": (b"records=" + VALID, {"content-type": "application/x-www-form-urlencoded"}),
    "multipart": (
        (
            f'--{BOUNDARY}\r\ncontent-disposition: form-data; name="records"\r\n\r\n'
            f"{json.dumps([ROW])}\r\n--{BOUNDARY}--\r\n"
        ).encode(),
        {"content-type": f"multipart/form-data; boundary={BOUNDARY}"},
    ),
    "octet-stream": (VALID, {"content-type": "application/octet-stream"}),
}


@pytest.mark.parametrize("case", sorted(CONTENT_TYPES))
def test_a_body_that_is_not_json_is_refused(served: Served, case: str) -> None:
    serving(served)
    before = log_snapshot(served)
    body, headers = CONTENT_TYPES[case]
    status, answer = _raw_request(served.url, body, headers)
    assert status == 400 and isinstance(answer, dict) and answer.get("error"), (status, answer)
    assert log_snapshot(served) == before
    status, answer = _raw_request(served.url, VALID, {"content-type": "application/json; charset=utf-8"})
    assert status == 200, answer


def test_an_unseen_category_is_answered_and_flagged_in_the_log(served: Served) -> None:
    """Decision (docs/plugins/bentoml.md): a category the model never saw is answered — the
    encoder ignores it, as the model was trained to — and flagged for the monitor in the log."""
    serving(served)
    unseen = {**ROW, "contract": "weekly", "tenure_months": 7001}
    seen = {**ROW, "tenure_months": 7002}
    status, _, body = predict(served.url, seen, unseen)
    assert status == 200, body
    assert len(body["predictions"]) == 2
    done = served.cli("predictions", "churn", "--tail", "1")
    entry = json.loads(done.stdout)
    assert entry["inputs"] == [seen, unseen]
    assert entry["unseen"] == [{"record": 1, "column": "contract", "value": "weekly"}]
    assert predict(served.url, seen)[0] == 200
    entry = json.loads(served.cli("predictions", "churn", "--tail", "1").stdout)
    assert "unseen" not in entry


def _garbage(rng: random.Random) -> bytes:
    """A request body that is wrong in one of many ways (never a valid request)."""
    row: dict[str, Any] = dict(ROW)
    field = rng.choice(sorted(ROW))
    common: list[Any] = [None, True, [], {}, [1, 2], {"a": 1}, "x" * rng.randint(0, 5000)]
    wrong: dict[type, list[Any]] = {  # never a valid value for a column of that type
        str: [None, True, [], {}, 12345, 1.5],
        int: [*common, "3", 1.5, 1e-320, 2 ** rng.randint(63, 200), -(2 ** rng.randint(64, 200)), float("nan")],
        float: [*common, "1.0", float("inf"), float("-inf"), float("nan"), 2 ** rng.randint(1100, 1200)],
    }
    junk = wrong[type(ROW[field])]
    kind = rng.randrange(8)
    if kind == 0:  # a field of the wrong type or an impossible number
        row[field] = rng.choice(junk)
        return json.dumps({"records": [row]}).encode()
    if kind == 1:  # a field missing
        del row[field]
        return json.dumps({"records": [row]}).encode()
    if kind == 2:  # a field too many
        row["x" + str(rng.randint(0, 10**6))] = rng.choice(common)
        return json.dumps({"records": [row]}).encode()
    if kind == 3:  # truncated JSON
        text = json.dumps({"records": [row] * rng.randint(1, 3)}).encode()
        return text[: rng.randint(0, len(text) - 1)]
    if kind == 4:  # random bytes
        return bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 2000)))
    if kind == 5:  # deep nesting
        depth = rng.randint(10, 50_000)
        return b'{"records": ' + b"[" * depth + b"]" * depth + b"}"
    if kind == 6:  # the wrong top level
        return json.dumps(rng.choice([[row], row, "records", 3, {"record": [row]}, {"records": None}])).encode()
    # one bad record among good ones
    row[field] = rng.choice(junk)
    return json.dumps({"records": [ROW, row, ROW]}).encode()


def test_fuzzed_bodies_are_4xx_never_5xx_nor_200(served: Served) -> None:
    rec = serving(served)
    rng = random.Random(20261130)
    before = log_snapshot(served)
    failures = []
    for i in range(300):
        body = _garbage(rng)
        status, _, answer = request(served.url, body=body)
        if not (400 <= status < 500 and isinstance(answer, dict) and answer.get("error")):
            failures.append((i, status, body[:200], str(answer)[:200]))
    assert failures == [], failures[:5]
    assert log_snapshot(served) == before, "nothing refused is logged"
    assert alive(rec["backend"]["pid"]) and predict(served.url)[0] == 200


def test_server_survived_the_bad_input(served: Served) -> None:
    rec = serving(served)
    for body in BAD.values():
        request(served.url, body=body)
    assert alive(rec["backend"]["pid"]) and alive(rec["proxy"]["pid"])
    assert listing(served)[0]["status"] == "up"


# -- redeploy under load: no refused connection, no error ----------------------------------------


class Load(threading.Thread):
    """Requests back to back, half on one keep-alive connection, half on new connections."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.stop = threading.Event()
        self.errors: list[str] = []
        self.versions: list[str] = []
        self.count = 0

    def run(self) -> None:
        host, port = self.url.removeprefix("http://").split(":")
        keep = http.client.HTTPConnection(host, int(port), timeout=30)
        body = json.dumps({"records": [ROW]}).encode()
        while not self.stop.is_set():
            try:
                status, headers, payload = predict(self.url)
                self._check(status, headers.get("x-crispml-model"), payload)
                keep.request("POST", "/predict", body=body, headers={"content-type": "application/json"})
                resp = keep.getresponse()
                raw = resp.read()
                self._check(resp.status, resp.getheader("x-crispml-model"), raw)
            except Exception as exc:
                self.errors.append(f"{type(exc).__name__}: {exc}")
                keep.close()
                keep = http.client.HTTPConnection(host, int(port), timeout=30)
        keep.close()

    def _check(self, status: int, version: str | None, payload: Any) -> None:
        self.count += 1
        if status != 200:
            self.errors.append(f"HTTP {status}: {str(payload)[:200]}")
        elif version and (not self.versions or self.versions[-1] != version):
            self.versions.append(version)


def test_redeploy_under_load_has_no_downtime(served: Served) -> None:
    before = serving(served, "1")
    load = Load(served.url)
    load.start()
    try:
        time.sleep(0.5)
        done = served.cli("deploy", "churn/2", "--name", "churn")
        time.sleep(0.5)
    finally:
        load.stop.set()
        load.join(timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "serving churn/2" in done.stdout
    assert load.errors == [], load.errors[:5]
    assert load.count > 20
    assert load.versions == ["churn/1", "churn/2"], load.versions
    after = record(served)
    assert after["proxy"]["pid"] == before["proxy"]["pid"], "the public port's process must not change"
    assert after["backend"]["pid"] != before["backend"]["pid"]
    time.sleep(0.5)
    assert not alive(before["backend"]["pid"]), "the old server must be stopped once drained"
    assert processes_working_in(Path(before["backend"]["release"])) == [], "and its workers"
    assert [h["model"]["version"] for h in after["history"]][-1:] == ["1"]
    assert predict(served.url)[1]["x-crispml-model"] == "churn/2"


def test_prediction_log_has_every_request_and_rotates(served: Served) -> None:
    rec = serving(served)
    label = f"churn/{rec['model']['version']}"
    for i in range(200):  # past 4 files of 20 kB (prediction_log_mb: 0.02): the log rotates
        assert predict(served.url, {**ROW, "tenure_months": i})[0] == 200
    sent = [{**ROW, "tenure_months": 1000 + i, "support_calls": i % 7} for i in range(40)]
    for row in sent:
        status, _, body = predict(served.url, row)
        assert status == 200, body
    done = served.cli("predictions", "churn", "--tail", str(len(sent)))
    assert done.returncode == 0, done.stderr
    entries = [json.loads(line) for line in done.stdout.splitlines()]
    assert [e["inputs"] for e in entries] == [[row] for row in sent], "every request, in order, with its inputs"
    for entry in entries:
        assert entry["model"] == label and entry["deployment"] == "churn"
        assert entry["outputs"]["predictions"] in ([0], [1]) and entry["time"]
    folder = served.project / ".crispml" / "deployments" / "churn"
    files = sorted(folder.glob("predictions.jsonl*"))
    names = {f.name for f in files if not f.name.endswith(".lock")}
    assert {"predictions.jsonl", "predictions.jsonl.1", "predictions.jsonl.3"} <= names, names
    assert "predictions.jsonl.4" not in names
    for f in files:
        assert f.stat().st_size <= 20_000 + 2_000


def test_a_client_cannot_keep_its_request_out_of_the_log(served: Served) -> None:
    """The smoke gate marks its own requests (to the backend directly) with ``x-crispml-smoke``;
    the public port drops that header, so a client's request with it is logged all the same."""
    serving(served)
    row = {**ROW, "tenure_months": 4242}
    status, _, body = request(
        served.url, body=json.dumps({"records": [row]}).encode(), headers={"x-crispml-smoke": "1"}
    )
    assert status == 200, body
    done = served.cli("predictions", "churn", "--tail", "1")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["inputs"] == [row]


# -- the smoke gate ------------------------------------------------------------------------------


def test_smoke_gate_refuses_a_model_that_predicts_differently(served: Served) -> None:
    before = serving(served)
    label = f"churn/{before['model']['version']}"
    done = served.cli("deploy", "churn/3", "--name", "churn")
    assert done.returncode == 3, done.stdout + done.stderr
    assert "smoke test" in done.stderr and "churn/3" in done.stderr
    assert f"still serving {label}" in done.stderr
    after = record(served)
    assert after["backend"]["pid"] == before["backend"]["pid"] and after["model"] == before["model"]
    assert after["last_rejected"]["model"]["version"] == "3"
    status, headers, _ = predict(served.url)
    assert status == 200 and headers["x-crispml-model"] == label
    rejected = Path(after["last_rejected"]["release"])
    assert processes_naming(str(rejected)) == [], "the refused server must be stopped"
    assert processes_working_in(rejected) == [], "and its workers"


def test_smoke_gate_refuses_a_server_that_never_gets_ready(served: Served) -> None:
    before = serving(served)
    label, other = f"churn/{before['model']['version']}", other_version(before)
    done = served.cli("deploy", f"churn/{other}", "--name", "churn", "--ready-timeout", "0.5")
    assert done.returncode == 3, done.stdout + done.stderr
    assert "/readyz" in done.stderr and f"still serving {label}" in done.stderr
    assert "Traceback" not in done.stderr
    after = record(served)
    assert after["backend"] == before["backend"] and after["model"] == before["model"]
    assert after["last_rejected"]["model"]["version"] == other
    status, headers, _ = predict(served.url)
    assert status == 200 and headers["x-crispml-model"] == label
    rejected = Path(after["last_rejected"]["release"])
    assert processes_naming(str(rejected)) == [] and processes_working_in(rejected) == []


def test_a_switch_the_proxy_does_not_confirm_is_undone(served: Served) -> None:
    """The proxy is frozen (SIGSTOP) during a deploy: the new backend passes the gate, but the
    switch is never confirmed. The deploy fails, ``upstream.json`` points at the old backend
    again and the new one is stopped, so once the proxy runs again it serves the old version."""
    before = serving(served)
    label, other = f"churn/{before['model']['version']}", other_version(before)
    upstream = served.project / ".crispml" / "deployments" / "churn" / "upstream.json"
    pointed = upstream.read_bytes()
    proxy = before["proxy"]["pid"]
    os.kill(proxy, signal.SIGSTOP)
    try:
        done = served.cli("deploy", f"churn/{other}", "--name", "churn")
    finally:
        os.kill(proxy, signal.SIGCONT)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "did not switch" in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert upstream.read_bytes() == pointed
    assert record(served) == before
    status, headers, body = predict(served.url)
    assert status == 200 and headers["x-crispml-model"] == label, body
    new = newest_release(served)
    assert new.name.endswith(f"-v{other}") and str(new) != before["backend"]["release"]
    assert processes_naming(str(new)) == [] and processes_working_in(new) == [], "the new server is stopped"
    assert listing(served)[0]["status"] == "up"


def test_stage_rejection_ends_the_run_rejected(served: Served) -> None:
    before = serving(served)
    recipe = {
        "name": "deploy-coin",
        "load": {"use": "files", "path": str(CHURN), "target": "churned"},
        "deploy": {"use": "bentoml", "name": "churn", "model": "churn/3"},
    }
    (served.project / "coin.yaml").write_text(yaml.safe_dump(recipe))
    done = served.cli("run", "coin.yaml")
    assert done.returncode == 3, done.stdout + done.stderr
    assert record(served)["model"] == before["model"]
    assert predict(served.url)[1]["x-crispml-model"] == f"churn/{before['model']['version']}"


# -- rollback ------------------------------------------------------------------------------------


def test_rollback_brings_the_previous_version_back(served: Served) -> None:
    before = serving(served, "2", previous="1")
    logged = log_snapshot(served)
    done = served.cli("deploy", "--rollback", "churn")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "serving churn/1" in done.stdout
    # The smoke gate's own requests are not production data: nothing was logged.
    assert log_snapshot(served) == logged
    status, headers, _ = predict(served.url)
    assert status == 200 and headers["x-crispml-model"] == "churn/1"
    assert record(served)["history"] == before["history"][:-1]
    for _ in before["history"][:-1]:  # older history (only when tests ran out of order)
        assert served.cli("deploy", "--rollback", "churn").returncode == 0
    done = served.cli("deploy", "--rollback", "churn")
    assert done.returncode == 2 and "no previous version" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


# -- faults: clear errors before anything switches ------------------------------------------------


def test_port_in_use_is_a_clear_error_before_anything_starts(served: Served) -> None:
    serving(served)
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        done = served.cli("deploy", "churn/1", "--name", "other", "--port", str(port))
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"port {port}" in done.stderr and "in use" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert not (served.project / ".crispml" / "deployments" / "other" / "deployment.json").exists()
    assert not (served.project / ".crispml" / "deployments" / "other" / "releases").exists()


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("churn/99", "has no version 99"),
        ("churn@nobody", "has no alias 'nobody'"),
        ("nosuchmodel@champion", "no installed plugin resolves the model 'nosuchmodel@champion'"),
        ("not a reference", "no installed plugin resolves the model 'not a reference'"),
    ],
)
def test_unknown_model_version_is_a_clear_error(served: Served, reference: str, message: str) -> None:
    before = serving(served)
    done = served.cli("deploy", reference, "--name", "churn")
    assert done.returncode == 2, done.stdout + done.stderr
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert record(served) == before


def warm_launchers(project: Path) -> list[int]:
    """Launchers started before a resolve, still waiting for their release (``_launch``)."""
    where = str(project / ".crispml" / "deployments")
    out = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if proc.cmdline()[-2:] == ["-m", "crispml_bentoml._launch"] and proc.cwd() == where:
                out.append(proc.pid)
        except (psutil.Error, OSError, IndexError):
            continue
    return out


def test_a_first_deploy_starts_its_backend_while_the_model_is_resolved(served: Served) -> None:
    """The launcher of a first deploy is up before the release exists (the release is made from
    the resolved model), and it is the process that then serves: BentoML's import overlapped the
    registry's."""
    serving(served)
    port = free_port()
    releases = served.project / ".crispml" / "deployments" / "early" / "releases"
    seen: dict[int, bool] = {}
    done_event = threading.Event()

    def watch() -> None:
        while not done_event.is_set():
            for pid in warm_launchers(served.project):
                seen.setdefault(pid, not releases.exists() or not any(releases.iterdir()))
            time.sleep(0.01)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        done = served.cli("deploy", "churn/1", "--name", "early", "--port", str(port), "--workers", "1")
    finally:
        done_event.set()
        watcher.join()
    try:
        assert done.returncode == 0, done.stdout + done.stderr
        rec = record(served, "early")
        assert list(seen) == [rec["backend"]["pid"]], (seen, rec["backend"])
        assert seen[rec["backend"]["pid"]] is True  # seen waiting before the release was made
        assert predict(f"http://127.0.0.1:{port}")[0] == 200
        # A redeploy (the old version serves meanwhile) resolves first: no early launcher.
        seen.clear()
        done_event.clear()
        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            again = served.cli("deploy", "churn/2", "--name", "early")
        finally:
            done_event.set()
            watcher.join()
        assert again.returncode == 0, again.stdout + again.stderr
        assert seen == {}
    finally:
        served.cli("undeploy", "early")


def test_a_deploy_that_fails_before_its_release_leaves_no_launcher(served: Served) -> None:
    serving(served)
    done = served.cli("deploy", "churn/99", "--name", "never", "--port", str(free_port()))
    assert done.returncode == 2 and "has no version 99" in done.stderr
    assert warm_launchers(served.project) == []
    assert not (served.project / ".crispml" / "deployments" / "never" / "deployment.json").exists()


def test_a_deploy_killed_while_resolving_leaves_no_launcher(served: Served) -> None:
    """``kill -9`` of the deploying process while its launcher waits: the launcher's input closes
    with its parent, and it exits instead of waiting forever."""
    serving(served)
    deploying = served.start("deploy", "churn/1", "--name", "killed", "--port", str(free_port()))
    deadline = time.monotonic() + 60
    launchers: list[int] = []
    while not launchers and time.monotonic() < deadline and deploying.poll() is None:
        launchers = warm_launchers(served.project)
        time.sleep(0.01)
    deploying.kill()
    deploying.wait()
    assert launchers, "no launcher was seen while the deploy resolved"
    deadline = time.monotonic() + 30
    while any(alive(pid) for pid in launchers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(alive(pid) for pid in launchers)
    assert not (served.project / ".crispml" / "deployments" / "killed" / "deployment.json").exists()


def test_a_deploy_killed_before_its_switch_takes_its_servers_with_it(served: Served) -> None:
    """``kill -9`` of a first deploy while its new backend's worker starts (before the smoke
    gate): the backend, its workers and the new proxy stop themselves, the public port is free again, and no
    record names them — a later deploy on that port just works."""
    serving(served)
    port = free_port()
    folder = served.project / ".crispml" / "deployments" / "tethered"
    deploying = served.start("deploy", "churn/1", "--name", "tethered", "--port", str(port))
    deadline = time.monotonic() + 120
    started: list[int] = []
    while time.monotonic() < deadline and deploying.poll() is None:
        releases = sorted((folder / "releases").glob("*")) if (folder / "releases").is_dir() else []
        started = processes_working_in(releases[-1]) if releases else []
        # The arbiter and a worker (which ignores SIGTERM while it starts: the hard case).
        if len(started) >= 2 and processes_naming(f"crispml_bentoml._proxy {folder}"):
            break
        time.sleep(0.01)
    deploying.kill()
    deploying.wait()
    assert started, "the new backend was not seen starting"
    release = sorted((folder / "releases").glob("*"))[-1]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (
        processes_working_in(release) or processes_naming(f"crispml_bentoml._proxy {folder}")
    ):
        time.sleep(0.2)
    assert processes_working_in(release) == [] and processes_naming(f"crispml_bentoml._proxy {folder}") == []
    assert not (folder / "deployment.json").exists()
    with socket.socket() as probe:  # the public port was released
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", port))
    done = served.cli("deploy", "churn/1", "--name", "tethered", "--port", str(port))
    try:
        assert done.returncode == 0, done.stdout + done.stderr
        assert predict(f"http://127.0.0.1:{port}")[0] == 200
    finally:
        served.cli("undeploy", "tethered")


def test_moving_a_live_deployment_to_another_port_is_refused(served: Served) -> None:
    serving(served)
    done = served.cli("deploy", "churn/2", "--name", "churn", "--port", str(free_port()))
    assert done.returncode == 2 and "undeploy it first" in done.stderr


def test_a_dead_server_shows_down_and_a_deploy_recovers(served: Served) -> None:
    rec = serving(served)
    crashed = [rec["backend"]["pid"], *processes_working_in(Path(rec["backend"]["release"]))]
    for pid in crashed:  # the server and its workers die at once, as in a crash
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in crashed) and time.monotonic() < deadline:
        time.sleep(0.1)
    (row,) = listing(served)
    assert row["status"] == "down"
    done = served.cli("deployments")
    assert "down" in done.stdout
    status, _, body = predict(served.url)
    assert status == 502 and "did not answer" in body["error"]
    done = served.cli("deploy", "churn@champion")
    assert done.returncode == 0, done.stdout + done.stderr
    assert listing(served)[0]["status"] == "up"
    assert predict(served.url)[0] == 200


# -- build and undeploy --------------------------------------------------------------------------


def test_a_build_that_takes_too_long_is_a_one_line_error(served: Served) -> None:
    serving(served)
    done = served.cli("build", "churn", env={"CRISPML_BENTOML_BUILD_TIMEOUT": "0.05"})
    assert done.returncode == 1, done.stdout + done.stderr
    assert "bentoml build did not finish within 0.05 s" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


def test_build_makes_a_bento_with_model_and_pinned_requirements(served: Served) -> None:
    serving(served)
    done = served.cli("build", "churn", timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    tag = record(served)["bento"]["tag"]
    assert tag in done.stdout
    name, version = tag.split(":")
    bento = served.project / ".crispml" / "bentoml" / "bentos" / name / version
    assert (bento / "bento.yaml").is_file()
    manifest = (bento / "bento.yaml").read_text()
    assert "churn" in manifest and "models" in manifest
    requirements = next(bento.rglob("requirements.txt")).read_text().split()
    assert any(r.startswith("bentoml==") for r in requirements)
    assert any(r.startswith("scikit-learn==") for r in requirements)
    assert all("==" in r for r in requirements if not r.startswith("-"))
    assert record(served)["model"]["bento_tag"] in manifest, "the bento names the served model"
    # The exported archive carries the model itself.
    archive = Path(record(served)["bento"]["archive"])
    assert archive.is_file() and str(archive) in done.stdout
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert any(n.endswith("model/MLmodel") for n in names), names[:20]
    assert any(n.endswith("model/model.pkl") for n in names)


def test_undeploy_stops_everything(served: Served) -> None:
    rec = serving(served)
    done = served.cli("undeploy", "churn")
    assert done.returncode == 0, done.stderr
    assert not alive(rec["proxy"]["pid"]) and not alive(rec["backend"]["pid"])
    assert processes_working_in(Path(rec["backend"]["release"])) == []
    assert listing(served) == []
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", served.port))
    done = served.cli("undeploy", "churn")
    assert done.returncode == 2 and "no deployment named 'churn'" in done.stderr
    done = served.cli("predictions", "churn", "--tail", "1")
    assert done.returncode == 0 and json.loads(done.stdout)["model"]


# -- without a server: a stale record, an unreachable registry -----------------------------------


_cli = partial(run_cli, timeout=120, columns=None)


def test_undeploy_leaves_a_recycled_pid_alone(tmp_path: Path) -> None:
    """A record from before a reboot names pids now held by unrelated processes: `undeploy`
    must not signal them (nor their process groups)."""
    project = tmp_path / "project"
    folder = project / ".crispml" / "deployments" / "ghost"
    release = folder / "releases" / "1-v1"
    release.mkdir(parents=True)
    # One impostor even has the proxy's name on its command line: only its start time differs.
    impostors = [
        subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(300)", "crispml_bentoml._proxy", "bentoml"],
            cwd=tmp_path,
            start_new_session=True,
        ),
        subprocess.Popen(["sleep", "300"], cwd=tmp_path, start_new_session=True),
    ]
    try:
        proxy, backend = impostors
        rec = {
            "name": "ghost",
            "url": "http://127.0.0.1:9",
            "host": "127.0.0.1",
            "port": 9,
            "since": "2020-01-01T00:00:00+00:00",
            "model": {"name": "churn", "version": "1", "uri": "models:/churn/1"},
            "proxy": {"pid": proxy.pid, "ident": "another-boot:12345", "log": str(folder / "proxy.log")},
            "backend": {"pid": backend.pid, "port": 10, "log": str(release / "server.log"), "release": str(release)},
            "history": [],
        }
        (folder / "deployment.json").write_text(json.dumps(rec))
        done = _cli(project, "deployments", "--json")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)[0]["status"] == "down"
        done = _cli(project, "undeploy", "ghost")
        assert done.returncode == 0, done.stdout + done.stderr
        time.sleep(0.5)
        assert proxy.poll() is None and backend.poll() is None, "unrelated processes must survive"
        assert not (folder / "deployment.json").exists()
    finally:
        for proc in impostors:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def test_an_unreachable_registry_is_a_bounded_one_line_error(tmp_path: Path) -> None:
    (tmp_path / ".crispml").mkdir()
    closed = free_port()  # nothing listens there
    started = time.monotonic()
    done = _cli(
        tmp_path,
        "deploy",
        "churn@champion",
        "--port",
        str(free_port()),
        env={"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{closed}"},
    )
    elapsed = time.monotonic() - started
    assert done.returncode == 1, done.stdout + done.stderr
    assert elapsed < 60, elapsed
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "cannot resolve churn@champion" in lines[0] and f"127.0.0.1:{closed}" in lines[0]
    assert not (tmp_path / ".crispml" / "deployments" / "churn" / "releases").exists()
