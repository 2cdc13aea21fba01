"""An unchanged re-run of the quickstart imports no backend; a changed suite is checked again.

Proved by what the re-running process has in ``sys.modules`` when it ends, never by timing.
The recipe is the quickstart's load → validate → train → evaluate (real files, Great
Expectations and scikit-learn plugins); register and deploy act on the world outside the run
and are never cached (see docs/performance.md).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
BACKENDS = {
    "sklearn",
    "great_expectations",
    "mlflow",
    "bentoml",
    "feast",
    "evidently",
    "prefect",
    "pandas",
    "numpy",
    "scipy",
    "pyarrow",
    "matplotlib",
}
_TRACE = """
import json, sys
from crispml.cli import main
try:
    main(sys.argv[2:])
except SystemExit as exc:
    code = exc.code
with open(sys.argv[1], "w") as fh:
    json.dump({"code": code, "modules": sorted({m.split(".")[0] for m in sys.modules})}, fh)
"""


@pytest.fixture
def quickstart(tmp_path: Path) -> Path:
    target = tmp_path / "qs"
    shutil.copytree(REPO / "examples" / "quickstart", target, ignore=shutil.ignore_patterns(".crispml"))
    recipe = yaml.safe_load((target / "recipe.yaml").read_text())
    kept = {k: v for k, v in recipe.items() if k not in ("register", "deploy", "tracking")}
    (target / "recipe.yaml").write_text(yaml.safe_dump(kept, sort_keys=False))
    return target


def _traced(project: Path, *args: str) -> tuple[int, set[str], str]:
    """Run ``crispml ARGS`` in a fresh process; its exit code, the top-level modules it had
    imported when it ended, and its output."""
    out = project / "modules.json"
    env = {**os.environ, "COLUMNS": "200", "CRISPML_PROJECT": str(project)}
    proc = subprocess.run(
        [sys.executable, "-c", _TRACE, str(out), *args],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    traced = json.loads(out.read_text())
    return int(traced["code"] or 0), set(traced["modules"]), proc.stdout + proc.stderr


def test_a_fully_cached_rerun_and_check_import_no_backend(quickstart: Path) -> None:
    code, first, out = _traced(quickstart, "run", "recipe.yaml")
    assert code == 0, out
    assert {"sklearn", "great_expectations", "pandas"} <= first  # the probe sees real imports
    code, modules, out = _traced(quickstart, "run", "recipe.yaml")
    assert code == 0, out
    for stage in ("load", "validate", "train", "evaluate"):
        assert f"{stage}" in out and "cached" in out.split(stage, 1)[1].splitlines()[0], out
    assert modules & BACKENDS == set(), out
    assert "crispml_great_expectations" in modules and "crispml_sklearn" in modules
    code, modules, out = _traced(quickstart, "check", "recipe.yaml")
    assert code == 0 and ": ok" in out, out
    assert modules & BACKENDS == set()


def test_a_changed_suite_is_checked_against_great_expectations_again(quickstart: Path) -> None:
    code, _, out = _traced(quickstart, "run", "recipe.yaml")
    assert code == 0, out
    suite = quickstart / "expectations" / "churn.yaml"
    suite.write_text(suite.read_text() + "- {expect: column_values_to_not_be_null, column: no_such_column}\n")
    code, modules, out = _traced(quickstart, "check", "recipe.yaml")
    assert code == 2, out
    assert "no_such_column" in out and "validate" in out and "Traceback" not in out
    assert "great_expectations" in modules  # it was really checked again


def test_a_changed_estimator_option_is_checked_by_scikit_learn_again(quickstart: Path) -> None:
    code, _, out = _traced(quickstart, "run", "recipe.yaml")
    assert code == 0, out
    code, _, out = _traced(quickstart, "check", "recipe.yaml", "--set", "train.params.no_such_param=1")
    assert code == 2, out
    assert "no_such_param" in out and "train.params" in out
