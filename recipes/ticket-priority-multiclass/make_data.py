"""Generate this recipe's support-ticket dataset (deterministic: same seed, same file).

`crispml init` copies this script with the recipe; run it again to regenerate data/tickets.csv
(nothing is downloaded). Replace the file with your own data to adapt the recipe.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

PRIORITIES = np.array(["low", "medium", "high", "urgent"])


def make_tickets(rows: int = 1200, seed: int = 5) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    channel = rng.choice(["email", "chat", "phone"], rows, p=[0.5, 0.3, 0.2])
    tier = rng.choice(["free", "pro", "enterprise"], rows, p=[0.5, 0.35, 0.15])
    words = rng.integers(5, 400, rows)
    outage = (rng.random(rows) < 0.15).astype(int)
    affected_users = rng.poisson(2, rows) + 50 * outage * rng.integers(0, 3, rows)
    reopened = (rng.random(rows) < 0.2).astype(int)
    score = (
        1.2 * (tier == "pro")
        + 2.4 * (tier == "enterprise")
        + 0.8 * (channel == "phone")
        + 3.0 * outage
        + 0.02 * affected_users
        + 0.9 * reopened
        + 0.002 * words
        + rng.normal(0, 0.45, rows)
    )
    priority = PRIORITIES[np.digitize(score, np.quantile(score, [0.4, 0.7, 0.9]))]
    return pd.DataFrame(
        {
            "channel": channel,
            "customer_tier": tier,
            "words": words,
            "mentions_outage": outage,
            "affected_users": affected_users,
            "reopened": reopened,
            "priority": priority,
        }
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1200)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "data" / "tickets.csv")
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    make_tickets(args.rows).to_csv(args.out, index=False)
    print(f"wrote {args.out}")
