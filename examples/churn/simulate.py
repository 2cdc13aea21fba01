"""Play the world around the served churn model: traffic, a world that moves, a fresh start.

    python simulate.py --traffic 400   # 400 customers asked about, as the shipped world has them
    python simulate.py --shift         # the world moves: prices up, contracts changed, new labels;
                                       # the online store gets the new features; 400 requests
    python simulate.py --reset         # back to the start: deployment stopped, .crispml/ removed,
                                       # the data regenerated (make_data.py, anchored on today)

Requests go in batches of 20 customer ids to the deployment (found with ``crispml deployments``);
the prediction log they fill is what ``crispml monitor recipe.yaml`` compares with the training
data.
"""

from __future__ import annotations

import argparse
import shutil

import numpy as np
import pandas as pd
from _client import HERE, NAME, crispml, deployment_url, predict
from make_data import CUSTOMERS, anchor_day, write

BATCH = 20


def traffic(requests: int, seed: int) -> None:
    """``requests`` customers (drawn with ``seed``) asked about, in batches."""
    url = deployment_url()
    ids = np.random.default_rng(seed).integers(1, CUSTOMERS + 1, requests)
    served_by: set[str] = set()
    churners = 0
    for start in range(0, len(ids), BATCH):
        answer, model = predict(url, [int(i) for i in ids[start : start + BATCH]])
        served_by.add(model)
        churners += sum(answer["predictions"])
    print(
        f"traffic: {len(ids)} customers in {-(-len(ids) // BATCH)} requests to {url}, "
        f"answered by {', '.join(sorted(served_by))}; predicted churners: {churners} ({churners / len(ids):.0%})"
    )


def shift(requests: int) -> None:
    """The moved world's files, the online store brought up to it, then traffic."""
    day = anchor_day()
    write(HERE, day, shift=True)
    print(
        "shift: prices up (+10 to +40 a month), half the monthly contracts now one-year, "
        "usage changed; labels of yesterday replace the old ones"
    )
    start = (day - pd.Timedelta(days=5)).isoformat()
    done = crispml("materialize", "recipe.yaml", "--start", start)
    print("  materialize:", " · ".join(line.strip() for line in done.stdout.strip().splitlines()))
    traffic(requests, seed=2)


def reset() -> None:
    """The example as shipped: nothing served, no state, today's data."""
    if (HERE / ".crispml").is_dir():
        crispml("server", "stop", check=False)
        crispml("undeploy", NAME, check=False)
        shutil.rmtree(HERE / ".crispml")
    for name, path in write(HERE, anchor_day(), shift=False).items():
        print(f"reset: wrote {path.relative_to(HERE)} ({name})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--traffic", type=int, metavar="N", help="send N customers, unshifted")
    action.add_argument("--shift", action="store_true", help="move the world, then send --requests customers")
    action.add_argument("--reset", action="store_true", help="back to the shipped state")
    parser.add_argument("--requests", type=int, default=400, help="customers sent after --shift (default 400)")
    args = parser.parse_args()
    if args.reset:
        reset()
    elif args.shift:
        shift(args.requests)
    else:
        traffic(args.traffic, seed=1)
