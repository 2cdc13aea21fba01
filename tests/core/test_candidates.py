"""Training candidates in the core (``grid:``, ``candidates:``, ``select:``), with in-test plugins.

``MeanModel`` (conftest) scores ``1 - bias``: which candidate must win is known from its options.
"""

from __future__ import annotations

import math
import pickle
import threading
from pathlib import Path
from typing import Any

import pytest

from crispml import (
    MAX_CANDIDATES,
    CandidateJob,
    CandidateOutcome,
    Dataset,
    Declaration,
    Evaluation,
    RecipeError,
    Secret,
    Step,
    TrainedModel,
    check,
    hookimpl,
    resume,
    run,
    run_candidate,
)
from crispml.candidates import best
from crispml.recipe import Select

from conftest import EvalOptions, MeanModel, TableLoader, TrainOptions, basic_recipe


def _grid(*biases: float, **step: Any) -> Step:
    return Step(use="mean", grid={"bias": list(biases)}, select="score", **step)


def test_the_best_candidate_goes_on_and_every_one_is_in_the_manifest(
    project: Path, fakes: dict[str, object], mean: MeanModel
) -> None:
    result = run(basic_recipe(train=_grid(0.3, 0.1, 0.2)), project=project, extra_plugins=fakes)
    assert result.status == "succeeded", result.error
    assert result["model"].model["bias"] == 0.1
    assert result["evaluation"].metrics == {"score": pytest.approx(0.9)}
    record = result.manifest.stage("train")
    assert record.selected == 2
    assert [c.index for c in record.candidates] == [1, 2, 3]
    assert [c.overrides for c in record.candidates] == [{"bias": 0.3}, {"bias": 0.1}, {"bias": 0.2}]
    assert [c.options["bias"] for c in record.candidates] == [0.3, 0.1, 0.2]
    assert [c.metrics["score"] for c in record.candidates] == pytest.approx([0.7, 0.9, 0.8])
    assert all(c.status == "succeeded" and c.duration is not None and c.duration >= 0 for c in record.candidates)
    assert mean.train_calls == 3 and mean.eval_calls == 3  # the winner's evaluation is not redone
    # The stored manifest says the same as the returned one.
    stored = result.run_dir / "manifest.json"
    assert '"selected": 2' in stored.read_text()


def test_lowest_wins_when_greater_is_not_better(project: Path, fakes: dict[str, object]) -> None:
    step = Step(use="mean", grid={"bias": [0.3, 0.1, 0.2]}, select={"metric": "score", "greater_is_better": False})
    result = run(basic_recipe(train=step), project=project, extra_plugins=fakes)
    assert result.status == "succeeded", result.error
    assert result["model"].model["bias"] == 0.3
    assert result.manifest.stage("train").selected == 1


def test_a_list_of_candidates_each_over_the_steps_options(project: Path, fakes: dict[str, object]) -> None:
    step = Step(use="mean", bias=0.4, candidates=[{"fail": False}, {"bias": 0.05}], select="score")
    result = run(basic_recipe(train=step), project=project, extra_plugins=fakes)
    assert result.status == "succeeded", result.error
    record = result.manifest.stage("train")
    assert [c.options["bias"] for c in record.candidates] == [0.4, 0.05]
    assert record.selected == 2 and result["model"].model["bias"] == 0.05


def test_a_grid_of_one_is_a_plain_run(project: Path, fakes: dict[str, object], mean: MeanModel) -> None:
    plain = run(basic_recipe(train=Step(use="mean", bias=0.2)), project=project, extra_plugins=fakes)
    one = run(basic_recipe(train=_grid(0.2)), project=project, extra_plugins=fakes)
    assert plain.status == one.status == "succeeded"
    assert one["model"].model == plain["model"].model
    assert one["evaluation"].metrics == plain["evaluation"].metrics
    # The same model as far as the cache can tell: the candidate was the plain run's training.
    assert one.manifest.stage("train").fingerprint == plain.manifest.stage("train").fingerprint
    assert one.manifest.stage("evaluate").fingerprint == plain.manifest.stage("evaluate").fingerprint
    assert mean.train_calls == 1 and one.manifest.stage("train").candidates[0].status == "cached"


def test_a_rerun_reuses_every_candidate_and_a_new_value_trains_only_itself(
    project: Path, fakes: dict[str, object], mean: MeanModel
) -> None:
    first = run(basic_recipe(train=_grid(0.3, 0.1)), project=project, extra_plugins=fakes)
    assert first.status == "succeeded" and mean.train_calls == 2
    again = run(basic_recipe(train=_grid(0.3, 0.1)), project=project, extra_plugins=fakes)
    assert again.stage_status["train"] == "cached"
    assert [c.status for c in again.manifest.stage("train").candidates] == ["cached", "cached"]
    assert mean.train_calls == 2 and mean.eval_calls == 2
    changed = run(basic_recipe(train=_grid(0.3, 0.05)), project=project, extra_plugins=fakes)
    assert [c.status for c in changed.manifest.stage("train").candidates] == ["cached", "succeeded"]
    assert mean.train_calls == 3
    assert changed["model"].model["bias"] == 0.05
    nocache = run(basic_recipe(train=_grid(0.3, 0.05)), project=project, extra_plugins=fakes, use_cache=False)
    assert [c.status for c in nocache.manifest.stage("train").candidates] == ["succeeded", "succeeded"]


class Flaky(MeanModel):
    """Fails to train the biases in ``broken`` (state outside the recipe, as a lost server is)."""

    def __init__(self) -> None:
        super().__init__()
        self.broken: set[float] = set()
        self.trained: list[float] = []

    @hookimpl
    def crispml_train(self, options: TrainOptions, dataset: Dataset) -> TrainedModel:
        if options.bias in self.broken:
            self.train_calls += 1
            raise ConnectionError(f"lost the cluster\nwhile training bias {options.bias}")
        self.trained.append(options.bias)
        return super().crispml_train(options, dataset)


def test_a_failed_candidate_fails_the_run_and_resume_trains_only_it(project: Path, table: TableLoader) -> None:
    flaky = Flaky()
    flaky.broken = {0.2}
    plugins = {"table": table, "mean": flaky}
    failed = run(basic_recipe(train=_grid(0.3, 0.2, 0.1)), project=project, extra_plugins=plugins)
    assert failed.status == "failed" and failed.exit_code != 0
    error = str(failed.manifest.error)
    assert "\n" not in error
    assert "1 of 3 candidates failed; candidate 2 (bias=0.2): ConnectionError: lost the cluster while" in error
    record = failed.manifest.stage("train")
    assert record.status == "failed" and record.selected is None
    assert [c.status for c in record.candidates] == ["succeeded", "failed", "succeeded"]
    assert "lost the cluster" in str(record.candidates[1].error)
    assert failed.stage_status["evaluate"] == "skipped"
    assert sorted(flaky.trained) == [0.1, 0.3]  # the others ran to the end

    flaky.broken = set()
    resumed = resume(failed.run_id, project=project, extra_plugins=plugins)
    assert resumed.status == "succeeded", resumed.error
    assert sorted(flaky.trained) == [0.1, 0.2, 0.3]  # only the failed one trained again
    assert [c.status for c in resumed.manifest.stage("train").candidates] == ["cached", "succeeded", "cached"]
    assert resumed["model"].model["bias"] == 0.1


def test_a_runner_may_run_jobs_anywhere_and_answer_in_any_order(project: Path, fakes: dict[str, object]) -> None:
    seen: list[CandidateJob] = []

    def in_threads(jobs: list[CandidateJob]) -> list[CandidateOutcome]:
        seen.extend(jobs)
        # Jobs cross processes: plain values, the dataset as a path, never a frame.
        for job in jobs:
            copy = pickle.loads(pickle.dumps(job))
            assert copy == job and Path(job.dataset).is_file() and len(pickle.dumps(job)) < 2000
        out: list[CandidateOutcome] = []
        threads = [threading.Thread(target=lambda j=j: out.append(run_candidate(j))) for j in jobs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return sorted(out, key=lambda o: -o.index)

    from crispml.runs import _new_plan, result_of

    plan = _new_plan(basic_recipe(train=_grid(0.3, 0.1, 0.2)), None, True, project, _with(fakes))
    plan.start()
    for name in plan.stage_names:
        plan.run_stage(name, run_jobs=in_threads if name == "train" else None)
    result = result_of(plan, plan.finish())
    assert result.status == "succeeded", result.error
    assert [j.index for j in seen] == [1, 2, 3] and [j.overrides for j in seen][1] == {"bias": 0.1}
    assert result.manifest.stage("train").selected == 2 and result["model"].model["bias"] == 0.1


def test_a_runner_that_loses_a_job_fails_the_stage(project: Path, fakes: dict[str, object]) -> None:
    from crispml.runs import _new_plan

    plan = _new_plan(basic_recipe(train=_grid(0.3, 0.1)), None, True, project, _with(fakes))
    plan.start()
    plan.run_stage("load")
    with pytest.raises(Exception, match=r"candidate 2 .*the runner returned no outcome"):
        plan.run_stage("train", run_jobs=lambda jobs: [run_candidate(jobs[0])])
    assert plan.finish() == "failed"


def test_a_job_for_a_candidate_the_run_does_not_have_fails_as_an_outcome(
    project: Path, fakes: dict[str, object]
) -> None:
    result = run(basic_recipe(train=_grid(0.3)), project=project, extra_plugins=fakes)
    job = CandidateJob(str(project), result.run_id, "train", 7, {}, {}, "/nonexistent", "x")
    outcome = run_candidate(job, extra_plugins=fakes)
    assert outcome.status == "failed" and "no candidate 7" in str(outcome.error)
    unknown = run_candidate(CandidateJob(str(project), "nope", "train", 1, {}, {}, "/x", "x"))
    assert unknown.status == "failed" and "not found" in str(unknown.error)


class Observer:
    def __init__(self) -> None:
        self.calls: list[tuple[str, list[Any], int | None]] = []

    @hookimpl
    def crispml_after_candidates(self, stage: str, plugin: str, candidates: list[Any], selected: int | None) -> None:
        self.calls.append((stage, [(c.index, c.metrics["score"]) for c in candidates], selected))


def test_observers_hear_every_candidate_once(project: Path, fakes: dict[str, object]) -> None:
    observer = Observer()
    result = run(basic_recipe(train=_grid(0.3, 0.1)), project=project, extra_plugins={**fakes, "obs": observer})
    assert result.status == "succeeded"
    assert observer.calls == [("train", [(1, pytest.approx(0.7)), (2, pytest.approx(0.9))], 2)]


def test_ties_go_to_the_first_and_nan_never_wins() -> None:
    def outcome(i: int, score: float) -> CandidateOutcome:
        return CandidateOutcome(index=i, status="succeeded", metrics={"score": score})

    up, down = Select(metric="score"), Select(metric="score", greater_is_better=False)
    assert best([outcome(1, 0.5), outcome(2, 0.9), outcome(3, 0.9)], up).index == 2
    assert best([outcome(1, math.nan), outcome(2, 0.1)], up).index == 2
    assert best([outcome(1, math.nan), outcome(2, 0.7)], down).index == 2
    with pytest.raises(ValueError, match="no candidate's evaluation has metric 'auc'"):
        best([outcome(1, 0.5)], Select(metric="auc"))


# -- bad inputs: one recipe error each, before anything runs --------------------------------


def _check(fakes: dict[str, object], **changes: Any) -> str:
    with pytest.raises(RecipeError) as info:
        check(basic_recipe(**changes), extra_plugins=fakes)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_bad_candidates_are_recipe_errors(fakes: dict[str, object], mean: MeanModel) -> None:
    assert "train.grid.bais: 'bais' is no option of plugin 'mean' for this step (did you mean 'bias'?" in _check(
        fakes, train=Step(use="mean", grid={"bais": [0.1]}, select="score")
    )
    assert "train.select: metric 'auc' is not computed by the evaluate step (it computes: score)" in _check(
        fakes, train=Step(use="mean", grid={"bias": [0.1]}, select="auc")
    )
    big = {"bias": [0.1] * 9, "fail": [False] * 8}
    assert f"train.grid: 72 candidates; a step tries at most {MAX_CANDIDATES}" in _check(
        fakes, train=Step(use="mean", grid=big, select="score")
    )
    huge = {"bias": list(range(1000)), "fail": list(range(1000)), "x": list(range(1000))}
    assert "train.grid" in _check(fakes, train=Step(use="mean", grid=huge, select="score"))  # never expanded
    assert "train.candidates: give either grid: or candidates:, not both" in _check(
        fakes, train=Step(use="mean", grid={"bias": [0.1]}, candidates=[{"bias": 0.2}], select="score")
    )
    assert "train.select: missing: name the evaluate metric" in _check(
        fakes, train=Step(use="mean", grid={"bias": [0.1]})
    )
    assert "train.select: select needs candidates" in _check(fakes, train=Step(use="mean", select="score"))
    assert "train.grid.bias: expected a non-empty list" in _check(
        fakes, train=Step(use="mean", grid={"bias": []}, select="score")
    )
    assert "train.candidates: expected a non-empty list" in _check(
        fakes, train=Step(use="mean", candidates=[], select="score")
    )
    assert "candidate 2 (bias='high'): train.bias: " in _check(
        fakes, train=Step(use="mean", grid={"bias": [0.1, "high"]}, select="score")
    )
    assert "train.candidates.1.colour: 'colour' is no option" in _check(
        fakes, train=Step(use="mean", candidates=[{"bias": 0.1}, {"colour": 1}], select="score")
    )
    assert "candidate 1 (bias.x=1): 'bias' is float, not a mapping" in _check(
        fakes, train=Step(use="mean", bias=0.5, grid={"bias.x": [1]}, select="score")
    )
    assert "evaluate.grid: only the train step takes candidates" in _check(
        fakes, evaluate=Step(use="mean", grid={"metrics": [["score"]]}, select="score")
    )
    no_eval = basic_recipe(train=_grid(0.1)).model_copy(update={"evaluate": None})
    with pytest.raises(RecipeError, match=r"train\.select: candidates are compared by the evaluate step: add one"):
        check(no_eval, extra_plugins=fakes)
    assert mean.train_calls == 0


def test_candidates_round_trip_through_yaml() -> None:
    recipe = basic_recipe(train=Step(use="mean", grid={"bias": [0.1, 0.2]}, select="score"))
    from crispml import Recipe

    again = Recipe.from_yaml_text(recipe.to_yaml())
    assert again == recipe and again.train is not None and again.train.select == Select(metric="score")
    assert again.train.options == {}  # grid and select are crispml's, not the plugin's


def _with(fakes: dict[str, object]) -> Any:
    from crispml.runs import _plugins

    return _plugins(None, fakes)


# EvalOptions and Evaluation are imported for readers of this file: the score is 1 - bias.
_ = (EvalOptions, Evaluation)


class SecretOptions(TrainOptions):
    token: Secret = Secret("")


class SecretTrainer(MeanModel):
    """Trains with a token (declared secret): a candidate may set it, nothing may write it."""

    def __init__(self) -> None:
        super().__init__()
        self.tokens: list[str] = []

    @hookimpl
    def crispml_declare(self) -> Declaration:
        return Declaration(stages={"train": SecretOptions, "evaluate": EvalOptions})

    @hookimpl
    def crispml_train(self, options: SecretOptions, dataset: Dataset) -> TrainedModel:
        self.tokens.append(options.token.get_secret_value())
        return super().crispml_train(options, dataset)


def test_a_candidates_secret_reaches_the_plugin_and_nothing_else(
    project: Path, table: TableLoader, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CANDIDATE_TOKEN", "env-t0ken-value")
    trainer = SecretTrainer()
    step = Step(
        use="mean",
        candidates=[{"token": "literal-s3cret", "bias": 0.2}, {"token": "${env:CANDIDATE_TOKEN}", "bias": 0.1}],
        select="score",
    )
    seen: list[CandidateJob] = []

    def keep(jobs: list[CandidateJob]) -> list[CandidateOutcome]:
        seen.extend(jobs)
        return [run_candidate(job) for job in jobs]

    from crispml.runs import _new_plan

    plan = _new_plan(basic_recipe(train=step), None, True, project, _with({"table": table, "mean": trainer}))
    plan.start()
    for name in plan.stage_names:
        plan.run_stage(name, run_jobs=keep if name == "train" else None)
    assert plan.finish() == "succeeded"
    assert sorted(trainer.tokens) == ["env-t0ken-value", "literal-s3cret"]
    written = "\n".join(p.read_text(errors="replace") for p in project.rglob("*.json"))
    shipped = repr([pickle.dumps(job) for job in seen])
    for text in (written, shipped):
        assert "literal-s3cret" not in text and "env-t0ken-value" not in text
    assert "${env:CANDIDATE_TOKEN}" in written


def test_a_secret_in_a_grid_is_masked_with_its_whole_list(project: Path, table: TableLoader) -> None:
    trainer = SecretTrainer()
    step = Step(use="mean", grid={"token": ["grid-s3cret-1", "grid-s3cret-2"]}, select="score")
    # Cache off: a secret is not part of a cache key (it is dumped masked), so the two
    # candidates would share one entry.
    plugins = {"table": table, "mean": trainer}
    result = run(basic_recipe(train=step), project=project, extra_plugins=plugins, use_cache=False)
    assert result.status == "succeeded", result.error
    assert sorted(trainer.tokens) == ["grid-s3cret-1", "grid-s3cret-2"]
    written = "\n".join(p.read_text(errors="replace") for p in project.rglob("*.json"))
    assert "grid-s3cret" not in written and "grid-s3cret" not in repr(result.manifest.to_dict())
    assert result.manifest.recipe["train"]["grid"]["token"] == "***"
