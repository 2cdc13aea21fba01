"""Evidently plugin figures (issue: "Monitoring and continuous training").

The drift engine (``crispml_evidently._drift.detect``: conforming types, null shares, the
report with its per-column tests, reading it back into ``drift.json``) against Evidently's
``Report.run`` alone on the same frames and the same method, side by side in one process so that
the machine's speed cancels out. Writing ``drift.html`` is timed on its own (it is most of a
monitor run's cost on small windows). Prints a Markdown table; docs/performance.md records it.

    .venv/bin/python benchmarks/bench_evidently.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from crispml_evidently._drift import DriftSettings, _evidently, column_types, detect


def frames(rows: int, columns: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    half = columns // 2
    data: dict[str, Any] = {f"n{i}": rng.normal(i, 1 + i / 10, rows) for i in range(half)}
    data |= {f"c{i}": rng.choice(["a", "b", "c", "d", "e"], rows) for i in range(columns - half)}
    reference = pd.DataFrame(data)
    current = pd.DataFrame({k: rng.permutation(v) for k, v in data.items()})
    for i in range(0, half, 2):
        current[f"n{i}"] = current[f"n{i}"] + 1.5  # every other numeric column drifts
    return reference, current


def median_time(fn: Callable[[], Any], repeat: int) -> float:
    fn()  # warm-up (imports, caches)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(rows: int, columns: int, repeat: int) -> tuple[str, ...]:
    """One row of the table: ``Report.run`` alone, the engine, their ratio, ``save_html``."""
    DataDefinition, Report, EvDataset, DataDriftPreset = _evidently()
    reference, current = frames(rows, columns)
    numerical, categorical = column_types(reference, list(reference.columns))
    definition = DataDefinition(numerical_columns=numerical, categorical_columns=categorical)

    def direct() -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return Report([DataDriftPreset(method="psi", threshold=0.2)]).run(
                current_data=EvDataset.from_pandas(current, data_definition=definition),
                reference_data=EvDataset.from_pandas(reference, data_definition=definition),
            )

    def engine() -> Any:
        return detect(reference, current, numerical=numerical, categorical=categorical, settings=DriftSettings())

    base = median_time(direct, repeat)
    ours = median_time(engine, repeat)
    snapshot = direct()
    with tempfile.TemporaryDirectory() as tmp:
        html = median_time(lambda: snapshot.save_html(str(Path(tmp) / "drift.html")), repeat)
    return f"{rows:,} × {columns}", f"{base:.2f} s", f"{ours:.2f} s", f"{ours / base:.2f}", f"{html:.2f} s"


def log_reading(requests: int, repeat: int) -> tuple[str, ...]:
    """Rows/s of ``crispml.prediction_records`` on a log of ``requests`` one-record requests,
    and of turning them into the window's frame as the monitor stage does."""
    import json
    from datetime import UTC, datetime

    import crispml

    reference, _ = frames(requests, 10)
    records = json.loads(reference.to_json(orient="records"))
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "predictions.jsonl"
        now = datetime.now(UTC).isoformat()
        with log.open("w") as fh:
            for record in records:
                line = {"schema": 1, "time": now, "model": "m/1", "inputs": [record], "outputs": {"predictions": [0]}}
                fh.write(json.dumps(line) + "\n")
        read = median_time(lambda: crispml.prediction_records(log), repeat)
        window = crispml.prediction_records(log)
        build = median_time(lambda: pd.DataFrame.from_records([r["inputs"] for r in window]), repeat)
    return f"{requests:,} requests", f"{requests / read:,.0f} rows/s", f"{requests / build:,.0f} rows/s"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    rows = [measure(n, m, args.repeat) for n, m in ((10_000, 10), (100_000, 20))]
    print("| frames | `Report.run` alone | crispml's drift engine | ratio | `save_html` |")
    print("|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print()
    print("| prediction log | `crispml.prediction_records` | records → frame |")
    print("|---|---|---|")
    print("| " + " | ".join(log_reading(100_000, args.repeat)) + " |")


if __name__ == "__main__":
    main()
