"""Serving by entity key: the spec a load records, the self-contained resolver, parity."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from test_materialize import _store, historical_at

from crispml import CrispmlError, ExitCode, run, serving_features

from conftest import CUSTOMERS, FeatureRepo


def _trained_spec(repo: FeatureRepo, **load: Any) -> dict[str, Any]:
    result = run(repo.write_recipe(**load), project=repo.project)
    assert result.status == "succeeded", result.error
    spec = result["dataset"].serving
    assert spec is not None
    return spec


def _release(repo: FeatureRepo, spec: dict[str, Any], folder: Path) -> Any:
    features = serving_features(spec, repo.project)
    folder.mkdir()
    for name, content in features.files.items():
        (folder / name).write_bytes(content)
    return features


def test_the_load_records_how_to_serve_its_features(feature_repo: FeatureRepo) -> None:
    spec = _trained_spec(feature_repo)
    assert spec["plugin"] == "feast" and spec["feature_service"] == "churn_v1"
    assert spec["feature_refs"] == ["daily_usage:minutes", "daily_usage:calls"]
    assert spec["feature_types"] == {"daily_usage:minutes": "Float64", "daily_usage:calls": "Int64"}
    assert spec["keys"] == {"customer_id": "int64"}
    assert spec["ttl_seconds"] == {"daily_usage": 2 * 86400.0}
    assert spec["project"] == "features" and spec["online_store"] is None
    json.dumps(spec)  # JSON, for the registry


def test_a_password_in_the_online_store_is_never_recorded(feature_repo: FeatureRepo) -> None:
    spec = _trained_spec(
        feature_repo, online_store={"type": "redis", "connection_string": "127.0.0.1:6379,db=3,password=hunter2"}
    )
    assert "hunter2" not in json.dumps(spec)
    assert spec["online_store"] == {"type": "redis", "connection_string": "127.0.0.1:6379,db=3"}


def test_the_resolver_runs_without_crispml_and_equals_the_point_in_time_join(
    feature_repo: FeatureRepo, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from crispml_feast._materialize import materialize

    feature_repo.write_recent_usage()
    spec = _trained_spec(feature_repo)
    end = datetime.now(UTC)
    materialize(_store(feature_repo), "churn_v1", end=end)
    folder = tmp_path_factory.mktemp("release") / "features"
    features = _release(feature_repo, spec, folder)
    assert features.keys == {"customer_id": "int64"} and features.provides == ["minutes", "calls"]
    assert features.module == "crispml_feast_resolver"
    assert any(r.startswith("feast==") for r in features.requirements)
    ids = list(range(1, CUSTOMERS + 1))
    code = (
        "import json, sys\n"
        "sys.modules['crispml'] = None; sys.modules['crispml_feast'] = None  # importing either fails\n"
        f"sys.path.insert(0, {str(folder)!r})\n"
        "import crispml_feast_resolver as r\n"
        f"frame, missing = r.Resolver({str(folder)!r}).fetch([{{'customer_id': i}} for i in {ids!r}])\n"
        "print(json.dumps({'frame': frame.to_dict(orient='list'), 'missing': missing}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=folder)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["missing"] == []
    want = historical_at(_store(feature_repo), ids, end)
    assert out["frame"]["minutes"] == want["minutes"].tolist()
    assert out["frame"]["calls"] == want["calls"].tolist()


def test_unknown_keys_are_missing_and_stale_values_are_null(
    feature_repo: FeatureRepo, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from crispml_feast._materialize import materialize

    day0 = feature_repo.write_recent_usage()
    usage = pd.read_parquet(feature_repo.usage)
    stale = usage["customer_id"].eq(7) & usage["event_timestamp"].gt(day0 + pd.Timedelta(days=5))
    usage[~stale].to_parquet(feature_repo.usage)  # customer 7: last row 4 days ago, past the 2-day ttl
    spec = _trained_spec(feature_repo)
    materialize(_store(feature_repo), "churn_v1", end=datetime.now(UTC), start=day0.to_pydatetime())
    folder = tmp_path_factory.mktemp("release") / "features"
    _release(feature_repo, spec, folder)
    sys.path.insert(0, str(folder))
    try:
        import crispml_feast_resolver

        resolver = crispml_feast_resolver.Resolver(folder)
    finally:
        sys.path.remove(str(folder))
    rows = [{"customer_id": 1}, {"customer_id": 99999}, {"customer_id": 7}]
    frame, missing = resolver.fetch(rows)
    assert frame["minutes"].tolist()[0] == 109.0
    assert pd.isna(frame["minutes"].iloc[1]) and pd.isna(frame["minutes"].iloc[2])
    assert missing == [1]  # 7 is known, only too old: null, as in training
    assert resolver.describe_missing(rows, missing) == "no online features for customer_id=99999 (not materialized?)"
    for bad, message in [
        ({"customer_id": "abc"}, "record 0: key 'customer_id' must be an integer, got 'abc'"),
        ({"customer_id": True}, "record 0: key 'customer_id' must be an integer"),
        ({"customer_id": 2**70}, "record 0: key 'customer_id' is out of the int64 range"),
        ({"cust": 1}, "record 0: missing key 'customer_id'"),
        ("1", "record 0: expected an object with customer_id"),
    ]:
        with pytest.raises(ValueError, match=message.replace("*", r"\*")):
            resolver.fetch([bad])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("remove", "feature service churn_v1 changed since the model was trained: calls removed"),
        ("retype", "minutes changed type from Float64 to Int64"),
    ],
)
def test_a_feature_removed_or_retyped_since_training_refuses_serving(
    feature_repo: FeatureRepo, change: str, message: str
) -> None:
    spec = _trained_spec(feature_repo)
    text = (feature_repo.folder / "defs.py").read_text()
    if change == "remove":
        text = text.replace(', Field(name="calls", dtype=Int64)', "")
    else:
        text = text.replace('Field(name="minutes", dtype=Float64)', 'Field(name="minutes", dtype=Int64)')
    (feature_repo.folder / "defs.py").write_text(text)
    with pytest.raises(CrispmlError, match=message) as caught:
        serving_features(spec, feature_repo.project)
    assert caught.value.exit_code == ExitCode.REJECTED  # the deploy's verdict, not bad input
    with pytest.raises(CrispmlError, match="changed since churn/3 was trained"):
        serving_features({**spec, "model": "churn/3"}, feature_repo.project)
