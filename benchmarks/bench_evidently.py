"""Evidently plugin figures (issue: "Monitoring and continuous training").

The monitor **stage** (``crispml.monitor`` in this process: the recipe checked, the run
recorded, the reference and the batch read from Parquet files, the drift engine, the three
artifacts written) against ``Report.run`` directly on the same frames — alone, and with the
``save_html`` and ``snapshot.json()`` the stage also writes. Then ``crispml monitor``'s wall time
in a fresh process, split into its parts. And, as before, the drift engine
(``crispml_evidently._drift.detect``: conforming types, null shares, the report with its
per-column tests, reading it back into ``drift.json``) against Evidently's ``Report.run`` alone
on the same frames and the same method, side by side in one process so that the machine's speed
cancels out. Writing ``drift.html`` is timed on its own (it is most of a
monitor run's cost on small windows). Prints a Markdown table; docs/performance.md records it.

    .venv/bin/python benchmarks/bench_evidently.py [--repeat 5] [--only stage|engine|all]
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


def _monitor_project(folder: Path, rows: int, columns: int) -> tuple[Path, pd.DataFrame, pd.DataFrame]:
    """A project whose recipe is a monitor step alone, comparing two Parquet files."""
    import yaml

    reference, current = frames(rows, columns)
    reference.to_parquet(folder / "reference.parquet")
    current.to_parquet(folder / "current.parquet")
    (folder / ".crispml").mkdir(exist_ok=True)
    recipe = {
        "name": "bench-monitor",
        "split": None,
        "load": {"use": "files", "path": "reference.parquet"},  # checked, never run by a monitor
        "monitor": {"use": "evidently", "reference": "reference.parquet", "batch": "current.parquet", "min_rows": 1},
    }
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path, reference, current


def measure_stage(rows: int, columns: int, repeat: int) -> tuple[str, ...]:
    """One row: ``Report.run`` alone, with its two writes, the whole monitor stage, the ratios."""
    import os

    import crispml

    DataDefinition, Report, EvDataset, DataDriftPreset = _evidently()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        recipe, reference, current = _monitor_project(folder, rows, columns)
        numerical, categorical = column_types(reference, list(reference.columns))
        definition = DataDefinition(numerical_columns=numerical, categorical_columns=categorical)

        def direct(write: bool) -> Any:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                snapshot = Report([DataDriftPreset(method="psi", threshold=0.2)]).run(
                    current_data=EvDataset.from_pandas(current, data_definition=definition),
                    reference_data=EvDataset.from_pandas(reference, data_definition=definition),
                )
                if write:
                    snapshot.save_html(str(folder / "direct.html"))
                    (folder / "direct.json").write_text(snapshot.json())
            return snapshot

        os.environ["CRISPML_PROJECT"] = str(folder)

        def stage() -> Any:
            result = crispml.monitor(recipe, project=folder, no_retrain=True)
            assert result.report is not None and result.report.metrics["current_rows"] == rows, result.line()
            return result

        # Interleaved, so that a change in the shared machine's load hits all three alike.
        calls: dict[str, Callable[[], Any]] = {
            "alone": lambda: direct(False),
            "written": lambda: direct(True),
            "stage": stage,
        }
        times: dict[str, list[float]] = {name: [] for name in calls}
        for fn in calls.values():
            fn()  # warm-up (imports, caches)
        for _ in range(repeat):
            for name, fn in calls.items():
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
        alone, written, ours = (statistics.median(times[n]) for n in ("alone", "written", "stage"))
    return (
        f"{rows:,} × {columns}",
        f"{alone:.2f} s",
        f"{written:.2f} s",
        f"{ours:.2f} s",
        f"{ours / alone:.2f}",
        f"{ours / written:.2f}",
    )


_WRAPPER = """
import json, sys, time
t0 = time.perf_counter()
from crispml.cli import main
t1 = time.perf_counter()
from crispml_evidently._drift import _evidently
_evidently()
t2 = time.perf_counter()
sys.argv = ["crispml", "monitor", sys.argv[1], "--no-retrain", "--json"]
try:
    main()
except SystemExit:
    pass
t3 = time.perf_counter()
print(json.dumps({"cli": t1 - t0, "evidently": t2 - t1, "command": t3 - t2}), file=sys.stderr)
"""


def wall_split(rows: int, columns: int) -> list[tuple[str, str]]:
    """``crispml monitor`` in a fresh process: where its wall time goes. One process, the parts
    timed inside it (Evidently imported first so that its import is counted apart), the wall
    from outside; what is left after the command returned is the interpreter's shutdown."""
    import json
    import os
    import subprocess
    import sys

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        recipe, _, _ = _monitor_project(folder, rows, columns)
        env = {**os.environ, "CRISPML_PROJECT": str(folder)}
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], env=env, check=True)
        interpreter = time.perf_counter() - t0
        t0 = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-c", _WRAPPER, str(recipe)], capture_output=True, text=True, env=env, cwd=folder
        )
        wall = time.perf_counter() - t0
        inside = json.loads(done.stderr.strip().splitlines()[-1])
        run_id = json.loads(done.stdout)["monitor_run"]
        manifest = json.loads((folder / ".crispml" / "runs" / run_id / "manifest.json").read_text())
        stage = float(next(s for s in manifest["stages"] if s["name"] == "monitor")["duration"])
        run = float(manifest["duration"])
    before_run = inside["command"] - run
    shutdown = wall - interpreter - inside["cli"] - inside["evidently"] - inside["command"]
    return [
        ("whole process (wall)", f"{wall:.2f} s"),
        ("interpreter start (`python -c pass`)", f"{interpreter:.2f} s"),
        ("import crispml's CLI", f"{inside['cli']:.2f} s"),
        ("import Evidently (in the stage, counted apart here)", f"{inside['evidently']:.2f} s"),
        ("recipe check, plugins, flags (before the run)", f"{before_run:.2f} s"),
        ("run bookkeeping (manifest, store) outside the stage", f"{run - stage:.2f} s"),
        ("the stage: reading, drift, artifacts", f"{stage:.2f} s"),
        ("interpreter shutdown (after the command returned)", f"{shutdown:.2f} s"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--only", choices=("stage", "engine", "all"), default="all")
    args = parser.parse_args()
    if args.only in ("stage", "all"):
        stage_rows = [measure_stage(n, m, args.repeat) for n, m in ((10_000, 10), (100_000, 20))]
        head = "| frames | `Report.run` alone | + `save_html`, `json()` | monitor stage | ratio to alone | to +writes |"
        print(head)
        print("|---|---|---|---|---|---|")
        for row in stage_rows:
            print("| " + " | ".join(row) + " |")
        print()
        print("| `crispml monitor` (10,000 × 10, fresh process) | wall |")
        print("|---|---|")
        for part, value in wall_split(10_000, 10):
            print(f"| {part} | {value} |")
        print()
    if args.only == "stage":
        return
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
