"""Feast through crispml vs Feast directly: training data, apply, materialize, serving by key.

    .venv/bin/python benchmarks/bench_feast.py [--rows 1000000] [--entities 100000]
        [--dask-rows 200000] [--requests 600] [--seconds 15] [--concurrency 4]

In one run, in a temporary project (everything on 127.0.0.1; data generated here, seeded):

1. **load**: crispml's ``load`` stage body (``load_dataset``: read the entities file, check it,
   point-in-time join, row check, metrics, serving spec) vs ``pd.read_parquet`` +
   ``store.get_historical_features(...).to_df()`` on the same embedded duckdb store, ``--rows``
   entity rows x 20 features (best of two each, alternated);
2. **duckdb vs Feast's default ``file`` (dask) offline store**, on ``--dask-rows`` entity rows
   (the default store is too slow and too big in memory at a million here), rows returned too;
3. **apply vs skipped apply**: ``open_store`` on a new Feast project, then again unchanged;
4. **materialize** ``--entities`` entities (20 features) into SQLite and into Redis (db 15 of
   127.0.0.1:6379, flushed before and after; skipped when Redis does not answer);
5. **serving floor**: bare ``store.get_online_features`` for 1 and 100 keys, and the shipped
   resolver's ``fetch`` (what the served model calls), SQLite vs Redis (median of 200 calls,
   different random keys each);
6. **HTTP**: one model deployed by key (``feast`` → ``bentoml``) and the same estimator trained on
   the same rows deployed by records (``files`` → ``bentoml``): req/s, p50/p99 for 1 and 100
   keys vs 1 and 100 records (the load generator of ``bench_bentoml.py``, its own process);
7. **deploy time**: ``crispml deploy`` → first answer, by key (Feast imported in the deploying
   process and in the server) vs by records.

Prints a table and a JSON line; figures are recorded in docs/performance.md (## Feast).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

CRISPML = str(Path(sys.executable).with_name("crispml"))
BENCH_BENTOML = str(Path(__file__).with_name("bench_bentoml.py"))
FEATURES = [f"f{i:02d}" for i in range(20)]
HISTORY_DAYS = 3
REDIS_DB = 15

DEFINITIONS = """
from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.types import Float64

HERE = Path(__file__).parent
customer = Entity(name="customer", join_keys=["customer_id"], value_type=ValueType.INT64)
usage = FeatureView(
    name="usage20",
    entities=[customer],
    ttl=timedelta(days=30),
    schema=[Field(name=f"f{i:02d}", dtype=Float64) for i in range(20)],
    source=FileSource(path=str(HERE / "usage.parquet"), timestamp_field="event_timestamp"),
)
bench_v1 = FeatureService(name="bench_v1", features=[usage])
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_answers() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=1):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def timer(into: list[float]) -> Iterator[None]:
    t0 = time.perf_counter()
    yield
    into.append(time.perf_counter() - t0)


# -- data (seeded: the same on every run of the same day) -----------------------------------------


def write_project(project: Path, rows: int, entities: int) -> pd.Timestamp:
    rng = np.random.default_rng(0)
    repo = project / "features"
    repo.mkdir()
    (repo / "defs.py").write_text(DEFINITIONS)
    day0 = pd.Timestamp.now(tz="UTC").floor("D") - pd.Timedelta(days=HISTORY_DAYS)
    ids = np.repeat(np.arange(1, entities + 1), HISTORY_DAYS)
    days = np.tile(np.arange(HISTORY_DAYS), entities)
    usage = pd.DataFrame({"customer_id": ids, "event_timestamp": day0 + pd.to_timedelta(days, unit="D")})
    for name in FEATURES:
        usage[name] = rng.normal(size=len(usage)).round(6)
    usage.to_parquet(repo / "usage.parquet")
    for name, n in (("entities.parquet", rows), ("train.parquet", 20_000)):
        seconds = rng.integers(0, HISTORY_DAYS * 86_400, n)
        frame = pd.DataFrame(
            {
                "customer_id": rng.integers(1, entities + 1, n),
                "event_timestamp": day0 + pd.to_timedelta(seconds, unit="s"),
            }
        )
        frame["label"] = rng.integers(0, 2, n)
        frame.to_parquet(project / name)
    return day0


def recipe(project: Path, name: str, entities: str, **steps: Any) -> Path:
    load = {
        "use": "feast",
        "repo": "features",
        "feature_service": "bench_v1",
        "entities": entities,
        "target": "label",
        "cache": False,
    }
    path = project / name
    path.write_text(yaml.safe_dump({"name": "bench-feast", "split": None, "load": load, **steps}, sort_keys=False))
    return path


# -- 1-2: training data ---------------------------------------------------------------------------


def bench_load(project: Path, args: argparse.Namespace) -> tuple[dict[str, Any], Any]:
    from crispml import RunContext, RunStore, check
    from crispml_feast._definitions import load_definitions
    from crispml_feast._load import load_dataset
    from crispml_feast._store import open_store, quiet, store_spec

    checked = check(recipe(project, "load.yaml", "entities.parquet"))
    options = checked.step("load").options  # type: ignore[union-attr]
    context = RunContext("bench", checked, project, project, RunStore(project))
    repo = project / "features"
    store = open_store(store_spec(repo, project), load_definitions(repo))
    with quiet():
        service = store.get_feature_service("bench_v1")

    def direct(path: Path) -> int:
        entity_df = pd.read_parquet(path)
        with quiet():
            return len(store.get_historical_features(entity_df=entity_df, features=service).to_df())

    crispml_s: list[float] = []
    direct_s: list[float] = []
    dataset = None
    for _ in range(2):
        with timer(direct_s):
            n_direct = direct(project / "entities.parquet")
        with timer(crispml_s):
            dataset = load_dataset(options, context)
    assert dataset is not None and len(dataset.frame) == args.rows == n_direct

    # duckdb vs the default file (dask) store, on fewer rows.
    from feast import FeatureStore, RepoConfig

    small = project / "entities_small.parquet"
    pd.read_parquet(project / "entities.parquet").head(args.dask_rows).to_parquet(small)
    config = store.config
    dask_store = FeatureStore(
        config=RepoConfig(
            project=config.project,
            provider="local",
            registry=config.registry,
            online_store=config.online_store,
            offline_store={"type": "file"},
            entity_key_serialization_version=3,
            repo_path=repo,
        )
    )
    duck_s: list[float] = []
    dask_s: list[float] = []
    with timer(duck_s):
        duck_rows = direct(small)
    entity_df = pd.read_parquet(small)
    with timer(dask_s), quiet():
        dask_rows = len(dask_store.get_historical_features(entity_df=entity_df, features=service).to_df())
    return {
        "load_crispml_s": round(min(crispml_s), 2),
        "load_direct_s": round(min(direct_s), 2),
        "load_ratio": round(min(crispml_s) / min(direct_s), 3),
        "duckdb_s": round(duck_s[0], 2),
        "dask_s": round(dask_s[0], 2),
        "dask_over_duckdb": round(dask_s[0] / duck_s[0], 2),
        "duckdb_rows": duck_rows,
        "dask_rows": dask_rows,
    }, dataset


# -- 3-5: apply, materialize, the online read --------------------------------------------------


def bench_apply(project: Path) -> dict[str, Any]:
    from crispml_feast._definitions import load_definitions
    from crispml_feast._store import open_store, store_spec

    repo = project / "features"
    spec = store_spec(repo, project, project="bench_apply")
    first: list[float] = []
    again: list[float] = []
    with timer(first):
        open_store(spec, load_definitions(repo))
    with timer(again):
        open_store(spec, load_definitions(repo))
    return {"apply_s": round(first[0], 3), "skipped_apply_s": round(again[0], 3)}


def _median_ms(call: Callable[[list[dict[str, Any]]], Any], batches: list[list[dict[str, Any]]]) -> float:
    """Median milliseconds of ``call`` over ``batches`` (different keys each time: no cache helps)."""
    call(batches[-1])  # warm
    times = []
    for rows in batches[:-1]:
        t0 = time.perf_counter()
        call(rows)
        times.append(time.perf_counter() - t0)
    return round(statistics.median(times) * 1000, 3)


def _resolver(spec: dict[str, Any], project: Path, folder: Path) -> Any:
    from crispml import serving_features
    from crispml_bentoml._release import load_resolver

    features = serving_features(spec, project)
    folder.mkdir()
    for name, content in features.files.items():
        (folder / name).write_bytes(content)
    return load_resolver(folder, features.module)


def bench_online(project: Path, dataset: Any, args: argparse.Namespace) -> dict[str, Any]:
    from datetime import UTC, datetime

    from crispml_feast._definitions import load_definitions
    from crispml_feast._materialize import materialize
    from crispml_feast._store import open_store, quiet, store_spec

    repo = project / "features"
    refs = [f"usage20:{f}" for f in FEATURES]
    rng = np.random.default_rng(1)
    keys = {
        n: [[{"customer_id": int(k)} for k in rng.integers(1, args.entities + 1, n)] for _ in range(201)]
        for n in (1, 100)
    }
    stores: dict[str, tuple[dict[str, Any] | None, str]] = {"sqlite": (None, "features")}
    if redis_answers():
        stores["redis"] = ({"type": "redis", "connection_string": f"127.0.0.1:6379,db={REDIS_DB}"}, "bench_redis")
    out: dict[str, Any] = {}
    for kind, (online, name) in stores.items():
        if kind == "redis":
            import redis

            redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB).flushdb()
        store = open_store(store_spec(repo, project, project=name, online_store=online), load_definitions(repo))
        t0 = time.perf_counter()
        [done] = materialize(store, "bench_v1", end=datetime.now(UTC))
        out[f"materialize_{kind}_s"] = round(time.perf_counter() - t0, 2)
        out[f"materialize_{kind}_rows"] = done.rows
        spec = {**dataset.serving, "online_store": online, "project": name}
        resolver = _resolver(spec, project, project / f"resolver_{kind}")

        def bare(rows: list[dict[str, Any]], store: Any = store) -> Any:
            with quiet():
                return store.get_online_features(features=refs, entity_rows=rows).to_dict()

        for n, batches in keys.items():
            out[f"online_{kind}_{n}_ms"] = _median_ms(bare, batches)
            out[f"resolver_{kind}_{n}_ms"] = _median_ms(resolver.fetch, batches)
    if "redis" in stores:
        import redis

        redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB).flushdb()
    return out


# -- 6-7: HTTP --------------------------------------------------------------------------------


def crispml(project: Path, *argv: str, timeout: float = 1200) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CRISPML_PROJECT": str(project), "COLUMNS": "200"}
    done = subprocess.run([CRISPML, *argv], cwd=project, capture_output=True, text=True, timeout=timeout, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"crispml {' '.join(argv)}: {done.stdout[-1500:]}{done.stderr[-1500:]}")
    return done


def answers(url: str, body: dict[str, Any]) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(
        f"{url}/predict", data=json.dumps(body).encode(), headers={"content-type": "application/json"}
    )
    try:
        with opener.open(request, timeout=30) as resp:
            return int(resp.status) == 200
    except OSError:
        return False


def run_load(url: str, body: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    done = subprocess.run(
        [
            *(sys.executable, BENCH_BENTOML, "--load", url, "/predict", json.dumps(body)),
            *("--concurrency", str(args.concurrency), "--requests", str(args.requests)),
            *("--seconds", str(args.seconds)),
        ],
        capture_output=True,
        text=True,
        timeout=args.seconds + 180,
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def timed_deploy(project: Path, reference: str, name: str, body: dict[str, Any]) -> float:
    port = free_port()
    t0 = time.perf_counter()
    crispml(project, "deploy", reference, "--name", name, "--port", str(port))
    while not answers(f"http://127.0.0.1:{port}", body):
        time.sleep(0.05)
    return round(time.perf_counter() - t0, 2)


def bench_http(project: Path, dataset: Any, args: argparse.Namespace) -> dict[str, Any]:
    train = {"use": "sklearn", "estimator": "sklearn.linear_model.LogisticRegression", "params": {"max_iter": 300}}
    keys_port, plain_port = free_port(), free_port()
    crispml(
        project,
        "run",
        str(
            recipe(
                project,
                "keys.yaml",
                "train.parquet",
                train=train,
                register={"use": "mlflow", "model_name": "bench_keys"},
                deploy={"use": "bentoml", "name": "bench-keys", "port": keys_port},
            )
        ),
    )
    # The same estimator on the same rows, sent with its features: a deployment by records.
    trained = crispml_dataset(project)
    trained[[*FEATURES, "label"]].to_parquet(project / "plain.parquet")
    plain = {
        "name": "bench-plain",
        "split": None,
        "load": {"use": "files", "path": "plain.parquet", "target": "label", "cache": False},
        "train": train,
        "register": {"use": "mlflow", "model_name": "bench_plain"},
        "deploy": {"use": "bentoml", "name": "bench-plain", "port": plain_port},
    }
    (project / "plain.yaml").write_text(yaml.safe_dump(plain, sort_keys=False))
    crispml(project, "run", "plain.yaml")
    rng = np.random.default_rng(2)
    out: dict[str, Any] = {}
    rows = trained[FEATURES].to_dict(orient="records")
    try:
        for n in (1, 100):
            ids = [int(k) for k in rng.integers(1, args.entities + 1, n)]
            out[f"http_keys_{n}"] = run_load(
                f"http://127.0.0.1:{keys_port}", {"records": [{"customer_id": k} for k in ids]}, args
            )
            out[f"http_records_{n}"] = run_load(f"http://127.0.0.1:{plain_port}", {"records": rows[:n]}, args)
        out["deploy_keys_s"] = timed_deploy(project, "bench_keys/1", "bench-keys-2", {"records": [{"customer_id": 1}]})
        out["deploy_records_s"] = timed_deploy(project, "bench_plain/1", "bench-plain-2", {"records": rows[:1]})
    finally:
        for name in ("bench-keys", "bench-plain", "bench-keys-2", "bench-plain-2"):
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                crispml(project, "undeploy", name, timeout=120)
    return out


def crispml_dataset(project: Path) -> pd.DataFrame:
    """The frame the last run's load stage gave (what the model was trained on)."""
    from crispml import RunStore

    store = RunStore(project)
    return store.load_result(store.list_runs()[0]["run_id"], "load").frame  # type: ignore[no-any-return]


# -- report -----------------------------------------------------------------------------------


def main(args: argparse.Namespace) -> dict[str, Any]:
    os.environ.setdefault("FEAST_USAGE", "False")
    results: dict[str, Any] = {"rows": args.rows, "entities": args.entities, "dask_rows": args.dask_rows}
    with tempfile.TemporaryDirectory(prefix="bench-feast-") as tmp:
        project = Path(tmp)
        (project / ".crispml").mkdir()
        write_project(project, args.rows, args.entities)
        t0 = time.perf_counter()
        import feast  # noqa: F401

        results["feast_import_s"] = round(time.perf_counter() - t0, 2)
        loaded, dataset = bench_load(project, args)
        results |= loaded
        if not args.load_only:
            results |= bench_apply(project)
            results |= bench_online(project, dataset, args)
        if not (args.no_http or args.load_only):
            results |= bench_http(project, dataset, args)
    return results


def report(results: dict[str, Any]) -> None:
    r = results
    print(f"feast import: {r['feast_import_s']} s")
    print(
        f"load, {r['rows']:,} entity rows x 20 features: crispml {r['load_crispml_s']} s, "
        f"direct {r['load_direct_s']} s, ratio {r['load_ratio']}"
    )
    print(
        f"{r['dask_rows']:,} rows: duckdb {r['duckdb_s']} s ({r['duckdb_rows']:,} rows), "
        f"dask/file {r['dask_s']} s ({r['dask_rows']:,} rows): x{r['dask_over_duckdb']}"
    )
    if "apply_s" in r:
        print(f"apply {r['apply_s']} s, skipped apply {r['skipped_apply_s']} s")
    for kind in ("sqlite", "redis"):
        if f"materialize_{kind}_s" in r:
            print(
                f"{kind}: materialize {r[f'materialize_{kind}_rows']:,} entities {r[f'materialize_{kind}_s']} s; "
                f"get_online_features 1/100 keys {r[f'online_{kind}_1_ms']}/{r[f'online_{kind}_100_ms']} ms; "
                f"resolver.fetch {r[f'resolver_{kind}_1_ms']}/{r[f'resolver_{kind}_100_ms']} ms"
            )
    for n in (1, 100):
        for kind in ("keys", "records"):
            if f"http_{kind}_{n}" in r:
                h = r[f"http_{kind}_{n}"]
                print(
                    f"HTTP {n} {kind}: {h['rps']} req/s, p50 {h['p50_ms']} ms, p99 {h['p99_ms']} ms, "
                    f"{h['errors']} errors"
                )
    if "deploy_keys_s" in r:
        print(f"deploy -> first answer: by keys {r['deploy_keys_s']} s, by records {r['deploy_records_s']} s")
    print(json.dumps(results))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--entities", type=int, default=100_000)
    parser.add_argument("--dask-rows", type=int, default=200_000)
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--no-http", action="store_true", help="skip the deployments (sections 6-7)")
    parser.add_argument("--load-only", action="store_true", help="sections 1-2 only")
    report(main(parser.parse_args()))
