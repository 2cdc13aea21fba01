"""Resume after a failure or a kill, and atomic writes under kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from crispml import Declaration, Evaluation, Options, Step, UsageError, hookimpl, resume
from crispml.testing import plugins_with, run_with

from conftest import MeanModel, TableLoader, basic_recipe

CRISPML = str(Path(sys.executable).with_name("crispml"))


class Flaky:
    """Evaluates fine unless its switch file exists."""

    def __init__(self, switch: Path) -> None:
        self.switch = switch
        self.calls = 0

    @hookimpl
    def crispml_declare(self) -> Declaration:
        return Declaration(stages={"evaluate": Options})

    @hookimpl
    def crispml_evaluate(self) -> Evaluation:
        self.calls += 1
        if self.switch.exists():
            raise ConnectionError("backend went away")
        return Evaluation(metrics={"ok": 1.0})


def test_resume_continues_from_the_first_unfinished_stage(project: Path, table: TableLoader, mean: MeanModel) -> None:
    switch = project / "fail"
    switch.touch()
    flaky = Flaky(switch)
    plugins = {"table": table, "mean": mean, "flaky": flaky}
    recipe = basic_recipe(evaluate=Step(use="flaky"))
    failed = run_with(recipe, project=project, plugins=plugins)
    assert failed.status == "failed"
    assert failed.stage_status == {"load": "succeeded", "train": "succeeded", "evaluate": "failed"}

    switch.unlink()
    resumed = resume(failed.run_id, project=project, plugins=plugins_with(plugins))
    assert resumed.run_id == failed.run_id and resumed.status == "succeeded"
    assert resumed.stage_status == {"load": "succeeded", "train": "succeeded", "evaluate": "succeeded"}
    assert (table.calls, mean.train_calls, flaky.calls) == (1, 1, 2)  # nothing redone but the failed stage
    assert resumed.manifest["resumes"] == 1
    with pytest.raises(UsageError, match="already ended succeeded"):
        resume(failed.run_id, project=project, plugins=plugins_with(plugins))


def test_resume_of_an_unknown_run_is_a_usage_error(project: Path) -> None:
    with pytest.raises(UsageError, match="run 'nope' not found"):
        resume("nope", project=project)


def test_resume_after_kill_9(project: Path) -> None:
    (project / "data.csv").write_text("x,y\n" + "".join(f"{i},{i % 2}\n" for i in range(30)))
    (project / "slow.py").write_text(
        textwrap.dedent(
            """
            import os, time
            import crispml

            @crispml.hookimpl
            def crispml_declare():
                return crispml.Declaration(stages={"train": crispml.Options})

            @crispml.hookimpl
            def crispml_train(dataset):
                if os.environ.get("SLOW"):
                    time.sleep(60)
                return crispml.TrainedModel(model=1, flavor="t", task="regression", target="y", feature_columns=["x"])
            """
        )
    )
    (project / "recipe.yaml").write_text(
        "name: slow\nplugins: [slow]\nload: {use: files, path: data.csv, target: y}\ntrain: {use: slow}\n"
    )
    proc = subprocess.Popen(
        [CRISPML, "run", "recipe.yaml"],
        cwd=project,
        env={**os.environ, "SLOW": "1", "CRISPML_PROJECT": str(project)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 60
    manifest_path = None
    while time.time() < deadline:
        found = list((project / ".crispml" / "runs").glob("*/manifest.json"))
        if found and '"name": "train",\n      "plugin": "slow",\n      "status": "running"' in found[0].read_text():
            manifest_path = found[0]
            break
        time.sleep(0.1)
    assert manifest_path is not None, "the run never reached its train stage"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)

    listed = json.loads(
        subprocess.run(
            [CRISPML, "runs", "--json"],
            cwd=project,
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "CRISPML_PROJECT": str(project)},
        ).stdout
    )
    assert listed[0]["status"] == "interrupted"
    run_id = listed[0]["run_id"]

    done = subprocess.run(
        [CRISPML, "resume", run_id],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "CRISPML_PROJECT": str(project)},
    )
    assert done.returncode == 0, done.stderr
    manifest = json.loads(manifest_path.read_text())
    assert manifest["status"] == "succeeded"
    assert [s["status"] for s in manifest["stages"]] == ["succeeded", "succeeded"]
    assert "↺ load" in done.stderr  # reused, not reloaded


WRITER = """
import sys
from pathlib import Path
from crispml.store import atomic_write_json
target = Path(sys.argv[1])
big = {"stages": [{"name": f"s{i}", "summary": "x" * 2000} for i in range(200)]}
i = 0
while True:
    i += 1
    big["n"] = i
    atomic_write_json(target, big)
"""


def test_atomic_writes_survive_kill_9_at_any_moment(tmp_path: Path) -> None:
    target = tmp_path / "manifest.json"
    for attempt in range(15):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target)])
        time.sleep(0.3 + (attempt % 5) * 0.037)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        if target.exists():
            data = json.loads(target.read_text())  # never half-written
            assert len(data["stages"]) == 200 and data["n"] >= 1
    assert target.exists()


def test_resume_from_another_folder(project: Path) -> None:
    sub = project / "sub"
    sub.mkdir()
    (sub / "data.csv").write_text("x,y\n" + "".join(f"{i},{i % 2}\n" for i in range(30)))
    (sub / "flaky.py").write_text(
        textwrap.dedent(
            """
            import os
            import crispml

            @crispml.hookimpl
            def crispml_declare():
                return crispml.Declaration(stages={"train": crispml.Options})

            @crispml.hookimpl
            def crispml_train(dataset):
                if os.environ.get("FAIL"):
                    raise RuntimeError("not yet")
                return crispml.TrainedModel(model=1, flavor="t", task="regression", target="y", feature_columns=["x"])
            """
        )
    )
    (sub / "recipe.yaml").write_text(
        "name: fl\nplugins: [flaky]\nload: {use: files, path: data.csv, target: y}\ntrain: {use: flaky}\n"
    )
    env = {**os.environ, "CRISPML_PROJECT": str(project)}
    failed = subprocess.run(
        [CRISPML, "run", "sub/recipe.yaml"], cwd=project, capture_output=True, text=True, env={**env, "FAIL": "1"}
    )
    assert failed.returncode == 1
    run_id = json.loads(
        subprocess.run([CRISPML, "runs", "--json"], cwd=project, capture_output=True, text=True, env=env).stdout
    )[0]["run_id"]
    done = subprocess.run([CRISPML, "resume", run_id], cwd=sub, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
