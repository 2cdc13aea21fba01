"""``crispml monitor`` with the evidently plugin on a real trained run (files + sklearn), using
batches for the current data; the retrain loop and its guards against the real run store."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

import crispml
from crispml import RecipeError, UsageError
from crispml.runs import run_state

QUICK = Path(__file__).resolve().parents[3] / "examples" / "quickstart"
FEATURES = [
    "tenure_months",
    "contract",
    "internet",
    "payment_method",
    "monthly_charges",
    "total_charges",
    "support_calls",
]


def recipe_dict(**monitor: Any) -> dict[str, Any]:
    return {
        "name": "churn-monitored",
        "split": {"test_size": 0.25, "seed": 42, "stratify": "churned"},
        "load": {"use": "files", "path": "data/churn.csv", "target": "churned"},
        "train": {"use": "sklearn", "params": {"max_iter": 500}},
        "evaluate": {"use": "sklearn", "metrics": ["roc_auc"], "plots": False},
        "monitor": {"use": "evidently", "min_rows": 50, **monitor},
    }


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project whose recipe trained once (the reference run); copied per test."""
    root = tmp_path_factory.mktemp("trained")
    shutil.copytree(QUICK / "data", root / "data")
    path = root / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe_dict()))
    data = recipe_dict()
    del data["monitor"]
    (root / "train.yaml").write_text(yaml.safe_dump(data))
    result = crispml.run(root / "train.yaml", project=root)
    assert result.status == "succeeded", result.manifest
    return root


@pytest.fixture
def proj(trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    target = tmp_path / "p"
    shutil.copytree(trained, target)
    monkeypatch.chdir(target)
    monkeypatch.setenv("CRISPML_PROJECT", str(target))
    return target


def write(proj: Path, name: str = "recipe.yaml", **monitor: Any) -> Path:
    path = proj / name
    path.write_text(yaml.safe_dump(recipe_dict(**monitor)))
    return path


def batch(proj: Path, name: str, shift: Callable[[pd.DataFrame], None] | None = None, rows: int = 400) -> Path:
    frame = pd.read_csv(proj / "data" / "churn.csv").drop(columns="churned").sample(rows, random_state=len(name))
    if shift:
        shift(frame)
    path = proj / name
    frame.to_csv(path, index=False)
    return path


def big_shift(frame: pd.DataFrame) -> None:
    frame["tenure_months"] *= 3
    frame["monthly_charges"] += 100
    frame["total_charges"] += 5000
    frame["support_calls"] += 5
    frame["contract"] = "month-to-month"


def test_an_unshifted_batch_does_not_drift(proj: Path) -> None:
    result = crispml.monitor(write(proj), batch=batch(proj, "same.csv"))
    assert result.exit_code == 0, result.line()
    manifest = result.monitor.manifest
    assert manifest["kind"] == "monitor" and [s["name"] for s in manifest["stages"]] == ["monitor"]
    report = result.report
    assert report is not None and not report.drift_detected and report.metrics["current_rows"] == 400
    assert "→ no drift" in result.line() and "0 of 7 columns drifted" in result.line()
    drift = json.loads((result.monitor.run_dir / "artifacts" / "monitor" / "drift.json").read_text())
    assert drift["reference"]["training_run"] != result.monitor.run_id
    assert drift["reference"]["rows"] == 1500  # the training split, not all 2,000 rows
    assert set(drift["columns"]) == set(FEATURES)
    assert drift["prediction"]["type"] == "categorical"  # the model's predictions on both sides


def test_a_shifted_batch_drifts_exit_3_with_on_drift_report(proj: Path) -> None:
    result = crispml.monitor(write(proj), batch=batch(proj, "shifted.csv", big_shift))
    assert result.exit_code == 3 and result.retrain is None
    assert result.report is not None and result.report.drift_detected
    assert result.report.metrics["drifted_columns"] >= 4
    assert "drift:" in result.line() and "≥ 0.5" in result.line()


def test_fewer_than_min_rows_is_said_and_exit_0(proj: Path) -> None:
    result = crispml.monitor(write(proj, min_rows=500), batch=batch(proj, "small.csv", big_shift, rows=120))
    assert result.exit_code == 0 and "fewer than min_rows (500)" in result.line()


def test_an_empty_batch_is_no_production_data(proj: Path) -> None:
    path = proj / "empty.csv"
    path.write_text(",".join(FEATURES) + "\n")
    result = crispml.monitor(write(proj), batch=path)
    assert result.exit_code == 0 and "no production data in the window" in result.line()


def test_drift_retrains_and_the_runs_link_both_ways(proj: Path) -> None:
    recipe = write(proj, on_drift="retrain", retrain={"set": ["train.params.C=0.5"]})
    result = crispml.monitor(recipe, batch=batch(proj, "shifted.csv", big_shift))
    assert result.retrain is not None and result.exit_code == result.retrain.exit_code == 0
    retrain = result.retrain.manifest
    assert retrain["trigger"]["monitor_run"] == result.monitor.run_id
    assert retrain["trigger"]["drift_share"] == result.report.metrics["drift_share"]  # type: ignore[union-attr]
    assert "monitor" not in [s["name"] for s in retrain["stages"]]
    assert retrain["recipe"]["train"]["params"]["C"] == 0.5
    stored = crispml.RunStore(proj).read_manifest(result.monitor.run_id)
    assert stored["links"]["retrain_run"] == result.retrain.run_id


def test_crispml_run_does_not_run_the_monitor_step(proj: Path) -> None:
    """A monitor step in a recipe is for ``crispml monitor``: ``crispml run`` (and a resume of
    that run) trains without it, so it never compares a model with itself or retrains from a run."""
    recipe = write(proj, on_drift="retrain", batch=str(batch(proj, "shifted.csv", big_shift)))
    result = crispml.run(recipe, project=proj, overrides=["train.params.C=0.7"])
    assert result.status == "succeeded", result.manifest
    assert [s["name"] for s in result.manifest["stages"]] == ["load", "train", "evaluate"]
    assert "monitor_report" not in result.results and not (result.run_dir / "artifacts" / "monitor").exists()
    assert result.manifest.get("kind") is None and runs_of(proj) == 2  # no monitor run, no retrain


def test_no_retrain_flag_reports_only(proj: Path) -> None:
    recipe = write(proj, on_drift="retrain")
    result = crispml.monitor(recipe, batch=batch(proj, "shifted.csv", big_shift), no_retrain=True)
    assert result.exit_code == 3 and result.retrain is None and "--no-retrain" in result.line()


def test_after_waits_for_consecutive_drifting_monitors(proj: Path) -> None:
    recipe = write(proj, on_drift="retrain", retrain={"after": 2})
    shifted, same = batch(proj, "shifted.csv", big_shift), batch(proj, "same.csv")
    first = crispml.monitor(recipe, batch=shifted)
    assert first.retrain is None and "1 of 2 consecutive" in (first.held or "") and first.exit_code == 3
    time.sleep(1.1)  # run ids sort by the second
    assert crispml.monitor(recipe, batch=same).exit_code == 0  # breaks the streak
    time.sleep(1.1)
    again = crispml.monitor(recipe, batch=shifted)
    assert again.retrain is None and "1 of 2" in (again.held or "")
    time.sleep(1.1)
    third = crispml.monitor(recipe, batch=shifted)
    assert third.retrain is not None and third.held is None


def test_cooldown_holds_a_second_retrain(proj: Path) -> None:
    recipe = write(proj, on_drift="retrain", retrain={"cooldown": "6h"})
    shifted = batch(proj, "shifted.csv", big_shift)
    first = crispml.monitor(recipe, batch=shifted)
    assert first.retrain is not None
    second = crispml.monitor(recipe, batch=shifted)
    assert second.retrain is None and "cooldown" in (second.held or "") and second.exit_code == 3


def test_one_retrain_per_recipe_at_a_time(proj: Path) -> None:
    recipe = write(proj, on_drift="retrain")
    lock = proj / ".crispml" / "locks" / "retrain-churn-monitored.lock"
    with crispml.file_lock(lock):  # another process's retrain holds it
        result = crispml.monitor(recipe, batch=batch(proj, "shifted.csv", big_shift))
    assert result.retrain is None and "already running" in (result.held or "")


# -- bad inputs: one line, nothing runs ------------------------------------------------------


def runs_of(proj: Path) -> int:
    return len(crispml.RunStore(proj).list_runs())


@pytest.mark.parametrize(
    ("monitor", "message"),
    [
        ({"drift_share": 0}, "monitor.drift_share: expected a share of the columns in (0, 1], got 0"),
        ({"drift_share": 1.5}, "monitor.drift_share: expected a share of the columns in (0, 1], got 1.5"),
        ({"per_column": {"tenure_month": {"threshold": 0.3}}}, "did you mean 'tenure_months'?"),
        ({"window": {"since": "24x"}}, "expected a duration like 30m, 6h, 2d"),
        ({"window": {"since": "1h", "last": 5}}, "give one of 'since'"),
        ({"method": "pis"}, "unknown method 'pis' (did you mean 'psi'?"),
        ({"cat_method": "ks"}, "unknown categorical method 'ks'"),
        ({"on_drift": "retrain", "retrain": {"set": ["train.params=3"]}}, "monitor.retrain.set"),
        ({"on_drift": "retrain", "retrain": {"set": ["load.nope=1"]}}, "monitor.retrain.set"),
    ],
)
def test_recipe_mistakes_are_one_line_and_nothing_runs(proj: Path, monitor: dict[str, Any], message: str) -> None:
    before = runs_of(proj)
    with pytest.raises(UsageError) as err:
        crispml.monitor(write(proj, **monitor), batch=batch(proj, "same.csv"))
    assert message in str(err.value) and "\n" not in str(err.value)
    assert runs_of(proj) == before


def test_a_recipe_error_names_file_and_line(proj: Path) -> None:
    with pytest.raises(RecipeError) as err:
        crispml.monitor(write(proj, drift_share=2), batch=batch(proj, "same.csv"))
    assert err.value.file is not None and err.value.file.endswith("recipe.yaml") and err.value.line


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"since": "24x"}, "--since 24x: expected a duration like 30m, 6h, 2d"),
        ({"since": "6h", "last": 10}, "--since and --last: give one window"),
        ({"last": 0}, "--last 0"),
        ({"batch": "missing.csv"}, "--batch missing.csv: file not found"),
    ],
)
def test_flag_mistakes(proj: Path, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(UsageError, match="^" + message.replace(".", r"\.").replace("(", r"\(")):
        crispml.monitor(write(proj), **kwargs)
    assert runs_of(proj) == 1


def test_a_batch_lacking_model_columns_is_named(proj: Path) -> None:
    path = batch(proj, "partial.csv")
    pd.read_csv(path).drop(columns=["contract", "support_calls"]).to_csv(path, index=False)
    with pytest.raises(UsageError) as err:
        crispml.monitor(write(proj), batch=path)
    assert str(err.value) == "--batch: partial.csv lacks the model's column(s) contract, support_calls (it has: " + (
        "tenure_months, internet, payment_method, monthly_charges, total_charges)"
    )
    assert runs_of(proj) == 1


def test_a_recipe_without_monitor_step(proj: Path) -> None:
    with pytest.raises(UsageError, match="has no monitor step"):
        crispml.monitor(proj / "train.yaml", batch=batch(proj, "same.csv"))


def test_the_command_line(proj: Path) -> None:
    import sys

    crispml_bin = str(Path(sys.executable).with_name("crispml"))
    recipe = write(proj)
    shifted = batch(proj, "shifted.csv", big_shift)
    out = subprocess.run([crispml_bin, "monitor", str(recipe), "--batch", str(shifted)], capture_output=True, text=True)
    assert out.returncode == 3, out.stderr
    assert out.stdout.count("\n") == 1 and "columns drifted" in out.stdout
    out = subprocess.run(
        [crispml_bin, "monitor", str(recipe), "--batch", str(shifted), "--json"], capture_output=True, text=True
    )
    assert out.returncode == 3 and json.loads(out.stdout)["report"]["drift_detected"] is True
    bad = subprocess.run([crispml_bin, "monitor", str(recipe), "--since", "24x"], capture_output=True, text=True)
    assert (
        bad.returncode == 2
        and bad.stderr.strip() == "crispml: error: --since 24x: expected a duration like 30m, 6h, 2d"
    )
    assert "Traceback" not in bad.stderr


# -- the deployment's prediction log (a small serving plugin answers crispml_deployment) ------


class Serving:
    """Stands in for a serving plugin: answers ``crispml_deployment`` for ``churn`` with a log
    in the prediction-log contract's format (crispml.prediction_records reads it)."""

    def __init__(self, log: Path, model: str, training_run: str | None) -> None:
        self.log, self.model, self.training_run = log, model, training_run

    @crispml.hookimpl
    def crispml_deployment(self, name: str, project_dir: Path) -> crispml.Deployment | None:
        if name != "churn":
            return None
        return crispml.Deployment(
            name="churn",
            url="http://127.0.0.1:9",
            model_uri=f"models:/{self.model}",
            model=self.model,
            training_run=self.training_run,
            prediction_log=self.log,
        )

    @crispml.hookimpl
    def crispml_deployment_names(self, project_dir: Path) -> list[str]:
        return ["churn"]


def training_run(proj: Path) -> str:
    return next(m["run_id"] for m in crispml.RunStore(proj).list_runs() if m["status"] == "succeeded")


def log_requests(log: Path, frame: pd.DataFrame, model: str, when: datetime, per_request: int = 5) -> None:
    with log.open("a") as fh:
        for start in range(0, len(frame), per_request):
            records = frame.iloc[start : start + per_request].to_dict(orient="records")
            line = {
                "schema": 1,
                "time": when.isoformat(timespec="milliseconds"),
                "deployment": "churn",
                "model": model,
                "inputs": records,
                "outputs": {"predictions": [0] * len(records)},
            }
            fh.write(json.dumps(line) + "\n")


def served(proj: Path, **monitor: Any) -> tuple[Path, dict[str, object], Path]:
    data = recipe_dict(deployment="churn", **monitor)
    path = proj / "served.yaml"
    path.write_text(yaml.safe_dump(data))
    log = proj / "predictions.jsonl"
    return path, {"serving": Serving(log, "churn/2", training_run(proj))}, log


def sample(proj: Path, rows: int, seed: int, shift: Callable[[pd.DataFrame], None] | None = None) -> pd.DataFrame:
    frame = pd.read_csv(proj / "data" / "churn.csv").drop(columns="churned").sample(rows, random_state=seed)
    if shift:
        shift(frame)
    return frame


def test_the_window_is_read_through_the_deployment(proj: Path) -> None:
    recipe, plugins, log = served(proj, window={"since": "1h"})
    now = datetime.now(UTC)
    log_requests(log, sample(proj, 300, 1, big_shift), "churn/2", now - timedelta(hours=3))  # outside
    log_requests(log, sample(proj, 400, 2), "churn/2", now - timedelta(minutes=5))
    log_requests(log, sample(proj, 60, 3, big_shift), "churn/1", now - timedelta(minutes=4))  # old version
    result = crispml.monitor(recipe, extra_plugins=plugins)
    assert result.exit_code == 0, result.line()
    assert result.report is not None and result.report.metrics["current_rows"] == 400
    assert result.report.metrics["other_versions_rows"] == 60
    assert result.line().startswith("churn/2 · 400 requests (60 from other versions not compared) · 0 of 7")
    drift = json.loads((result.monitor.run_dir / "artifacts" / "monitor" / "drift.json").read_text())
    assert drift["current"]["deployment"] == "churn" and drift["current"]["window"] == {"since": "1h"}
    # --last overrides the window: the last 200 records are the shifted ones
    log_requests(log, sample(proj, 200, 4, big_shift), "churn/2", now)
    shifted = crispml.monitor(recipe, last=200, extra_plugins=plugins)
    assert shifted.exit_code == 3 and shifted.report is not None
    assert shifted.report.metrics["current_rows"] == 200 and shifted.report.metrics["prediction_drift"] == 1.0


def test_an_empty_window_is_exit_0(proj: Path) -> None:
    recipe, plugins, log = served(proj)
    log_requests(log, sample(proj, 100, 1), "churn/2", datetime.now(UTC) - timedelta(days=3))
    result = crispml.monitor(recipe, since="6h", extra_plugins=plugins)
    assert result.exit_code == 0 and result.line() == "churn/2 · 0 requests · no production data in the window"


def test_an_unknown_deployment_is_one_line_and_no_run(proj: Path) -> None:
    recipe, plugins, _ = served(proj)
    recipe.write_text(recipe.read_text().replace("deployment: churn", "deployment: chrun"))
    with pytest.raises(UsageError) as err:
        crispml.monitor(recipe, extra_plugins=plugins)
    assert str(err.value) == "monitor.deployment: no deployment named 'chrun' (deployments: churn)"
    assert runs_of(proj) == 1


def test_a_training_run_not_in_the_store_asks_for_a_reference(proj: Path) -> None:
    recipe, _, log = served(proj)
    plugins = {"serving": Serving(log, "churn/2", "20200101-000000-abcdef")}
    with pytest.raises(UsageError, match=r"run '20200101-000000-abcdef' .* give 'reference: FILE'"):
        crispml.monitor(recipe, extra_plugins=plugins)
    assert runs_of(proj) == 1
    reference = proj / "reference.csv"
    sample(proj, 800, 9).to_csv(reference, index=False)
    log_requests(log, sample(proj, 300, 10), "churn/2", datetime.now(UTC))
    recipe.write_text(yaml.safe_dump(recipe_dict(deployment="churn", reference="reference.csv")))
    result = crispml.monitor(recipe, extra_plugins=plugins)
    assert result.exit_code == 0 and result.report is not None and result.report.metrics["current_rows"] == 300


def test_garbage_in_the_log_counts_against_the_columns_and_does_not_crash(proj: Path) -> None:
    """Requests the served model took but whose values are odd: strings where numbers were
    trained, nested objects, missing and extra fields, a torn last line."""
    recipe, plugins, log = served(proj, window={"last": 300})
    frame = sample(proj, 300, 5).astype(object)
    frame.loc[frame.index[:150], "tenure_months"] = "seventy"
    frame.loc[frame.index[:10], "contract"] = None
    records = json.loads(frame.to_json(orient="records"))
    for i, record in enumerate(records[:40]):
        record["payment_method"] = {"nested": [i]}
        record["unexpected"] = "x" * 1000
    for record in records[40:60]:
        del record["support_calls"]
    with log.open("w") as fh:
        for start in range(0, 300, 10):
            line = {
                "schema": 1,
                "time": datetime.now(UTC).isoformat(),
                "deployment": "churn",
                "model": "churn/2",
                "inputs": records[start : start + 10],
                "outputs": {"predictions": [1] * 10},
            }
            fh.write(json.dumps(line) + "\n")
        fh.write('{"schema": 1, "time": "2026-')  # a writer killed mid-line
    result = crispml.monitor(recipe, extra_plugins=plugins)
    assert result.monitor.status in ("succeeded", "rejected"), result.monitor.manifest["error"]
    drift = json.loads((result.monitor.run_dir / "artifacts" / "monitor" / "drift.json").read_text())
    assert drift["current"]["rows"] == 300
    tenure = drift["columns"]["tenure_months"]
    assert tenure["nulls"]["current"] == 0.5 and tenure["drifted"]
    assert drift["columns"]["support_calls"]["nulls"]["current"] == pytest.approx(20 / 300, abs=1e-6)
    assert drift["columns"]["payment_method"]["drifted"]  # 40 of 300 values never seen
    assert "unexpected" not in drift["columns"]


def test_nothing_lands_in_home(proj: Path, tmp_path: Path) -> None:
    import os
    import sys

    home = tmp_path / "home"
    home.mkdir()
    crispml_bin = str(Path(sys.executable).with_name("crispml"))
    env = {**os.environ, "HOME": str(home), "CRISPML_PROJECT": str(proj)}
    env.pop("XDG_CACHE_HOME", None)
    env.pop("XDG_CONFIG_HOME", None)
    out = subprocess.run(
        [crispml_bin, "monitor", str(write(proj)), "--batch", str(batch(proj, "shifted.csv", big_shift))],
        capture_output=True,
        text=True,
        env=env,
        cwd=proj,
    )
    assert out.returncode == 3, out.stderr
    assert sorted(p.relative_to(home).as_posix() for p in home.rglob("*")) == []


def test_a_retrain_killed_mid_run_leaves_the_lock_free_and_the_links_readable(proj: Path) -> None:
    import os
    import signal
    import sys

    recipe = write(proj, on_drift="retrain")
    shifted = batch(proj, "shifted.csv", big_shift)
    crispml_bin = str(Path(sys.executable).with_name("crispml"))
    env = {**os.environ, "CRISPML_PROJECT": str(proj)}
    proc = subprocess.Popen(
        [crispml_bin, "monitor", str(recipe), "--batch", str(shifted)],
        cwd=proj,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    store = crispml.RunStore(proj)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if any(m.get("trigger") for m in store.list_runs()):
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the monitor ended before its retrain could be killed"
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    killed = next(m for m in store.list_runs() if m.get("trigger"))
    assert killed["status"] == "running"  # a kill -9 leaves it so; `crispml runs` shows it interrupted
    assert run_state(killed) == "interrupted"
    # The lock died with the process: the next drifting monitor retrains.
    result = crispml.monitor(recipe, batch=shifted)
    assert result.held is None and result.retrain is not None and result.retrain.status == "succeeded"


# -- validate: true — the recipe's validate step (real Great Expectations) on the window ------


def with_suite(proj: Path, **monitor: Any) -> Path:
    shutil.copytree(QUICK / "expectations", proj / "expectations", dirs_exist_ok=True)
    data = recipe_dict(validate=True, **monitor)
    data["validate"] = {"use": "great_expectations", "suite": "expectations/churn.yaml"}
    path = proj / "validated.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_window_that_passes_the_suite_without_its_labels(proj: Path) -> None:
    result = crispml.monitor(with_suite(proj), batch=batch(proj, "same.csv"))
    assert result.exit_code == 0, result.line()
    assert result.line().endswith("· suite passed → no drift")
    assert result.report is not None and result.report.metrics["validation_failed"] == 0
    report = json.loads((result.monitor.run_dir / "artifacts" / "validate" / "validation.json").read_text())
    skipped = {(r["expectation"], r["column"]) for r in report["skipped"]}
    assert ("expect_column_values_to_be_in_set", "churned") in skipped
    assert ("expect_column_values_to_not_be_null", "churned") in skipped
    schema = next(r for r in report["results"] if r["expectation"] == "expect_table_columns_to_match_set")
    assert schema["success"] and "churned" not in schema["kwargs"]["column_set"]


def test_a_window_failing_the_suite_is_never_retrained_on(proj: Path) -> None:
    def broken(frame: pd.DataFrame) -> None:
        big_shift(frame)  # drifts, and tenure up to 216 breaks the suite's 0..80
        frame.loc[frame.index[:50], "payment_method"] = "bitcoin"

    recipe = with_suite(proj, on_drift="retrain")
    result = crispml.monitor(recipe, batch=batch(proj, "broken.csv", broken))
    assert result.exit_code == 3 and result.retrain is None
    assert result.report is not None and result.report.drift_detected and not result.report.retrain
    assert result.report.metrics["validation_failed"] >= 2
    assert "the window failed validation" in (result.monitor.manifest["rejection"] or "")
    assert "suite failed (" in result.line()
    assert not any(m.get("trigger") for m in crispml.RunStore(proj).list_runs())


def test_validate_true_needs_a_validate_step(proj: Path) -> None:
    with pytest.raises(RecipeError, match=r"monitor\.validate: validate: true checks the window"):
        crispml.monitor(write(proj, validate=True), batch=batch(proj, "same.csv"))


# -- crispml validate-data: the validate step on the production window alone ----------------


def validated_and_served(proj: Path) -> tuple[Path, dict[str, object], Path]:
    recipe = with_suite(proj, deployment="churn")
    log = proj / "predictions.jsonl"
    return recipe, {"serving": Serving(log, "churn/2", training_run(proj))}, log


def broken(frame: pd.DataFrame) -> None:
    frame.loc[frame.index[:30], "payment_method"] = "bitcoin"
    frame.loc[frame.index[:10], "tenure_months"] = 500


def test_validate_data_passes_a_good_window_without_its_labels(proj: Path) -> None:
    recipe, plugins, log = validated_and_served(proj)
    now = datetime.now(UTC)
    log_requests(log, sample(proj, 200, 1, broken), "churn/2", now - timedelta(hours=5))  # outside the window
    log_requests(log, sample(proj, 300, 2), "churn/2", now - timedelta(minutes=3))
    log_requests(log, sample(proj, 40, 3, broken), "churn/1", now - timedelta(minutes=2))  # another version
    result = crispml.validate_data(recipe, since="1h", extra_plugins=plugins)
    assert result.exit_code == 0, result.line()
    assert (result.rows, result.others) == (300, 40)
    assert result.run is not None and result.report is not None and result.report.success
    assert result.line().startswith("churn/2 · 300 requests (40 from other versions not validated) · suite passed (")
    manifest = result.run.manifest
    assert manifest["kind"] == "validate-data" and [s["name"] for s in manifest["stages"]] == ["validate"]
    # What it validated, typed in the manifest and in its file: the deployment and the version serving.
    assert manifest.window == crispml.ProductionWindow(deployment="churn", model="churn/2")
    stored = crispml.RunStore(proj).read_manifest(result.run.run_id)
    assert (stored.kind, stored.window) == ("validate-data", manifest.window) and not stored.model_extra
    report = json.loads((result.run.run_dir / "artifacts" / "validate" / "validation.json").read_text())
    assert ("expect_column_values_to_be_in_set", "churned") in {
        (r["expectation"], r["column"]) for r in report["skipped"]
    }
    assert not any(m.get("kind") == "monitor" for m in crispml.RunStore(proj).list_runs())  # no monitor ran


def test_validate_data_fails_a_bad_window_exit_3(proj: Path) -> None:
    recipe, plugins, log = validated_and_served(proj)
    log_requests(log, sample(proj, 300, 4, broken), "churn/2", datetime.now(UTC))
    result = crispml.validate_data(recipe, last=300, extra_plugins=plugins)
    assert result.exit_code == 3 and result.run is not None and result.run.status == "rejected"
    assert result.report is not None and len(result.report.failures) >= 2
    failed = {r.column for r in result.report.failures}
    assert {"payment_method", "tenure_months"} <= failed
    assert "suite failed (" in result.line() and "\n" not in result.line()
    assert not any(m.get("trigger") for m in crispml.RunStore(proj).list_runs())  # nothing retrained


def test_validate_data_on_an_empty_window_is_exit_0_and_no_run(proj: Path) -> None:
    recipe, plugins, log = validated_and_served(proj)
    log_requests(log, sample(proj, 50, 5), "churn/2", datetime.now(UTC) - timedelta(days=2))
    result = crispml.validate_data(recipe, since="6h", extra_plugins=plugins)
    assert result.exit_code == 0 and result.run is None
    assert result.line() == "churn/2 · 0 requests · no production data in the window"
    assert runs_of(proj) == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"since": "24x"}, "--since 24x: expected a duration like 30m, 6h, 2d"),
        ({"since": "1h", "last": 3}, "--since and --last: give one window"),
        ({"deployment": "chrun"}, "--deployment: no deployment named 'chrun' (deployments: churn)"),
    ],
)
def test_validate_data_bad_input_is_one_line_and_nothing_runs(proj: Path, kwargs: dict[str, Any], message: str) -> None:
    recipe, plugins, log = validated_and_served(proj)
    log_requests(log, sample(proj, 100, 6), "churn/2", datetime.now(UTC))
    with pytest.raises(UsageError) as err:
        crispml.validate_data(recipe, extra_plugins=plugins, **kwargs)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)
    assert runs_of(proj) == 1


def test_validate_data_needs_a_validate_step(proj: Path) -> None:
    recipe, plugins, _ = served(proj)
    with pytest.raises(UsageError, match="the recipe has no validate step"):
        crispml.validate_data(recipe, extra_plugins=plugins)
    assert runs_of(proj) == 1


SERVING_MODULE = """
from pathlib import Path

import crispml

LOG = Path(__file__).with_name("predictions.jsonl")


@crispml.hookimpl
def crispml_deployment(name, project_dir):
    if name != "churn":
        return None
    return crispml.Deployment(name="churn", url="http://127.0.0.1:9", model_uri="models:/churn/2",
                              model="churn/2", training_run=TRAINING_RUN, prediction_log=LOG)


@crispml.hookimpl
def crispml_deployment_names(project_dir):
    return ["churn"]
"""


def test_validate_data_command_line(proj: Path) -> None:
    import sys

    crispml_bin = str(Path(sys.executable).with_name("crispml"))
    recipe, _, log = validated_and_served(proj)
    (proj / "serving_here.py").write_text(SERVING_MODULE + f"\nTRAINING_RUN = {training_run(proj)!r}\n")
    data = yaml.safe_load(recipe.read_text())
    data["plugins"] = ["serving_here"]
    recipe.write_text(yaml.safe_dump(data))

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([crispml_bin, "validate-data", str(recipe), *args], capture_output=True, text=True)

    log_requests(log, sample(proj, 250, 7), "churn/2", datetime.now(UTC))
    good = cli("--deployment", "churn", "--last", "250")
    assert good.returncode == 0, good.stderr
    assert good.stdout.startswith("churn/2 · 250 requests · suite passed") and good.stdout.count("\n") == 1
    log_requests(log, sample(proj, 100, 8, broken), "churn/2", datetime.now(UTC))
    bad = cli("--last", "100", "--json")
    assert bad.returncode == 3, bad.stderr
    assert json.loads(bad.stdout)["report"]["failed"] >= 2
    for args, message in (
        (("--since", "24x"), "--since 24x: expected a duration like 30m, 6h, 2d"),
        (("--deployment", "chrun"), "--deployment: no deployment named 'chrun' (deployments: churn)"),
        (("data/churn.csv", "--last", "5"), "--deployment, --since and --last validate a deployment's requests"),
        (("--report-dir", "out"), "--report-dir: a deployment's window is validated in a run"),
    ):
        wrong = cli(*args)
        assert wrong.returncode == 2 and wrong.stderr.startswith(f"crispml: error: {message}"), wrong.stderr
        assert "Traceback" not in wrong.stderr


# -- key columns: a suite written for keyed training data checks the served window's keys ----

KEYED_SUITE = """name: keyed
expectations:
- expect: table_columns_to_match_set
  column_set: [customer_id, tenure_months, contract, internet, payment_method, monthly_charges, total_charges,
    support_calls, churned]
- {expect: column_values_to_not_be_null, column: customer_id}
- {expect: column_values_to_be_between, column: customer_id, min_value: 1, max_value: CUSTOMERS}
- {expect: column_values_to_not_be_null, column: tenure_months}
- expect: column_values_to_be_in_set
  column: contract
  value_set: [month-to-month, one-year, two-year]
- expect: column_values_to_be_in_set
  column: churned
  value_set: [0, 1]
"""


class KeyedOptions(crispml.Options):
    path: str
    target: str


class KeyedLoad:
    """A load step whose data carries an entity key, as a feature store's join does:
    ``customer_id`` is a key column (in the data, never a feature)."""

    @crispml.hookimpl
    def crispml_declare(self) -> crispml.Declaration:
        return crispml.Declaration(stages={"load": KeyedOptions})

    @crispml.hookimpl
    def crispml_load(self, options: KeyedOptions, context: crispml.RunContext) -> crispml.Dataset:
        path = context.recipe_dir / options.path
        frame = pd.read_csv(path)
        digest = crispml.fingerprint.hash_file(path)
        return crispml.Dataset(
            frame=frame,
            target=options.target,
            name="keyed",
            source=options.path,
            fingerprint=digest,
            key_columns=("customer_id",),
        )


def keyed_recipe(**monitor: Any) -> dict[str, Any]:
    data = recipe_dict(deployment="churn", validate=True, **monitor)
    data["name"] = "churn-keyed"
    data["load"] = {"use": "keyed", "path": "data/keyed.csv", "target": "churned"}
    data["validate"] = {"use": "great_expectations", "suite": "expectations/keyed.yaml"}
    return data


@pytest.fixture(scope="module")
def keyed_trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project trained on data with a key column (``customer_id``), its suite checking it."""
    root = tmp_path_factory.mktemp("keyed")
    frame = pd.read_csv(QUICK / "data" / "churn.csv")
    frame.insert(0, "customer_id", range(1, len(frame) + 1))
    (root / "data").mkdir()
    frame.to_csv(root / "data" / "keyed.csv", index=False)
    (root / "expectations").mkdir()
    (root / "expectations" / "keyed.yaml").write_text(KEYED_SUITE.replace("CUSTOMERS", str(len(frame))))
    data = keyed_recipe()
    del data["monitor"]
    (root / "train.yaml").write_text(yaml.safe_dump(data))
    result = crispml.run(root / "train.yaml", project=root, extra_plugins={"keyed": KeyedLoad()})
    assert result.status == "succeeded", result.manifest
    (root / "recipe.yaml").write_text(yaml.safe_dump(keyed_recipe(window={"last": 300})))
    return root


@pytest.fixture
def keyed(keyed_trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, dict[str, object]]:
    target = tmp_path / "k"
    shutil.copytree(keyed_trained, target)
    monkeypatch.chdir(target)
    monkeypatch.setenv("CRISPML_PROJECT", str(target))
    plugins = {"keyed": KeyedLoad(), "serving": Serving(target / "predictions.jsonl", "churn/2", training_run(target))}
    return target, plugins


def log_by_key(log: Path, frame: pd.DataFrame, when: datetime, per_request: int = 5) -> None:
    """Requests served by key, logged as the prediction-log contract says: the request's records
    (``customer_id`` alone) under ``inputs``, the features fetched for them under ``features``."""
    with log.open("a") as fh:
        for start in range(0, len(frame), per_request):
            rows = frame.iloc[start : start + per_request]
            line = {
                "schema": 1,
                "time": when.isoformat(timespec="milliseconds"),
                "deployment": "churn",
                "model": "churn/2",
                "inputs": rows[["customer_id"]].to_dict(orient="records"),
                "outputs": {"predictions": [0] * len(rows)},
                "features": rows.drop(columns="customer_id").to_dict(orient="records"),
            }
            fh.write(json.dumps(line) + "\n")


def served_by_key(proj: Path, rows: int, seed: int, customer_id: int | None = None) -> None:
    frame = pd.read_csv(proj / "data" / "keyed.csv").drop(columns="churned").sample(rows, random_state=seed)
    if customer_id is not None:
        frame["customer_id"] = customer_id
    log_by_key(proj / "predictions.jsonl", frame, datetime.now(UTC))


def key_results(report: dict[str, Any]) -> dict[str, bool]:
    """The suite's outcome per expectation on ``customer_id`` and on the column set."""
    return {
        r["expectation"]: r["success"]
        for r in report["results"]
        if r["column"] == "customer_id" or r["expectation"] == "expect_table_columns_to_match_set"
    }


def test_the_monitors_window_carries_the_requests_keys_to_the_suite(keyed: tuple[Path, dict[str, object]]) -> None:
    """Served by key, the log holds ``customer_id`` (what the request sent) and the features
    (what was fetched): the window the suite checks holds both, as the training data did."""
    proj, plugins = keyed
    served_by_key(proj, 300, 1)
    result = crispml.monitor(proj / "recipe.yaml", extra_plugins=plugins, no_retrain=True)
    assert result.report is not None and result.report.metrics["validation_failed"] == 0, result.line()
    assert "· suite passed" in result.line()
    report = json.loads((result.monitor.run_dir / "artifacts" / "validate" / "validation.json").read_text())
    assert key_results(report) == {
        "expect_table_columns_to_match_set": True,
        "expect_column_values_to_not_be_null": True,
        "expect_column_values_to_be_between": True,
    }
    assert not [r for r in report["skipped"] if r["column"] == "customer_id"]


def test_validate_data_sees_the_same_window_with_its_keys(keyed: tuple[Path, dict[str, object]]) -> None:
    """``crispml validate-data`` builds its window as the monitor does: the same keys checked,
    and an unknown key (a customer the training data never had) fails the suite."""
    proj, plugins = keyed
    served_by_key(proj, 300, 2)
    good = crispml.validate_data(proj / "recipe.yaml", last=300, extra_plugins=plugins)
    assert good.exit_code == 0 and good.run is not None, good.line()
    report = json.loads((good.run.run_dir / "artifacts" / "validate" / "validation.json").read_text())
    assert set(key_results(report).values()) == {True} and len(key_results(report)) == 3
    served_by_key(proj, 100, 3, customer_id=10**6)
    bad = crispml.validate_data(proj / "recipe.yaml", last=100, extra_plugins=plugins)
    assert bad.exit_code == 3 and bad.report is not None
    assert {(r.expectation, r.column) for r in bad.report.failures} == {
        ("expect_column_values_to_be_between", "customer_id")
    }
