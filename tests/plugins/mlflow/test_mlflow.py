"""The mlflow plugin against real MLflow 3 (no mocks): SQLite, and a real server on PostgreSQL.

Runs go through ``crispml.run`` in this process (MLflow is imported once) except where the
command line itself is under test (exit codes, one-line errors, concurrency, ``crispml ui``).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from suite_helpers import CRISPML, free_port, run_cli

import crispml
from crispml import Declaration, Options, hash_file, hookimpl

CHURN = Path(__file__).resolve().parents[3] / "examples" / "quickstart" / "data" / "churn.csv"


REGISTER = {"use": "mlflow", "model_name": "churn", "compare_on": "roc_auc", "min_improvement": 0.0}


cli = partial(run_cli, timeout=180, set_project=False)  # the project is the folder it runs in


def main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """The real ``crispml`` entry point, in this process (MLflow is already imported here)."""
    from crispml.cli import main as crispml_main

    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        crispml_main(list(args))
    out, err = capsys.readouterr()
    return int(exit_info.value.code or 0), out, err


def client(uri: str) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def embedded(project: Path) -> str:
    return f"sqlite:///{project / '.crispml' / 'mlflow.db'}"


def champion(c: Any, name: str = "churn") -> str:
    return str(c.get_model_version_by_alias(name, "champion").version)


# -- the plugin loads without its backend --------------------------------------------------


def test_loading_plugins_imports_no_mlflow() -> None:
    code = (
        "import sys, crispml\n"
        "infos = crispml.get_plugins().describe()\n"
        "assert 'mlflow' in [i.name for i in infos], [i.name for i in infos]\n"
        "assert 'crispml_mlflow' in sys.modules\n"
        "assert 'mlflow' not in sys.modules, 'mlflow imported by plugin loading'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


# -- tracking --------------------------------------------------------------------------------


def test_run_is_tracked_in_the_embedded_store(mlflow_project: Path, write_recipe: Callable[..., Path]) -> None:
    recipe = write_recipe(tracking=["mlflow"])
    result = crispml.run(recipe)
    assert result.status == "succeeded", result.error

    links = result.manifest["links"]
    c = client(embedded(mlflow_project))
    run = c.get_run(links["mlflow_run_id"])
    exp = c.get_experiment(run.info.experiment_id)
    assert exp.name == "quickstart-churn"
    assert run.info.status == "FINISHED"
    assert run.info.run_name == result.run_id
    tags = run.data.tags
    assert tags["crispml.run_id"] == result.run_id
    assert tags["crispml.recipe_hash"] == result.manifest["recipe_hash"]
    assert tags["crispml.outcome"] == "succeeded"
    assert tags["crispml.stage.train.status"] == "succeeded"
    assert tags["crispml.stage.evaluate.plugin"] == "sklearn"
    params = run.data.params
    assert params["train.params.C"] == "1.0"
    assert params["split.seed"] == "42"
    metrics = run.data.metrics
    assert metrics["roc_auc"] == pytest.approx(result["evaluation"].metrics["roc_auc"])
    assert metrics["crispml.stage.train.seconds"] >= 0
    # The dataset, its digest being crispml's fingerprint.
    (inp,) = run.inputs.dataset_inputs
    fingerprint = hash_file(CHURN)
    assert inp.dataset.digest == fingerprint[:36]
    assert {t.key: t.value for t in inp.tags}["crispml.fingerprint"] == fingerprint
    # Manifest and stage artifacts, under the project's .crispml/.
    names = {a.path for a in c.list_artifacts(run.info.run_id, "stages/evaluate")}
    assert "stages/evaluate/roc_curve.png" in names
    artifacts = Path(run.info.artifact_uri.removeprefix("file://"))
    assert artifacts.is_relative_to(mlflow_project / ".crispml")
    manifest = json.loads((artifacts / "crispml" / "manifest.json").read_text())
    assert manifest["run_id"] == result.run_id and manifest["links"]["mlflow_run_id"] == run.info.run_id
    assert not (mlflow_project / "mlruns").exists()


class SchemeSource:
    """A load step whose dataset's source is a URI MLflow has no resolver for, as the feast
    plugin's is (``feast:<project>/<service> ... <entities file>``)."""

    @hookimpl
    def crispml_declare(self) -> Declaration:
        return Declaration(stages={"load": Options})

    @hookimpl
    def crispml_load(self) -> crispml.Dataset:
        import pandas as pd

        return crispml.Dataset(
            frame=pd.read_csv(CHURN),
            target="churned",
            name="churn_v1",
            source="feast:features/churn_v1 × data/labels.parquet",
            fingerprint=hash_file(CHURN),
        )


def test_a_dataset_source_mlflow_cannot_resolve_is_tracked_as_text(
    mlflow_project: Path, write_recipe: Callable[..., Path]
) -> None:
    """Regression (the flagship's feast load): MLflow refused the source and failed the stage."""
    result = crispml.run(
        write_recipe(tracking=["mlflow"], load={"use": "scheme_source"}),
        extra_plugins={"scheme_source": SchemeSource()},
    )
    assert result.status == "succeeded", result.error
    run = client(embedded(mlflow_project)).get_run(result.manifest["links"]["mlflow_run_id"])
    (inp,) = run.inputs.dataset_inputs
    assert inp.dataset.digest == hash_file(CHURN)[:36]
    assert json.loads(inp.dataset.source)["tags"] == {"crispml.source": "feast:features/churn_v1 × data/labels.parquet"}


class BrokenTrain:
    """A train step that fails while it runs."""

    @hookimpl
    def crispml_declare(self) -> Declaration:
        return Declaration(stages={"train": Options})

    @hookimpl
    def crispml_train(self) -> None:
        raise RuntimeError("the GPU caught fire")


def test_rejected_and_failed_runs_are_recorded_with_their_outcome(
    mlflow_project: Path, write_recipe: Callable[..., Path]
) -> None:
    c = client(embedded(mlflow_project))
    rejected = crispml.run(write_recipe(tracking=["mlflow"]), overrides=["evaluate.gate.roc_auc=>= 0.999"])
    assert rejected.status == "rejected"
    run = c.get_run(rejected.manifest["links"]["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["crispml.outcome"] == "rejected"
    assert "roc_auc" in run.data.tags["crispml.rejection"]
    assert run.data.tags["crispml.stage.evaluate.status"] == "rejected"

    failed = crispml.run(
        write_recipe(tracking=["mlflow"], train={"use": "broken_train"}),
        extra_plugins={"broken_train": BrokenTrain()},
    )
    assert failed.status == "failed"
    run = c.get_run(failed.manifest["links"]["mlflow_run_id"])
    assert run.info.status == "FAILED"
    assert run.data.tags["crispml.outcome"] == "failed"
    assert run.data.tags["crispml.stage.train.status"] == "failed"
    assert "RuntimeError: the GPU caught fire" in run.data.tags["crispml.stage.train.error"]
    assert "the GPU caught fire" in run.data.tags["crispml.error"]


# -- register: the champion/challenger gate --------------------------------------------------


def test_without_compare_on_a_rerun_repeats_the_first_outcome(
    mlflow_project: Path, write_recipe: Callable[..., Path]
) -> None:
    c = client(embedded(mlflow_project))
    recipe = write_recipe(register={"use": "mlflow", "model_name": "nogate"})
    assert crispml.run(recipe).status == "succeeded"  # the first model becomes champion
    other = crispml.run(recipe, overrides=["train.params.C=0.5"])
    assert other.status == "succeeded" and other["model_version"].promoted is False
    again = crispml.run(recipe, overrides=["train.params.C=0.5"])
    assert again.status == "succeeded", again.manifest["rejection"]  # no gate: nothing to fail
    assert again["model_version"].version == "2"
    assert len(c.search_model_versions("name='nogate'")) == 2
    assert str(c.get_model_version_by_alias("nogate", "champion").version) == "1"


REFERENCES = ("churn@champion", "churn/1", "models:/churn/1", "models:/churn@champion")


def test_register_champion_challenger_gate_and_audit(mlflow_project: Path, write_recipe: Callable[..., Path]) -> None:
    c = client(embedded(mlflow_project))
    recipe = write_recipe(tracking=["mlflow"], register=REGISTER)

    first = crispml.run(recipe)
    assert first.status == "succeeded", first.error
    mv = first["model_version"]
    assert (mv.version, mv.promoted) == ("1", True)
    assert champion(c) == "1"
    v1 = c.get_model_version("churn", "1")
    assert v1.run_id == first.manifest["links"]["mlflow_run_id"]  # logged into the tracked run
    assert v1.tags["crispml.run_id"] == first.run_id
    assert v1.tags["crispml.promotion_reason"].startswith("first model")
    assert float(v1.tags["crispml.metric.roc_auc"]) == pytest.approx(first["evaluation"].metrics["roc_auc"])
    assert v1.tags["crispml.data_fingerprint"] == hash_file(CHURN)
    # Signature and input example were logged with the model.
    from mlflow.models import Model

    # Read from its files: MLflow's global URIs (get_model_info's way in) are not this store's.
    logged = Model.load(c.get_model_version_download_uri("churn", "1"))
    assert logged.signature is not None and logged.saved_input_example_info is not None

    # The same trained model again (unchanged recipe, data and code): no new version.
    again = crispml.run(recipe)
    assert again.status == "succeeded" and again["model_version"].version == "1"
    assert len(c.search_model_versions("name='churn'")) == 1

    worse = crispml.run(recipe, overrides=["train.params.C=0.001"])
    assert worse.status == "rejected"
    assert "does not beat champion version 1" in worse.manifest["rejection"]
    assert champion(c) == "1"  # champion did not move

    # Other plugins see the version through crispml_resolve_model, never through MLflow.
    resolved = {ref: crispml.resolve_model(ref, mlflow_project) for ref in REFERENCES}
    assert len({(r.name, r.version, r.path) for r in resolved.values()}) == 1
    one = resolved["churn@champion"]
    assert one.reference == "churn@champion" and (one.name, one.version) == ("churn", "1")
    assert (one.path / "MLmodel").is_file() and one.flavor == "mlflow.sklearn"
    assert one.path.name == "artifacts" and "resolved" not in one.path.parts, "local artifacts are used in place"
    assert [c["name"] for c in one.signature or []] == first["model"].feature_columns
    assert {c["type"] for c in one.signature or []} <= {"long", "double", "string"}
    assert one.lineage == {
        "training_run": first.run_id,
        "data_fingerprint": hash_file(CHURN),
        "registry": "mlflow",
        "uri": "models:/churn/1",
        "run_id": v1.run_id,
    }
    assert one.input_example and set(one.input_example[0]) == set(first["model"].feature_columns)
    assert any(r.startswith("scikit-learn==") for r in one.metadata["requirements"])
    with pytest.raises(crispml.UsageError, match=r"model 'churn' has no version 9 \(versions: 1"):
        crispml.resolve_model("churn/9", mlflow_project)
    with pytest.raises(crispml.UsageError, match="no installed plugin resolves the model 'nosuch@champion'"):
        crispml.resolve_model("nosuch@champion", mlflow_project)
    assert str(c.get_model_version_by_alias("churn", "challenger").version) == "2"
    assert c.get_model_version("churn", "2").tags["crispml.decision"].startswith("kept:")
    mlrun = c.get_run(worse.manifest["links"]["mlflow_run_id"])
    assert mlrun.data.tags["crispml.outcome"] == "rejected"

    # The rejected challenger again, unchanged: not registered twice, and still not passing.
    again_worse = crispml.run(recipe, overrides=["train.params.C=0.001"])
    assert again_worse.status == "rejected"
    assert again_worse["model_version"].version == "2"
    rejection = again_worse.manifest["rejection"]
    assert "this unchanged model (same data, options and code) is already version 2" in rejection
    assert "it is not the champion (champion is version 1)" in rejection
    assert "earlier decision: kept: roc_auc" in rejection
    assert len(c.search_model_versions("name='churn'")) == 2 and champion(c) == "1"
    mlrun = c.get_run(again_worse.manifest["links"]["mlflow_run_id"])
    assert mlrun.data.tags["crispml.outcome"] == "rejected"

    # Loading the champion the way serving will.
    model = crispml.load_model("churn@champion")
    import pandas as pd

    frame = pd.read_csv(CHURN).drop(columns=["churned"]).head(10)
    assert len(model.predict(frame)) == 10
    assert len(crispml.load_model("churn/2").predict(frame)) == 10
    with pytest.raises(crispml.UsageError, match="no alias 'nope'"):
        crispml.load_model("churn@nope")
    with pytest.raises(crispml.UsageError, match="no installed plugin knows"):
        crispml.load_model("unknown_model@champion")


# -- MLflow's process-global URIs -------------------------------------------------------------

URI_VARS = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


def mlflow_globals() -> tuple[Any, Any, dict[str, str | None]]:
    """MLflow's process-global tracking and registry URIs as set (``None``: never set), and the
    environment variables ``set_tracking_uri``/``set_registry_uri`` export."""
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    return tracking_utils._tracking_uri, registry_utils._registry_uri, {k: os.environ.get(k) for k in URI_VARS}


@pytest.mark.parametrize("before", ["defaults", "set"])
def test_a_run_leaves_the_process_mlflow_uris_as_they_were(
    before: str,
    mlflow_project: Path,
    write_recipe: Callable[..., Path],
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A notebook's ``MlflowClient()`` (or the next test in this worker) after a crispml run
    still reads its own store: the plugin points MLflow's globals at the run's store only while
    a register stage or a ``load_model`` needs them, and puts back what was there."""
    import mlflow
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    # This test's starting point, whatever earlier tests in this process left (undone after it).
    monkeypatch.setattr(tracking_utils, "_tracking_uri", None)
    monkeypatch.setattr(registry_utils, "_registry_uri", None)
    for key in URI_VARS:
        # Set, then deleted: monkeypatch records (and puts back) only a variable it changed, and
        # set_tracking_uri below exports it behind monkeypatch's back.
        monkeypatch.setenv(key, "")
        monkeypatch.delenv(key)
    store = embedded(mlflow_project)  # B: where the runs register
    connection: dict[str, Any] = {}
    if before == "set":
        # A: the process's own MLflow points elsewhere (never opened: only the URIs are compared).
        elsewhere = f"sqlite:///{tmp_path_factory.mktemp('elsewhere') / 'own.db'}"
        mlflow.set_tracking_uri(elsewhere)
        mlflow.set_registry_uri(elsewhere)
        connection = {"tracking_uri": store}  # $MLFLOW_TRACKING_URI (A) would be crispml's default
    expected = mlflow_globals()
    uris = (mlflow.get_tracking_uri(), mlflow.get_registry_uri())

    recipe = write_recipe(
        tracking={"mlflow": connection} if connection else ["mlflow"], register={**REGISTER, **connection}
    )
    first = crispml.run(recipe)
    assert first.status == "succeeded", first.error
    assert mlflow_globals() == expected
    assert (mlflow.get_tracking_uri(), mlflow.get_registry_uri()) == uris
    own = mlflow.MlflowClient()
    assert (own.tracking_uri, own._registry_uri) == uris
    worse = crispml.run(recipe, overrides=["train.params.C=0.001"])
    assert worse.status == "rejected" and "does not beat champion version 1" in worse.manifest["rejection"]
    assert mlflow_globals() == expected

    c = client(store)
    assert champion(c) == "1"
    assert str(c.get_model_version_by_alias("churn", "challenger").version) == "2"
    if before == "set":
        # crispml.load_model reads $MLFLOW_TRACKING_URI: the notebook points it (alone) at B.
        monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
        expected = mlflow_globals()
    import pandas as pd

    model = crispml.load_model("churn@champion")
    assert len(model.predict(pd.read_csv(CHURN).drop(columns=["churned"]).head(5))) == 5
    assert mlflow_globals() == expected
    assert (mlflow.get_tracking_uri(), mlflow.get_registry_uri()) == uris


def test_a_model_changed_only_behind_its_estimator_is_registered(
    mlflow_project: Path, write_recipe: Callable[..., Path]
) -> None:
    """Issue 9 §1: a constant the user's estimator takes from another module changes. The
    retrained model is a new challenger (evaluated anew), not "unchanged" version 1."""
    (mlflow_project / "knobs.py").write_text("C = 1.0\n")
    (mlflow_project / "mymodels.py").write_text(
        "from sklearn.linear_model import LogisticRegression\n"
        "import knobs\n\n\n"
        "class Tuned(LogisticRegression):\n"
        "    def fit(self, X, y, sample_weight=None):\n"
        "        self.C = knobs.C\n"
        "        return super().fit(X, y, sample_weight)\n"
    )
    train = {"use": "sklearn", "estimator": "mymodels.Tuned", "params": {"max_iter": 500}}
    recipe = write_recipe(register=REGISTER, train=train)
    c = client(embedded(mlflow_project))

    def run() -> dict[str, Any]:
        done = cli(mlflow_project, "run", str(recipe))
        assert done.returncode in (0, 3), done.stderr
        (run_id,) = [r["run_id"] for r in crispml.RunStore(mlflow_project).list_runs()[:1]]
        return dict(crispml.RunStore(mlflow_project).read_manifest(run_id))

    first = run()
    assert first["status"] == "succeeded" and champion(c) == "1"
    (mlflow_project / "knobs.py").write_text("C = 0.0005\n")
    second = run()
    stages = {s["name"]: s for s in second["stages"]}
    assert [stages[n]["status"] for n in ("load", "train", "evaluate")] == ["cached", "succeeded", "succeeded"]
    roc_auc = stages["evaluate"]["summary"]["metrics"]["roc_auc"]
    assert roc_auc != {s["name"]: s for s in first["stages"]}["evaluate"]["summary"]["metrics"]["roc_auc"]
    versions = sorted(str(v.version) for v in c.search_model_versions("name='churn'"))
    assert versions == ["1", "2"], second["rejection"]
    assert float(c.get_model_version("churn", "2").tags["crispml.metric.roc_auc"]) == pytest.approx(roc_auc)


DUMMY = [  # roc_auc 0.5: a deliberately weak first champion (the evaluate gate is relaxed for it)
    "train.estimator=sklearn.dummy.DummyClassifier",
    "train.params={}",
    "evaluate.gate.roc_auc=>= 0.0",
]


def history_of(c: Any, name: str = "churn") -> list[dict[str, Any]]:
    return list(json.loads(c.get_registered_model(name).tags["crispml.champion_history"]))


def test_a_better_challenger_is_promoted_with_its_audit_trail(
    mlflow_project: Path, write_recipe: Callable[..., Path]
) -> None:
    c = client(embedded(mlflow_project))
    recipe = write_recipe(tracking=["mlflow"], register=REGISTER)
    weak = crispml.run(recipe, overrides=DUMMY)
    assert weak.status == "succeeded", weak.error
    assert weak["evaluation"].metrics["roc_auc"] == 0.5
    assert (weak["model_version"].version, champion(c)) == ("1", "1")

    better = crispml.run(recipe)  # the logistic regression: roc_auc ~0.81
    assert better.status == "succeeded", better.error
    mv = better["model_version"]
    assert (mv.version, mv.promoted, champion(c)) == ("2", True, "2")
    assert mv.metrics["champion_roc_auc"] == 0.5
    v1, v2 = c.get_model_version("churn", "1"), c.get_model_version("churn", "2")
    assert v1.tags["crispml.replaced_by"] == "2"
    assert v1.tags["crispml.champion_until"] == v2.tags["crispml.champion_since"]
    assert "beats champion version 1's 0.5 by more than 0" in v2.tags["crispml.promotion_reason"]
    assert v2.tags["crispml.decision"].startswith("promoted: ")
    assert v2.tags["crispml.promoted_from_run"] == better.run_id
    assert [e["version"] for e in history_of(c)] == ["1", "2"]

    # The replaced champion, re-run unchanged: rejected, with the decision that made it champion.
    again = crispml.run(recipe, overrides=DUMMY)
    assert again.status == "rejected"
    assert (
        "already version 1 of 'churn', and it is not the champion (champion is version 2)"
        in (again.manifest["rejection"])
    )
    assert "earlier decision: promoted: first model" in again.manifest["rejection"]
    assert len(c.search_model_versions("name='churn'")) == 2 and champion(c) == "2"


def test_a_better_challenger_below_min_improvement_is_rejected(
    mlflow_project: Path, write_recipe: Callable[..., Path]
) -> None:
    c = client(embedded(mlflow_project))
    recipe = write_recipe(register=REGISTER)
    first = crispml.run(recipe, overrides=["train.params.C=0.01"])
    assert first.status == "succeeded" and champion(c) == "1"
    base = first["evaluation"].metrics["roc_auc"]

    # Better than the champion, by less than the required 0.01.
    small = crispml.run(recipe, overrides=["train.params.C=0.02", "register.min_improvement=0.01"])
    gain = small["evaluation"].metrics["roc_auc"] - base
    assert 0 < gain < 0.01, gain  # the premise: a better model, improving by less than asked
    assert small.status == "rejected"
    assert "does not beat champion version 1" in small.manifest["rejection"]
    assert "by more than 0.01" in small.manifest["rejection"]
    assert champion(c) == "1"

    # A model better by about as little, against a threshold it clears: promoted.
    clears = crispml.run(recipe, overrides=["train.params.C=0.05", "register.min_improvement=0.001"])
    gain = clears["evaluation"].metrics["roc_auc"] - base
    assert 0.001 < gain < 0.01, gain
    assert clears.status == "succeeded" and clears["model_version"].promoted
    assert champion(c) == "3"


def test_a_failed_promotion_write_leaves_the_previous_champion(
    mlflow_project: Path, write_recipe: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """The history tag is written after the audit tags; make it fail for real (MLflow refuses a
    registry tag value over 100,000 characters) by leaving it just under the limit."""
    c = client(embedded(mlflow_project))
    recipe = write_recipe(tracking=["mlflow"], register=REGISTER)
    assert crispml.run(recipe, overrides=DUMMY).status == "succeeded" and champion(c) == "1"
    entries = history_of(c)
    entries[0]["note"] = ""
    entries[0]["note"] = "x" * (99_990 - len(json.dumps(entries)))
    full = json.dumps(entries)
    c.set_registered_model_tag("churn", "crispml.champion_history", full)
    v1_tags = dict(c.get_model_version("churn", "1").tags)

    better = crispml.run(recipe)  # would be promoted; writing its history entry fails
    assert better.status == "failed"
    assert "100000" in better.manifest["error"] or "exceeds" in better.manifest["error"]
    assert champion(c) == "1"  # the previous champion stays, with its audit tags as they were
    assert dict(c.get_model_version("churn", "1").tags) == v1_tags
    assert c.get_registered_model("churn").tags["crispml.champion_history"] == full
    assert [str(v.version) for v in c.search_model_versions("name='churn'")] == ["1"]  # v2 removed

    # A manual promotion that fails the same way changes nothing either.
    no_gate = {k: v for k, v in REGISTER.items() if k != "compare_on"}
    kept = crispml.run(write_recipe(register=no_gate), overrides=["train.params.C=0.5"])
    assert kept.status == "succeeded" and not kept["model_version"].promoted
    version = kept["model_version"].version
    v_tags = dict(c.get_model_version("churn", version).tags)
    code, _, err = main(capsys, "promote", "churn", version, "--reason", "A/B test")
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert champion(c) == "1"
    assert dict(c.get_model_version("churn", "1").tags) == v1_tags
    assert dict(c.get_model_version("churn", version).tags) == v_tags
    assert c.get_registered_model("churn").tags["crispml.champion_history"] == full


def test_cli_models_promote_rollback(
    mlflow_project: Path, write_recipe: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    c = client(embedded(mlflow_project))
    recipe = write_recipe(register=REGISTER)  # registering without tracking works too
    first = crispml.run(recipe)
    assert first.status == "succeeded", first.error
    assert crispml.run(recipe, overrides=["train.params.C=0.001"]).status == "rejected"

    code, out, err = main(capsys, "models", "--json")
    assert code == 0, err
    (model,) = json.loads(out)
    assert model["name"] == "churn" and model["aliases"] == {"challenger": "2", "champion": "1"}
    assert [v["version"] for v in model["versions"]] == ["1", "2"]
    assert "roc_auc" in model["versions"][0]["metrics"]
    assert model["versions"][0]["aliases"] == ["champion"]
    code, out, _ = main(capsys, "models")
    assert code == 0 and "champion" in out and "roc_auc=" in out

    # Bad input: one line, exit 2, nothing changed.
    for args, message in [
        (("promote", "churn", "7"), "has no version 7 (versions: 1, 2)"),
        (("promote", "nope", "1"), "no registered model named 'nope'"),
        (("promote", "churn", "1"), "already the champion"),
        (("rollback", "churn"), "no previous champion"),
    ]:
        code, _, err = main(capsys, *args)
        assert code == 2, (args, err)
        assert message in err and len(err.strip().splitlines()) == 1, err
        assert champion(c) == "1"
        assert len(c.search_model_versions("name='churn'")) == 2

    code, _, err = main(capsys, "promote", "churn", "2", "--reason", "A/B test won")
    assert code == 0, err
    assert champion(c) == "2"
    v2 = c.get_model_version("churn", "2")
    assert v2.tags["crispml.promotion_reason"] == "manual promotion: A/B test won"
    assert "@" in v2.tags["crispml.promoted_by"]

    code, out, err = main(capsys, "rollback", "churn")
    assert code == 0, err
    assert "from version 2 to version 1" in out
    assert champion(c) == "1"
    assert c.get_model_version("churn", "1").tags["crispml.promotion_reason"] == "rollback from version 2"
    code, _, err = main(capsys, "rollback", "churn")
    assert code == 2 and "no previous champion" in err
    assert champion(c) == "1"


def test_cli_errors_are_one_line_in_a_real_process(mlflow_project: Path) -> None:
    done = cli(mlflow_project, "promote", "churn", "1")
    assert done.returncode == 2
    assert done.stderr.strip() == "crispml: error: no registered model named 'churn' (see: crispml models)"


@pytest.mark.parametrize(
    ("register", "evaluate_metrics", "message"),
    [
        ({"model_name": "churn/model"}, None, "register.model_name: invalid model name 'churn/model'"),
        ({"model_name": "bad name"}, None, "invalid model name 'bad name'"),
        (
            {"model_name": "churn", "compare_on": "precision"},
            None,
            "register.compare_on: metric 'precision' is not computed by the evaluate step",
        ),
        (
            {"model_name": "churn", "compare_on": "roc_auc"},
            "no-evaluate",
            "compare_on 'roc_auc' needs an evaluate step",
        ),
    ],
)
def test_bad_register_options_are_recipe_errors(
    project: Path,
    write_recipe: Callable[..., Path],
    register: dict[str, Any],
    evaluate_metrics: str | None,
    message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    changes: dict[str, Any] = {"register": {"use": "mlflow", **register}, "tracking": ["mlflow"]}
    if evaluate_metrics == "no-evaluate":
        changes["evaluate"] = None
    recipe = write_recipe(**changes)
    code, _, err = main(capsys, "run", str(recipe))
    assert code == 2, err
    assert message in err, err
    assert len(err.strip().splitlines()) == 1
    assert not (project / ".crispml").exists()  # nothing ran, nothing was created


# -- faults ------------------------------------------------------------------------------------


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A TCP server that accepts connections and never answers (a hung tracking server)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(sock.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    sock.close()


def test_unreachable_tracking_server_fails_fast_and_is_recorded(
    project: Path, write_recipe: Callable[..., Path], silent_server: str
) -> None:
    refused = f"http://127.0.0.1:{free_port()}"
    for uri, options in [(refused, {}), (silent_server, {"timeout": 2, "max_retries": 0})]:
        recipe = write_recipe(tracking={"mlflow": {"tracking_uri": uri, **options}}, register=REGISTER)
        t0 = time.monotonic()
        result = crispml.run(recipe)
        elapsed = time.monotonic() - t0
        assert result.status == "failed"
        # Not a speed figure: MLflow's own defaults (7 retries with exponential back-off, 120 s
        # per request) would hang here for minutes; the plugin's bounded timeouts end it in a few
        # seconds on an idle machine. 60 s leaves room for a loaded one and still tells them apart.
        assert elapsed < 60, f"took {elapsed:.1f}s against {uri}"
        stored = crispml.RunStore(project).read_manifest(result.run_id)
        assert stored["status"] == "failed"
        assert f"tracking server at {uri} did not answer" in stored["error"]
        assert {s["status"] for s in stored["stages"]} == {"skipped"}


def test_unreachable_registry_registers_nothing(
    mlflow_project: Path, write_recipe: Callable[..., Path], silent_server: str
) -> None:
    register = {**REGISTER, "tracking_uri": silent_server, "timeout": 2, "max_retries": 0}
    result = crispml.run(write_recipe(tracking=["mlflow"], register=register))
    assert result.status == "failed"
    assert result.manifest["stages"][-1]["status"] == "failed"
    assert "did not answer" in result.manifest["error"]
    c = client(embedded(mlflow_project))
    assert c.search_registered_models() == []
    run = c.get_run(result.manifest["links"]["mlflow_run_id"])
    assert run.info.status == "FAILED" and run.data.tags["crispml.stage.register.status"] == "failed"


# -- concurrency ----------------------------------------------------------------------------------


def test_two_runs_registering_at_once(mlflow_project: Path, write_recipe: Callable[..., Path]) -> None:
    recipe = write_recipe(tracking=["mlflow"], register=REGISTER)
    # Two processes of one recipe, one model better than the other, started together.
    procs = [
        subprocess.Popen(
            [CRISPML, "run", str(recipe), "--no-cache", "--set", f"train.params.C={c}"],
            cwd=mlflow_project,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for c in (0.001, 1.0)
    ]
    outs = [p.communicate(timeout=180) for p in procs]
    codes = [p.returncode for p in procs]
    assert all(code in (0, 3) for code in codes), outs
    c = client(embedded(mlflow_project))
    versions = c.search_model_versions("name='churn'")
    assert sorted(int(v.version) for v in versions) == [1, 2]
    auc = {str(v.version): float(v.tags["crispml.metric.roc_auc"]) for v in versions}
    assert champion(c) == max(auc, key=auc.__getitem__)
    runs = crispml.RunStore(mlflow_project).list_runs()
    assert sorted(r["status"] for r in runs) == ["rejected", "succeeded"] or all(
        r["status"] == "succeeded" for r in runs
    )


def test_two_identical_runs_at_once_register_one_version(
    mlflow_project: Path, write_recipe: Callable[..., Path]
) -> None:
    """The lookup of an already registered identical model runs under the registration lock."""
    recipe = write_recipe(tracking=["mlflow"], register=REGISTER)
    procs = [
        subprocess.Popen(
            [CRISPML, "run", str(recipe), "--no-cache"],
            cwd=mlflow_project,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs  # one registered it, the other found it champion
    c = client(embedded(mlflow_project))
    assert [str(v.version) for v in c.search_model_versions("name='churn'")] == ["1"]
    assert champion(c) == "1"


# -- the quickstart through the CLI: nothing in $HOME, nothing in the cwd ------------------------


def test_cli_run_keeps_state_in_the_project(
    mlflow_project: Path, write_recipe: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory
) -> None:
    home = tmp_path_factory.mktemp("home")
    recipe = write_recipe(tracking=["mlflow"], register=REGISTER)
    done = cli(mlflow_project, "run", str(recipe), env={"HOME": str(home)})
    assert done.returncode == 0, done.stderr
    assert "Warning" not in done.stderr and "WARNING" not in done.stderr, done.stderr
    leaked = [p for p in home.rglob("*") if "mlflow" in str(p).lower()]
    assert leaked == []
    assert sorted(p.name for p in mlflow_project.iterdir()) == [".crispml", "recipe.yaml"]


# -- production: a real mlflow server on PostgreSQL -------------------------------------------


@pytest.mark.services
def test_tracking_and_registry_on_an_mlflow_server(
    project: Path,
    write_recipe: Callable[..., Path],
    mlflow_server: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    register = {**REGISTER, "model_name": "churn_server"}
    recipe = write_recipe(tracking={"mlflow": {"tracking_uri": mlflow_server}}, register=register)
    before = mlflow_globals()
    first = crispml.run(recipe)
    assert first.status == "succeeded", first.error
    worse = crispml.run(recipe, overrides=["train.params.C=0.001"])
    assert worse.status == "rejected"
    # The process's own MLflow (a notebook's MlflowClient(), the next test) is where it was: the
    # runs pointed MLflow's global URIs at the server only while their register stage used them.
    assert mlflow_globals() == before
    c = client(mlflow_server)
    assert champion(c, "churn_server") == "1"
    run = c.get_run(first.manifest["links"]["mlflow_run_id"])
    assert run.data.tags["crispml.outcome"] == "succeeded"
    assert first.manifest["links"]["mlflow_run_url"].startswith(mlflow_server)
    (inp,) = run.inputs.dataset_inputs
    assert inp.dataset.digest == hash_file(CHURN)[:36]  # fits PostgreSQL's 36-character column
    assert "crispml/manifest.json" in {a.path for a in c.list_artifacts(run.info.run_id, "crispml")}
    assert not (project / ".crispml" / "mlflow.db").exists()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    import pandas as pd

    model = crispml.load_model("churn_server@champion")
    assert len(model.predict(pd.read_csv(CHURN).drop(columns=["churned"]).head(3))) == 3
    resolved = crispml.resolve_model("churn_server@champion", project)
    assert (resolved.path / "MLmodel").is_file(), "a remote registry's files are downloaded"
    assert project / ".crispml" / "mlflow" / "resolved" in resolved.path.parents
    assert resolved.lineage["training_run"] == first.run_id and resolved.input_example
    assert crispml.resolve_model("churn_server/1", project).path == resolved.path, "downloaded once"
    # Credentials in the registry's URL reach no field another plugin sees (a server without
    # authentication ignores them).
    with_password = mlflow_server.replace("http://", "http://alice:s3cr3t-pw@")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", with_password)
    secret = crispml.resolve_model("churn_server@champion", project)
    assert "s3cr3t-pw" not in repr(secret) and "alice:***@" in secret.metadata["tracking_uri"]
    listed = cli(project, "models", "--json", "--tracking-uri", mlflow_server)
    assert listed.returncode == 0, listed.stderr
    names = {m["name"]: m for m in json.loads(listed.stdout)}
    assert names["churn_server"]["aliases"] == {"challenger": "2", "champion": "1"}


# -- crispml ui ------------------------------------------------------------------------------


def test_ui_serves_the_embedded_store_on_localhost(mlflow_project: Path) -> None:
    port = free_port()
    log = mlflow_project / "ui.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [CRISPML, "ui", "--port", str(port)],
            cwd=mlflow_project,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
                    assert resp.status == 200
                    break
            except OSError:
                assert time.monotonic() < deadline, "crispml ui did not answer within 90 s"
                time.sleep(0.5)
        listening = subprocess.run(["ss", "-ltnp"], capture_output=True, text=True).stdout
        lines = [line for line in listening.splitlines() if f":{port} " in line]
        assert lines and all("127.0.0.1:" in line for line in lines), lines
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
