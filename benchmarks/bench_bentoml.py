"""Serving the quickstart's champion: crispml's BentoML deployment vs ``mlflow models serve``.

    .venv/bin/python benchmarks/bench_bentoml.py [--requests 3000] [--seconds 20] [--concurrency 8]

In one run, in a temporary project (everything on 127.0.0.1, nothing leaves the machine):

1. the quickstart recipe trains and registers ``churn`` (MLflow, embedded SQLite);
2. **deploy → first answer**: ``crispml deploy churn@champion`` is started and the public URL is
   polled until ``POST /predict`` answers 200 — the wall time a user waits, process start included;
3. ``mlflow models serve -m models:/churn/1 --env-manager local`` of the same version;
4. **load** from a second process (threads on keep-alive HTTP connections, one one-row request at
   a time each, bounded by ``--requests`` and ``--seconds``) against: crispml's public endpoint
   (proxy → BentoML), the BentoML backend directly (what the proxy costs), and MLflow's server;
5. **the floor**: one bare ``model.predict`` on one row in-process (the sklearn pipeline, median).

Prints a table and a JSON line; figures are recorded in docs/performance.md (## BentoML).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CRISPML = str(Path(sys.executable).with_name("crispml"))
MLFLOW = str(Path(sys.executable).with_name("mlflow"))
ROW = {
    "tenure_months": 3,
    "contract": "month-to-month",
    "internet": "fiber",
    "payment_method": "check",
    "monthly_charges": 95.5,
    "total_charges": 286.5,
    "support_calls": 4,
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- the load generator (runs as its own process: --load) ----------------------------------------


def load(url: str, path: str, body: bytes, concurrency: int, requests: int, seconds: float) -> dict[str, Any]:
    host, port = url.removeprefix("http://").split(":")
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    remaining = [requests]
    deadline = time.monotonic() + seconds

    def worker() -> None:
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        mine: list[float] = []
        while time.monotonic() < deadline:
            with lock:
                if remaining[0] <= 0:
                    break
                remaining[0] -= 1
            t0 = time.perf_counter()
            try:
                conn.request("POST", path, body=body, headers={"content-type": "application/json"})
                resp = conn.getresponse()
                resp.read()
                if resp.status != 200:
                    errors.append(f"HTTP {resp.status}")
            except Exception as exc:
                errors.append(type(exc).__name__)
                conn.close()
                conn = http.client.HTTPConnection(host, int(port), timeout=30)
                continue
            mine.append(time.perf_counter() - t0)
        conn.close()
        with lock:
            latencies.extend(mine)

    # Warm-up: the first requests pay for lazy imports in the server.
    warm = http.client.HTTPConnection(host, int(port), timeout=30)
    for _ in range(20):
        warm.request("POST", path, body=body, headers={"content-type": "application/json"})
        warm.getresponse().read()
    warm.close()
    started = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    latencies.sort()
    q = statistics.quantiles(latencies, n=100) if len(latencies) >= 2 else [float("nan")] * 99
    return {
        "requests": len(latencies),
        "errors": len(errors),
        "seconds": round(elapsed, 2),
        "rps": round(len(latencies) / elapsed, 1),
        "p50_ms": round(q[49] * 1000, 2),
        "p99_ms": round(q[98] * 1000, 2),
    }


def run_load(url: str, path: str, body: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    done = subprocess.run(
        [
            sys.executable,
            __file__,
            "--load",
            url,
            path,
            json.dumps(body),
            "--concurrency",
            str(args.concurrency),
            "--requests",
            str(args.requests),
            "--seconds",
            str(args.seconds),
        ],
        capture_output=True,
        text=True,
        timeout=args.seconds + 120,
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


# -- the run ------------------------------------------------------------------------------------


def post_ok(url: str, path: str, body: bytes) -> bool:
    host, port = url.removeprefix("http://").split(":")
    try:
        conn = http.client.HTTPConnection(host, int(port), timeout=2)
        conn.request("POST", path, body=body, headers={"content-type": "application/json"})
        ok = conn.getresponse().status == 200
        conn.close()
        return ok
    except OSError:
        return False


def stop(proc: subprocess.Popen[Any] | None, *, group: bool) -> None:
    """SIGTERM (its process group, if it has one of its own), SIGKILL after 30 s; reaped."""
    if proc is None or proc.poll() is not None:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            if group:
                os.killpg(proc.pid, sig)
            else:
                os.kill(proc.pid, sig)
        try:
            proc.wait(timeout=30)
            return
        except subprocess.TimeoutExpired:
            continue


READY_TIMEOUT = 300.0


def floor(project: Path) -> float:
    """Median seconds of one bare ``predict`` on one row (the served sklearn pipeline)."""
    code = (
        "import json, sys, time, statistics, warnings\n"
        "warnings.simplefilter('ignore')\n"
        "import pandas as pd, mlflow.sklearn\n"
        "from pathlib import Path\n"
        "rel = sorted(Path(sys.argv[1]).glob('.crispml/deployments/churn/releases/*/model'))[-1]\n"
        "m = mlflow.sklearn.load_model(str(rel))\n"
        "row = pd.DataFrame([json.loads(sys.argv[2])])\n"
        "for _ in range(20): m.predict(row)\n"
        "ts = []\n"
        "for _ in range(300):\n"
        "    t0 = time.perf_counter(); m.predict(row); ts.append(time.perf_counter() - t0)\n"
        "print(statistics.median(ts))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(project), json.dumps(ROW)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **ENV},
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return float(done.stdout.strip().splitlines()[-1])


# The quickstart's model (its recipe, without the steps other benchmarks measure).
RECIPE = """
name: bench-serve
split: {{test_size: 0.25, seed: 42, stratify: churned}}
load: {{use: files, path: {data}, target: churned}}
train: {{use: sklearn, estimator: sklearn.linear_model.LogisticRegression, params: {{C: 1.0, max_iter: 500}}}}
evaluate: {{use: sklearn, metrics: [accuracy, roc_auc], plots: false}}
register: {{use: mlflow, model_name: churn, compare_on: roc_auc}}
"""

ENV = {"BENTOML_DO_NOT_TRACK": "True", "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1"}


def main(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-bentoml-") as tmp:
        project = Path(tmp)
        env = {**os.environ, **ENV, "CRISPML_PROJECT": str(project)}
        (project / ".crispml").mkdir()
        recipe = RECIPE.format(data=REPO / "examples" / "quickstart" / "data" / "churn.csv")
        (project / "recipe.yaml").write_text(recipe)
        done = subprocess.run([CRISPML, "run", "recipe.yaml"], cwd=project, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr

        port = free_port()
        url = f"http://127.0.0.1:{port}"
        one = json.dumps({"records": [ROW]}).encode()
        mlflow_proc: subprocess.Popen[bytes] | None = None
        deploy: subprocess.Popen[str] | None = None
        mlflow_log = None
        try:
            t0 = time.perf_counter()
            deploy = subprocess.Popen(
                [CRISPML, "deploy", "churn@champion", "--port", str(port)],
                cwd=project,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            deadline = time.monotonic() + READY_TIMEOUT
            while not post_ok(url, "/predict", one):
                if deploy.poll() not in (None, 0):
                    raise RuntimeError(deploy.communicate()[1])
                if time.monotonic() > deadline:
                    raise RuntimeError(f"crispml deploy: no answer at {url} within {READY_TIMEOUT:g} s")
                time.sleep(0.02)
            results["deploy_to_first_answer_s"] = round(time.perf_counter() - t0, 2)
            out, err = deploy.communicate(timeout=120)
            assert deploy.returncode == 0, out + err
            record = json.loads((project / ".crispml/deployments/churn/deployment.json").read_text())
            backend = f"http://127.0.0.1:{record['backend']['port']}"

            mlflow_log = (project / "mlflow-serve.log").open("wb")
            mport = free_port()
            murl = f"http://127.0.0.1:{mport}"
            t0 = time.perf_counter()
            mlflow_proc = subprocess.Popen(
                [
                    MLFLOW,
                    "models",
                    "serve",
                    "-m",
                    "models:/churn/1",
                    "--env-manager",
                    "local",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(mport),
                    "--workers",
                    "1",
                ],
                cwd=project,
                env={
                    **env,
                    "MLFLOW_TRACKING_URI": f"sqlite:///{project / '.crispml/mlflow.db'}",
                    # it runs `uvicorn` from PATH: this environment's
                    "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
                },
                stdout=mlflow_log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            mbody = {"dataframe_records": [ROW]}
            deadline = time.monotonic() + READY_TIMEOUT
            while not post_ok(murl, "/invocations", json.dumps(mbody).encode()):
                if mlflow_proc.poll() is not None:
                    raise RuntimeError(
                        "mlflow models serve exited: " + (project / "mlflow-serve.log").read_text()[-3000:]
                    )
                if time.monotonic() > deadline:
                    raise RuntimeError(f"mlflow models serve: no answer at {murl} within {READY_TIMEOUT:g} s")
                time.sleep(0.05)
            results["mlflow_serve_to_first_answer_s"] = round(time.perf_counter() - t0, 2)

            body = {"records": [ROW]}
            results["crispml (proxy -> bentoml)"] = run_load(url, "/predict", body, args)
            results["bentoml backend directly"] = run_load(backend, "/predict", body, args)
            results["mlflow models serve"] = run_load(murl, "/invocations", mbody, args)
            results["floor_predict_one_row_ms"] = round(floor(project) * 1000, 3)
        finally:
            stop(deploy, group=False)  # still running only if something above failed
            stop(mlflow_proc, group=True)
            if mlflow_log is not None:
                mlflow_log.close()
            done = subprocess.run([CRISPML, "undeploy", "churn"], cwd=project, env=env, capture_output=True, text=True)
            if done.returncode != 0:
                print(f"undeploy failed: {done.stderr.strip()}", file=sys.stderr)
    return results


def report(results: dict[str, Any], args: argparse.Namespace) -> None:
    print(
        f"load: {args.concurrency} keep-alive connections, one-row requests, "
        f"≤{args.requests} requests or {args.seconds:g} s each, from a second process"
    )
    print(f"{'endpoint':<28} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'n':>6} {'errors':>6}")
    for key in ("crispml (proxy -> bentoml)", "bentoml backend directly", "mlflow models serve"):
        r = results[key]
        print(f"{key:<28} {r['rps']:>8} {r['p50_ms']:>8} {r['p99_ms']:>8} {r['requests']:>6} {r['errors']:>6}")
    print(f"floor: one bare model.predict on one row: {results['floor_predict_one_row_ms']} ms")
    print(
        f"crispml deploy -> first answered request: {results['deploy_to_first_answer_s']} s "
        f"(mlflow models serve -> first answer: {results['mlflow_serve_to_first_answer_s']} s)"
    )
    print(json.dumps(results))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--load", nargs=3, metavar=("URL", "PATH", "BODY"))
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, default=8)
    ns = parser.parse_args()
    if ns.load:
        u, p, b = ns.load
        print(json.dumps(load(u, p, b.encode(), ns.concurrency, ns.requests, ns.seconds)))
    else:
        report(main(ns), ns)
