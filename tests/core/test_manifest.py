"""One typed manifest: attributes instead of string keys, a ``schema_version``, and manifests
written before it (``data/manifest_v1_failed.json``, recorded by crispml before this change)
still load, show and resume."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import pytest
from suite_helpers import run_cli

from crispml import Manifest, ProductionWindow, StageRecord
from crispml.testing import run_with

from conftest import basic_recipe

V1 = Path(__file__).resolve().parent / "data" / "manifest_v1_failed.json"
V1_RUN = "20261130-011510-689d82"

STEPS = """
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

SCORER = """
import crispml


@crispml.hookimpl
def crispml_declare():
    return crispml.Declaration(stages={"evaluate": crispml.Options})


@crispml.hookimpl
def crispml_evaluate(model):
    return crispml.Evaluation(metrics={"value": float(model.model)})
"""


def test_a_version_1_manifest_loads_as_the_typed_model() -> None:
    raw = json.loads(V1.read_text())
    assert "schema_version" not in raw and "attempts" not in raw["stages"][0]  # really the old shape
    manifest = Manifest.load(raw)
    assert manifest.schema_version == 2 and manifest.run_id == V1_RUN and manifest.status == "failed"
    assert manifest.stage_status == {"load": "succeeded", "train": "failed", "evaluate": "skipped"}
    train = manifest.stage("train")
    assert isinstance(train, StageRecord) and train.plugin == "steps"
    assert [a.error for a in train.attempts] == ["stage 'train' (plugin 'steps') failed: RuntimeError: not yet"]
    assert train.attempts[0].started == train.started
    assert len(manifest.stage("load").attempts) == 1 and manifest.stage("evaluate").attempts == []
    assert manifest.stage("load").fingerprint == raw["stages"][0]["fingerprint"]
    assert manifest.data["rows"] == 30 and manifest.environment["python"]
    # Plugins written against the dict keep reading it.
    assert manifest["status"] == "failed" and manifest.get("nope") is None and "links" in manifest
    assert [s.get("name") for s in manifest.get("stages", [])] == ["load", "train", "evaluate"]
    with pytest.raises(KeyError):
        manifest.stage("deploy")


def test_unknown_fields_of_a_newer_manifest_survive_a_round_trip() -> None:
    raw = json.loads(V1.read_text())
    raw["schema_version"] = 99
    raw["from_the_future"] = {"x": 1}
    raw["stages"][0]["attempts"] = [{"started": "t", "duration": 1.0, "error": None, "worker": "w1"}]
    again = Manifest.load(raw).to_dict()
    assert again["schema_version"] == 99 and again["from_the_future"] == {"x": 1}
    assert again["stages"][0]["attempts"][0]["worker"] == "w1"


def test_a_new_run_writes_the_current_schema(project: Path, fakes: dict[str, object]) -> None:
    result = run_with(basic_recipe(), project=project, plugins=fakes)
    assert isinstance(result.manifest, Manifest) and result.manifest.schema_version == 2
    written = json.loads((result.run_dir / "manifest.json").read_text())
    assert written["schema_version"] == 2 and Manifest.load(written) == result.manifest
    assert result.manifest.stage("train").attempts[0].error is None


def test_a_run_recorded_by_an_older_crispml_shows_and_resumes(project: Path) -> None:
    (project / "data.csv").write_text("x,y\n" + "".join(f"{i},{i % 2}\n" for i in range(30)))
    (project / "steps.py").write_text(STEPS)
    (project / "scorer.py").write_text(SCORER)
    (project / "recipe.yaml").write_text(
        "name: old\nplugins: [steps, scorer]\nload: {use: files, path: data.csv, target: y}\n"
        'train: {use: steps}\nevaluate: {use: scorer, gate: {value: ">= 0"}}\n'
    )
    run_dir = project / ".crispml" / "runs" / V1_RUN
    run_dir.mkdir(parents=True)
    (run_dir / "manifest.json").write_text(V1.read_text().replace("<project>", str(project)))
    cli = partial(run_cli, project, timeout=120, columns=None)

    listed = json.loads(cli("runs", "--json").stdout)
    assert [(r["run_id"], r["status"]) for r in listed] == [(V1_RUN, "failed")]
    shown = cli("show", V1_RUN)
    assert shown.returncode == 0 and "RuntimeError: not yet" in shown.stdout
    assert json.loads(cli("show", V1_RUN, "--json").stdout)["schema_version"] == 2

    # Its stored results were not kept with it here: load runs again, then what failed.
    done = cli("resume", V1_RUN)
    assert done.returncode == 0, done.stderr
    manifest = Manifest.load(json.loads((run_dir / "manifest.json").read_text()))
    assert manifest.status == "succeeded" and manifest.resumes == 1 and manifest.schema_version == 2
    assert manifest.stage_status == {"load": "succeeded", "train": "succeeded", "evaluate": "succeeded"}
    assert [a.error is None for a in manifest.stage("train").attempts] == [False, True]


# -- kind and window: declared fields, read from manifests written before they were ------------

WINDOW = {"deployment": "churn", "model": "churn/2"}


def test_kind_and_window_are_typed_and_older_manifests_load() -> None:
    v1 = Manifest.load(json.loads(V1.read_text()))
    assert (v1.kind, v1.window) == (None, None)  # version 1: a lifecycle run
    # Version 2 as written before the fields were declared: a lifecycle run has neither...
    plain = v1.to_dict()
    del plain["kind"], plain["window"]
    loaded = Manifest.load(plain)
    assert (loaded.kind, loaded.window) == (None, None) and not loaded.model_extra
    # ...and a validate-data run had them as extra, untyped fields: now read into the typed ones.
    old = {**plain, "kind": "validate-data", "window": dict(WINDOW)}
    loaded = Manifest.load(old)
    assert loaded.kind == "validate-data" and not loaded.model_extra
    assert isinstance(loaded.window, ProductionWindow) and loaded.window == ProductionWindow(**WINDOW)
    assert loaded.window.deployment == "churn" and loaded["window"]["model"] == "churn/2"  # dict-style too
    assert Manifest.load(loaded.to_dict()) == loaded and loaded.to_dict()["window"] == WINDOW
    monitor = Manifest.load({**plain, "kind": "monitor"})
    assert monitor.kind == "monitor" and monitor.window is None
    # A kind or a window field a newer crispml adds still loads (and survives a write back).
    newer = Manifest.load({**plain, "kind": "backfill", "window": {**WINDOW, "since": "24h"}})
    assert newer.kind == "backfill" and newer.to_dict()["window"]["since"] == "24h"


def test_runs_and_show_name_a_validate_data_run_recorded_before(project: Path) -> None:
    run_dir = project / ".crispml" / "runs" / V1_RUN
    run_dir.mkdir(parents=True)
    raw = json.loads(V1.read_text().replace("<project>", str(project)))
    (run_dir / "manifest.json").write_text(json.dumps({**raw, "kind": "validate-data", "window": WINDOW}))
    cli = partial(run_cli, project, timeout=120)

    listed = cli("runs", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [(r["run_id"], r["kind"]) for r in json.loads(listed.stdout)] == [(V1_RUN, "validate-data")]
    assert cli("runs").returncode == 0
    shown = cli("show", V1_RUN)
    assert shown.returncode == 0, shown.stderr
    assert "kind: validate-data  deployment churn (churn/2)" in shown.stdout
    as_json = json.loads(cli("show", V1_RUN, "--json").stdout)
    assert (as_json["kind"], as_json["window"]) == ("validate-data", WINDOW)
