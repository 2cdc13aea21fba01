"""Feast definitions of the churn example: who a customer is, and how they used the service.

crispml applies these (no ``feast apply`` to run) with an embedded configuration under
``.crispml/feast/`` when a recipe loads from this folder. ``make_data.py`` writes the Parquet
files the views read.
"""

from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.types import Float64, Int64, String

HERE = Path(__file__).parent

customer = Entity(name="customer", join_keys=["customer_id"], value_type=ValueType.INT64)

# Changes rarely (a new contract, a new price): a profile row stays valid for 120 days.
customer_profile = FeatureView(
    name="customer_profile",
    entities=[customer],
    ttl=timedelta(days=120),
    schema=[
        Field(name="contract", dtype=String),
        Field(name="internet", dtype=String),
        Field(name="payment_method", dtype=String),
        Field(name="tenure_months", dtype=Int64),
        Field(name="monthly_charges", dtype=Float64),
    ],
    source=FileSource(
        path=str(HERE / "profile.parquet"), timestamp_field="event_timestamp", created_timestamp_column="created"
    ),
)

# One row a day: a usage figure older than a week says nothing about the customer today.
usage_daily = FeatureView(
    name="usage_daily",
    entities=[customer],
    ttl=timedelta(days=7),
    schema=[
        Field(name="minutes", dtype=Float64),
        Field(name="data_gb", dtype=Float64),
        Field(name="support_calls_30d", dtype=Int64),
    ],
    source=FileSource(
        path=str(HERE / "usage.parquet"), timestamp_field="event_timestamp", created_timestamp_column="created"
    ),
)

churn_v1 = FeatureService(name="churn_v1", features=[customer_profile, usage_daily])
