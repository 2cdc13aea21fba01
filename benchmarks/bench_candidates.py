"""Training candidates (issue: "Parallel training candidates"): 8 random forests on the quickstart
data, as ratios against scikit-learn run directly.

* scikit-learn directly: the same 8 pipelines fitted and scored in a loop, and with
  ``joblib.Parallel(n_jobs=2)`` (what ``GridSearchCV(n_jobs=2)`` does);
* crispml ``local`` (candidates in order, in-process);
* crispml ``prefect`` on the project's managed server, ``task_runner: thread`` and ``process``,
  ``max_workers: 2``.

Every crispml run has its cache off (every candidate trains). Each figure is the median of
``--repeat`` runs after one warm-up run (imports; the process pool's first start is in the
figure, as a user pays it on every run).

    .venv/bin/python benchmarks/bench_candidates.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_prefect import cli, free_port

REPO = Path(__file__).resolve().parents[1]
CHURN = REPO / "examples" / "quickstart" / "data" / "churn.csv"
GRID = {"params.max_depth": [8, 16], "params.n_estimators": [150, 300], "params.min_samples_leaf": [1, 3]}


def recipe(folder: Path, runner: Any) -> Path:
    folder.mkdir(exist_ok=True)
    data = {
        "name": "forest-search",
        "split": {"test_size": 0.25, "seed": 42, "stratify": "churned"},
        "load": {"use": "files", "path": str(CHURN), "target": "churned"},
        "train": {
            "use": "sklearn",
            "estimator": "sklearn.ensemble.RandomForestClassifier",
            "params": {"random_state": 0, "n_jobs": 1},
            "grid": GRID,
            "select": "roc_auc",
        },
        "evaluate": {"use": "sklearn", "metrics": ["roc_auc"], "plots": False},
        "runner": runner,
    }
    path = folder / f"{runner if isinstance(runner, str) else runner['task_runner']}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def median_of(repeat: int, once: Callable[[], None]) -> float:
    once()  # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        once()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def direct(n_jobs: int) -> Callable[[], None]:
    """The 8 fits with scikit-learn alone: same split, same preprocessing, same forests."""
    import itertools

    import pandas as pd
    from joblib import Parallel, delayed
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.metrics import get_scorer
    from sklearn.model_selection import train_test_split

    from crispml_sklearn._train import build_pipeline  # sklearn's ColumnTransformer + Pipeline

    frame = pd.read_csv(CHURN)
    X, y = frame.drop(columns=["churned"]), frame["churned"]
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=42, stratify=y)
    combos = list(itertools.product(*GRID.values()))

    def fit(depth: int, trees: int, leaf: int) -> float:
        forest = RandomForestClassifier(
            max_depth=depth, n_estimators=trees, min_samples_leaf=leaf, random_state=0, n_jobs=1
        )
        model = build_pipeline(forest, X_train, True).fit(X_train, y_train)
        return float(get_scorer("roc_auc")(model, X_test, y_test))

    def once() -> None:
        scores = Parallel(n_jobs=n_jobs)(delayed(fit)(*c) for c in combos)
        assert len(scores) == 8

    return once


def crispml_run(path: Path) -> Callable[[], None]:
    import crispml

    def once() -> None:
        result = crispml.run(path, project=path.parent, use_cache=False)
        assert result.status == "succeeded", result.manifest["error"]
        assert len(result.manifest.stage("train").candidates) == 8

    return once


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    os.environ.pop("PREFECT_API_URL", None)
    work = Path(tempfile.mkdtemp(prefix="crispml-bench-candidates-"))
    figures: dict[str, float] = {}
    server = work / "prefect"
    recipe(server, "local")
    try:
        figures["scikit-learn directly, in a loop"] = median_of(args.repeat, direct(1))
        figures["scikit-learn directly, joblib n_jobs=2"] = median_of(args.repeat, direct(2))
        figures["crispml local"] = median_of(args.repeat, crispml_run(recipe(work / "local", "local")))
        cli(server, "server", "start", "--port", str(free_port()))
        for kind in ("thread", "process"):
            path = recipe(server, {"use": "prefect", "task_runner": kind, "max_workers": 2})
            figures[f"crispml prefect, task_runner: {kind}, max_workers: 2"] = median_of(args.repeat, crispml_run(path))
    finally:
        cli(server, "server", "stop")
        shutil.rmtree(work, ignore_errors=True)
    base = figures["scikit-learn directly, in a loop"]
    local = figures["crispml local"]
    print(f"| 8 random-forest candidates (median of {args.repeat}) | seconds | vs sklearn loop | vs crispml local |")
    print("|---|---|---|---|")
    for name, seconds in figures.items():
        print(f"| {name} | {seconds:.1f} | {base / seconds:.2f}× | {local / seconds:.2f}× |")


if __name__ == "__main__":
    main()
