"""A stage is a unit a runner can retry and run elsewhere: retries, the stage graph, and
``crispml.start_run`` / ``run_stage`` / ``finish_run`` in this process and in others."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import crispml
from crispml import (
    Declaration,
    Options,
    StageError,
    Step,
    TrainedModel,
    UsageError,
    hookimpl,
)
from crispml.stages import needs
from crispml.testing import Recorder, plugins_with, run_with

from conftest import MeanModel, TableLoader, TrainOptions, basic_recipe


class FailsTwice(MeanModel):
    """Trains like :class:`MeanModel` but raises on its first ``failures`` calls."""

    def __init__(self, failures: int = 2) -> None:
        super().__init__()
        self.failures = failures

    @hookimpl
    def crispml_train(self, options: TrainOptions, dataset: Any) -> TrainedModel:
        if self.train_calls < self.failures:
            self.train_calls += 1
            raise ConnectionError(f"backend went away (call {self.train_calls})")
        return super().crispml_train(options, dataset)


class Retrying:
    """An in-process runner that runs a failed stage again, up to ``retries`` times."""

    def __init__(self, retries: int = 2) -> None:
        self.retries = retries
        self.statuses: list[tuple[str, str]] = []

    @hookimpl
    def crispml_declare(self) -> Declaration:
        return Declaration(runner=Options)

    @hookimpl
    def crispml_execute(self, plan: Any) -> str:
        for name in plan.stage_names:
            for _ in range(1 + self.retries):
                try:
                    status = plan.run_stage(name)
                except StageError:
                    self.statuses.append((name, "failed"))
                    continue
                self.statuses.append((name, status))
                if status == "rejected":
                    # A rejection is an outcome: asking again must not run the stage again.
                    assert plan.run_stage(name) == "rejected"
                break
        return str(plan.finish())


def _record(manifest: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in manifest["stages"] if s["name"] == name)


# -- retries in one process -----------------------------------------------------------------


def test_a_failed_stage_is_retried_in_the_same_run_and_keeps_every_attempt(project: Path, table: TableLoader) -> None:
    flaky, recorder, runner = FailsTwice(2), Recorder(), Retrying(retries=2)
    recipe = basic_recipe(train=Step(use="mean"), runner={"use": "retrying"})
    plugins = {"table": table, "mean": flaky, "rec": recorder, "retrying": runner}
    result = run_with(recipe, project=project, plugins=plugins)
    assert result.status == "succeeded" and result.exit_code == 0 and result.error is None
    assert result.stage_status == {"load": "succeeded", "train": "succeeded", "evaluate": "succeeded"}
    assert [s for n, s in runner.statuses if n == "train"] == ["failed", "failed", "succeeded"]
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert manifest["status"] == "succeeded" and manifest["error"] is None
    train = _record(manifest, "train")
    assert [a["error"] is None for a in train["attempts"]] == [False, False, True]
    assert "backend went away (call 1)" in train["attempts"][0]["error"]
    assert "backend went away (call 2)" in train["attempts"][1]["error"]
    assert all(a["duration"] >= 0 and a["started"] for a in train["attempts"])
    assert train["error"] is None and train["started"] == train["attempts"][-1]["started"]
    assert [len(_record(manifest, n)["attempts"]) for n in ("load", "evaluate")] == [1, 1]
    assert train.get("pid") is None  # a record names its process only while it runs
    assert recorder.events().count("on_stage_error:train") == 2
    assert recorder.events()[-1] == "after_run:succeeded"
    assert result["evaluation"].metrics == {"score": 1.0}


def test_a_stage_failing_past_its_retries_fails_the_run(project: Path, table: TableLoader) -> None:
    flaky, runner = FailsTwice(5), Retrying(retries=2)
    recipe = basic_recipe(runner={"use": "retrying"})
    result = run_with(recipe, project=project, plugins={"table": table, "mean": flaky, "retrying": runner})
    assert result.status == "failed" and result.exit_code == 1
    assert result.stage_status == {"load": "succeeded", "train": "failed", "evaluate": "skipped"}
    assert len(_record(result.manifest, "train")["attempts"]) == 3
    assert "(call 3)" in result.manifest["error"] and isinstance(result.error, StageError)
    assert ("evaluate", "skipped") in runner.statuses  # a stage whose input failed does not run


def test_a_rejection_is_not_retried(project: Path, fakes: dict[str, object]) -> None:
    runner, recorder = Retrying(retries=3), Recorder()
    recipe = basic_recipe(
        train=Step(use="mean", bias=0.4),
        evaluate=Step(use="mean", gate={"score": ">= 0.9"}),
        runner={"use": "retrying"},
    )
    result = run_with(recipe, project=project, plugins={**fakes, "retrying": runner, "rec": recorder})
    assert result.status == "rejected" and result.exit_code == 3
    assert fakes["mean"].eval_calls == 1  # type: ignore[attr-defined]
    assert len(_record(result.manifest, "evaluate")["attempts"]) == 1
    assert result.manifest["rejection"].startswith("evaluate: score = 0.6")
    assert "on_stage_error:evaluate" not in recorder.events()


def test_stages_after_a_failure_end_skipped_under_the_local_runner(project: Path, table: TableLoader) -> None:
    result = run_with(basic_recipe(), project=project, plugins={"table": table, "mean": FailsTwice(1)})
    assert result.stage_status == {"load": "succeeded", "train": "failed", "evaluate": "skipped"}
    assert len(_record(result.manifest, "train")["attempts"]) == 1
    assert _record(result.manifest, "evaluate")["attempts"] == []


# -- the stage graph ---------------------------------------------------------------------------


def test_the_stage_graph_is_public() -> None:
    assert needs("load") == []
    assert needs("evaluate") == ["train", "load"]
    assert needs("validate") == ["load"] and needs("train") == ["load"]  # side by side
    # Stages that act outside the run wait for every gate before them.
    assert needs("register") == ["train", "evaluate", "load", "validate"]
    assert needs("register", ["load", "train", "register"]) == ["train", "load"]
    assert needs("deploy", ["load", "train", "register", "deploy"]) == ["register", "train", "load"]
    with pytest.raises(KeyError, match="unknown stage 'fit'"):
        needs("fit")


def test_the_plan_knows_its_recipes_graph(project: Path, fakes: dict[str, object]) -> None:
    seen: dict[str, list[str]] = {}

    class Peek:
        @hookimpl
        def crispml_declare(self) -> Declaration:
            return Declaration(runner=Options)

        @hookimpl
        def crispml_execute(self, plan: Any) -> str:
            seen.update({n: plan.needs(n) for n in plan.stage_names})
            return str(plan.finish())

    run_with(basic_recipe(runner={"use": "peek"}), project=project, plugins={**fakes, "peek": Peek()})
    assert seen == {"load": [], "train": ["load"], "evaluate": ["train", "load"]}


# -- start_run / run_stage / finish_run ----------------------------------------------------------


def test_a_run_started_then_run_stage_by_stage_then_finished(project: Path, fakes: dict[str, object]) -> None:
    recorder = Recorder()
    plugins = {**fakes, "rec": recorder}
    run_id = crispml.start_run(basic_recipe(), project=project, plugins=plugins_with(plugins))
    manifest = json.loads((project / ".crispml" / "runs" / run_id / "manifest.json").read_text())
    assert manifest["status"] == "running" and {s["status"] for s in manifest["stages"]} == {"pending"}
    assert recorder.events() == ["before_run"]

    with pytest.raises(UsageError, match="stage 'evaluate' needs stage 'train', which has not run yet"):
        crispml.run_stage(project, run_id, "evaluate", plugins=plugins_with(plugins))
    for name in ("load", "train", "evaluate"):
        assert crispml.run_stage(project, run_id, name, plugins=plugins_with(plugins)) == "succeeded"
    # Asked again, a stage that is done is not run again.
    assert crispml.run_stage(project, run_id, "train", plugins=plugins_with(plugins)) == "succeeded"
    assert fakes["mean"].train_calls == 1  # type: ignore[attr-defined]

    result = crispml.finish_run(project, run_id, plugins=plugins_with(plugins))
    assert result.status == "succeeded" and result.exit_code == 0
    assert result["evaluation"].metrics == {"score": 1.0}  # read from the run store
    assert recorder.events().count("after_run:succeeded") == 1
    again = crispml.finish_run(project, run_id, plugins=plugins_with(plugins))
    assert again.status == "succeeded" and recorder.events().count("after_run:succeeded") == 1
    with pytest.raises(UsageError, match="already ended succeeded"):
        crispml.run_stage(project, run_id, "train", plugins=plugins_with(plugins))


def test_finish_run_marks_what_never_ran_skipped(project: Path, fakes: dict[str, object]) -> None:
    run_id = crispml.start_run(basic_recipe(), project=project, plugins=plugins_with(fakes))
    crispml.run_stage(project, run_id, "load", plugins=plugins_with(fakes))
    result = crispml.finish_run(project, run_id, plugins=plugins_with(fakes))
    assert result.status == "succeeded"  # nothing failed; what did not run is skipped
    assert result.stage_status == {"load": "succeeded", "train": "skipped", "evaluate": "skipped"}


def test_run_stage_of_an_unknown_run_or_stage_is_a_usage_error(project: Path, fakes: dict[str, object]) -> None:
    with pytest.raises(UsageError, match="run 'nope' not found"):
        crispml.run_stage(project, "nope", "train")
    run_id = crispml.start_run(basic_recipe(), project=project, plugins=plugins_with(fakes))
    with pytest.raises(UsageError, match=r"has no stage 'register' \(its stages: load, train, evaluate\)"):
        crispml.run_stage(project, run_id, "register", plugins=plugins_with(fakes))


def test_a_stage_that_failed_in_another_call_fails_the_finished_run(project: Path, table: TableLoader) -> None:
    plugins = {"table": table, "mean": FailsTwice(1)}
    run_id = crispml.start_run(basic_recipe(), project=project, plugins=plugins_with(plugins))
    crispml.run_stage(project, run_id, "load", plugins=plugins_with(plugins))
    with pytest.raises(StageError, match="call 1"):
        crispml.run_stage(project, run_id, "train", plugins=plugins_with(plugins))
    assert crispml.run_stage(project, run_id, "evaluate", plugins=plugins_with(plugins)) == "skipped"
    result = crispml.finish_run(project, run_id, plugins=plugins_with(plugins))
    assert result.status == "failed" and result.exit_code == 1
    error = "stage 'train' (plugin 'mean') failed: ConnectionError: backend went away (call 1)"
    assert result.manifest["error"] == error
    assert isinstance(result.error, StageError) and result.error.stage == "train"


def test_the_same_stage_in_two_threads_at_once_is_refused(project: Path, table: TableLoader) -> None:
    import threading

    started, release = threading.Event(), threading.Event()

    class Slow(MeanModel):
        @hookimpl
        def crispml_train(self, options: TrainOptions, dataset: Any) -> TrainedModel:
            started.set()
            assert release.wait(60)
            return super().crispml_train(options, dataset)

    plugins = {"table": table, "mean": Slow()}
    run_id = crispml.start_run(basic_recipe(), project=project, plugins=plugins_with(plugins))
    crispml.run_stage(project, run_id, "load", plugins=plugins_with(plugins))
    statuses: list[str] = []
    first = threading.Thread(
        target=lambda: statuses.append(crispml.run_stage(project, run_id, "train", plugins=plugins_with(plugins)))
    )
    first.start()
    try:
        assert started.wait(60)
        with pytest.raises(UsageError, match=f"stage 'train' of run '{run_id}' is already running"):
            crispml.run_stage(project, run_id, "train", plugins=plugins_with(plugins))
        with pytest.raises(UsageError, match=f"stage 'train' of run '{run_id}' is still running"):
            crispml.finish_run(project, run_id, plugins=plugins_with(plugins))
    finally:
        release.set()
        first.join(60)
    assert statuses == ["succeeded"]
    assert crispml.finish_run(project, run_id, plugins=plugins_with(plugins)).stage_status == {
        "load": "succeeded",
        "train": "succeeded",
        "evaluate": "skipped",
    }
