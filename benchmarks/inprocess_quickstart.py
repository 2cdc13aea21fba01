"""crispml's per-run cost with imports warm: the quickstart's work through ``crispml.run``
(no cache) against the same work as plain function calls, alternating in one process.

    python benchmarks/inprocess_quickstart.py FOLDER REPEAT    # FOLDER holds recipe.yaml and data/
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

from plain_quickstart import main as plain

import crispml


def measure(folder: Path, repeat: int) -> tuple[float, float]:
    recipe = crispml.Recipe.from_yaml(folder / "recipe.yaml")
    plugins = crispml.get_plugins()
    plain(folder / "data" / "churn.csv", folder / "plain-out")  # warm both paths once
    crispml.run(recipe, project=folder, use_cache=False, plugins=plugins)
    a, b = [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        plain(folder / "data" / "churn.csv", folder / "plain-out")
        a.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        result = crispml.run(recipe, project=folder, use_cache=False, plugins=plugins)
        b.append(time.perf_counter() - t0)
        assert result.status == "succeeded", result.error
    return statistics.median(a), statistics.median(b)


if __name__ == "__main__":
    p, c = measure(Path(sys.argv[1]), int(sys.argv[2]))
    print(f"{p:.4f} {c:.4f}")
