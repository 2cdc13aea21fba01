"""Materializing into the online store: incremental, per view, and before a deploy."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import pytest

from crispml import Declaration, Deployment, Options, RunContext, UsageError, hookimpl, run

from conftest import CUSTOMERS, FeatureRepo


def _store(repo: FeatureRepo, **kw: Any) -> Any:
    from crispml_feast._definitions import load_definitions
    from crispml_feast._store import open_store, store_spec

    return open_store(store_spec(repo.folder, repo.project, **kw), load_definitions(repo.folder))


def online(store: Any, ids: list[int]) -> pd.DataFrame:
    from crispml_feast._store import quiet

    with quiet():
        service = store.get_feature_service("churn_v1")
        got = store.get_online_features(features=service, entity_rows=[{"customer_id": i} for i in ids]).to_df()
    return got[["customer_id", "minutes", "calls"]]


def historical_at(store: Any, ids: list[int], when: datetime) -> pd.DataFrame:
    entity = pd.DataFrame({"customer_id": ids, "event_timestamp": [pd.Timestamp(when)] * len(ids)})
    from crispml_feast._store import quiet

    with quiet():
        job = store.get_historical_features(entity_df=entity, features=store.get_feature_service("churn_v1"))
        out = job.to_df()
    return out.sort_values("customer_id")[["customer_id", "minutes", "calls"]].reset_index(drop=True)


def assert_parity(store: Any, when: datetime) -> None:
    ids = list(range(1, CUSTOMERS + 1))
    got = online(store, ids).astype({"calls": "float64"}).reset_index(drop=True)
    want = historical_at(store, ids, when).astype({"calls": "float64"})
    pd.testing.assert_frame_equal(got, want, check_dtype=False)


def test_materialize_writes_what_the_point_in_time_join_sees_and_continues_incrementally(
    feature_repo: FeatureRepo,
) -> None:
    from crispml_feast._materialize import materialize

    day0 = feature_repo.write_recent_usage()
    store = _store(feature_repo)
    assert online(store, [1])["minutes"].isna().all()  # nothing materialized yet
    end = datetime.now(UTC)
    [first] = materialize(store, "churn_v1", end=end)
    assert first.view == "daily_usage" and first.end == end
    assert first.start == end - pd.Timedelta(days=2)  # never materialized: end - ttl
    assert first.rows == CUSTOMERS and first.seconds > 0
    assert_parity(store, end)
    assert online(store, [1])["minutes"].tolist() == [100.0 + 9]  # today's row
    assert day0 < end
    later = datetime.now(UTC)
    [second] = materialize(_store(feature_repo), "churn_v1", end=later)
    assert second.start == end and second.rows == 0  # continues where the last one stopped


def test_a_view_without_ttl_is_named_and_nothing_is_materialized(feature_repo: FeatureRepo) -> None:
    from crispml_feast._materialize import materialize

    feature_repo.write_definitions(ttl_days=0)
    store = _store(feature_repo)
    with pytest.raises(UsageError, match="feature view 'daily_usage' has no ttl and was never materialized"):
        materialize(store, "churn_v1", end=datetime.now(UTC))
    assert store.get_feature_view("daily_usage").most_recent_end_time is None
    day0 = feature_repo.write_recent_usage()
    [done] = materialize(store, "churn_v1", end=datetime.now(UTC), start=day0.to_pydatetime())
    assert done.rows == CUSTOMERS


def test_the_commands_materialize_and_describe(
    feature_repo: FeatureRepo, crispml_cli: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    feature_repo.write_recent_usage()
    proc = crispml_cli("materialize", "recipe.yaml")
    assert proc.returncode == 0, proc.stderr
    [line] = proc.stdout.strip().splitlines()
    assert line.startswith("daily_usage: ") and f"  {CUSTOMERS} rows  " in line and line.endswith(" s")
    proc = crispml_cli("features", "recipe.yaml", "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["project"] == "features"
    assert sorted(info["services"], key=lambda s: s["name"]) == [
        {"name": "churn_v1", "features": ["daily_usage:minutes", "daily_usage:calls"]},
        {"name": "minutes_only", "features": ["daily_usage:minutes"]},
    ]
    [view] = info["views"]
    assert view["name"] == "daily_usage" and view["entities"] == ["customer"]
    assert view["ttl_seconds"] == 2 * 86400 and view["last_materialized"] is not None
    bad = crispml_cli("materialize", "recipe.yaml", "--start", "yesterday")
    assert bad.returncode == 2 and "--start 'yesterday': expected 'now' or an ISO 8601 time" in bad.stderr
    assert "Traceback" not in bad.stderr


class _Deployer:
    """A deploy step that looks into the online store when it runs."""

    def __init__(self, repo: FeatureRepo) -> None:
        self.repo = repo
        self.seen: pd.DataFrame | None = None

    @hookimpl
    def crispml_declare(self) -> Declaration:
        return Declaration(stages={"deploy": Options})

    @hookimpl
    def crispml_deploy(self, context: RunContext) -> Deployment:
        self.seen = online(_store(self.repo), [1, 2])
        return Deployment(name="d", url="http://127.0.0.1:1", model_uri="none")


@pytest.mark.parametrize("materialize", [True, False])
def test_materialize_true_fills_the_online_store_before_deploy(feature_repo: FeatureRepo, materialize: bool) -> None:
    feature_repo.write_recent_usage()
    deployer = _Deployer(feature_repo)
    recipe = feature_repo.write_recipe(materialize=materialize, steps={"deploy": {"use": "fake_deploy"}})
    result = run(recipe, project=feature_repo.project, extra_plugins={"fake_deploy": deployer})
    assert result.status == "succeeded", result.error
    assert deployer.seen is not None
    if materialize:
        assert deployer.seen["minutes"].tolist() == [109.0, 209.0]
        [done] = result.manifest["links"]["feast_materialized"]
        assert done["view"] == "daily_usage" and done["rows"] == CUSTOMERS
    else:
        assert deployer.seen["minutes"].isna().all()
        assert "feast_materialized" not in result.manifest["links"]
