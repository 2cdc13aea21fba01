"""Serving the quickstart's champion: crispml's BentoML deployment vs ``mlflow models serve``.

    .venv/bin/python benchmarks/bench_bentoml.py [--workers 1] [--rounds 3] [--seconds 4] [--deploys 3]

In one run, in a temporary project (everything on 127.0.0.1, nothing leaves the machine):

1. the quickstart recipe trains and registers ``churn`` (MLflow, embedded SQLite);
2. **deploy → first answer**: ``crispml deploy churn@champion --workers W`` is started and the
   public URL is polled until ``POST /predict`` answers 200 — the wall time a user waits, process
   start included (the deploy's own phases are read from its output) — then
   ``mlflow models serve -m models:/churn/1 --env-manager local --workers W`` of the same version,
   timed the same way; ``--deploys`` times in turn (undeployed and stopped between), medians;
3. the last of both stays up for the load;
4. **load**, from a separate process (an asyncio client on kept-alive connections, each sending
   its next request when the last is answered): one-row requests at 1, 8 and 64 connections and
   100-row requests at 8, against crispml's public endpoint (proxy → BentoML), the BentoML
   backend directly (what the proxy costs) and MLflow's server. The three endpoints take turns
   in ``--rounds`` short windows per scenario, so a neighbour's burst on this shared machine falls
   on all of them alike. Each window also records the CPU seconds every side used (servers' whole
   process trees, and the load generator's own): CPU per request, which the neighbours do not move;
5. **the floor**: a bare ``predict`` in-process on 1, 8 and 100 rows (the sklearn pipeline, median).

Prints a table and a JSON line; figures are recorded in docs/performance.md (## BentoML).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import os
import re
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

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


async def _client(
    host: str, port: int, request: bytes, until: float, latencies: list[float], errors: list[str]
) -> None:
    """One kept-alive connection: send, read the whole answer (content-length), repeat."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.monotonic() < until:
            t0 = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))  # type: ignore[union-attr]
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - t0)
            if not head.startswith(b"HTTP/1.1 200"):
                errors.append(head.split(b"\r\n", 1)[0].decode())
    except (OSError, asyncio.IncompleteReadError, AttributeError) as exc:
        errors.append(type(exc).__name__)
    finally:
        writer.close()


def load(url: str, path: str, body: bytes, concurrency: int, seconds: float) -> dict[str, Any]:
    host, port = url.removeprefix("http://").split(":")
    request = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
    ).encode() + body
    latencies: list[float] = []
    errors: list[str] = []

    async def run() -> float:
        started = time.perf_counter()
        until = time.monotonic() + seconds
        await asyncio.gather(*(_client(host, int(port), request, until, latencies, errors) for _ in range(concurrency)))
        return time.perf_counter() - started

    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    cpu0 = _own_cpu()
    elapsed = asyncio.run(run())
    return {"latencies": latencies, "errors": len(errors), "seconds": elapsed, "client_cpu": _own_cpu() - cpu0}


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def tree_cpu(pids: list[int]) -> float:
    """CPU seconds used so far by these processes and their descendants (alive ones)."""
    total = 0.0
    for pid in pids:
        try:
            root = psutil.Process(pid)
            for proc in [root, *root.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    times = proc.cpu_times()
                    total += times.user + times.system
        except psutil.Error:
            continue
    return total


def window(url: str, path: str, body: bytes, concurrency: int, seconds: float, pids: list[int]) -> dict[str, Any]:
    """One load window from a separate process, with the servers' CPU over the same window."""
    warm = http.client.HTTPConnection(*url.removeprefix("http://").split(":"), timeout=30)  # type: ignore[arg-type]
    for _ in range(5):
        warm.request("POST", path, body=body, headers={"content-type": "application/json"})
        warm.getresponse().read()
    warm.close()
    cpu0 = tree_cpu(pids)
    done = subprocess.run(
        [
            sys.executable,
            __file__,
            "--load",
            url,
            path,
            body.decode(),
            "--concurrency",
            str(concurrency),
            "--seconds",
            str(seconds),
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 120,
    )
    server_cpu = tree_cpu(pids) - cpu0
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    out: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    out["server_cpu"] = server_cpu
    return out


def summary(windows: list[dict[str, Any]]) -> dict[str, Any]:
    latencies = sorted(x for w in windows for x in w["latencies"])
    seconds = sum(w["seconds"] for w in windows)
    n = len(latencies)
    q = statistics.quantiles(latencies, n=100) if n >= 2 else [float("nan")] * 99
    return {
        "requests": n,
        "errors": sum(w["errors"] for w in windows),
        "rps": round(n / seconds, 1),
        "p50_ms": round(q[49] * 1000, 2),
        "p99_ms": round(q[98] * 1000, 2),
        "server_cpu_ms_per_req": round(1000 * sum(w["server_cpu"] for w in windows) / max(n, 1), 3),
        "client_cpu_ms_per_req": round(1000 * sum(w["client_cpu"] for w in windows) / max(n, 1), 3),
        "server_cores_used": round(sum(w["server_cpu"] for w in windows) / seconds, 2),
        "client_cores_used": round(sum(w["client_cpu"] for w in windows) / seconds, 2),
    }


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


def floor(project: Path) -> dict[str, float]:
    """Median ms of one bare ``predict`` on 1, 8 and 100 rows (the served sklearn pipeline)."""
    code = (
        "import json, sys, time, statistics, warnings\n"
        "warnings.simplefilter('ignore')\n"
        "import pandas as pd, mlflow.sklearn\n"
        "from pathlib import Path\n"
        "rel = sorted(Path(sys.argv[1]).glob('.crispml/deployments/churn/releases/*/model'))[-1]\n"
        "m = mlflow.sklearn.load_model(str(rel))\n"
        "out = {}\n"
        "for n in (1, 8, 100):\n"
        "    rows = pd.DataFrame([json.loads(sys.argv[2])] * n)\n"
        "    for _ in range(20): m.predict(rows)\n"
        "    ts = []\n"
        "    for _ in range(200):\n"
        "        t0 = time.perf_counter(); m.predict(rows); ts.append(time.perf_counter() - t0)\n"
        "    out[n] = round(statistics.median(ts) * 1000, 3)\n"
        "print(json.dumps(out))\n"
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
    return {f"{k}_rows": v for k, v in json.loads(done.stdout.strip().splitlines()[-1]).items()}


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


SCENARIOS = [(1, 1), (8, 1), (64, 1), (8, 100)]
"""(connections, rows per request)"""
ENDPOINTS = ("crispml (proxy -> bentoml)", "bentoml backend directly", "mlflow models serve")


def start_crispml(project: Path, env: dict[str, str], port: int, workers: int) -> tuple[float, str]:
    """``crispml deploy`` until the public URL answers: (seconds, the deploy's last line)."""
    url = f"http://127.0.0.1:{port}"
    one = json.dumps({"records": [ROW]}).encode()
    t0 = time.perf_counter()
    deploy = subprocess.Popen(
        [CRISPML, "deploy", "churn@champion", "--port", str(port), "--workers", str(workers)],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while not post_ok(url, "/predict", one):
            if deploy.poll() not in (None, 0):
                raise RuntimeError(deploy.communicate()[1])
            if time.monotonic() > deadline:
                raise RuntimeError(f"crispml deploy: no answer at {url} within {READY_TIMEOUT:g} s")
            time.sleep(0.02)
        seconds = time.perf_counter() - t0
        out, err = deploy.communicate(timeout=120)
        assert deploy.returncode == 0, out + err
        return seconds, out.strip().splitlines()[-1]
    finally:
        stop(deploy, group=False)  # still running only if something above failed


def start_mlflow(
    project: Path, env: dict[str, str], workers: int, log: Any
) -> tuple[subprocess.Popen[bytes], str, float]:
    """``mlflow models serve`` of the same version until it answers: (process, url, seconds)."""
    mport = free_port()
    murl = f"http://127.0.0.1:{mport}"
    t0 = time.perf_counter()
    proc = subprocess.Popen(
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
            str(workers),
        ],
        cwd=project,
        env={
            **env,
            "MLFLOW_TRACKING_URI": f"sqlite:///{project / '.crispml/mlflow.db'}",
            # it runs `uvicorn` from PATH: this environment's
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        },
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + READY_TIMEOUT
    while not post_ok(murl, "/invocations", json.dumps({"dataframe_records": [ROW]}).encode()):
        if proc.poll() is not None:
            raise RuntimeError("mlflow models serve exited: " + (project / "mlflow-serve.log").read_text()[-3000:])
        if time.monotonic() > deadline:
            stop(proc, group=True)
            raise RuntimeError(f"mlflow models serve: no answer at {murl} within {READY_TIMEOUT:g} s")
        time.sleep(0.05)
    return proc, murl, time.perf_counter() - t0


def main(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {"workers": args.workers, "cores": os.cpu_count()}
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
        mlflow_proc: subprocess.Popen[bytes] | None = None
        mlflow_log = (project / "mlflow-serve.log").open("wb")
        ours: list[float] = []
        theirs: list[float] = []
        try:
            # Deploy → first answer, crispml and MLflow in turn (each a fresh first deploy).
            for i in range(args.deploys):
                seconds, says = start_crispml(project, env, port, args.workers)
                ours.append(round(seconds, 2))
                results["deploy_says"] = says
                mlflow_proc, murl, seconds = start_mlflow(project, env, args.workers, mlflow_log)
                theirs.append(round(seconds, 2))
                if i < args.deploys - 1:
                    stop(mlflow_proc, group=True)
                    done = subprocess.run(
                        [CRISPML, "undeploy", "churn"], cwd=project, env=env, capture_output=True, text=True
                    )
                    assert done.returncode == 0, done.stderr
            results["deploy_to_first_answer_s"] = statistics.median(ours)
            results["mlflow_serve_to_first_answer_s"] = statistics.median(theirs)
            results["deploy_runs_s"] = {"crispml": ours, "mlflow": theirs}
            record = json.loads((project / ".crispml/deployments/churn/deployment.json").read_text())
            backend = f"http://127.0.0.1:{record['backend']['port']}"
            crispml_pids = [int(record["proxy"]["pid"]), int(record["backend"]["pid"])]
            assert mlflow_proc is not None

            for connections, rows in args.scenarios:
                records = [{**ROW, "tenure_months": i % 72} for i in range(rows)]
                targets = {
                    ENDPOINTS[0]: (url, "/predict", {"records": records}, crispml_pids),
                    ENDPOINTS[1]: (backend, "/predict", {"records": records}, crispml_pids[1:]),
                    ENDPOINTS[2]: (murl, "/invocations", {"dataframe_records": records}, [mlflow_proc.pid]),
                }
                windows: dict[str, list[dict[str, Any]]] = {k: [] for k in targets}
                for _ in range(args.rounds):
                    for key, (u, path, body, pids) in targets.items():
                        data = json.dumps(body).encode()
                        windows[key].append(window(u, path, data, connections, args.seconds, pids))
                results[f"{connections} conn x {rows} row"] = {k: summary(v) for k, v in windows.items()}
            results["floor_predict_ms"] = floor(project)
        finally:
            stop(mlflow_proc, group=True)
            mlflow_log.close()
            done = subprocess.run([CRISPML, "undeploy", "churn"], cwd=project, env=env, capture_output=True, text=True)
            if done.returncode != 0:
                print(f"undeploy failed: {done.stderr.strip()}", file=sys.stderr)
    return results


def report(results: dict[str, Any], args: argparse.Namespace) -> None:
    print(
        f"{results['cores']} cores shared by everything; {args.workers} worker(s) per server; load from a separate "
        f"process, {args.rounds} rounds × {args.seconds:g} s per endpoint and scenario, endpoints in turn"
    )
    header = f"{'scenario':<18} {'endpoint':<28} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}"
    print(header + f" {'srv cpu ms/req':>14} {'srv cores':>9} {'load cores':>10}")
    for connections, rows in args.scenarios:
        scenario = f"{connections} conn x {rows} row"
        for key in ENDPOINTS:
            r = results[scenario][key]
            print(
                f"{scenario:<18} {key:<28} {r['rps']:>8} {r['p50_ms']:>8} {r['p99_ms']:>8} {r['errors']:>6} "
                f"{r['server_cpu_ms_per_req']:>14} {r['server_cores_used']:>9} {r['client_cores_used']:>10}"
            )
        ours, theirs = results[scenario][ENDPOINTS[0]], results[scenario][ENDPOINTS[2]]
        print(
            f"{'':<18} crispml / mlflow: {ours['rps'] / theirs['rps']:.2f}x req/s, "
            f"p99 {ours['p99_ms'] / theirs['p99_ms']:.2f}x"
        )
    print(f"floor: bare model.predict in-process, median ms: {results['floor_predict_ms']}")
    print(
        f"crispml deploy -> first answered request: {results['deploy_to_first_answer_s']} s "
        f"(mlflow models serve -> first answer: {results['mlflow_serve_to_first_answer_s']} s), medians of "
        f"{results['deploy_runs_s']}; "
        f"deploy said: {results['deploy_says']}"
    )
    print(json.dumps(results))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--load", nargs=3, metavar=("URL", "PATH", "BODY"))
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument(
        "--scenario",
        dest="scenarios",
        action="append",
        type=lambda v: tuple(int(x) for x in v.split("x")),
        help="CONNECTIONSxROWS, repeatable (default: 1x1, 8x1, 64x1, 8x100)",
    )
    parser.add_argument("--deploys", type=int, default=3, help="deploy → first answer measurements, each side")
    ns = parser.parse_args()
    ns.scenarios = ns.scenarios or SCENARIOS
    if ns.load:
        u, p, b = ns.load
        print(json.dumps(load(u, p, b.encode(), ns.concurrency, ns.seconds)))
    else:
        report(main(ns), ns)
