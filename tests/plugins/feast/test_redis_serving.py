"""Serving by entity key from Redis, through a real ``bentoml serve`` (``services``).

Two deployments, each from one real ``crispml run`` (feast → sklearn → mlflow → bentoml):

* on the shared Redis (its own flushed db): predictions over HTTP equal the trained model's
  on the historical rows at the same time, within 1e-9;
* on a private, password-protected ``redis-server`` (a free port, ``--requirepass``), named in
  the recipe as ``connection_string: "${env:FEAST_REDIS}"``: the served process reads the
  password from its environment, and no file the run, the registry, the release or the built
  bento wrote holds it in clear. Then the store stops: a request is a 503 within seconds (the
  server's log says why), and a deploy is rejected (exit 3) instead of switching to a server
  that cannot answer.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from services import service_answers
from suite_helpers import free_port, run_cli
from test_materialize import _store, historical_at
from test_serving_e2e import deploy_by_key, post, serving_repo

from conftest import CUSTOMERS, FeatureRepo, require_service

pytestmark = [pytest.mark.slow, pytest.mark.services]
REDIS_DB = 14  # this module's own database on the shared Redis: flushed before and after


def _assert_served_like_the_join(url: str, result: Any, store: Any) -> None:
    ids = list(range(1, CUSTOMERS + 1))
    status, body = post(f"{url}/predict", {"records": [{"customer_id": i} for i in ids]})
    assert status == 200, body
    rows = historical_at(store, ids, datetime.now(UTC))
    model = result.model
    expected = model.predict_proba(rows[["minutes", "calls"]])
    served = [[p[k] for k in sorted(p, key=int)] for p in body["probabilities"]]
    assert len(served) == len(ids)
    for got, want in zip(served, expected.tolist(), strict=True):
        assert got == pytest.approx(want, abs=1e-9)
    assert body["predictions"] == model.predict(rows[["minutes", "calls"]]).tolist()


def _redis(connection: str) -> dict[str, str]:
    """The online store option of a recipe that materializes into Redis at ``connection``."""
    return {"type": "redis", "connection_string": connection}


# -- the shared Redis ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared_redis(
    tmp_path_factory: pytest.TempPathFactory, feast_backend: Any
) -> Iterator[tuple[FeatureRepo, str, Any]]:
    require_service("127.0.0.1", 6379, "Redis")
    import redis

    client = redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB, socket_timeout=5)
    client.flushdb()
    repo = serving_repo(tmp_path_factory, "feast-redis-http")
    try:
        url, result = deploy_by_key(repo, "churn_redis", online_store=_redis(f"127.0.0.1:6379,db={REDIS_DB}"))
        assert client.dbsize() == CUSTOMERS  # materialized into this db, not elsewhere
        yield repo, url, result
    finally:
        run_cli(repo.project, "undeploy", "churn-redis", timeout=120)
        client.flushdb()
        client.close()


def test_http_predictions_by_key_from_redis_equal_the_model_on_historical_rows(
    shared_redis: tuple[FeatureRepo, str, Any],
) -> None:
    repo, url, result = shared_redis
    store = _store(repo, online_store={"type": "redis", "connection_string": f"127.0.0.1:6379,db={REDIS_DB}"})
    _assert_served_like_the_join(url, result, store)
    status, body = post(f"{url}/predict", {"records": [{"customer_id": 99999}]})
    assert status == 400 and "no online features for customer_id=99999" in str(body), body


# -- a password-protected Redis ----------------------------------------------------------------


class PrivateRedis:
    """``redis-server --requirepass`` on a free port, in memory, stopped by its pid."""

    def __init__(self, password: str) -> None:
        self.password = password
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        server = shutil.which("redis-server")
        assert server is not None
        self.proc = subprocess.Popen(
            [server, "--port", str(self.port), "--bind", "127.0.0.1", "--requirepass", self.password, "--save", ""],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while not service_answers("127.0.0.1", self.port, 0.5):
            assert self.proc.poll() is None and time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def private_redis(
    tmp_path_factory: pytest.TempPathFactory, feast_backend: Any
) -> Iterator[tuple[FeatureRepo, str, Any, PrivateRedis]]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not on PATH")
    server = PrivateRedis("pw-" + secrets.token_hex(12))
    server.start()
    repo = serving_repo(tmp_path_factory, "feast-redis-password")
    env = {"FEAST_REDIS": f"127.0.0.1:{server.port},password={server.password}"}
    try:
        url, result = deploy_by_key(repo, "churn_pw", online_store=_redis("${env:FEAST_REDIS}"), env=env)
        yield repo, url, result, server
    finally:
        run_cli(repo.project, "undeploy", "churn-pw", timeout=120, env=env)
        server.stop()


def _files_holding(root: Path, secret: bytes) -> list[str]:
    return [str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and secret in p.read_bytes()]


def test_a_password_from_the_environment_reaches_the_server_and_no_file(
    private_redis: tuple[FeatureRepo, str, Any, PrivateRedis],
) -> None:
    repo, url, result, server = private_redis
    connection = f"127.0.0.1:{server.port},password={server.password}"
    store = _store(repo, online_store={"type": "redis", "connection_string": connection})
    _assert_served_like_the_join(url, result, store)
    proc = run_cli(repo.project, "build", "churn-pw", timeout=600, env={"FEAST_REDIS": connection})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert server.password not in proc.stdout + proc.stderr
    shipped = next((repo.project / ".crispml" / "bentoml" / "bentos").rglob("src/features/feast_serving.json"))
    assert "${env:FEAST_REDIS}" in shipped.read_text()  # named as a reference, read at serve time
    assert _files_holding(repo.project, server.password.encode()) == []  # runs, registry, releases, logs, bento
    assert list(repo.project.rglob("server.log"))  # the search did cover the server's log


def test_without_the_variable_the_deploy_says_which_one(
    private_redis: tuple[FeatureRepo, str, Any, PrivateRedis],
) -> None:
    repo, _, _, _ = private_redis
    port = str(free_port())
    proc = run_cli(
        repo.project,
        "deploy",
        "churn_pw/1",
        "--name",
        "churn-pw-noenv",
        "--port",
        port,
        timeout=600,
        env={"FEAST_REDIS": None},
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "${env:FEAST_REDIS}, which is not set" in proc.stderr and "Traceback" not in proc.stderr


def test_when_redis_stops_requests_are_a_clear_503_in_seconds_and_deploys_are_rejected(
    private_redis: tuple[FeatureRepo, str, Any, PrivateRedis],
) -> None:
    """Last: it stops the private Redis."""
    repo, url, _, server = private_redis
    server.stop()
    t0 = time.monotonic()
    status, body = post(f"{url}/predict", {"records": [{"customer_id": 1}]})
    elapsed = time.monotonic() - t0
    # 503 Service Unavailable, not a 500 or a 400: BentoML shows no 5xx message to clients, the
    # server's log names the cause.
    assert status == 503, body
    assert server.password not in str(body)
    assert elapsed < 20, f"a request to a stopped store took {elapsed:.1f} s"  # bounded, not a hang
    logs = "".join(p.read_text(errors="replace") for p in repo.project.rglob("server.log"))
    assert f"feature store: online store redis at 127.0.0.1:{server.port} unavailable" in logs
    assert server.password not in logs

    env = {"FEAST_REDIS": f"127.0.0.1:{server.port},password={server.password}"}
    port = str(free_port())
    proc = run_cli(repo.project, "deploy", "churn_pw/1", "--name", "churn-pw-2", "--port", port, timeout=600, env=env)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 3, out  # rejected: nothing switched
    assert f"Redis at 127.0.0.1:{server.port} does not answer within 3 s" in out
    assert server.password not in out
    from crispml import UsageError, deployment

    with pytest.raises(UsageError, match="no deployment named 'churn-pw-2'"):
        deployment("churn-pw-2", repo.project)
