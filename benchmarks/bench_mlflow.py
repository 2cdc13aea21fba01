"""What MLflow tracking and registration cost, measured in one run (figures in docs/performance.md).

    .venv/bin/python benchmarks/bench_mlflow.py [--repeat 5]

1. The quickstart with and without ``tracking: [mlflow]`` (in one process, after a warm-up run;
   median of ``--repeat`` full runs, no cache): the ratio is the cost of tracking.
2. Logging + registering one small model in a fresh process: with MLflow's defaults (it infers
   pip requirements by loading the model in a subprocess) and the way crispml does it
   (requirements pinned from the installed versions).
3. The register stage (log, register, champion/challenger decision) and a promotion: medians.
4. ``crispml models`` (the real command, a fresh process) on a registry with 100 versions.

Everything happens in a temporary project on the embedded SQLite store.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "examples" / "quickstart"
CRISPML = str(Path(sys.executable).with_name("crispml"))
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def recipe_file(project: Path, name: str, **changes: Any) -> Path:
    recipe = yaml.safe_load((QUICKSTART / "recipe.yaml").read_text())
    # The quickstart also deploys (BentoML): not what is measured here, and a recipe with deploy
    # but without register does not check.
    for key in ("tracking", "register", "deploy"):
        recipe.pop(key, None)
    recipe.update({k: v for k, v in changes.items() if v is not None})
    path = project / name
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def timed(fn: Any) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def fresh_process(code: str, cwd: Path) -> float:
    """Wall time of a fresh Python process running ``code`` (it prints its own timing)."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    return float(done.stdout.strip().splitlines()[-1])


LOG_AND_REGISTER = """
    import os, time, warnings
    warnings.simplefilter("ignore")
    import mlflow, mlflow.sklearn, pandas as pd, sklearn
    from sklearn.linear_model import LogisticRegression
    frame = pd.read_csv({csv!r}).select_dtypes("number")
    X, y = frame.drop(columns=["churned"]), frame["churned"]
    model = LogisticRegression(max_iter=500).fit(X, y)
    uri = "sqlite:///" + os.path.abspath("{db}")
    mlflow.set_tracking_uri(uri); mlflow.set_registry_uri(uri)
    mlflow.set_experiment("bench")
    with mlflow.start_run():
        t0 = time.perf_counter()
        mlflow.sklearn.log_model(model, name="model", input_example=X.head(5),
                                 registered_model_name="{name}"{extra})
        print(time.perf_counter() - t0)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    import crispml

    tmp = Path(tempfile.mkdtemp(prefix="crispml-bench-mlflow-"))
    project = tmp / "project"
    shutil.copytree(QUICKSTART, project)
    shutil.rmtree(project / ".crispml", ignore_errors=True)
    os.chdir(project)
    figures: dict[str, str] = {}
    try:
        # 1. tracking overhead
        plain = recipe_file(project, "plain.yaml")
        tracked = recipe_file(project, "tracked.yaml", tracking=["mlflow"])
        for recipe in (plain, tracked):  # warm-up: imports, the store's migrations
            assert crispml.run(recipe, use_cache=False).status == "succeeded"
        t_plain, t_tracked = [], []
        for _ in range(args.repeat):
            t_plain.append(timed(lambda: crispml.run(plain, use_cache=False)))
            t_tracked.append(timed(lambda: crispml.run(tracked, use_cache=False)))
        mp, mt = statistics.median(t_plain), statistics.median(t_tracked)
        figures["quickstart, no tracking (median)"] = f"{mp:.3f} s"
        figures["quickstart, tracking: [mlflow] (median)"] = f"{mt:.3f} s"
        figures["tracking cost ratio"] = f"{mt / mp:.2f}x (+{(mt - mp) * 1000:.0f} ms per run)"

        # 2. log + register one model in a fresh process: MLflow's defaults vs pinned requirements
        csv = str(project / "data" / "churn.csv")
        default = fresh_process(
            LOG_AND_REGISTER.format(csv=csv, db="defaults.db", name="bench_defaults", extra=""), tmp
        )
        pinned = fresh_process(
            LOG_AND_REGISTER.format(
                csv=csv,
                db="pinned.db",
                name="bench_pinned",
                extra=', pip_requirements=[f"mlflow=={mlflow.__version__}", '
                'f"scikit-learn=={sklearn.__version__}"], serialization_format="cloudpickle"',
            ),
            tmp,
        )
        figures["log+register, MLflow defaults (fresh process)"] = f"{default:.2f} s"
        figures["log+register, pinned requirements (fresh process)"] = f"{pinned:.2f} s"
        register_recipe = recipe_file(
            project,
            "register.yaml",
            tracking=["mlflow"],
            register={"use": "mlflow", "model_name": "churn", "compare_on": "roc_auc"},
        )
        first_register = fresh_process(
            f"""
            import crispml
            r = crispml.run({str(register_recipe)!r}, use_cache=False)
            assert r.status == "succeeded", r.error
            print(next(s["duration"] for s in r.manifest["stages"] if s["name"] == "register"))
            """,
            project,
        )
        figures["crispml register stage, first in a fresh process"] = f"{first_register:.2f} s"

        # 3. register (+ gate) and promote, medians in a warm process. Each repeat trains a model
        # whose train fingerprint is new (max_iter varies; the fit converges well before), so each
        # registers a genuinely new version instead of finding the unchanged model registered;
        # C alternates so the gate both promotes and rejects.
        durations = []
        seen: set[str] = set()
        for i in range(args.repeat * 2):
            c = 1.0 if i % 2 == 0 else 0.01
            r = crispml.run(
                register_recipe,
                use_cache=False,
                overrides=[f"train.params.C={c}", f"train.params.max_iter={501 + i}"],
            )
            assert r.status in ("succeeded", "rejected"), r.error
            version = r["model_version"].version
            assert version not in seen, f"repeat {i} did not register a new version ({version})"
            seen.add(version)
            durations.append(next(s["duration"] for s in r.manifest["stages"] if s["name"] == "register"))
        figures["register stage (log, register, gate), median"] = f"{statistics.median(durations) * 1000:.0f} ms"
        from crispml_mlflow import _backend, _champion, _listing, _tags

        uri = _backend.embedded_uri(project)
        client = _backend.client(uri, project)
        versions = [v.version for v in client.search_model_versions("name='churn'")]
        promos = []
        for i in range(args.repeat * 2):
            version = str(versions[i % 2])
            if str(_tags.champion_of(client, "churn").version) == version:
                version = str(versions[(i + 1) % 2])
            promos.append(timed(lambda v=version: _champion.promote(client, project, uri, "churn", v, "bench")))
        figures["promote (move champion + audit tags), median"] = f"{statistics.median(promos) * 1000:.0f} ms"

        # 4. crispml models on a registry with 100 versions
        source = client.get_model_version("churn", str(versions[0]))
        existing = len(versions)
        for i in range(100 - existing):
            client.create_model_version(
                "churn",
                source.source,
                run_id=source.run_id,
                tags={"crispml.metric.roc_auc": str(0.7 + i / 1000)},
                model_id=source.model_id,
            )
        assert len(client.search_model_versions("name='churn'", max_results=1000)) == 100
        t_api = statistics.median(timed(lambda: _listing.list_models(client)) for _ in range(args.repeat))
        walls = []
        for _ in range(3):
            t0 = time.perf_counter()
            done = subprocess.run([CRISPML, "models", "--json"], cwd=project, capture_output=True, text=True)
            walls.append(time.perf_counter() - t0)
            assert done.returncode == 0, done.stderr
        figures["crispml models, 100 versions: listing (in-process, median)"] = f"{t_api * 1000:.0f} ms"
        figures["crispml models --json, 100 versions: command wall time (median of 3)"] = (
            f"{statistics.median(walls):.2f} s"
        )
    finally:
        os.chdir(REPO)
        shutil.rmtree(tmp, ignore_errors=True)

    width = max(len(k) for k in figures)
    for key, value in figures.items():
        print(f"{key:<{width}}  {value}")


if __name__ == "__main__":
    main()
