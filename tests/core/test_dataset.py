"""``Dataset``: which columns are features, and results stored before a field existed."""

from __future__ import annotations

import pickle

import pandas as pd

from crispml import Dataset


def _dataset(**changes: object) -> Dataset:
    frame = pd.DataFrame(
        {
            "customer_id": [1, 2],
            "event_timestamp": pd.to_datetime(["2026-01-01", "2026-01-02"], utc=True),
            "minutes": [1.0, 2.0],
            "churned": [0, 1],
        }
    )
    fields: dict[str, object] = {"frame": frame, "target": "churned", "name": "d", "source": "m", "fingerprint": "f"}
    fields.update(changes)
    return Dataset(**fields)  # type: ignore[arg-type]


def test_key_columns_stay_in_the_frame_but_are_not_features() -> None:
    dataset = _dataset(key_columns=("customer_id", "event_timestamp"))
    assert dataset.feature_columns == ["minutes"]
    assert list(dataset.frame.columns) == ["customer_id", "event_timestamp", "minutes", "churned"]
    assert dataset.summary()["key_columns"] == ["customer_id", "event_timestamp"]


def test_without_keys_every_column_but_the_target_is_a_feature() -> None:
    dataset = _dataset()
    assert dataset.feature_columns == ["customer_id", "event_timestamp", "minutes"]
    assert "key_columns" not in dataset.summary()


def test_a_dataset_pickled_before_key_columns_existed_loads_without_keys() -> None:
    dataset = _dataset()
    del dataset.__dict__["key_columns"]  # what an older crispml stored in the run store
    loaded = pickle.loads(pickle.dumps(dataset))
    assert "key_columns" not in loaded.__dict__
    assert loaded.key_columns == () and loaded.feature_columns == ["customer_id", "event_timestamp", "minutes"]
