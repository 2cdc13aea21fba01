"""Serving by entity key, end to end and for real: feast → sklearn → mlflow → bentoml.

One ``crispml run`` trains on the point-in-time join, registers the model (with its serving
spec), materializes the online store and deploys a real ``bentoml serve`` whose clients send
only ``customer_id``. Predictions over HTTP equal the trained model's on the historical rows at
the same time; an unknown key is a 400; the prediction log records the features used.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import pytest
from suite_helpers import free_port, run_cli
from test_materialize import _store, historical_at

from conftest import CUSTOMERS, DAYS, FeatureRepo, labels_frame

pytestmark = pytest.mark.slow


def post(url: str, body: Any) -> tuple[int, Any]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="POST", headers={"content-type": "application/json"})
    try:
        with opener.open(req, timeout=60) as resp:
            return int(resp.status), json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return int(exc.code), json.loads(raw)
        except ValueError:
            return int(exc.code), raw.decode(errors="replace")


@dataclass
class Served:
    repo: FeatureRepo
    url: str
    result: Any


def serving_repo(tmp_path_factory: pytest.TempPathFactory, name: str) -> FeatureRepo:
    """A fresh project ``name`` with the feature definitions, usage up to now and labels from day
    3 on: what every serving test here and in ``test_redis_serving`` trains on."""
    project = tmp_path_factory.mktemp(name)
    (project / "features").mkdir()
    repo = FeatureRepo(project, project / "features", project / "recipe.yaml")
    repo.write_definitions()
    day0 = repo.write_recent_usage()
    labels = pd.concat([labels_frame(day=d) for d in range(3, DAYS)], ignore_index=True)
    labels["event_timestamp"] = labels["event_timestamp"] - pd.Timestamp("2026-01-01", tz="UTC") + day0
    labels.to_parquet(repo.labels)
    return repo


def deploy_by_key(
    repo: FeatureRepo,
    model: str,
    *,
    online_store: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
) -> tuple[str, Any]:
    """One ``crispml run`` that trains, registers ``model``, materializes (into ``online_store``,
    default the repo's own) and deploys it as ``model`` with dashes on a free port; ``env`` adds
    variables. The served URL and the train stage's result (the model to compare with)."""
    port = free_port()
    recipe = repo.write_recipe(
        materialize=True,
        online_store=online_store,
        steps={
            "train": {"use": "sklearn", "estimator": "sklearn.tree.DecisionTreeClassifier", "params": {"max_depth": 3}},
            "register": {"use": "mlflow", "model_name": model},
            "deploy": {"use": "bentoml", "name": model.replace("_", "-"), "port": port},
        },
    )
    proc = run_cli(repo.project, "run", str(recipe), timeout=900, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    from crispml import RunStore

    store = RunStore(repo.project)
    return f"http://127.0.0.1:{port}", store.load_result(store.list_runs()[0]["run_id"], "train")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, feast_backend: Any) -> Iterator[Served]:
    """One deployment for the module's tests (a run with a real server takes minutes here)."""
    feature_repo = serving_repo(tmp_path_factory, "feast-serving")
    try:
        url, result = deploy_by_key(feature_repo, "churn_keys")
        yield Served(feature_repo, url, result)
    finally:
        run_cli(feature_repo.project, "undeploy", "churn-keys", timeout=120)


def test_clients_send_keys_and_get_the_models_answer_on_the_point_in_time_features(served: Served) -> None:
    ids = list(range(1, CUSTOMERS + 1))
    status, body = post(f"{served.url}/predict", {"records": [{"customer_id": i} for i in ids]})
    assert status == 200, body
    now = datetime.now(UTC)
    rows = historical_at(_store(served.repo), ids, now)
    assert served.result is not None
    model = served.result.model
    expected = model.predict_proba(rows[["minutes", "calls"]])
    served_proba = [[p[k] for k in sorted(p, key=int)] for p in body["probabilities"]]
    assert len(served_proba) == len(ids)
    for got, want in zip(served_proba, expected.tolist(), strict=True):
        assert got == pytest.approx(want, abs=1e-9)
    assert body["predictions"] == model.predict(rows[["minutes", "calls"]]).tolist()


def test_unknown_or_malformed_keys_are_400_never_500(served: Served) -> None:
    status, body = post(f"{served.url}/predict", {"records": [{"customer_id": 1}, {"customer_id": 99999}]})
    assert status == 400, body
    assert "no online features for customer_id=99999 (not materialized?)" in json.dumps(body)
    for bad in (
        {"records": [{"customer_id": "abc"}]},
        {"records": [{"customer": 1}]},
        {"records": [{"customer_id": 2**70}]},
        {"records": [{"customer_id": 1, "minutes": 5.0}]},  # features are the store's, not the client's
        b"not json",
    ):
        status, body = post(f"{served.url}/predict", bad)
        assert 400 <= status < 500, (bad, status, body)


def test_the_prediction_log_records_keys_and_the_features_used(served: Served) -> None:
    status, _ = post(f"{served.url}/predict", {"records": [{"customer_id": 3}]})
    assert status == 200
    from crispml import deployment, prediction_records

    served_now = deployment("churn-keys", served.repo.project)
    [last] = prediction_records(served_now, last=1)
    assert last["inputs"] == {"customer_id": 3}
    assert last["features"] == {"minutes": 309.0, "calls": 12}
    # The window a suite checks (monitor validate: true, validate-data) keeps the request's key.
    from crispml import RunStore, window_dataset, window_frame

    loaded = RunStore(served.repo.project).load_result(str(served_now.training_run), "load")
    features = list(served.result.feature_columns)
    window = window_dataset(window_frame([last]), loaded.target, "w", features=features, key_columns=loaded.key_columns)
    assert list(window.frame.columns) == ["customer_id", *features] and window.key_columns == ("customer_id",)


def test_a_deploy_before_materializing_is_rejected_by_the_smoke_gate(
    tmp_path_factory: pytest.TempPathFactory, feast_backend: Any
) -> None:
    repo = serving_repo(tmp_path_factory, "feast-unmaterialized")
    project = repo.project
    recipe = repo.write_recipe(
        steps={
            "train": {"use": "sklearn", "estimator": "sklearn.tree.DecisionTreeClassifier"},
            "register": {"use": "mlflow", "model_name": "churn_cold"},
            "deploy": {"use": "bentoml", "name": "churn-cold", "port": free_port()},
        },
    )
    try:
        proc = run_cli(project, "run", str(recipe), timeout=900)
        assert proc.returncode == 3, proc.stdout[-3000:] + proc.stderr[-3000:]  # rejected
        assert "online store has no features for 5 of 5 example keys: run crispml materialize" in (
            proc.stdout + proc.stderr
        )
    finally:
        run_cli(project, "undeploy", "churn-cold", timeout=120)


def test_a_built_bento_ships_the_resolver_and_its_pinned_feast(served: Served) -> None:
    proc = run_cli(served.repo.project, "build", "churn-keys", timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    bentos = served.repo.project / ".crispml" / "bentoml" / "bentos"
    shipped = {p.name for p in bentos.rglob("src/features/*")}
    assert shipped == {"crispml_feast_resolver.py", "feast_serving.json", "registry.db"}, sorted(bentos.rglob("*"))
    requirements = next(bentos.rglob("env/python/requirements.txt")).read_text()
    assert "feast==" in requirements


def test_a_feature_removed_since_training_rejects_the_deploy_and_the_old_version_keeps_serving(
    served: Served,
) -> None:
    """Last in the module: it registers a second version and edits the definitions (restored)."""
    from crispml import deployment

    repo = served.repo
    recipe = repo.write_recipe(
        name="recipe_v2.yaml",
        steps={
            "train": {"use": "sklearn", "estimator": "sklearn.tree.DecisionTreeClassifier", "params": {"max_depth": 2}},
            "register": {"use": "mlflow", "model_name": "churn_keys"},
        },
    )
    proc = run_cli(repo.project, "run", str(recipe), timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    before = deployment("churn-keys", repo.project)
    assert before is not None and before.model.endswith("/1"), before
    status, answer_before = post(f"{served.url}/predict", {"records": [{"customer_id": 7}]})
    assert status == 200, answer_before

    defs = repo.folder / "defs.py"
    original = defs.read_text()
    defs.write_text(original.replace(', Field(name="calls", dtype=Int64)', ""))
    try:
        proc = run_cli(repo.project, "deploy", "churn_keys/2", "--name", "churn-keys", timeout=600)
    finally:
        defs.write_text(original)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 3, out  # rejected, not failed
    assert "rejected" in out
    assert "feature service churn_v1 changed since churn_keys/2 was trained: calls removed" in out
    assert "Traceback" not in out
    after = deployment("churn-keys", repo.project)
    assert after is not None and (after.model, after.url, after.pid) == (before.model, before.url, before.pid)
    status, answer_after = post(f"{served.url}/predict", {"records": [{"customer_id": 7}]})
    assert status == 200 and answer_after == answer_before
