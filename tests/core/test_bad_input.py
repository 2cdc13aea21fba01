"""Each user mistake: a one-line error naming file, field (and YAML line) and what was expected;
exit 2; nothing has run and nothing is written."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from crispml.errors import EXIT_USAGE

BASE = "name: t\nload: {use: files, path: churn.csv, target: churned}\n"

CASES = {
    "unknown plugin": (
        BASE + "train: {use: skleran}\n",
        "r.yaml:3: train.use: no plugin named 'skleran' is installed; did you mean 'sklearn'? installed: ",
    ),
    "plugin lacks the stage": (
        BASE + "train: {use: files}\n",
        "r.yaml:3: train.use: plugin 'files' does not provide stage 'train'",
    ),
    "unknown option": (
        BASE + "train:\n  use: sklearn\n  estimater: x\n",
        "r.yaml:5: train.estimater: unknown option (did you mean 'estimator'?",
    ),
    "option of the wrong type": (
        BASE + "train:\n  use: sklearn\n  preprocess: maybe\n",
        "r.yaml:5: train.preprocess: expected a valid boolean",
    ),
    "estimator parameter of the wrong type": (
        BASE + "train:\n  use: sklearn\n  params: {C: abc}\n",
        "r.yaml:5: train.params: The 'C' parameter of LogisticRegression must be a float",
    ),
    "malformed YAML": (
        BASE + "train:\n  use: sklearn\n   params: {C: 1}\n",
        "r.yaml:5: malformed YAML: mapping values are not allowed here",
    ),
    "missing data file": (
        "name: t\nload: {use: files, path: nope.csv, target: churned}\n",
        "r.yaml:2: load.path: file not found:",
    ),
    "target column absent": (
        "name: t\nload: {use: files, path: churn.csv, target: churn}\n",
        "r.yaml:2: load.target: column 'churn' is not in churn.csv (columns: tenure_months,",
    ),
    "malformed gate": (
        BASE + "train: {use: sklearn}\nevaluate:\n  use: sklearn\n  gate: {accuracy: '~0.9'}\n",
        """r.yaml:6: evaluate.gate.accuracy: expected a comparison like ">= 0.9", got '~0.9'""",
    ),
    "unknown metric name": (
        BASE + "train: {use: sklearn}\nevaluate:\n  use: sklearn\n  metrics: [acuracy]\n",
        "r.yaml:6: evaluate.metrics: unknown metric 'acuracy' (did you mean accuracy",
    ),
    "gate on a metric the step does not compute": (
        BASE + "train: {use: sklearn}\nevaluate:\n  use: sklearn\n  gate: {f1: '>= 0.5'}\n",
        "r.yaml:6: evaluate.gate.f1: metric 'f1' is not computed by this step (it computes: accuracy)",
    ),
    "unknown recipe field": (
        BASE + "trian: {use: sklearn}\n",
        "r.yaml:3: trian: unknown field",
    ),
    "data path is a folder": (
        "name: t\nload: {use: files, path: ., target: churned}\n",
        "r.yaml:2: load.path: expected a CSV or Parquet file, got a folder",
    ),
    "train without a target": (
        "name: t\nload: {use: files, path: churn.csv}\ntrain: {use: sklearn}\n",
        "r.yaml:3: train: the load step names no target column to train on (set load.target)",
    ),
    "stage without the stage it needs": (
        BASE + "evaluate: {use: sklearn}\n",
        "r.yaml:3: evaluate: stage 'evaluate' needs a 'train' step in the recipe",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_recipe(case: str, project: Path, crispml_cli, churn_csv: Path) -> None:  # type: ignore[no-untyped-def]
    text, expected = CASES[case]
    shutil.copy(churn_csv, project / "churn.csv")
    (project / "r.yaml").write_text(text)
    for command in ("run", "check"):
        proc = crispml_cli(command, "r.yaml")
        assert proc.returncode == EXIT_USAGE, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1, proc.stderr
        assert lines[0].startswith("crispml: error: ") and expected in lines[0], lines[0]
        assert "Traceback" not in proc.stderr
        assert not (project / ".crispml").exists()  # nothing ran, nothing written


def test_bad_override(project: Path, crispml_cli, churn_csv: Path) -> None:  # type: ignore[no-untyped-def]
    shutil.copy(churn_csv, project / "churn.csv")
    (project / "r.yaml").write_text(BASE)
    proc = crispml_cli("run", "r.yaml", "--set", "lod.path=x.csv")
    assert proc.returncode == EXIT_USAGE
    assert proc.stderr.strip() == "crispml: error: --set: lod: unknown field"
    proc = crispml_cli("run", "r.yaml", "--set", "no-equals-sign")
    assert proc.returncode == EXIT_USAGE and "expected KEY=VALUE" in proc.stderr
    assert not (project / ".crispml").exists()


def test_missing_recipe_file(project: Path, crispml_cli) -> None:  # type: ignore[no-untyped-def]
    proc = crispml_cli("run", "nope.yaml")
    assert proc.returncode == EXIT_USAGE
    assert proc.stderr.strip() == "crispml: error: nope.yaml: cannot read recipe: No such file or directory"


@pytest.mark.parametrize("command", ["resume", "show"])
def test_unknown_run_id(command: str, project: Path, crispml_cli) -> None:  # type: ignore[no-untyped-def]
    proc = crispml_cli(command, "20990101-000000-abcdef")
    assert proc.returncode == EXIT_USAGE
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "run '20990101-000000-abcdef' not found" in lines[0]


def test_an_unknown_plugin_error_lists_the_installed_ones(project: Path, crispml_cli, churn_csv: Path) -> None:  # type: ignore[no-untyped-def]
    shutil.copy(churn_csv, project / "churn.csv")
    (project / "r.yaml").write_text(BASE + "train: {use: nothing_like_it}\n")
    line = crispml_cli("check", "r.yaml").stderr.strip()
    installed = line.split("installed: ")[1].split(", ")
    assert {"files", "sklearn", "local"} <= set(installed)


def test_an_override_of_a_plugin_option_is_blamed_on_set(project: Path, crispml_cli, churn_csv: Path) -> None:  # type: ignore[no-untyped-def]
    shutil.copy(churn_csv, project / "churn.csv")
    (project / "r.yaml").write_text(BASE)
    proc = crispml_cli("check", "r.yaml", "--set", "load.path=missing.csv")
    assert proc.returncode == EXIT_USAGE
    assert proc.stderr.strip().startswith("crispml: error: --set: load.path: file not found:")
