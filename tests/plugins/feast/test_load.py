"""The feast ``load`` stage against a real Feast repository (duckdb offline store)."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pytest

from crispml import Recipe, run

from conftest import DAY0, FeatureRepo, labels_frame, usage_frame


def _load(repo: FeatureRepo, **options: object) -> pd.DataFrame:
    result = run(repo.write_recipe(**options), project=repo.project)
    assert result.status == "succeeded", result.error
    return result["dataset"].frame


def test_features_are_the_values_as_of_each_label_time(feature_repo: FeatureRepo) -> None:
    result = run(feature_repo.recipe, project=feature_repo.project)
    assert result.status == "succeeded", result.error
    dataset = result["dataset"]
    frame = dataset.frame
    labels = labels_frame()
    assert list(frame.columns) == ["customer_id", "event_timestamp", "churned", "minutes", "calls"]
    assert str(frame["event_timestamp"].dtype) == "datetime64[us, UTC]"
    assert frame["customer_id"].tolist() == labels["customer_id"].tolist()
    # Labels at noon of day 5: the day-5 row (midnight) is the latest at or before it.
    assert frame["minutes"].tolist() == [100.0 * c + 5 for c in labels["customer_id"]]
    assert frame["churned"].tolist() == labels["churned"].tolist()
    assert dataset.key_columns == ("customer_id", "event_timestamp")
    assert dataset.feature_columns == ["minutes", "calls"]
    assert dataset.target == "churned"
    assert dataset.metrics == {"rows": 40.0, "rows_without_features": 0.0, "share_without_features": 0.0}
    assert result.manifest["data"]["key_columns"] == ["customer_id", "event_timestamp"]


def test_a_value_one_second_after_the_label_is_not_used(feature_repo: FeatureRepo) -> None:
    label_time = DAY0 + pd.Timedelta(days=5, hours=12)
    usage = usage_frame()
    late = pd.DataFrame(
        [
            {
                "customer_id": 7,
                "event_timestamp": label_time + pd.Timedelta(seconds=1),
                "minutes": -1.0,
                "calls": -1,
                "created": label_time + pd.Timedelta(seconds=1),
            }
        ]
    )
    on_time = pd.DataFrame(
        [{"customer_id": 8, "event_timestamp": label_time, "minutes": -2.0, "calls": -2, "created": label_time}]
    )
    pd.concat([usage, late, on_time]).to_parquet(feature_repo.usage)
    frame = _load(feature_repo).set_index("customer_id")
    assert frame.loc[7, "minutes"] == 705.0  # the row 1 s later is the future: unused
    assert frame.loc[8, "minutes"] == -2.0  # a row exactly at the label time is known then


def test_filter_by_created_timestamp_hides_a_backfill(feature_repo: FeatureRepo) -> None:
    label_time = DAY0 + pd.Timedelta(days=5, hours=12)
    backfill = pd.DataFrame(
        [
            {
                "customer_id": 3,
                "event_timestamp": label_time - pd.Timedelta(hours=1),
                "minutes": -3.0,
                "calls": -3,
                "created": label_time + pd.Timedelta(days=30),
            }
        ]  # written a month after the label
    )
    pd.concat([usage_frame(), backfill]).to_parquet(feature_repo.usage)
    naive = _load(feature_repo).set_index("customer_id")
    assert naive.loc[3, "minutes"] == -3.0  # without the filter the backfill leaks into training
    strict = _load(feature_repo, filter_by_created_timestamp=True).set_index("customer_id")
    assert strict.loc[3, "minutes"] == 305.0  # what was known at the label time
    assert strict.drop(index=3)["minutes"].equals(naive.drop(index=3)["minutes"])


def test_rows_in_equal_rows_out_with_unknown_stale_and_duplicate_entities(feature_repo: FeatureRepo) -> None:
    t = DAY0 + pd.Timedelta(days=5, hours=12)
    labels = pd.DataFrame(
        {
            "customer_id": [2, 999, 2, 5, 5, 1],
            "event_timestamp": [t, t, t, t + pd.Timedelta(days=30), t + pd.Timedelta(days=30), t],
            "churned": [0, 1, 1, 0, 1, 0],
        }
    )
    labels.to_parquet(feature_repo.labels)
    result = run(feature_repo.recipe, project=feature_repo.project)
    assert result.status == "succeeded", result.error
    frame = result["dataset"].frame
    assert len(frame) == 6
    assert frame["customer_id"].tolist() == [2, 999, 2, 5, 5, 1]  # the file's order
    assert frame["churned"].tolist() == [0, 1, 1, 0, 1, 0]  # each label still on its own row
    minutes = frame["minutes"].tolist()
    assert minutes[0] == minutes[2] == 205.0  # duplicate entity rows: both kept
    assert pd.isna(minutes[1])  # never seen: kept, with nulls
    assert pd.isna(minutes[3]) and pd.isna(minutes[4])  # all rows older than the ttl: kept, nulls
    assert minutes[5] == 105.0
    assert result["dataset"].metrics["rows_without_features"] == 3.0
    assert result["dataset"].metrics["share_without_features"] == 0.5


def test_rows_without_features_can_be_gated(feature_repo: FeatureRepo) -> None:
    labels = labels_frame()
    labels.loc[:9, "customer_id"] = range(1000, 1010)  # 10 of 40 unknown
    labels.to_parquet(feature_repo.labels)
    recipe = Recipe.from_yaml(feature_repo.recipe)
    gated = recipe.model_copy(
        update={"load": recipe.load.model_copy(update={"gate": {"share_without_features": "<= 0.1"}})}  # type: ignore[union-attr]
    ).with_source(feature_repo.recipe)
    result = run(gated, project=feature_repo.project)
    assert result.status == "rejected"
    assert "share_without_features" in result.manifest["rejection"]


def test_rows_without_features_are_kept_whatever_on_missing_says(feature_repo: FeatureRepo) -> None:
    labels = labels_frame()
    labels.loc[0, "customer_id"] = 4242
    labels.to_parquet(feature_repo.labels)
    for on_missing in ("reject", "null"):  # it says what serving does with an unknown key
        result = run(feature_repo.write_recipe(on_missing=on_missing), project=feature_repo.project)
        assert result.status == "succeeded", result.error
        assert len(result["dataset"].frame) == 40
        assert result["dataset"].serving["on_missing"] == on_missing  # type: ignore[index]


def test_times_naive_offset_and_nanosecond_become_utc_microseconds(
    feature_repo: FeatureRepo, caplog: pytest.LogCaptureFixture
) -> None:
    csv = feature_repo.project / "labels.csv"
    csv.write_text(
        "customer_id,label_time,churned\n"
        "1,2026-01-06T12:00:00,0\n"  # naive: UTC
        "2,2026-01-06T13:00:00+01:00,1\n"  # 12:00 UTC
        "3,2026-01-06T12:00:00.123456789Z,0\n"  # nanoseconds: truncated
    )
    with caplog.at_level(logging.WARNING, logger="crispml.feast"):
        frame = _load(feature_repo, entities="labels.csv", timestamp_column="label_time")
    assert "label_time" not in frame.columns
    assert [str(t) for t in frame["event_timestamp"]] == [
        "2026-01-06 12:00:00+00:00",
        "2026-01-06 12:00:00+00:00",
        "2026-01-06 12:00:00.123456+00:00",
    ]
    assert frame["minutes"].tolist() == [105.0, 205.0, 305.0]
    assert "1 of 3 times in column 'label_time' had sub-microsecond parts" in caplog.text


def test_a_bad_time_fails_the_run_naming_row_and_value_and_the_run_resumes(
    feature_repo: FeatureRepo, crispml_cli: object
) -> None:
    from crispml import resume

    lines = ["customer_id,event_timestamp,churned"] + [f"{c},2026-01-06T12:00:00,0" for c in range(1, 17)]
    lines.append("17,2026-13-01,1")
    (feature_repo.project / "labels.csv").write_text("\n".join(lines) + "\n")
    recipe = feature_repo.write_recipe(entities="labels.csv")
    result = run(recipe, project=feature_repo.project)
    assert result.status == "failed" and result.exit_code == 1
    assert "column 'event_timestamp' row 17: '2026-13-01' is not a time" in result.manifest["error"]
    lines[-1] = "17,2026-01-06T12:00:00,1"
    (feature_repo.project / "labels.csv").write_text("\n".join(lines) + "\n")
    resumed = resume(result.run_id, project=feature_repo.project)
    assert resumed.status == "succeeded", resumed.error
    assert resumed.run_id == result.run_id and len(resumed["dataset"].frame) == 17


def test_numbers_in_the_time_column_are_refused(feature_repo: FeatureRepo) -> None:
    labels = labels_frame()
    labels["event_timestamp"] = range(len(labels))
    labels.to_parquet(feature_repo.labels)
    result = run(feature_repo.recipe, project=feature_repo.project)
    assert result.status == "failed"
    assert "column 'event_timestamp' holds numbers (int64), expected times" in result.manifest["error"]


def test_an_unchanged_load_is_cached_and_a_changed_feature_file_reruns_it(feature_repo: FeatureRepo) -> None:
    first = run(feature_repo.recipe, project=feature_repo.project)
    assert run(feature_repo.recipe, project=feature_repo.project).stage_status["load"] == "cached"
    usage = usage_frame()
    usage.loc[usage["customer_id"] == 1, "minutes"] = 0.0
    usage.to_parquet(feature_repo.usage)
    again = run(feature_repo.recipe, project=feature_repo.project)
    assert again.stage_status["load"] == "succeeded"
    assert again["dataset"].frame["minutes"].iloc[0] == 0.0
    assert again["dataset"].fingerprint != first["dataset"].fingerprint


def test_the_store_lives_under_the_project(
    feature_repo: FeatureRepo, monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    assert run(feature_repo.recipe, project=feature_repo.project).status == "succeeded"
    state = feature_repo.project / ".crispml" / "feast" / "features"
    assert (state / "registry.db").is_file() and (state / "online.db").is_file()
    assert sorted(p.name for p in feature_repo.folder.iterdir()) == ["defs.py", "usage.parquet"]
    assert list(home.iterdir()) == []


def test_a_recipe_from_feast_to_sklearn_runs_end_to_end(feature_repo: FeatureRepo) -> None:
    labels = pd.concat([labels_frame(day=d) for d in (3, 5, 7)], ignore_index=True)
    labels.to_parquet(feature_repo.labels)
    recipe = Recipe.from_dict(
        {
            "name": "feast-sklearn",
            "split": {"test_size": 0.25, "seed": 0, "stratify": "churned"},
            "load": {
                "use": "feast",
                "repo": "features",
                "feature_service": "churn_v1",
                "entities": "labels.parquet",
                "target": "churned",
            },
            "train": {"use": "sklearn", "estimator": "sklearn.tree.DecisionTreeClassifier"},
            "evaluate": {"use": "sklearn", "metrics": ["accuracy"], "plots": False},
        }
    ).with_source(feature_repo.project / "e2e.yaml")
    result = run(recipe, project=feature_repo.project)
    assert result.status == "succeeded", result.error
    model = result["model"]
    assert model.feature_columns == ["minutes", "calls"]
    assert list(model.model.feature_names_in_) == ["minutes", "calls"]
    assert result["evaluation"].metrics["accuracy"] > 0.6
    assert result["evaluation"].rows == 30


def test_rows_keep_the_entities_file_order_whatever_the_join_returns(feature_repo: FeatureRepo) -> None:
    t = DAY0 + pd.Timedelta(days=5, hours=12)
    ids = [40, 1, 39, 2, 38, 3] * 50
    times = [t - pd.Timedelta(hours=i % 7) for i in range(len(ids))]
    pd.DataFrame(
        {"customer_id": ids, "event_timestamp": times, "churned": [i % 2 for i in range(len(ids))]}
    ).to_parquet(feature_repo.labels)
    frame = _load(feature_repo)
    assert frame["customer_id"].tolist() == ids
    assert frame["churned"].tolist() == [i % 2 for i in range(len(ids))]
    assert [t.hour for t in frame["event_timestamp"]] == [(12 - i % 7) for i in range(len(ids))]


def test_source_files_are_inputs_of_the_cache_key(feature_repo: FeatureRepo) -> None:
    from crispml import check

    options = check(feature_repo.recipe).step("load").options  # type: ignore[union-attr]
    inputs = {Path(p).name for p in options.external_inputs()}
    assert inputs == {"labels.parquet", "defs.py", "usage.parquet"}
