"""Validation of 1,000,000 rows x 20 columns with a 40-expectation suite: crispml vs GX directly.

    .venv/bin/python benchmarks/bench_gx.py [--rows 1000000] [--repeats 5]

Each measurement runs in a fresh process (alternating crispml / GX) that first reads the same
Parquet file and imports Great Expectations, then measures only the validation:

* **GX directly**: ephemeral context, suite of the 40 expectation objects, a whole-dataframe
  batch definition, ``ValidationDefinition.run`` with the result format crispml uses (BASIC,
  20 unexpected values): the code a user would write by hand.
* **crispml**: ``crispml.run`` of a recipe whose load step hands over the in-memory frame and
  whose validate step is ``great_expectations`` with the suite file; measured from the
  ``validate`` stage's start to its end (an observer plugin), so it includes everything crispml
  adds: suite parsing, column checks, the report's JSON and HTML, storing the result, the cache.

Peak memory is the rise of the process's resident set over the measured window (Linux:
``VmHWM`` reset through ``/proc/self/clear_refs`` at the start of the window).
Prints a table and a JSON line; figures are recorded in docs/performance.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

N_FLOAT, N_INT, N_CAT = 10, 5, 5
CATEGORIES = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta"]


# -- data and suite -----------------------------------------------------------------------------


def make_data(rows: int, path: Path) -> None:
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    cols: dict[str, Any] = {}
    for i in range(N_FLOAT):
        cols[f"f{i}"] = rng.normal(100 * (i + 1), 10 * (i + 1), rows)
    for i in range(N_INT):
        cols[f"i{i}"] = rng.integers(0, 1000 * (i + 1), rows)
    for i in range(N_CAT):
        cols[f"c{i}"] = pd.Categorical(rng.choice(CATEGORIES[: 3 + i % 4], rows)).astype(str)
    pd.DataFrame(cols).to_parquet(path)


def suite_entries() -> list[dict[str, Any]]:
    """40 expectations: not-null on all 20 columns, ranges on the 15 numeric, sets on the 5 text."""
    out: list[dict[str, Any]] = []
    for i in range(N_FLOAT):
        out.append({"expect": "column_values_to_not_be_null", "column": f"f{i}"})
        out.append({"expect": "column_values_to_be_between", "column": f"f{i}",
                    "min_value": 100 * (i + 1) - 80 * (i + 1), "max_value": 100 * (i + 1) + 80 * (i + 1)})  # fmt: skip
    for i in range(N_INT):
        out.append({"expect": "column_values_to_not_be_null", "column": f"i{i}"})
        out.append({"expect": "column_values_to_be_between", "column": f"i{i}",
                    "min_value": 0, "max_value": 1000 * (i + 1)})  # fmt: skip
    for i in range(N_CAT):
        out.append({"expect": "column_values_to_not_be_null", "column": f"c{i}"})
        out.append({"expect": "column_values_to_be_in_set", "column": f"c{i}",
                    "value_set": CATEGORIES[: 3 + i % 4]})  # fmt: skip
    assert len(out) == 40
    return out


# -- measuring a window ----------------------------------------------------------------------


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


class Window:
    def start(self) -> None:
        with contextlib.suppress(OSError):
            Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to now
        self.rss0 = _status("VmRSS")
        self.t0 = time.perf_counter()

    def stop(self) -> dict[str, float]:
        wall = time.perf_counter() - self.t0
        return {"wall_s": wall, "peak_mb": (_status("VmHWM") - self.rss0) / 2**20}


# -- the two children ---------------------------------------------------------------------------


def child_gx(data: Path) -> dict[str, float]:
    import pandas as pd

    os.environ["GX_ANALYTICS_ENABLED"] = "false"
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    frame = pd.read_parquet(data)
    snake = {cls.expectation_type: cls for n in dir(gx.expectations)
             if isinstance(cls := getattr(gx.expectations, n), type) and hasattr(cls, "expectation_type")}  # fmt: skip
    window = Window()
    window.start()
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    expectations = [
        snake["expect_" + e["expect"]](**{k: v for k, v in e.items() if k != "expect"}) for e in suite_entries()
    ]
    # Built whole and added once, as crispml does: adding one by one to a suite already in the
    # context re-serialises it each time (~25 ms per expectation), which would flatter crispml.
    suite = context.suites.add(gx.ExpectationSuite(name="bench", expectations=expectations))
    batch = context.data_sources.add_pandas("p").add_dataframe_asset("d").add_batch_definition_whole_dataframe("all")
    result = gx.ValidationDefinition(data=batch, suite=suite, name="v").run(
        batch_parameters={"dataframe": frame},
        result_format={"result_format": "BASIC", "partial_unexpected_count": 20},
    )
    out = window.stop()
    assert result.success, "the benchmark suite must pass"
    return out


def child_crispml(data: Path) -> dict[str, float]:
    import pandas as pd
    import yaml

    import crispml
    from crispml import Dataset, hookimpl

    frame = pd.read_parquet(data)
    window = Window()
    measured: dict[str, float] = {}

    class Memory:
        @hookimpl
        def crispml_declare(self) -> crispml.Declaration:
            return crispml.Declaration(stages={"load": crispml.Options})

        @hookimpl
        def crispml_load(self) -> Dataset:
            return Dataset(frame=frame, target=None, name="bench", source="memory", fingerprint="bench")

    class Timer:
        @hookimpl
        def crispml_before_stage(self, stage: str) -> None:
            if stage == "validate":
                window.start()

        @hookimpl
        def crispml_after_stage(self, stage: str) -> None:
            if stage == "validate":
                measured.update(window.stop())

    # Time the plugin's hook body too, to tell the plugin's work from the run store's (fsyncs).
    import crispml_great_expectations._run as gx_run

    inner = gx_run.validate_dataset

    def timed(*a: Any, **k: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return inner(*a, **k)
        finally:
            measured["hook_s"] = time.perf_counter() - t0

    gx_run.validate_dataset = timed
    project = Path(tempfile.mkdtemp(prefix="bench-gx-"))
    (project / "suite.yaml").write_text(yaml.safe_dump({"name": "bench", "expectations": suite_entries()}))
    (project / "recipe.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "bench",
                "load": {"use": "memory", "cache": False},
                "validate": {"use": "great_expectations", "suite": "suite.yaml"},
            }
        )
    )
    result = crispml.run(project / "recipe.yaml", project=project, extra_plugins={"memory": Memory(), "timer": Timer()})
    assert result.status == "succeeded", result.manifest
    return measured


# -- the parent ---------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--child", choices=["gx", "crispml"])
    parser.add_argument("--data", type=Path)
    args = parser.parse_args()
    if args.child:
        fn = child_gx if args.child == "gx" else child_crispml
        print(json.dumps(fn(args.data)))
        return

    env = {**os.environ, "GX_ANALYTICS_ENABLED": "false"}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "bench.parquet"
        make_data(args.rows, data)
        runs: dict[str, list[dict[str, float]]] = {"gx": [], "crispml": []}
        for _ in range(args.repeats):
            for who in ("gx", "crispml"):
                proc = subprocess.run(
                    [sys.executable, __file__, "--child", who, "--data", str(data)],
                    capture_output=True, text=True, env=env, check=False,
                )  # fmt: skip
                if proc.returncode != 0:
                    sys.exit(f"{who} child failed:\n{proc.stderr}")
                runs[who].append(json.loads(proc.stdout.strip().splitlines()[-1]))

    def summary(stat: Any) -> dict[str, dict[str, float]]:
        return {who: {k: stat([r[k] for r in rs]) for k in ("wall_s", "peak_mb")} for who, rs in runs.items()}

    out: dict[str, Any] = {"rows": args.rows, "repeats": args.repeats, "runs": runs}
    print(f"{args.rows:,} rows x 20 columns, 40 expectations, {args.repeats} fresh processes each")
    for label, stat in (("median", statistics.median), ("best", min)):
        s = summary(stat)
        ratio_t = s["crispml"]["wall_s"] / s["gx"]["wall_s"]
        ratio_m = s["crispml"]["peak_mb"] / s["gx"]["peak_mb"] if s["gx"]["peak_mb"] else float("nan")
        out[label] = s | {"ratio_wall": ratio_t, "ratio_peak": ratio_m}
        print(f"\n{label:14}{'wall (s)':>10}{'peak RSS rise (MB)':>20}")
        for who in ("gx", "crispml"):
            print(f"{who:14}{s[who]['wall_s']:>10.3f}{s[who]['peak_mb']:>20.1f}")
        print(f"{'ratio':14}{ratio_t:>10.3f}{ratio_m:>20.3f}")
    hook = statistics.median(r["hook_s"] for r in runs["crispml"])
    print(f"\ncrispml: median time in the plugin's hook {hook:.3f} s (the rest of the stage: run store writes)")
    out["crispml_hook_s_median"] = hook
    pairs = [c["wall_s"] / g["wall_s"] for g, c in zip(runs["gx"], runs["crispml"], strict=True)]
    out["paired_ratio_wall_median"] = statistics.median(pairs)
    print(f"\nmedian of per-pair wall ratios (crispml / gx, run back to back): {statistics.median(pairs):.3f}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
