"""The embedded store: applied only when definitions change; why its offline store is duckdb."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from crispml import run

from conftest import DAY0, FeatureRepo


def _open(repo: FeatureRepo) -> tuple[Any, Any]:
    from crispml_feast._definitions import load_definitions
    from crispml_feast._store import store_spec

    return store_spec(repo.folder, repo.project), load_definitions(repo.folder)


def test_unchanged_definitions_are_not_applied_again(feature_repo: FeatureRepo) -> None:
    from crispml_feast._store import apply_if_changed, open_store

    spec, definitions = _open(feature_repo)
    store = open_store(spec, definitions)
    marker = spec.state / "applied.json"
    first = json.loads(marker.read_text())
    assert "FeatureView:daily_usage" in first["applied_objects"]
    assert apply_if_changed(store, spec, definitions) is False
    assert json.loads(marker.read_text()) == first


def test_changed_definitions_are_applied_and_removed_ones_deleted(feature_repo: FeatureRepo) -> None:
    from crispml_feast._definitions import load_definitions
    from crispml_feast._store import open_store

    spec, definitions = _open(feature_repo)
    open_store(spec, definitions)
    feature_repo.write_definitions(ttl_days=5)
    text = (feature_repo.folder / "defs.py").read_text()
    kept = [line for line in text.splitlines() if not line.startswith("minutes_only")]
    (feature_repo.folder / "defs.py").write_text("\n".join(kept) + "\n")
    changed = load_definitions(feature_repo.folder)
    assert changed is not definitions and changed.service("minutes_only") is None
    store = open_store(spec, changed)
    applied = json.loads((spec.state / "applied.json").read_text())
    assert "FeatureView:daily_usage" in applied["applied_objects"]
    assert "FeatureService:minutes_only" not in applied["applied_objects"]
    assert applied["deleted_objects"] == ["FeatureService:minutes_only"]
    assert [s.name for s in store.list_feature_services()] == ["churn_v1"]
    assert store.get_feature_view("daily_usage").ttl == pd.Timedelta(days=5)


def test_a_deleted_registry_is_applied_again(feature_repo: FeatureRepo) -> None:
    from crispml_feast._store import open_store

    spec, definitions = _open(feature_repo)
    open_store(spec, definitions)
    (spec.state / "registry.db").unlink()
    store = open_store(spec, definitions)
    assert sorted(s.name for s in store.list_feature_services()) == ["churn_v1", "minutes_only"]


def test_a_changed_ttl_changes_the_training_data(feature_repo: FeatureRepo) -> None:
    late = pd.DataFrame({"customer_id": [1], "event_timestamp": [DAY0 + pd.Timedelta(days=20)], "churned": [0]})
    late.to_parquet(feature_repo.labels)
    first = run(feature_repo.recipe, project=feature_repo.project)
    assert pd.isna(first["dataset"].frame["minutes"].iloc[0])  # day 9 is 11 days before: past a 2-day ttl
    feature_repo.write_definitions(ttl_days=30)
    second = run(feature_repo.recipe, project=feature_repo.project)
    assert second.stage_status["load"] == "succeeded"  # not served from the cache
    assert second["dataset"].frame["minutes"].iloc[0] == 109.0


def test_concurrent_applies_apply_once(feature_repo: FeatureRepo) -> None:
    from feast import FeatureStore

    from crispml_feast._store import apply_if_changed, store_spec

    spec, definitions = _open(feature_repo)
    spec.state.mkdir(parents=True)
    results: list[bool] = []
    errors: list[BaseException] = []

    def apply() -> None:
        try:
            mine = store_spec(feature_repo.folder, feature_repo.project)
            store = FeatureStore(config=mine.config, repo_path=str(feature_repo.folder))
            results.append(apply_if_changed(store, mine, definitions))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=apply) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(results) == [False, False, True]


def test_a_feature_store_yaml_is_used_as_written(feature_repo: FeatureRepo) -> None:
    (feature_repo.folder / "feature_store.yaml").write_text(
        "project: handwritten\nprovider: local\nregistry: data/registry.db\n"
        "online_store: {type: sqlite, path: data/online.db}\noffline_store: {type: duckdb}\n"
        "entity_key_serialization_version: 3\n"
    )
    (feature_repo.folder / "data").mkdir()
    result = run(feature_repo.recipe, project=feature_repo.project)
    assert result.status == "succeeded", result.error
    assert (feature_repo.folder / "data" / "registry.db").is_file()
    assert not (feature_repo.project / ".crispml" / "feast" / "features").exists()
    assert (feature_repo.project / ".crispml" / "feast" / "handwritten" / "applied.json").is_file()
    assert result["dataset"].frame["minutes"].iloc[0] == 105.0


# ------------------------------------------------------------------------------------------
# Why not Feast's default ``file`` offline store. These assert the default store's WRONG
# behaviour (Feast 0.67, feast-dev/feast#6787): when one fails, Feast changed — re-measure and
# reconsider the duckdb default (docs/plugins/feast.md, "Why duckdb").
# ------------------------------------------------------------------------------------------


def _file_store(repo: FeatureRepo) -> Any:
    """The same repository on Feast's default offline store."""
    from crispml_feast._store import open_store, store_spec

    _, definitions = _open(repo)
    file_spec = store_spec(repo.folder, repo.project, project="filestore")
    config = file_spec.config.model_copy(update={"offline_config": {"type": "file"}})
    from dataclasses import replace

    return open_store(replace(file_spec, config=config), definitions), definitions


@pytest.fixture
def tricky_labels(feature_repo: FeatureRepo) -> pd.DataFrame:
    t = DAY0 + pd.Timedelta(days=5, hours=12)
    labels = pd.DataFrame(
        {
            "customer_id": [2, 2, 3, 5],
            "event_timestamp": [t, t, t, t + pd.Timedelta(days=30)],  # 5: all its rows past the ttl
            "churned": [0, 1, 0, 1],
        }
    )
    labels.to_parquet(feature_repo.labels)
    return labels


def test_regression_feasts_file_store_collapses_duplicate_entity_rows(
    feature_repo: FeatureRepo, tricky_labels: pd.DataFrame
) -> None:
    store, _ = _file_store(feature_repo)
    assert type(store._get_provider().offline_store).__name__ == "DaskOfflineStore"  # what "file" means
    out = store.get_historical_features(entity_df=tricky_labels, features=store.get_feature_service("churn_v1")).to_df()
    twos = out[out["customer_id"] == 2]
    assert len(twos) == 1, "Feast's file store now keeps duplicate entity rows: re-measure (feast#6787)"
    ours = run(feature_repo.recipe, project=feature_repo.project)["dataset"].frame
    assert (ours["customer_id"] == 2).sum() == 2 and ours["churned"].tolist() == [0, 1, 0, 1]


def test_regression_feasts_file_store_drops_entity_rows_outside_the_ttl(
    feature_repo: FeatureRepo, tricky_labels: pd.DataFrame
) -> None:
    store, _ = _file_store(feature_repo)
    out = store.get_historical_features(entity_df=tricky_labels, features=store.get_feature_service("churn_v1")).to_df()
    assert 5 not in set(out["customer_id"]), "Feast's file store now keeps rows outside the ttl: re-measure"
    unseen = tricky_labels.assign(customer_id=[2, 2, 3, 999])
    kept = store.get_historical_features(entity_df=unseen, features=store.get_feature_service("churn_v1")).to_df()
    assert 999 in set(kept["customer_id"])  # yet it keeps an entity it never saw, with nulls
    ours = run(feature_repo.recipe, project=feature_repo.project)["dataset"].frame
    assert ours["customer_id"].tolist() == [2, 2, 3, 5] and pd.isna(ours["minutes"].iloc[3])


def test_default_repo_config_is_local_sqlite_duckdb_under_crispml(feature_repo: FeatureRepo) -> None:
    spec, _ = _open(feature_repo)
    config = spec.config
    assert config.provider == "local" and config.project == "features"
    assert config.offline_store.type == "duckdb"
    assert config.online_store.type == "sqlite"
    assert Path(config.online_store.path) == feature_repo.project / ".crispml" / "feast" / "features" / "online.db"
    assert Path(config.registry.path) == feature_repo.project / ".crispml" / "feast" / "features" / "registry.db"
    assert config.entity_key_serialization_version == 3


def test_a_registry_torn_by_a_killed_write_is_set_aside_and_rebuilt(
    feature_repo: FeatureRepo, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    from crispml_feast._store import open_store

    spec, definitions = _open(feature_repo)
    open_store(spec, definitions)
    registry = spec.state / "registry.db"
    whole = registry.read_bytes()
    registry.write_bytes(whole[: len(whole) // 3] + b"\xff\xff\xff")  # what a kill -9 mid-write leaves
    with caplog.at_level(logging.WARNING, logger="crispml.feast"):
        result = run(feature_repo.recipe, project=feature_repo.project)
    assert result.status == "succeeded", result.error
    assert "could not be read" in caplog.text
    assert [p.name for p in spec.state.glob("registry.db.torn-*")] != []
    assert result["dataset"].frame["minutes"].iloc[0] == 105.0
