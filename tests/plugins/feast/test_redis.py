"""The Redis online store, for real (``services``: skipped with its reason when Redis does not
answer on 127.0.0.1:6379, failed instead under CI=true). Tests use their own flushed db."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from suite_helpers import free_port
from test_materialize import assert_parity, online

from conftest import CUSTOMERS, FeatureRepo, require_service

REDIS_DB = 13  # this suite's own database: flushed before and after


@pytest.fixture
def redis_db() -> Iterator[str]:
    require_service("127.0.0.1", 6379, "Redis")
    import redis

    client = redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB, socket_timeout=5)
    client.flushdb()
    try:
        yield f"127.0.0.1:6379,db={REDIS_DB}"
    finally:
        client.flushdb()
        client.close()


def _store(repo: FeatureRepo, connection: str) -> Any:
    from crispml_feast._definitions import load_definitions
    from crispml_feast._store import open_store, store_spec

    spec = store_spec(repo.folder, repo.project, online_store={"type": "redis", "connection_string": connection})
    return open_store(spec, load_definitions(repo.folder))


@pytest.mark.services
def test_redis_online_features_equal_historical_features_at_t(feature_repo: FeatureRepo, redis_db: str) -> None:
    import redis

    from crispml_feast._materialize import materialize

    feature_repo.write_recent_usage()
    store = _store(feature_repo, redis_db)
    end = datetime.now(UTC)
    [done] = materialize(store, "churn_v1", end=end)
    assert done.rows == CUSTOMERS
    assert redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB).dbsize() == CUSTOMERS  # really in Redis
    assert_parity(store, end)
    assert online(store, [99999])["minutes"].isna().all()


@pytest.mark.services
def test_a_recipe_materializes_into_redis_before_deploy(feature_repo: FeatureRepo, redis_db: str) -> None:
    import redis
    from test_materialize import _Deployer

    from crispml import run

    feature_repo.write_recent_usage()
    recipe = feature_repo.write_recipe(
        materialize=True,
        online_store={"type": "redis", "connection_string": redis_db},
        steps={"deploy": {"use": "fake_deploy"}},
    )
    result = run(recipe, project=feature_repo.project, extra_plugins={"fake_deploy": _Deployer(feature_repo)})
    assert result.status == "succeeded", result.error
    assert redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB).dbsize() == CUSTOMERS


def test_unreachable_redis_fails_within_seconds_in_one_line(
    feature_repo: FeatureRepo, crispml_cli: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    from crispml import CrispmlError
    from crispml_feast._materialize import open_for

    port = free_port()  # nothing listens there
    feature_repo.write_recent_usage()
    recipe = feature_repo.write_recipe(online_store={"type": "redis", "connection_string": f"127.0.0.1:{port}"})
    from crispml import check

    options = check(recipe).step("load").options  # type: ignore[union-attr]
    t0 = time.perf_counter()
    with pytest.raises(CrispmlError, match=f"feast online store: Redis at 127.0.0.1:{port} does not answer within 3 s"):
        open_for(options, feature_repo.project)
    assert time.perf_counter() - t0 < 5
    proc = crispml_cli("materialize", "recipe.yaml")
    assert proc.returncode == 1, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "does not answer within 3 s" in proc.stderr


@pytest.mark.services
def test_the_shipped_resolver_reads_redis_like_the_join(
    feature_repo: FeatureRepo, redis_db: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    import sys

    from test_materialize import historical_at

    from crispml import run, serving_features
    from crispml_feast._materialize import materialize

    feature_repo.write_recent_usage()
    recipe = feature_repo.write_recipe(online_store={"type": "redis", "connection_string": redis_db})
    result = run(recipe, project=feature_repo.project)
    assert result.status == "succeeded", result.error
    spec = result["dataset"].serving
    end = datetime.now(UTC)
    materialize(_store(feature_repo, redis_db), "churn_v1", end=end)
    features = serving_features(spec, feature_repo.project)
    assert any(r.startswith("redis==") for r in features.requirements)
    folder = tmp_path_factory.mktemp("release")
    for name, content in features.files.items():
        (folder / name).write_bytes(content)
    sys.path.insert(0, str(folder))
    try:
        import importlib

        module = importlib.import_module(features.module)
        resolver = importlib.reload(module).Resolver(folder)
    finally:
        sys.path.remove(str(folder))
    ids = list(range(1, CUSTOMERS + 1))
    frame, missing = resolver.fetch([{"customer_id": i} for i in ids])
    want = historical_at(_store(feature_repo, redis_db), ids, end)
    assert missing == []
    assert frame["minutes"].tolist() == want["minutes"].tolist()
    assert frame["calls"].tolist() == want["calls"].tolist()
    # Redis answers an unknown key with empty PRESENT values: still reported missing (HTTP 400).
    frame, missing = resolver.fetch([{"customer_id": 1}, {"customer_id": 99999}])
    assert missing == [1]
    assert frame["minutes"].isna().tolist() == [False, True]
