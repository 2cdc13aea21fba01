"""Fixtures for the feast plugin's tests: a small real Feast repository, generated per test.

* ``feast_backend``: imports Feast once per session (≈6 s) so tests share the cost.
* ``feature_repo``: ``features/`` in the test's project — a ``customer`` entity, a daily usage
  Parquet file, a ``daily_usage`` view with a 2-day ttl, services ``churn_v1`` (all features)
  and ``minutes_only``; ``labels.parquet`` with ``customer_id``, ``event_timestamp``,
  ``churned``; and ``recipe.yaml`` loading it with the feast plugin.

The usage value of customer ``c`` on day ``d`` (days after ``DAY0``) is ``minutes = 100*c + d``,
so a test can tell exactly which row the point-in-time join picked.
"""

from __future__ import annotations

import os
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from services import require_service  # noqa: F401  (re-exported for the tests)

DAY0 = pd.Timestamp("2026-01-01", tz="UTC")
CUSTOMERS = 40
DAYS = 10

DEFINITIONS = """
from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.types import Float64, Int64

HERE = Path(__file__).parent

customer = Entity(name="customer", join_keys=["customer_id"], value_type=ValueType.INT64)

usage_source = FileSource(
    path=str(HERE / "usage.parquet"),
    timestamp_field="event_timestamp",
    created_timestamp_column="created",
)

daily_usage = FeatureView(
    name="daily_usage",
    entities=[customer],
    ttl=timedelta(days={ttl_days}),
    schema=[Field(name="minutes", dtype=Float64), Field(name="calls", dtype=Int64){extra_fields}],
    source=usage_source,
)

churn_v1 = FeatureService(name="churn_v1", features=[daily_usage])
minutes_only = FeatureService(name="minutes_only", features=[daily_usage[["minutes"]]])
"""


def usage_frame(day0: pd.Timestamp = DAY0, customers: int = CUSTOMERS, days: int = DAYS) -> pd.DataFrame:
    rows = [
        {
            "customer_id": c,
            "event_timestamp": day0 + pd.Timedelta(days=d),
            "minutes": float(100 * c + d),
            "calls": int(c + d),
            "created": day0 + pd.Timedelta(days=d),
        }
        for c in range(1, customers + 1)
        for d in range(days)
    ]
    return pd.DataFrame(rows)


def labels_frame(customers: int = CUSTOMERS, day: int = 5) -> pd.DataFrame:
    """One label per customer at noon of ``day``; churn depends on minutes (learnable)."""
    return pd.DataFrame(
        {
            "customer_id": list(range(1, customers + 1)),
            "event_timestamp": [DAY0 + pd.Timedelta(days=day, hours=12)] * customers,
            "churned": [int(c % 3 == 0) for c in range(1, customers + 1)],
        }
    )


@dataclass
class FeatureRepo:
    project: Path
    folder: Path
    recipe: Path

    @property
    def usage(self) -> Path:
        return self.folder / "usage.parquet"

    @property
    def labels(self) -> Path:
        return self.project / "labels.parquet"

    def write_definitions(self, ttl_days: int = 2, extra_fields: str = "") -> None:
        text = DEFINITIONS.replace("{ttl_days}", str(ttl_days)).replace("{extra_fields}", extra_fields)
        (self.folder / "defs.py").write_text(text)

    def write_recent_usage(self) -> pd.Timestamp:
        """Usage for the ``DAYS`` days up to today (so a materialization up to now finds it);
        returns the first day."""
        day0 = pd.Timestamp.now(tz="UTC").floor("D") - pd.Timedelta(days=DAYS - 1)
        usage_frame(day0).to_parquet(self.usage)
        return day0

    def write_recipe(self, name: str = "recipe.yaml", steps: dict[str, Any] | None = None, **load: Any) -> Path:
        options = {
            "use": "feast",
            "repo": "features",
            "feature_service": "churn_v1",
            "entities": "labels.parquet",
            "target": "churned",
            **load,
        }
        recipe = {
            "name": "feast-test",
            "split": None,
            "load": {k: v for k, v in options.items() if v is not None},
            **(steps or {}),
        }
        path = self.project / name
        path.write_text(yaml.safe_dump(recipe, sort_keys=False))
        return path


@pytest.fixture(scope="session")
def feast_backend() -> Any:
    """Feast, imported once for the session."""
    import feast

    return feast


@pytest.fixture
def feature_repo(project: Path, feast_backend: Any) -> FeatureRepo:
    folder = project / "features"
    folder.mkdir()
    repo = FeatureRepo(project, folder, project / "recipe.yaml")
    repo.write_definitions()
    usage_frame().to_parquet(repo.usage)
    labels_frame().to_parquet(repo.labels)
    repo.write_recipe()
    return repo


def write_module(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


os.environ.setdefault("FEAST_USAGE", "False")
