"""Caching: a stage reuses its stored result only when nothing it depends on changed."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from crispml import Recipe, Step
from crispml.plugins import get_plugins
from crispml.testing import run_with

from conftest import MeanModel, TableLoader, basic_recipe

CRISPML = str(Path(sys.executable).with_name("crispml"))


def test_second_run_is_all_cached_and_gives_the_same_results(project: Path, fakes: dict[str, object]) -> None:
    first = run_with(basic_recipe(), project=project, plugins=fakes)
    second = run_with(basic_recipe(), project=project, plugins=fakes)
    assert set(second.stage_status.values()) == {"cached"}
    assert second["evaluation"].metrics == first["evaluation"].metrics
    assert fakes["table"].calls == 1 and fakes["mean"].train_calls == 1  # type: ignore[attr-defined]


def test_no_cache_runs_everything(project: Path, fakes: dict[str, object]) -> None:
    run_with(basic_recipe(), project=project, plugins=fakes)
    again = run_with(basic_recipe(), project=project, plugins=fakes, use_cache=False)
    assert set(again.stage_status.values()) == {"succeeded"}


def test_step_level_cache_false_reruns_that_step(project: Path, fakes: dict[str, object]) -> None:
    run_with(basic_recipe(), project=project, plugins=fakes)
    again = run_with(basic_recipe(train=Step(use="mean", cache=False)), project=project, plugins=fakes)
    assert again.stage_status == {"load": "cached", "train": "succeeded", "evaluate": "succeeded"}


def test_changed_options_rerun_that_stage_and_downstream(project: Path, fakes: dict[str, object]) -> None:
    run_with(basic_recipe(), project=project, plugins=fakes)
    again = run_with(basic_recipe(), project=project, plugins=fakes, overrides=["train.bias=0.1"])
    assert again.stage_status == {"load": "cached", "train": "succeeded", "evaluate": "succeeded"}
    assert again["evaluation"].metrics["score"] == 0.9


def test_changed_split_reruns_from_load(project: Path, fakes: dict[str, object]) -> None:
    run_with(basic_recipe(), project=project, plugins=fakes)
    again = run_with(basic_recipe(), project=project, plugins=fakes, overrides=["split.seed=7"])
    assert set(again.stage_status.values()) == {"succeeded"}


def test_changed_data_file_reruns_everything(project: Path, mean: MeanModel) -> None:
    data = project / "data.csv"
    data.write_text("x,y\n" + "".join(f"{i},{i % 2}\n" for i in range(20)))
    recipe = Recipe(name="files", load=Step(use="files", path=str(data), target="y"), train=Step(use="mean"))
    run_with(recipe, project=project, plugins={"mean": mean})
    assert set(run_with(recipe, project=project, plugins={"mean": mean}).stage_status.values()) == {"cached"}
    data.write_text("x,y\n" + "".join(f"{i * 2},{i % 2}\n" for i in range(20)))
    again = run_with(recipe, project=project, plugins={"mean": mean})
    assert again.stage_status == {"load": "succeeded", "train": "succeeded"}
    assert mean.train_calls == 2


def test_changed_plugin_version_reruns_its_stages(project: Path, table: TableLoader, mean: MeanModel) -> None:
    def plugins(version: str):  # type: ignore[no-untyped-def]
        pl = get_plugins()
        pl.register(table, "table", version="1.0")
        pl.register(mean, "mean", version=version)
        return pl

    from crispml import run

    run(basic_recipe(), project=project, plugins=plugins("1.0"))
    assert set(run(basic_recipe(), project=project, plugins=plugins("1.0")).stage_status.values()) == {"cached"}
    again = run(basic_recipe(), project=project, plugins=plugins("1.1"))
    assert again.stage_status == {"load": "cached", "train": "succeeded", "evaluate": "succeeded"}


def _user_project(project: Path) -> Path:
    (project / "data.csv").write_text("x,y\n" + "".join(f"{i},{i % 2}\n" for i in range(30)))
    (project / "helpers.py").write_text("def scale(value):\n    return value * 2\n")
    (project / "steps.py").write_text(
        textwrap.dedent(
            """
            import crispml
            from helpers import scale

            class Opts(crispml.Options):
                pass

            @crispml.hookimpl
            def crispml_declare():
                return crispml.Declaration(stages={"train": Opts})

            @crispml.hookimpl
            def crispml_train(dataset):
                value = scale(float(dataset.train_frame["x"].sum()))
                return crispml.TrainedModel(model=value, flavor="test", task="regression",
                                            target="y", feature_columns=["x"], metrics={"value": value})
            """
        )
    )
    recipe = project / "recipe.yaml"
    recipe.write_text(
        "name: user-code\nplugins: [steps]\nload: {use: files, path: data.csv, target: y}\ntrain: {use: steps}\n"
    )
    return recipe


def _run(project: Path) -> str:
    env = {**os.environ, "CRISPML_PROJECT": str(project)}
    proc = subprocess.run(
        [CRISPML, "run", "recipe.yaml"], cwd=project, capture_output=True, text=True, timeout=120, env=env
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stderr


def _value(out: str) -> float:
    return float(out.split("value=")[1].split()[0])


def test_a_changed_helper_called_by_a_users_step_invalidates_the_cache(project: Path) -> None:
    """A peer serves stale results when only a helper changes; crispml must not."""
    _user_project(project)
    first = _run(project)
    assert "train     steps              succeeded" in first
    assert "train     steps              cached" in _run(project)
    (project / "helpers.py").write_text("def scale(value):\n    return value * 3\n")
    out = _run(project)
    assert "train     steps              succeeded" in out
    assert "load      files              cached" in out  # the helper is not load's code
    assert _value(out) == _value(first) / 2 * 3  # the new helper really ran


def test_a_changed_user_plugin_module_invalidates_the_cache(project: Path) -> None:
    _user_project(project)
    first = _run(project)
    steps = project / "steps.py"
    steps.write_text(steps.read_text().replace("value = scale(", "value = 1 + scale("))
    out = _run(project)
    assert "train     steps              succeeded" in out and _value(out) == _value(first) + 1


def test_a_changed_helper_behind_a_relative_import_invalidates_the_cache(project: Path) -> None:
    _user_project(project)
    pkg = project / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "helpers.py").write_text("def scale(value):\n    return value * 2\n")
    (pkg / "steps.py").write_text(
        (project / "steps.py").read_text().replace("from helpers import scale", "from .helpers import scale")
    )
    (project / "recipe.yaml").write_text(
        (project / "recipe.yaml").read_text().replace("[steps]", "[pkg.steps]").replace("use: steps", "use: pkg.steps")
    )
    first = _run(project)
    (pkg / "helpers.py").write_text("def scale(value):\n    return value * 5\n")
    out = _run(project)
    assert "train     pkg.steps          succeeded" in out
    assert _value(out) == _value(first) / 2 * 5


def test_a_changed_user_estimator_invalidates_train(project: Path, churn_csv: Path) -> None:
    import shutil

    shutil.copy(churn_csv, project / "churn.csv")
    (project / "mymodels.py").write_text(
        "from sklearn.linear_model import LogisticRegression\n\nclass Mine(LogisticRegression):\n    pass\n"
    )
    (project / "recipe.yaml").write_text(
        "name: own\nload: {use: files, path: churn.csv, target: churned}\n"
        "train: {use: sklearn, estimator: mymodels.Mine, params: {max_iter: 300}}\n"
        "evaluate: {use: sklearn, metrics: [accuracy], plots: false}\n"
    )
    assert "train     sklearn            succeeded" in _run(project)
    assert "train     sklearn            cached" in _run(project)
    (project / "mymodels.py").write_text(
        "from sklearn.linear_model import LogisticRegression\n\n"
        "class Mine(LogisticRegression):\n"
        "    def predict(self, X):\n        return super().predict(X) * 0\n"
    )
    out = _run(project)
    assert "train     sklearn            succeeded" in out
    assert "load      files              cached" in out


_SCORER = """
import crispml

@crispml.hookimpl
def crispml_declare():
    return crispml.Declaration(stages={"evaluate": crispml.Options})

@crispml.hookimpl
def crispml_evaluate(model):
    return crispml.Evaluation(metrics={"value": float(model.model)})
"""

_TRAIN = """
import crispml
{imports}

@crispml.hookimpl
def crispml_declare():
    return crispml.Declaration(stages={{"train": crispml.Options}})

@crispml.hookimpl
def crispml_train(dataset):
    value = scale(float(dataset.train_frame["x"].sum()))
    return crispml.TrainedModel(model=value, flavor="test", task="regression", target="y", feature_columns=["x"])
"""

# How the train step reaches the constant that changes: (files to write, module to name, file changed).
_LAYOUTS = {
    "direct": (
        {
            "steps.py": _TRAIN.format(imports="from helpers import scale"),
            "helpers.py": "from consts import FACTOR\n\ndef scale(v):\n    return v * FACTOR\n",
            "consts.py": "FACTOR = 2\n",
        },
        "steps",
        "consts.py",
    ),
    "relative": (
        {
            "pkg/__init__.py": "",
            "pkg/steps.py": _TRAIN.format(imports="from .helpers import scale"),
            "pkg/helpers.py": "from .consts import FACTOR\n\ndef scale(v):\n    return v * FACTOR\n",
            "pkg/consts.py": "FACTOR = 2\n",
        },
        "pkg.steps",
        "pkg/consts.py",
    ),
    "importlib": (  # loaded by a computed name when the plugin module is imported
        {
            "steps.py": _TRAIN.format(
                imports="import importlib\nscale = importlib.import_module('_'.join(['dyn', 'helpers'])).scale"
            ),
            "dyn_helpers.py": "from consts import FACTOR\n\ndef scale(v):\n    return v * FACTOR\n",
            "consts.py": "FACTOR = 2\n",
        },
        "steps",
        "consts.py",
    ),
    "package": (
        {
            "steps.py": _TRAIN.format(imports="import mathlib\nscale = mathlib.scale"),
            "mathlib/__init__.py": "from mathlib.ops import scale\n",
            "mathlib/ops.py": "from mathlib.consts import FACTOR\n\ndef scale(v):\n    return v * FACTOR\n",
            "mathlib/consts.py": "FACTOR = 2\n",
        },
        "steps",
        "mathlib/consts.py",
    ),
}


def _manifest_of_last_run(project: Path, before: set[str]) -> dict[str, object]:
    import json

    (run_id,) = {p.name for p in (project / ".crispml" / "runs").iterdir()} - before
    return json.loads((project / ".crispml" / "runs" / run_id / "manifest.json").read_text())  # type: ignore[no-any-return]


@pytest.mark.parametrize("layout", sorted(_LAYOUTS))
def test_a_changed_module_behind_the_train_step_reruns_everything_downstream(project: Path, layout: str) -> None:
    """Issue 9 §1: evaluate (another plugin, which imports none of train's code) must not come
    back cached with the old model's metrics when only a constant train reached changed."""
    files, module, changing = _LAYOUTS[layout]
    (project / "data.csv").write_text("x,y\n" + "".join(f"{i},{i % 2}\n" for i in range(30)))
    for name, text in {**files, "scorer.py": _SCORER}.items():
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text(text)
    (project / "recipe.yaml").write_text(
        f"name: downstream\nplugins: [{module}, scorer]\nload: {{use: files, path: data.csv, target: y}}\n"
        f"train: {{use: {module}}}\nevaluate: {{use: scorer}}\n"
    )

    def run() -> tuple[dict[str, str], float]:
        runs = project / ".crispml" / "runs"
        before = {p.name for p in runs.iterdir()} if runs.is_dir() else set()
        _run(project)
        manifest = _manifest_of_last_run(project, before)
        stages = manifest["stages"]
        assert isinstance(stages, list)
        return {s["name"]: s["status"] for s in stages}, float(stages[2]["summary"]["metrics"]["value"])

    first = run()
    assert first[0] == {"load": "succeeded", "train": "succeeded", "evaluate": "succeeded"}
    assert run() == ({"load": "cached", "train": "cached", "evaluate": "cached"}, first[1])
    (project / changing).write_text("FACTOR = 3\n")
    changed = run()
    assert changed[0] == {"load": "cached", "train": "succeeded", "evaluate": "succeeded"}
    assert changed[1] == first[1] / 2 * 3  # evaluate saw the new model, not the stale one
    assert run() == ({"load": "cached", "train": "cached", "evaluate": "cached"}, changed[1])
