"""`crispml reproduce` with in-test plugins: same result, a changed recipe or data named and
compared, a changed or missing backend named before anything runs, a run without metrics."""

from __future__ import annotations

import json
from importlib.metadata import version
from pathlib import Path

from crispml import Step
from crispml.reproduce import reproduce
from crispml.testing import plugins_with, run_with

from conftest import MeanModel, basic_recipe


def test_a_recorded_run_reproduces_by_training_again(project: Path, fakes: dict[str, object]) -> None:
    first = run_with(basic_recipe(), project=project, plugins=fakes)
    mean = fakes["mean"]
    assert isinstance(mean, MeanModel) and mean.train_calls == 1
    same = reproduce(first.run_id, project=project, plugins=plugins_with(fakes))
    assert same.status == "reproduced" and same.exit_code == 0
    assert [(m.stage, m.metric, m.recorded, m.reproduced) for m in same.metrics] == [("evaluate", "score", 1.0, 1.0)]
    assert same.tolerance == 0 and same.differences == [] and same.missing == []
    assert mean.train_calls == 2  # trained again: the cache is not a reproduction
    again = json.loads((project / ".crispml" / "runs" / str(same.new_run_id) / "manifest.json").read_text())
    assert again["reproduces"] == first.run_id


def test_an_override_that_changes_the_result_differs(project: Path, fakes: dict[str, object]) -> None:
    first = run_with(basic_recipe(), project=project, plugins=fakes)
    moved = reproduce(first.run_id, overrides=["train.bias=0.25"], project=project, plugins=plugins_with(fakes))
    assert moved.status == "differs" and moved.exit_code == 3
    assert [(m.recorded, m.reproduced, m.same) for m in moved.metrics] == [(1.0, 0.75, False)]
    assert "recipe: --set train.bias=0.25 on top of the recorded recipe" in moved.differences
    loose = reproduce(
        first.run_id, overrides=["train.bias=0.25"], tolerance=0.3, project=project, plugins=plugins_with(fakes)
    )
    assert loose.status == "reproduced" and loose.tolerance_reason == "stated with --tolerance"


def test_other_data_is_named_by_its_fingerprint(project: Path, fakes: dict[str, object]) -> None:
    first = run_with(basic_recipe(load=Step(use="table", rows=40)), project=project, plugins=fakes)
    recorded = first.manifest.data["fingerprint"]
    other = reproduce(first.run_id, overrides=["load.rows=50"], project=project, plugins=plugins_with(fakes))
    named = [d for d in other.differences if d.startswith("memory changed: fingerprint ")]
    assert named and recorded[:8] in named[0], other.differences
    assert other.status == "reproduced"  # the score does not depend on the rows: the data is named anyway


def test_a_changed_or_missing_backend_is_named_and_nothing_runs(project: Path, fakes: dict[str, object]) -> None:
    first = run_with(basic_recipe(), project=project, plugins=fakes)
    path = project / ".crispml" / "runs" / first.run_id / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["environment"]["backends"] = {"pandas": "0.0.1", "no-such-distribution": "1.0"}
    path.write_text(json.dumps(manifest))
    mean = fakes["mean"]
    assert isinstance(mean, MeanModel)
    calls = mean.train_calls
    out = reproduce(first.run_id, project=project, plugins=plugins_with(fakes))
    assert out.status == "cannot" and out.exit_code == 2
    assert out.missing == ["no-such-distribution 1.0 is not installed here"]
    assert f"pandas 0.0.1 → {version('pandas')}" in out.differences
    assert mean.train_calls == calls and out.new_run_id is None


def test_a_run_without_metrics_cannot_be_reproduced(project: Path, fakes: dict[str, object]) -> None:
    failed = run_with(basic_recipe(train=Step(use="mean", fail=True)), project=project, plugins=fakes)
    assert failed.status == "failed"
    out = reproduce(failed.run_id, project=project, plugins=plugins_with(fakes))
    assert out.exit_code == 2 and "recorded no metrics (status failed)" in out.missing[0]


def test_another_commit_and_uncommitted_changes_are_named(project: Path, fakes: dict[str, object]) -> None:
    import subprocess

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
            cwd=project,
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout.strip()

    git("init", "-q")
    (project / "notes.txt").write_text("one\n")
    git("add", "notes.txt")
    git("commit", "-qm", "one")
    before = git("rev-parse", "HEAD")
    first = run_with(basic_recipe(), project=project, plugins=fakes)
    assert first.manifest.environment["git"] == {"commit": before, "dirty": False}
    (project / "notes.txt").write_text("two\n")
    git("commit", "-qam", "two")
    after = git("rev-parse", "HEAD")
    (project / "notes.txt").write_text("three, not committed\n")
    out = reproduce(first.run_id, project=project, plugins=plugins_with(fakes))
    assert f"code: git commit {before[:10]} → {after[:10]}" in out.differences
    assert "code: the work tree has uncommitted changes now" in out.differences
    assert out.status == "reproduced"  # named, and the metrics still match
