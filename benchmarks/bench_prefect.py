"""Prefect runner figures (issue: "Orchestration on Prefect"), as ratios against ``local``.

* in-process, the quickstart without validate/register/deploy, cache off: ``local`` vs ``prefect``
  on the project's managed server, heartbeat on and off (ms per stage of overhead);
* the first ``crispml run`` on Prefect's ephemeral API (a fresh process starts it) vs ``local``;
* ``crispml schedules run NAME`` to the run's first stage starting.

    .venv/bin/python benchmarks/bench_prefect.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
CRISPML = str(Path(sys.executable).with_name("crispml"))
QUICKSTART = REPO / "examples" / "quickstart"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def project(work: Path, name: str, runner: Any) -> Path:
    folder = work / name
    folder.mkdir()
    recipe = yaml.safe_load((QUICKSTART / "recipe.yaml").read_text())
    recipe["load"]["path"] = str(QUICKSTART / "data" / "churn.csv")
    for key in ("validate", "tracking", "register", "deploy"):
        recipe.pop(key, None)
    recipe["evaluate"]["plots"] = False
    recipe["runner"] = runner
    (folder / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    return folder


def timed_runs(recipe: Path, folder: Path, repeat: int) -> float:
    import crispml

    crispml.run(recipe, project=folder, use_cache=False)  # warm-up: imports, first flow
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = crispml.run(recipe, project=folder, use_cache=False)
        times.append(time.perf_counter() - t0)
        assert result.status == "succeeded", result.manifest["error"]
    return statistics.median(times)


def cli(folder: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 600) -> float:
    full = {**os.environ, "CRISPML_PROJECT": str(folder), **(env or {})}
    full.pop("PREFECT_API_URL", None)
    t0 = time.perf_counter()
    subprocess.run([CRISPML, *args], cwd=folder, env=full, capture_output=True, check=True, timeout=timeout)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    os.environ.pop("PREFECT_API_URL", None)
    work = Path(tempfile.mkdtemp(prefix="crispml-bench-prefect-"))
    rows: list[tuple[str, str]] = []
    server = project(work, "server", "prefect")
    try:
        cli(server, "server", "start", "--port", str(free_port()))
        local = timed_runs(project(work, "local", "local") / "recipe.yaml", work / "local", args.repeat)
        beat = timed_runs(server / "recipe.yaml", server, args.repeat)
        (server / "off.yaml").write_text(
            (server / "recipe.yaml").read_text().replace("runner: prefect", "runner: {use: prefect, heartbeat: false}")
        )
        quiet = timed_runs(server / "off.yaml", server, args.repeat)
        stages = 3
        rows += [
            ("local, in-process (3 stages)", f"{local * 1000:.0f} ms"),
            ("prefect, managed server, heartbeat on", f"{beat * 1000:.0f} ms ({beat / local:.1f}× local)"),
            ("prefect, managed server, heartbeat off", f"{quiet * 1000:.0f} ms ({quiet / local:.1f}× local)"),
            ("overhead per stage, heartbeat off", f"{(quiet - local) / stages * 1000:.0f} ms"),
            ("heartbeat cost per run", f"{(beat - quiet) * 1000:.0f} ms"),
        ]
        eph = project(work, "ephemeral", "prefect")
        first = cli(eph, "run", "recipe.yaml", "--no-cache")
        plain = cli(work / "local", "run", "recipe.yaml", "--no-cache")
        rows.append(("`crispml run`, first call on the ephemeral API", f"{first:.1f} s ({plain:.1f} s local)"))

        cli(server, "schedule", "recipe.yaml", "--interval", "1h", "--name", "bench")
        t0 = time.perf_counter()
        cli(server, "schedules", "run", "bench")
        runs = server / ".crispml" / "runs"
        before = {p.name for p in runs.iterdir()}
        deadline = time.monotonic() + 300
        started = None
        while started is None and time.monotonic() < deadline:
            for path in runs.glob("*/manifest.json"):
                if path.parent.name in before:
                    continue
                try:
                    manifest = json.loads(path.read_text())
                except ValueError:
                    continue
                if manifest["stages"][0].get("started"):
                    started = time.perf_counter() - t0
            time.sleep(0.2)
        rows.append(("`crispml schedules run` to the first stage", f"{started:.1f} s" if started else "> 300 s"))
    finally:
        cli(server, "server", "stop")
        shutil.rmtree(work, ignore_errors=True)
    print("| figure | value |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
