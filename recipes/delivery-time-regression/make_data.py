"""Generate this recipe's delivery-time dataset (deterministic: same seed, same file).

`crispml init` copies this script with the recipe; run it again to regenerate data/deliveries.csv
(nothing is downloaded). Replace the file with your own data to adapt the recipe.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd


def make_deliveries(rows: int = 800, seed: int = 11) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    distance = np.round(rng.gamma(2.0, 2.5, rows), 2)
    items = rng.integers(1, 12, rows)
    hour = rng.integers(8, 23, rows)
    weather = rng.choice(["clear", "rain", "snow"], rows, p=[0.7, 0.22, 0.08])
    experience = np.round(rng.uniform(0, 6, rows), 1)
    rush = ((hour >= 11) & (hour <= 13)) | ((hour >= 18) & (hour <= 20))
    minutes = (
        12
        + 3.2 * distance
        + 0.9 * items
        + 7 * rush
        + 6 * (weather == "rain")
        + 15 * (weather == "snow")
        - 1.2 * experience
        + rng.normal(0, 3, rows)
    )
    return pd.DataFrame(
        {
            "distance_km": distance,
            "items": items,
            "hour": hour,
            "weather": weather,
            "courier_experience_years": experience,
            "delivery_minutes": np.round(np.maximum(minutes, 5), 1),
        }
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=800)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "data" / "deliveries.csv")
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    make_deliveries(args.rows).to_csv(args.out, index=False)
    print(f"wrote {args.out}")
