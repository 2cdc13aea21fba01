"""The flagship end to end, as `make demo` runs it: every step is a command you can type.

    python demo.py [--port 3000] [--prefect-port 4200] [--timings FILE]

1. ``crispml run recipe.yaml``: Feast → Great Expectations → scikit-learn → MLflow (churn/1
   champion) → Feast materializes → BentoML serves it (clients send ``customer_id`` only).
2. ``python predict.py``: a few customers by id → predictions, model version, features used.
3. ``python simulate.py --traffic 400``; ``crispml monitor recipe.yaml`` → no drift (exit 0).
4. ``python simulate.py --shift``; ``crispml monitor recipe.yaml`` → drift → retrain on the fresh
   data → churn/2 beats churn/1 → served.
5. The schedule way: ``crispml server start``, ``crispml schedule recipe.yaml --monitor --cron …``
   (the drift check every 30 minutes; a retrain it starts is a subflow), ``crispml schedules run``,
   ``crispml server stop`` (the schedule is paused first, so starting the server later to look at
   Prefect's UI does not run it).
6. A summary; ``crispml undeploy churn`` and ``crispml server stop`` — also when a step fails.

It starts from ``python simulate.py --reset`` (no deployment, no ``.crispml/``, today's data), so
it runs again from any state. Each step's wall time is printed at the end (``--timings`` writes
them as JSON). A port in use stops it before any work, in one line.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from _client import CRISPML, HERE, NAME

SCHEDULE = "churn-monitor"
PYTHON = sys.executable


class StepFailed(Exception):
    """A command of the demo exited with an unexpected code (its output is already shown)."""


def port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def check_ports(port: int, prefect_port: int) -> str | None:
    """One line naming the first port in use, and the make variable that moves it."""
    for value, variable in ((port, "PORT"), (prefect_port, "PREFECT_PORT")):
        if port_in_use(value):
            return f"port {value} is in use: make demo {variable}={value + 100}"
    return None


class Demo:
    """Runs the steps in order, shows each command and its output, times each step."""

    def __init__(self, port: int, prefect_port: int) -> None:
        self.port = port
        self.prefect_port = prefect_port
        self.env = {**os.environ, "CRISPML_PROJECT": os.environ.get("CRISPML_PROJECT", str(HERE))}
        self.timings: dict[str, float] = {}
        self.server_started = False

    def sh(self, *args: str, ok: tuple[int, ...] = (0,), capture: bool = False) -> subprocess.CompletedProcess[str]:
        """Run one command in the example's folder; its output goes to the terminal."""
        shown = ["crispml" if a == CRISPML else "python" if a == PYTHON else a for a in args]
        print(f"$ {shlex.join(shown)}", flush=True)
        done = subprocess.run(args, cwd=HERE, env=self.env, text=True, capture_output=capture)
        if capture and done.stdout:
            print(done.stdout, end="", flush=True)
        if done.returncode not in ok:
            if capture and done.stderr:
                print(done.stderr, end="", file=sys.stderr, flush=True)
            raise StepFailed(f"`{shlex.join(shown)}` exited {done.returncode}")
        return done

    def crispml(
        self, *args: str, ok: tuple[int, ...] = (0,), capture: bool = False
    ) -> subprocess.CompletedProcess[str]:
        return self.sh(CRISPML, *args, ok=ok, capture=capture)

    def step(self, title: str, body: Callable[[], None]) -> None:
        print(f"\n━━ {title}", flush=True)
        start = time.perf_counter()
        try:
            body()
        finally:
            self.timings[title] = round(time.perf_counter() - start, 1)
            print(f"   ({self.timings[title]:.1f} s)", flush=True)

    # -- the steps -------------------------------------------------------------------------

    def reset(self) -> None:
        self.sh(PYTHON, "simulate.py", "--reset")

    def run(self) -> None:
        self.crispml("run", "recipe.yaml", "--set", f"deploy.port={self.port}")

    def predict(self) -> None:
        self.sh(PYTHON, "predict.py")

    def quiet(self) -> None:
        self.sh(PYTHON, "simulate.py", "--traffic", "400")
        self.crispml("monitor", "recipe.yaml", "--set", f"deploy.port={self.port}")

    def drift(self) -> None:
        self.sh(PYTHON, "simulate.py", "--shift")
        self.crispml("monitor", "recipe.yaml", "--set", f"deploy.port={self.port}")
        served = self.sh(PYTHON, "predict.py", "7", "1042", capture=True).stdout
        if "x-crispml-model: churn/2" not in served:
            raise StepFailed("after the retrain the deployment does not answer as churn/2")

    def schedule(self) -> None:
        self.server_started = True
        self.crispml("server", "start", "--port", str(self.prefect_port))
        self.crispml(
            "schedule",
            "recipe.yaml",
            "--monitor",
            "--cron",
            "*/30 * * * *",
            "--name",
            SCHEDULE,
            "--replace",
            "--set",
            f"deploy.port={self.port}",
        )
        self.crispml("schedules", "run", SCHEDULE, "--wait", "900")
        self.crispml("schedules")
        self.crispml("schedules", "pause", SCHEDULE)
        self.crispml("server", "stop")
        self.server_started = False

    def summary(self) -> None:
        self.crispml("runs", "--limit", "12")
        self.crispml("models")
        listed = subprocess.run(
            [CRISPML, "runs", "--json", "--limit", "50"], cwd=HERE, env=self.env, capture_output=True, text=True
        )
        runs = json.loads(listed.stdout or "[]")
        store = Path(self.env["CRISPML_PROJECT"]) / ".crispml" / "runs"
        print("\ndrift, per monitor run (oldest first):")
        for run in reversed(runs):
            if list(run["stages"]) != ["monitor"]:
                continue
            drift = store / run["run_id"] / "artifacts" / "monitor" / "drift.json"
            if drift.is_file():
                found = json.loads(drift.read_text())
                print(
                    f"  {run['run_id']}: {found['drifted_columns']} of {found['column_count']} columns drifted "
                    f"(share {found['drift_share']:.2f}, threshold {found['drift_share_threshold']}) "
                    f"→ {'drift' if found['dataset_drift'] else 'no drift'}"
                )
                print(f"      report: {drift.with_name('drift.html').relative_to(HERE)}")
        print("validation reports: .crispml/runs/<run>/artifacts/validate/validation.html")

    def cleanup(self) -> None:
        """Stop what the demo started: the deployment, the Prefect server (and its serve process)."""
        print("\n━━ cleanup", flush=True)
        for args in ((["server", "stop"],) if self.server_started else ()) + (["undeploy", NAME],):
            print(f"$ crispml {' '.join(args)}", flush=True)
            subprocess.run([CRISPML, *args], cwd=HERE, env=self.env)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT") or 3000), help="the deployment's port")
    parser.add_argument("--prefect-port", type=int, default=int(os.environ.get("PREFECT_PORT") or 4200))
    parser.add_argument("--timings", type=Path, help="write each step's wall time (s) here, as JSON")
    args = parser.parse_args()
    busy = check_ports(args.port, args.prefect_port)
    if busy:
        print(busy, file=sys.stderr)
        return 2
    demo = Demo(args.port, args.prefect_port)
    started = time.perf_counter()
    failed: str | None = None
    try:
        demo.step("0. start from the shipped state (simulate.py --reset)", demo.reset)
        demo.step("1. train, validate, register, serve (crispml run)", demo.run)
        demo.step("2. ask the served model about customers by id (predict.py)", demo.predict)
        demo.step("3. traffic like the training data, then monitor: no drift", demo.quiet)
        demo.step("4. the world moves, then monitor: drift → retrain → churn/2 served", demo.drift)
        demo.step("5. the schedule way (a Prefect server, a cron schedule, one run now)", demo.schedule)
        demo.step("6. summary", demo.summary)
    except StepFailed as exc:
        failed = str(exc)
    except KeyboardInterrupt:
        failed = "interrupted"
    except Exception as exc:  # a bug of the demo itself: one line, then the same cleanup
        failed = f"{type(exc).__name__}: {exc}"
    finally:
        demo.cleanup()
    total = time.perf_counter() - started
    print("\nwall time by step:")
    for title, seconds in demo.timings.items():
        print(f"  {seconds:6.1f} s  {title}")
    print(f"  {total:6.1f} s  total")
    if args.timings:
        args.timings.write_text(json.dumps({**demo.timings, "total": round(total, 1)}, indent=2) + "\n")
    if failed:
        print(f"demo failed: {failed}; everything it started is stopped", file=sys.stderr)
        return 1
    print(
        "\nEverything the demo started is stopped; its state is in examples/churn/.crispml/. To explore it:\n"
        "  cd examples/churn && ../../.venv/bin/crispml ui              # MLflow's UI: http://127.0.0.1:5000\n"
        "  cd examples/churn && ../../.venv/bin/crispml server start    # Prefect's UI: http://127.0.0.1:4200"
        "  (then: crispml server stop)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
