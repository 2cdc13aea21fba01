"""Generate every data file of the churn example (deterministic: same seed and day, same files).

    python make_data.py            # the shipped world: customer profiles, daily usage, labels
    python make_data.py --shift    # then the world moves: prices up, contracts changed, new labels

Three files, all Parquet, nothing downloaded:

* ``features/profile.parquet`` — one row per customer and change (contract, internet, payment
  method, tenure, monthly charges): the ``customer_profile`` feature view.
* ``features/usage.parquet`` — one row per customer and day (minutes, data used, support calls
  over 30 days): the ``usage_daily`` feature view.
* ``data/labels.parquet`` — ``customer_id``, ``event_timestamp``, ``churned``: who churned, and
  when that was known (Feast joins each label with the features as they were at that time).

Times are anchored on a day (default: today, UTC) so that the online store, which keeps a
feature only for its view's ``ttl``, serves them now: usage up to four days ago, labels four
days ago. ``--shift`` adds profile rows two days ago and usage rows up to yesterday from a moved
world, and replaces the labels by those of yesterday (the latest labelled window, which a
retrain learns from). In that world churn follows the new prices, more sharply than before: a
model trained on it ranks churners better than one trained on the old world.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
CUSTOMERS = 2000
SEED = 11
CONTRACTS = ["month-to-month", "one-year", "two-year"]


def anchor_day(day: str | None = None) -> pd.Timestamp:
    """Midnight UTC of ``day`` (ISO date), or of today."""
    stamp = pd.Timestamp(day, tz="UTC") if day else pd.Timestamp.now(tz="UTC")
    return stamp.floor("D")


def profiles(rng: np.random.Generator, at: pd.Timestamp) -> pd.DataFrame:
    """Who each customer is: contract, internet, payment, tenure, price."""
    internet = rng.choice(["fiber", "dsl", "none"], CUSTOMERS, p=[0.45, 0.4, 0.15])
    return pd.DataFrame(
        {
            "customer_id": np.arange(1, CUSTOMERS + 1, dtype="int64"),
            "event_timestamp": at,
            "created": at,
            "contract": rng.choice(CONTRACTS, CUSTOMERS, p=[0.55, 0.25, 0.2]),
            "internet": internet,
            "payment_method": rng.choice(["card", "bank", "check"], CUSTOMERS),
            "tenure_months": rng.integers(1, 73, CUSTOMERS).astype("int64"),
            "monthly_charges": np.round(
                np.maximum(
                    10, 20 + 60 * (internet == "fiber") + 25 * (internet == "dsl") + rng.normal(0, 8, CUSTOMERS)
                ),
                2,
            ),
        }
    )


def usage(
    rng: np.random.Generator, days: pd.DatetimeIndex, minutes_scale: float, calls_rate: float, gb_scale: float
) -> pd.DataFrame:
    """One row per customer and day; each customer has a habit, each day noise around it."""
    habit_minutes = rng.gamma(4.0, minutes_scale, CUSTOMERS)
    habit_gb = rng.gamma(2.0, gb_scale, CUSTOMERS)
    habit_calls = rng.poisson(calls_rate, CUSTOMERS)
    frames = []
    for day in days:
        frames.append(
            pd.DataFrame(
                {
                    "customer_id": np.arange(1, CUSTOMERS + 1, dtype="int64"),
                    "event_timestamp": day,
                    "created": day,
                    "minutes": np.round(habit_minutes * rng.uniform(0.8, 1.2, CUSTOMERS), 1),
                    "data_gb": np.round(habit_gb * rng.uniform(0.8, 1.2, CUSTOMERS), 2),
                    "support_calls_30d": (habit_calls + rng.integers(0, 2, CUSTOMERS)).astype("int64"),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def latest(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values("event_timestamp").groupby("customer_id").last().sort_index()


def base_churn(rng: np.random.Generator, profile: pd.DataFrame, use: pd.DataFrame) -> np.ndarray:
    """The old world: short tenure, monthly contracts and support calls make customers leave."""
    logit = (
        -1.2
        - 0.045 * profile["tenure_months"].to_numpy()
        + 1.6 * (profile["contract"].to_numpy() == "month-to-month")
        - 0.8 * (profile["contract"].to_numpy() == "two-year")
        + 0.5 * (profile["internet"].to_numpy() == "fiber")
        + 0.35 * use["support_calls_30d"].to_numpy()
        + 0.3 * (profile["payment_method"].to_numpy() == "check")
        - 0.002 * use["minutes"].to_numpy()
    )
    return (rng.random(len(logit)) < 1 / (1 + np.exp(-logit))).astype("int64")


def shifted_churn(rng: np.random.Generator, profile: pd.DataFrame, use: pd.DataFrame, rise: np.ndarray) -> np.ndarray:
    """The new world: the price rise drives churn, sharply; contracts and tenure matter less."""
    logit = (
        -2.5
        + 0.09 * rise
        + 0.03 * (profile["monthly_charges"].to_numpy() - 90)
        + 1.2 * (profile["contract"].to_numpy() == "month-to-month")
        - 0.02 * profile["tenure_months"].to_numpy()
        + 0.2 * use["support_calls_30d"].to_numpy()
    )
    return (rng.random(len(logit)) < 1 / (1 + np.exp(-2.0 * logit))).astype("int64")


def labels(customer_ids: pd.Index, at: pd.Timestamp, churned: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"customer_id": customer_ids.astype("int64"), "event_timestamp": at, "churned": churned})


def write(folder: Path, day: pd.Timestamp, shift: bool) -> dict[str, Path]:
    """Write the files (the moved world's too with ``shift``); returns where they went."""
    rng = np.random.default_rng(SEED)
    profile = profiles(rng, day - pd.Timedelta(days=60))
    use = usage(rng, pd.date_range(day - pd.Timedelta(days=10), day - pd.Timedelta(days=4), freq="D"), 60.0, 1.5, 3.0)
    label_time = day - pd.Timedelta(days=4) + pd.Timedelta(hours=12)
    at_label = latest(use)
    churned = base_churn(rng, profile.set_index("customer_id").loc[at_label.index], at_label)
    target = labels(at_label.index, label_time, churned)
    if shift:
        moved_rng = np.random.default_rng(SEED + 1)
        moved = profile.copy()
        moved["event_timestamp"] = moved["created"] = day - pd.Timedelta(days=2)
        rise = np.round(moved_rng.uniform(10, 40, CUSTOMERS), 2)
        moved["monthly_charges"] = np.round(moved["monthly_charges"] + rise, 2)
        # Contracts changed: half the monthly customers were moved to one-year contracts.
        monthly = moved["contract"].to_numpy() == "month-to-month"
        moved.loc[monthly & (moved_rng.random(CUSTOMERS) < 0.5), "contract"] = "one-year"
        moved["tenure_months"] = moved["tenure_months"] + 2
        new_use = usage(
            moved_rng, pd.date_range(day - pd.Timedelta(days=3), day - pd.Timedelta(days=1), freq="D"), 40.0, 4.0, 1.2
        )
        profile = pd.concat([profile, moved], ignore_index=True)
        use = pd.concat([use, new_use], ignore_index=True)
        now_use = latest(new_use)
        now_profile = moved.set_index("customer_id").loc[now_use.index]
        churned = shifted_churn(moved_rng, now_profile, now_use, rise)
        target = labels(now_use.index, day - pd.Timedelta(days=1) + pd.Timedelta(hours=12), churned)
    paths = {
        "profile": folder / "features" / "profile.parquet",
        "usage": folder / "features" / "usage.parquet",
        "labels": folder / "data" / "labels.parquet",
    }
    for name, frame in (("profile", profile), ("usage", use), ("labels", target)):
        paths[name].parent.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(paths[name], index=False)
    return paths


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--shift", action="store_true", help="also write the moved world (prices up, contracts changed)"
    )
    parser.add_argument("--day", help="anchor day, ISO date (default: today, UTC)")
    parser.add_argument("--out", type=Path, default=HERE, help="the example's folder (default: this one)")
    args = parser.parse_args()
    for path in write(args.out, anchor_day(args.day), args.shift).values():
        print(f"wrote {path.relative_to(args.out) if path.is_relative_to(args.out) else path}")
