"""Core performance figures (issue: "Core: hooks, plugins, recipes, runs").

Each figure is a ratio measured in one run, side by side with its baseline, so that the
machine's speed cancels out. Prints a Markdown table; docs/performance.md records it.

    .venv/bin/python benchmarks/bench_core.py [--repeat 7]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CRISPML = str(BIN / "crispml")
QUICKSTART = REPO / "examples" / "quickstart"


def wall(cmd: list[str], cwd: Path, repeat: int) -> float:
    """Median wall time of ``cmd`` over ``repeat`` runs (after one warm-up)."""
    env = {**os.environ, "CRISPML_PROJECT": str(cwd)}
    subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, check=True)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, check=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="crispml-bench-"))
    shutil.copytree(QUICKSTART, work / "qs", ignore=shutil.ignore_patterns(".crispml"))
    qs = work / "qs"
    # Like for like with plain_quickstart.py: the quickstart's load → train → evaluate only
    # (its validate/register/deploy steps have their own benchmarks).
    recipe = yaml.safe_load((qs / "recipe.yaml").read_text())
    core = {k: v for k, v in recipe.items() if k not in ("validate", "register", "deploy", "monitor", "tracking")}
    (qs / "recipe.yaml").write_text(yaml.safe_dump(core, sort_keys=False))
    rows = []

    pluggy = wall([sys.executable, "-c", "import pluggy"], qs, args.repeat)
    helptime = wall([CRISPML, "--help"], qs, args.repeat)
    plugins = wall([CRISPML, "plugins"], qs, args.repeat)
    rows.append(("`python -c 'import pluggy'` (baseline)", f"{pluggy:.3f} s", "1.00"))
    rows.append(("`crispml --help`", f"{helptime:.3f} s", f"{helptime / pluggy:.2f}"))
    rows.append(("`crispml plugins`", f"{plugins:.3f} s", f"{plugins / pluggy:.2f}"))

    plain = wall(
        [sys.executable, str(REPO / "benchmarks" / "plain_quickstart.py"), "data/churn.csv", str(work / "plain")],
        qs,
        args.repeat,
    )
    nocache = wall([CRISPML, "run", "recipe.yaml", "--no-cache"], qs, args.repeat)
    rows.append(("quickstart, plain pandas + scikit-learn script (baseline)", f"{plain:.3f} s", "1.00"))
    rows.append(("quickstart, `crispml run --no-cache`", f"{nocache:.3f} s", f"{nocache / plain:.3f}"))

    warm = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "inprocess_quickstart.py"), str(qs), str(args.repeat)],
        cwd=REPO / "benchmarks",
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "CRISPML_PROJECT": str(qs)},
    )
    plain_warm, crispml_warm = (float(x) for x in warm.stdout.split())
    rows.append(("quickstart, warm process: plain function calls (baseline)", f"{plain_warm:.3f} s", "1.00"))
    rows.append(
        (
            "quickstart, warm process: `crispml.run(use_cache=False)`",
            f"{crispml_warm:.3f} s",
            f"{crispml_warm / plain_warm:.3f}",
        )
    )

    # The same work on 200,000 rows: crispml's cost is a fixed start-up (~0.3 s: click, pydantic,
    # plugin loading, the run store), so its share shrinks as the work grows.
    subprocess.run(
        [sys.executable, str(QUICKSTART / "make_data.py"), "--rows", "200000", "--out", str(qs / "data" / "big.csv")],
        check=True,
        capture_output=True,
    )
    big = dict(core, load={**core["load"], "path": "data/big.csv"})
    (qs / "big.yaml").write_text(yaml.safe_dump(big, sort_keys=False))
    plain_big = wall(
        [sys.executable, str(REPO / "benchmarks" / "plain_quickstart.py"), "data/big.csv", str(work / "plain")],
        qs,
        max(3, args.repeat // 2),
    )
    crispml_big = wall([CRISPML, "run", "big.yaml", "--no-cache"], qs, max(3, args.repeat // 2))
    rows.append(("200,000 rows, plain script (baseline)", f"{plain_big:.3f} s", "1.00"))
    rows.append(("200,000 rows, `crispml run --no-cache`", f"{crispml_big:.3f} s", f"{crispml_big / plain_big:.3f}"))

    shutil.rmtree(qs / ".crispml", ignore_errors=True)
    t0 = time.perf_counter()
    subprocess.run(
        [CRISPML, "run", "recipe.yaml"],
        cwd=qs,
        capture_output=True,
        check=True,
        env={**os.environ, "CRISPML_PROJECT": str(qs)},
    )
    first = time.perf_counter() - t0
    cached = wall([CRISPML, "run", "recipe.yaml"], qs, args.repeat)
    listed = subprocess.run(
        [CRISPML, "runs", "--json", "--limit", "1"],
        cwd=qs,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "CRISPML_PROJECT": str(qs)},
    )
    stages = json.loads(listed.stdout)[0]["stages"]
    assert set(stages.values()) == {"cached"}, f"the re-run was not all cached: {stages}"
    rows.append(("quickstart, first `crispml run` (cold cache)", f"{first:.3f} s", "1.00"))
    rows.append(("quickstart, second run, every stage `cached`", f"{cached:.3f} s", f"{cached / first:.3f}"))

    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} cores, median of {args.repeat} runs\n")
    print("| measurement | wall time | ratio |\n|---|---|---|")
    for name, value, ratio in rows:
        print(f"| {name} | {value} | {ratio} |")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
