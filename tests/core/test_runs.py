"""The run plan: routing, event order, gates, outcomes, the manifest."""

from __future__ import annotations

import json
from pathlib import Path

from crispml import Declaration, Options, Recipe, Step, hookimpl
from crispml.testing import Recorder, run_with

from conftest import MeanModel, TableLoader, basic_recipe


def test_a_run_succeeds_and_passes_typed_results(project: Path, fakes: dict[str, object]) -> None:
    result = run_with(basic_recipe(), project=project, plugins=fakes)
    assert result.status == "succeeded"
    assert result.exit_code == 0
    assert result.stage_status == {"load": "succeeded", "train": "succeeded", "evaluate": "succeeded"}
    dataset = result["dataset"]
    assert len(dataset.train_frame) == 32 and len(dataset.test_frame) == 8  # default test_size 0.2
    assert result["evaluation"].metrics == {"score": 1.0}


def test_stage_hook_is_routed_to_the_named_plugin_only(project: Path, table: TableLoader) -> None:
    alpha, beta = MeanModel(), MeanModel()
    recipe = basic_recipe(train=Step(use="beta"), evaluate=Step(use="alpha"))
    result = run_with(recipe, project=project, plugins={"table": table, "alpha": alpha, "beta": beta})
    assert result.status == "succeeded"
    assert (alpha.train_calls, beta.train_calls) == (0, 1)
    assert (alpha.eval_calls, beta.eval_calls) == (1, 0)


def test_event_hooks_fire_in_order_over_a_whole_run(project: Path, fakes: dict[str, object]) -> None:
    recorder = Recorder()
    run_with(basic_recipe(), project=project, plugins={**fakes, "rec": recorder})
    assert recorder.events() == [
        "before_run",
        "before_stage:load",
        "after_stage:load:succeeded",
        "before_stage:train",
        "after_stage:train:succeeded",
        "before_stage:evaluate",
        "after_stage:evaluate:succeeded",
        "after_run:succeeded",
    ]


def test_a_failed_gate_rejects_and_nothing_downstream_runs(project: Path, fakes: dict[str, object]) -> None:
    downstream = []

    class Registry:
        @hookimpl
        def crispml_declare(self):  # type: ignore[no-untyped-def]

            return Declaration(stages={"register": Options})

        @hookimpl
        def crispml_register(self, model):  # type: ignore[no-untyped-def]
            downstream.append(model)

    recorder = Recorder()
    recipe = basic_recipe(
        train=Step(use="mean", bias=0.4),
        evaluate=Step(use="mean", gate={"score": ">= 0.9"}),
        register=Step(use="registry"),
    )
    result = run_with(recipe, project=project, plugins={**fakes, "registry": Registry(), "rec": recorder})
    assert result.status == "rejected" and result.exit_code == 3
    assert result.stage_status["evaluate"] == "rejected"
    assert result.stage_status["register"] == "skipped"
    assert downstream == []
    assert "score = 0.6, gate score >= 0.9" in result.manifest["rejection"]
    assert recorder.events()[-1] == "after_run:rejected"


def test_a_result_rejection_from_a_plugin_rejects_the_run(project: Path, table: TableLoader) -> None:
    from crispml import ValidationReport

    class Picky:
        @hookimpl
        def crispml_declare(self):  # type: ignore[no-untyped-def]
            return Declaration(stages={"validate": Options})

        @hookimpl
        def crispml_validate(self, dataset):  # type: ignore[no-untyped-def]
            return ValidationReport(success=False, rejection="x has nulls")

    mean = MeanModel()
    recipe = basic_recipe(validate=Step(use="picky"))
    result = run_with(recipe, project=project, plugins={"table": table, "mean": mean, "picky": Picky()})
    assert result.status == "rejected"
    assert result.stage_status == {
        "load": "succeeded",
        "validate": "rejected",
        "train": "skipped",
        "evaluate": "skipped",
    }
    assert mean.train_calls == 0


def test_a_crashing_stage_fails_the_run_and_is_recorded(project: Path, fakes: dict[str, object]) -> None:
    recorder = Recorder()
    result = run_with(
        basic_recipe(train=Step(use="mean", fail=True)), project=project, plugins={**fakes, "rec": recorder}
    )
    assert result.status == "failed" and result.exit_code == 1
    assert result.stage_status == {"load": "succeeded", "train": "failed", "evaluate": "skipped"}
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert manifest["status"] == "failed"
    assert "stage 'train' (plugin 'mean') failed: RuntimeError: training blew up" in manifest["error"]
    assert "on_stage_error:train" in recorder.events()
    assert recorder.events()[-1] == "after_run:failed"


def test_the_manifest_records_what_reproduces_the_run(project: Path, fakes: dict[str, object]) -> None:
    result = run_with(basic_recipe(), project=project, plugins=fakes)
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert manifest["run_id"] == result.run_id
    assert Recipe.from_dict(manifest["recipe"]) == basic_recipe()
    env = manifest["environment"]
    assert env["python"].count(".") == 2 and env["crispml"]
    assert set(env["git"]) == {"commit", "dirty"}
    assert manifest["data"]["fingerprint"] == result["dataset"].fingerprint
    for stage in manifest["stages"]:
        assert stage["status"] == "succeeded" and stage["duration"] >= 0 and len(stage["fingerprint"]) == 64
    assert (result.run_dir / "stages" / "train.pkl").is_file()


def test_split_is_seeded_and_stratified(project: Path, fakes: dict[str, object]) -> None:
    recipe = basic_recipe(split={"test_size": 0.25, "seed": 3, "stratify": "y"})
    first = run_with(recipe, project=project, plugins=fakes, use_cache=False)["dataset"]
    second = run_with(recipe, project=project, plugins=fakes, use_cache=False)["dataset"]
    assert list(first.test_index) == list(second.test_index)
    assert first.test_frame["y"].value_counts().to_dict() == {0: 5, 1: 5}
    other = run_with(basic_recipe(split={"test_size": 0.25, "seed": 4}), project=project, plugins=fakes)["dataset"]
    assert list(other.test_index) != list(first.test_index)


def test_the_manifest_records_the_git_commit_and_dirty_flag(project: Path, fakes: dict[str, object]) -> None:
    import subprocess

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=project, capture_output=True, text=True, check=True).stdout.strip()

    git("init", "-q")
    (project / "notes.txt").write_text("v1\n")
    git("add", "notes.txt")
    git("-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "first")
    clean = run_with(basic_recipe(), project=project, plugins=fakes).manifest["environment"]["git"]
    assert clean == {"commit": git("rev-parse", "HEAD"), "dirty": False}
    (project / "notes.txt").write_text("v2\n")
    dirty = run_with(basic_recipe(), project=project, plugins=fakes).manifest["environment"]["git"]
    assert dirty == {"commit": git("rev-parse", "HEAD"), "dirty": True}
