"""Generate this recipe's churn dataset (deterministic: same seed, same file).

`crispml init` copies this script with the recipe; run it again to regenerate data/churn.csv
(nothing is downloaded). ``--shift --out data/shifted.csv`` writes customers from a world that
moved (longer tenures, higher charges, more support calls, everyone on fiber), to try the monitor:
``crispml monitor recipe.yaml --batch data/shifted.csv --no-retrain`` reports the drift.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd


def make_churn(rows: int = 1500, seed: int = 3, shift: bool = False) -> pd.DataFrame:
    rng = np.random.default_rng(seed + (1000 if shift else 0))
    tenure = rng.integers(1, 73, rows)
    contract = rng.choice(["month-to-month", "one-year", "two-year"], rows, p=[0.55, 0.25, 0.2])
    internet = rng.choice(["fiber", "dsl", "none"], rows, p=[0.45, 0.4, 0.15])
    payment = rng.choice(["card", "bank", "check"], rows)
    calls = rng.poisson(1.5, rows)
    if shift:
        tenure = np.minimum(tenure * 3, 80)
        internet = np.full(rows, "fiber")
        calls = np.minimum(calls + 4, 8)
    monthly = np.round(20 + 60 * (internet == "fiber") + 25 * (internet == "dsl") + rng.normal(0, 8, rows), 2)
    if shift:
        monthly = np.round(monthly + 30, 2)
    total = np.round(monthly * tenure, 2)
    logit = (
        -0.9
        - 0.05 * tenure
        + 1.6 * (contract == "month-to-month")
        - 0.8 * (contract == "two-year")
        + 0.6 * (internet == "fiber")
        + 0.45 * calls
        + 0.3 * (payment == "check")
    )
    churned = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int)
    return pd.DataFrame(
        {
            "tenure_months": tenure,
            "contract": contract,
            "internet": internet,
            "payment_method": payment,
            "monthly_charges": monthly,
            "total_charges": total,
            "support_calls": calls,
            "churned": churned,
        }
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1500)
    parser.add_argument("--shift", action="store_true", help="customers from a world that moved")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "data" / "churn.csv")
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    make_churn(args.rows, shift=args.shift).to_csv(args.out, index=False)
    print(f"wrote {args.out}")
