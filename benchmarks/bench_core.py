"""Core performance figures (issue: "Core: hooks, plugins, recipes, runs").

Each figure is a ratio measured in one run, side by side with its baseline, so that the
machine's speed cancels out. Prints a Markdown table; docs/performance.md records it.

    .venv/bin/python benchmarks/bench_core.py [--repeat 7]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
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


def _once(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU seconds (user + system, the process and its children) of one run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, check=True)
    elapsed = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return elapsed, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def side_by_side(cmds: dict[str, list[str]], cwd: Path, repeat: int) -> dict[str, tuple[float, float]]:
    """Median (wall, CPU) of each command, run alternately ``repeat`` times after one warm-up
    each, so that the machine's load falls on all of them alike."""
    env = {**os.environ, "CRISPML_PROJECT": str(cwd)}
    for cmd in cmds.values():
        subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, check=True)
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in cmds}
    for _ in range(repeat):
        for name, cmd in cmds.items():
            times[name].append(_once(cmd, cwd, env))
    return {k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for k, v in times.items()}


def _row(name: str, measured: tuple[float, float], base: tuple[float, float] | None) -> tuple[str, ...]:
    wall_s, cpu_s = measured
    ratio = f"{wall_s / base[0]:.3f}" if base else "1.00"
    cpu_ratio = f"{cpu_s / base[1]:.3f}" if base else "1.00"
    return (name, f"{wall_s:.3f} s", ratio, f"{cpu_s:.3f} s", cpu_ratio)


def _first_and_cached(folder: Path, recipe: str, repeat: int) -> tuple[tuple[float, float], tuple[float, float]]:
    """Median (wall, CPU) of a first run on an empty run store and of the re-run right after it
    (which must be all ``cached``), in ``repeat`` alternating pairs."""
    env = {**os.environ, "CRISPML_PROJECT": str(folder)}
    firsts, cached = [], []
    for _ in range(repeat):
        shutil.rmtree(folder / ".crispml", ignore_errors=True)
        firsts.append(_once([CRISPML, "run", recipe], folder, env))
        cached.append(_once([CRISPML, "run", recipe], folder, env))
        listed = subprocess.run(
            [CRISPML, "runs", "--json", "--limit", "1"], cwd=folder, capture_output=True, text=True, check=True, env=env
        )
        stages = json.loads(listed.stdout)[0]["stages"]
        assert set(stages.values()) == {"cached"}, f"the re-run was not all cached: {stages}"

    def median(pairs: list[tuple[float, float]]) -> tuple[float, float]:
        return statistics.median(w for w, _ in pairs), statistics.median(c for _, c in pairs)

    return median(firsts), median(cached)


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
    # The same with the validate step (Great Expectations): the check that imported GX.
    validated = {k: v for k, v in recipe.items() if k not in ("register", "deploy", "monitor", "tracking")}
    (qs / "validated.yaml").write_text(yaml.safe_dump(validated, sort_keys=False))
    rows: list[tuple[str, ...]] = []

    start = side_by_side(
        {
            "pluggy": [sys.executable, "-c", "import pluggy"],
            "help": [CRISPML, "--help"],
            "plugins": [CRISPML, "plugins"],
        },
        qs,
        args.repeat,
    )
    rows.append(_row("`python -c 'import pluggy'` (baseline)", start["pluggy"], None))
    rows.append(_row("`crispml --help`", start["help"], start["pluggy"]))
    rows.append(_row("`crispml plugins`", start["plugins"], start["pluggy"]))

    plain_cmd = [
        sys.executable,
        str(REPO / "benchmarks" / "plain_quickstart.py"),
        "data/churn.csv",
        str(work / "plain"),
    ]
    small = side_by_side(
        {"plain": plain_cmd, "crispml": [CRISPML, "run", "recipe.yaml", "--no-cache"]}, qs, args.repeat
    )
    rows.append(_row("quickstart, plain pandas + scikit-learn script (baseline)", small["plain"], None))
    rows.append(_row("quickstart, `crispml run --no-cache`", small["crispml"], small["plain"]))

    warm = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "inprocess_quickstart.py"), str(qs), str(args.repeat)],
        cwd=REPO / "benchmarks",
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "CRISPML_PROJECT": str(qs)},
    )
    plain_warm, crispml_warm = (float(x) for x in warm.stdout.split())
    rows.append(("quickstart, warm process: plain function calls (baseline)", f"{plain_warm:.3f} s", "1.00", "", ""))
    rows.append(
        (
            "quickstart, warm process: `crispml.run(use_cache=False)`",
            f"{crispml_warm:.3f} s",
            f"{crispml_warm / plain_warm:.3f}",
            "",
            "",
        )
    )

    # The same work on 200,000 rows: crispml's cost is a fixed start-up (click, pydantic,
    # plugin loading, the run store), so its share shrinks as the work grows.
    subprocess.run(
        [sys.executable, str(QUICKSTART / "make_data.py"), "--rows", "200000", "--out", str(qs / "data" / "big.csv")],
        check=True,
        capture_output=True,
    )
    big = dict(core, load={**core["load"], "path": "data/big.csv"})
    (qs / "big.yaml").write_text(yaml.safe_dump(big, sort_keys=False))
    plain_big_cmd = [
        sys.executable,
        str(REPO / "benchmarks" / "plain_quickstart.py"),
        "data/big.csv",
        str(work / "plain"),
    ]
    large = side_by_side(
        {"plain": plain_big_cmd, "crispml": [CRISPML, "run", "big.yaml", "--no-cache"]}, qs, max(3, args.repeat // 2)
    )
    rows.append(_row("200,000 rows, plain script (baseline)", large["plain"], None))
    rows.append(_row("200,000 rows, `crispml run --no-cache`", large["crispml"], large["plain"]))

    (qs / "data" / "big.csv").unlink()
    first, cached = _first_and_cached(qs, "recipe.yaml", args.repeat)
    rows.append(_row("quickstart, first `crispml run` (cold cache)", first, None))
    rows.append(_row("quickstart, second run, every stage `cached`", cached, first))
    vfirst, vcached = _first_and_cached(qs, "validated.yaml", args.repeat)
    rows.append(_row("quickstart + validate (GX), first `crispml run`", vfirst, None))
    rows.append(_row("quickstart + validate (GX), second run, every stage `cached`", vcached, vfirst))

    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} cores, median of {args.repeat} runs")
    print(f"load average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}\n")
    print("| measurement | wall time | ratio | CPU time | CPU ratio |\n|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")

    goals = [
        ("fully cached re-run / first run", cached[0] / first[0], "≤ 0.15", cached[0] / first[0] <= 0.15),
        ("fully cached re-run, wall", cached[0], "< 1 s", cached[0] < 1.0),
        ("… with validate (GX) / its first run", vcached[0] / vfirst[0], "≤ 0.15", vcached[0] / vfirst[0] <= 0.15),
        ("… with validate (GX), wall", vcached[0], "< 1 s", vcached[0] < 1.0),
        (
            "200,000 rows, `--no-cache` / plain script",
            large["crispml"][0] / large["plain"][0],
            "≤ 1.05",
            large["crispml"][0] / large["plain"][0] <= 1.05,
        ),
        ("`crispml --help`, wall", start["help"][0], "≤ 0.3 s", start["help"][0] <= 0.3),
        ("`crispml plugins`, wall", start["plugins"][0], "≤ 0.3 s", start["plugins"][0] <= 0.3),
    ]
    print("\n| goal (issue 13) | measured | goal | met |\n|---|---|---|---|")
    for name, value, goal, met in goals:
        print(f"| {name} | {value:.3f} | {goal} | {'yes' if met else 'no'} |")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
