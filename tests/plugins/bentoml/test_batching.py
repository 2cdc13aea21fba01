"""Serving concurrent requests: batched in the server, each answered and logged as its own, with
more than one BentoML worker — through the smoke gate and the switch.

The registry is the folder registry of ``test_cooperation`` (pickled scikit-learn pipelines,
no MLflow), with a first step of a module on the servers' path that refuses a value of a valid
request (``tenure_months`` 999: a ``ValueError`` inside the pipeline), and a coin flip no smoke
test can pass. Every deploy here asks for two workers.
"""

from __future__ import annotations

import json
import pickle
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from suite_helpers import free_port
from test_bentoml import ROW, Load, alive, predict, processes_working_in, stop_everything_under
from test_cooperation import SIGNATURE, Project, _expected, _fit, folder_registry_project

pytestmark = pytest.mark.slow

MODELS = '''
"""Models with a will of their own, importable by the servers (on PYTHONPATH)."""
import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin


class RefuseTenure999(BaseEstimator, TransformerMixin):
    """A pipeline step that refuses a tenure of 999 months (in a request valid by its schema)."""

    def __sklearn_is_fitted__(self):
        return True

    def fit(self, X, y=None):
        return self

    def transform(self, X):
        if (X["tenure_months"] == 999).any():
            raise ValueError("tenure_months 999 is not a tenure")
        return X


class Coin:
    """Predicts a coin flip: two calls never agree."""

    def predict(self, frame):
        return np.random.default_rng().integers(0, 2, len(frame))
'''


class Batched(Project):
    """The folder-registry project with its deployment ``batched``: its record and its log."""

    def record(self) -> dict[str, Any]:
        return json.loads((self.path / ".crispml" / "deployments" / "batched" / "deployment.json").read_text())

    def log(self) -> list[dict[str, Any]]:
        path = self.path / ".crispml" / "deployments" / "batched" / "predictions.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Batched]:
    root = tmp_path_factory.mktemp("batching")
    site, path, env = folder_registry_project(root, tp_models=MODELS)
    sys.path.insert(0, str(site))
    try:
        import tp_models
        from sklearn.pipeline import Pipeline

        def picky(C: float) -> Any:
            return Pipeline([("refuse", tp_models.RefuseTenure999()), *_fit(C)[0].steps])

        frame = _fit(1.0)[1]
        models = {"1": picky(1.0), "2": picky(0.01), "3": tp_models.Coin()}
    finally:
        sys.path.remove(str(site))
    example = json.loads(frame[[c["name"] for c in SIGNATURE]].head(5).to_json(orient="records"))
    for version, model in models.items():
        folder = path / "models" / "churn" / version
        folder.mkdir(parents=True)
        (folder / "model.pkl").write_bytes(pickle.dumps(model))
        meta = {"signature": SIGNATURE, "training_run": f"train-run-{version}", "example": example}
        (folder / "model.json").write_text(json.dumps(meta))
    project = Batched(path=path, port=free_port(), env=env, models=models)
    try:
        done = project.cli("deploy", "churn/1", "--name", "batched", "--port", str(project.port), "--workers", "2")
        assert done.returncode == 0, done.stdout + done.stderr
        yield project
    finally:
        stop_everything_under(path)


def concurrently(url: str, bodies: list[list[dict[str, Any]]]) -> list[tuple[int, dict[str, str], Any]]:
    """Every body at once (one thread each, released together); the answers in order."""
    answers: list[Any] = [None] * len(bodies)
    start = threading.Barrier(len(bodies))

    def send(i: int) -> None:
        start.wait()
        answers[i] = predict(url, *bodies[i])

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return answers


def rows(i: int, n: int) -> list[dict[str, Any]]:
    contracts = ("month-to-month", "one-year", "two-year", "weekly")  # weekly: never seen in training
    return [
        {**ROW, "tenure_months": (7 * i + k) % 72, "support_calls": (i + k) % 9, "contract": contracts[(i + k) % 4]}
        for k in range(n)
    ]


def test_the_deployment_runs_two_workers(project: Batched) -> None:
    rec = project.record()
    assert rec["settings"]["workers"] == 2
    spec = json.loads((Path(rec["backend"]["release"]) / "spec.json").read_text())
    assert spec["workers"] == 2
    # `bentoml serve` and its two workers, all in the release folder.
    assert len(processes_working_in(Path(rec["backend"]["release"]))) >= 3


def test_concurrent_requests_each_get_their_own_answer_and_log_entry(project: Batched) -> None:
    model = project.models["1"]
    before = len(project.log())
    shared_batch = False
    for attempt in range(5):  # until two requests were seen predicted together
        bodies = [rows(100 * attempt + i, 1 + i % 3) for i in range(24)]
        answers = concurrently(project.url, bodies)
        for body, (status, headers, answer) in zip(bodies, answers, strict=True):
            assert status == 200, answer
            assert headers["x-crispml-model"] == "churn/1"
            predictions, probabilities = _expected(model, body)
            assert answer["predictions"] == predictions, "each request gets its own rows' answer"
            assert len(answer["probabilities"]) == len(body)
            for got, want in zip(answer["probabilities"], probabilities, strict=True):
                assert got.keys() == want.keys() and all(abs(got[k] - want[k]) < 1e-9 for k in want)
            assert answer["model"]["version"] == "1"
        entries = project.log()[before:]
        before += len(entries)
        assert sorted(json.dumps(e["inputs"]) for e in entries) == sorted(json.dumps(b) for b in bodies)
        answered = {json.dumps(b): a[2] for b, a in zip(bodies, answers, strict=True)}
        for entry in entries:
            assert entry["schema"] == 1 and entry["model"] == "churn/1" and entry["deployment"] == "batched"
            sent = answered[json.dumps(entry["inputs"])]
            assert entry["outputs"] == {"predictions": sent["predictions"], "probabilities": sent["probabilities"]}
            # Unseen categories are flagged per request, indexed within the request.
            weekly = [i for i, r in enumerate(entry["inputs"]) if r["contract"] == "weekly"]
            assert [u["record"] for u in entry.get("unseen", [])] == weekly
        # A batch's entries are written together: they share their time stamp.
        stamps = [e["ts"] for e in entries]
        if len(set(stamps)) < len(stamps):
            shared_batch = True
            break
    assert shared_batch, "24 requests sent at once were never predicted together"


def test_a_request_the_model_refuses_is_the_only_one_refused(project: Batched) -> None:
    before = len(project.log())
    bodies = [rows(i, 2) for i in range(16)]
    bad = {3, 8, 13}
    for i in bad:
        bodies[i][1]["tenure_months"] = 999
    answers = concurrently(project.url, bodies)
    for i, (status, _, answer) in enumerate(answers):
        if i in bad:
            assert status == 400, answer
            assert "the model cannot predict these records" in answer["error"] and "999" in answer["error"]
        else:
            assert status == 200, answer
            assert answer["predictions"] == _expected(project.models["1"], bodies[i])[0]
    entries = project.log()[before:]
    assert sorted(json.dumps(e["inputs"]) for e in entries) == sorted(
        json.dumps(b) for i, b in enumerate(bodies) if i not in bad
    ), "refused requests are not logged; every answered one is"


def test_two_workers_switch_without_downtime(project: Batched) -> None:
    before = project.record()
    assert before["model"]["version"] == "1"
    load = Load(project.url)
    load.start()
    try:
        done = project.cli("deploy", "churn/2", "--name", "batched")  # keeps --workers 2 from the record
    finally:
        load.stop.set()
        load.join(timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert load.errors == [], load.errors[:5]
    assert load.versions == ["churn/1", "churn/2"], load.versions
    after = project.record()
    assert after["settings"]["workers"] == 2
    assert after["proxy"]["pid"] == before["proxy"]["pid"]
    assert not alive(before["backend"]["pid"])
    assert processes_working_in(Path(before["backend"]["release"])) == [], "the old workers are stopped"
    assert len(processes_working_in(Path(after["backend"]["release"]))) >= 3


def test_the_smoke_gate_holds_with_two_workers(project: Batched) -> None:
    before = project.record()
    done = project.cli("deploy", "churn/3", "--name", "batched", "--workers", "2")
    assert done.returncode == 3, done.stdout + done.stderr
    assert "smoke test" in done.stderr
    after = project.record()
    assert after["backend"]["pid"] == before["backend"]["pid"] and after["model"] == before["model"]
    rejected = Path(after["last_rejected"]["release"])
    assert processes_working_in(rejected) == [], "the rejected server and both its workers are stopped"
    status, headers, _ = predict(project.url)
    assert status == 200 and headers["x-crispml-model"] == before["model"]["name"] + "/" + before["model"]["version"]
