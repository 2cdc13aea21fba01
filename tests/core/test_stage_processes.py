"""Stages in other processes: a runner whose every stage is a ``crispml run-stage`` process gives
the same runs as ``local``; two processes never run one stage at once; concurrent stage
processes lose none of each other's manifest updates; bad ``run-stage`` calls are one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

from suite_helpers import CRISPML, run_cli

RUNNER_DIR = Path(__file__).resolve().parent  # holds subprocess_runner.py

STEPS = """
import pathlib
import crispml
from helpers import scale


@crispml.hookimpl
def crispml_declare():
    return crispml.Declaration(stages={"train": crispml.Options})


@crispml.hookimpl
def crispml_train(dataset):
    failures = pathlib.Path(__file__).with_name("fail_times")
    left = int(failures.read_text()) if failures.exists() else 0
    if left > 0:
        failures.write_text(str(left - 1))
        raise ConnectionError(f"flaky ({left} failures left)")
    value = scale(float(dataset.train_frame["x"].sum()))
    return crispml.TrainedModel(model=value, flavor="test", task="regression", target="y", feature_columns=["x"])
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


def _project(folder: Path, runner: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "data.csv").write_text("x,y\n" + "".join(f"{i},{i % 2}\n" for i in range(30)))
    (folder / "consts.py").write_text("FACTOR = 2\n")
    (folder / "helpers.py").write_text("from consts import FACTOR\n\n\ndef scale(value):\n    return value * FACTOR\n")
    (folder / "steps.py").write_text(STEPS)
    (folder / "scorer.py").write_text(SCORER)
    (folder / "recipe.yaml").write_text(
        textwrap.dedent(
            f"""
            name: stages
            plugins: [steps, scorer, subprocess_runner]
            load: {{use: files, path: data.csv, target: y}}
            train: {{use: steps}}
            evaluate: {{use: scorer, gate: {{value: ">= 0"}}}}
            runner: {{use: {runner}}}
            """
        )
    )
    return folder


def _env(project: Path) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(RUNNER_DIR), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "CRISPML_PROJECT": str(project), "PYTHONPATH": path}


def _cli(project: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``crispml`` with the test runner importable (``_env``)."""
    return run_cli(project, *args, timeout=timeout, base_env=_env(project), columns=None)


def _runs(project: Path) -> set[str]:
    runs = project / ".crispml" / "runs"
    return {p.name for p in runs.iterdir()} if runs.is_dir() else set()


def _run(project: Path, *sets: str) -> tuple[int, dict[str, Any]]:
    """``crispml run recipe.yaml``: its exit code and the manifest of the run it made."""
    before = _runs(project)
    proc = _cli(project, "run", "recipe.yaml", *(a for s in sets for a in ("--set", s)))
    (run_id,) = _runs(project) - before
    assert "Traceback" not in proc.stderr, proc.stderr
    manifest = json.loads((project / ".crispml" / "runs" / run_id / "manifest.json").read_text())
    return proc.returncode, manifest


def _normal(manifest: dict[str, Any], project: Path) -> dict[str, Any]:
    """The manifest without what must differ between two runs: ids, times, processes, the
    runner and the project's folder. Fingerprints are compared separately (they hash paths)."""
    out: dict[str, Any] = json.loads(json.dumps(manifest).replace(str(project), "<project>"))
    for key in (
        "run_id",
        "started",
        "ended",
        "duration",
        "pid",
        "pid_created",
        "host",
        "recipe",
        "recipe_hash",
        "plugins",
    ):
        out.pop(key)
    out["environment"].pop("platform", None)
    for stage in out["stages"]:
        for key in ("started", "duration", "fingerprint"):
            stage.pop(key, None)
        stage["attempts"] = [a["error"] for a in stage["attempts"]]
    return out


def _status(manifest: dict[str, Any]) -> dict[str, str]:
    return {s["name"]: s["status"] for s in manifest["stages"]}


def _fingerprints(manifest: dict[str, Any]) -> dict[str, str]:
    return {s["name"]: s.get("fingerprint") for s in manifest["stages"]}


def _value(manifest: dict[str, Any]) -> float:
    return float(manifest["stages"][2]["summary"]["metrics"]["value"])


def test_a_runner_with_a_process_per_stage_gives_the_same_runs_as_local(tmp_path: Path) -> None:
    """First run, an all-cached re-run, and a re-run after a helper's constant changed."""
    seen: dict[str, list[tuple[int, dict[str, Any]]]] = {}
    for runner in ("local", "subprocess_runner"):
        project = _project(tmp_path / runner, runner)
        first, again = _run(project), _run(project)
        (project / "consts.py").write_text("FACTOR = 3\n")
        changed = _run(project)
        seen[runner] = [first, again, changed]
        assert [rc for rc, _ in seen[runner]] == [0, 0, 0]
        assert _status(first[1]) == {"load": "succeeded", "train": "succeeded", "evaluate": "succeeded"}
        assert _status(again[1]) == {"load": "cached", "train": "cached", "evaluate": "cached"}
        assert _status(changed[1]) == {"load": "cached", "train": "succeeded", "evaluate": "succeeded"}
        assert _value(changed[1]) == _value(first[1]) / 2 * 3
        fp = [_fingerprints(m) for _, m in seen[runner]]
        assert fp[0] == fp[1] and fp[2]["load"] == fp[0]["load"]
        assert fp[2]["train"] != fp[0]["train"] and fp[2]["evaluate"] != fp[0]["evaluate"]
        assert all(len(s["attempts"]) == 1 for _, m in seen[runner] for s in m["stages"])
    for (lrc, local), (src, sub) in zip(seen["local"], seen["subprocess_runner"], strict=True):
        assert lrc == src
        assert _normal(local, tmp_path / "local") == _normal(sub, tmp_path / "subprocess_runner")

    # In one project, the other runner reuses what local stored, under the same fingerprints.
    rc, reused = _run(tmp_path / "local", "runner.use=subprocess_runner")
    assert rc == 0 and set(_status(reused).values()) == {"cached"}
    assert _fingerprints(reused) == _fingerprints(seen["local"][2][1])


def test_a_stage_that_fails_twice_is_retried_in_its_own_process(tmp_path: Path) -> None:
    sub = _project(tmp_path / "sub", "subprocess_runner")
    (sub / "fail_times").write_text("2")
    rc, manifest = _run(sub)
    assert rc == 0 and manifest["status"] == "succeeded" and manifest["error"] is None
    assert _status(manifest) == {"load": "succeeded", "train": "succeeded", "evaluate": "succeeded"}
    train = manifest["stages"][1]
    assert [a["error"] for a in train["attempts"]] == [
        "stage 'train' (plugin 'steps') failed: ConnectionError: flaky (2 failures left)",
        "stage 'train' (plugin 'steps') failed: ConnectionError: flaky (1 failures left)",
        None,
    ]

    # Past its retries the run fails as under local, with the same record but for the attempts.
    local = _project(tmp_path / "local", "local")
    (local / "fail_times").write_text("1")
    (sub / "fail_times").write_text("3")
    (lrc, lman), (src, sman) = _run(local, "split.seed=7"), _run(sub, "split.seed=7")
    assert lrc == src == 1
    assert _status(sman) == {"load": "succeeded", "train": "failed", "evaluate": "skipped"}
    assert len(sman["stages"][1]["attempts"]) == 3 and len(lman["stages"][1]["attempts"]) == 1
    lnorm, snorm = _normal(lman, local), _normal(sman, sub)
    assert snorm["stages"][1].pop("attempts")[-1] == lnorm["stages"][1].pop("attempts")[-1]
    assert lnorm == snorm

    # A rejection: exit 3 under both, nothing retried.
    gate = ("split.seed=7", "evaluate.gate.value=>= 1e9")
    (lrc, lman), (src, sman) = _run(local, *gate), _run(sub, *gate)
    assert lrc == src == 3
    assert _status(sman)["evaluate"] == "rejected" and len(sman["stages"][2]["attempts"]) == 1
    assert _normal(lman, local) == _normal(sman, sub)


# -- run-stage from the command line ----------------------------------------------------------


def _started(project: Path) -> str:
    env = _env(project)
    code = "import crispml, sys; print(crispml.start_run('recipe.yaml'))"
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=project, capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_bad_run_stage_calls_are_one_line_and_exit_2(tmp_path: Path) -> None:
    project = _project(tmp_path / "p", "local")
    unknown = _cli(project, "run-stage", "nope", "train")
    assert unknown.returncode == 2 and unknown.stderr.count("\n") == 1
    assert "run 'nope' not found" in unknown.stderr
    assert not (project / ".crispml").exists()  # nothing written

    run_id = _started(project)
    manifest = project / ".crispml" / "runs" / run_id / "manifest.json"
    before = manifest.read_text()
    stage = _cli(project, "run-stage", run_id, "deploy")
    assert stage.returncode == 2 and stage.stderr.count("\n") == 1
    assert f"run '{run_id}' has no stage 'deploy' (its stages: load, train, evaluate)" in stage.stderr
    early = _cli(project, "run-stage", run_id, "evaluate")
    assert early.returncode == 2 and early.stderr.count("\n") == 1
    assert "stage 'evaluate' needs stage 'train', which has not run yet" in early.stderr
    assert manifest.read_text() == before  # a refused call changes nothing
    assert "Traceback" not in unknown.stderr + stage.stderr + early.stderr

    # A run id is a folder under runs/, never a path out of it.
    outside = _cli(project, "run-stage", f"../runs/{run_id}", "load")
    assert outside.returncode == 2 and outside.stderr.count("\n") == 1 and "not found" in outside.stderr
    # A manifest cut short (not by crispml: its writes are atomic) or of another shape: one line.
    for broken in (before[: len(before) // 2], '{"run_id": 1}', "\xff\xfe"):
        manifest.write_text(broken, errors="surrogateescape")
        bad = _cli(project, "run-stage", run_id, "load")
        assert bad.returncode == 2 and bad.stderr.count("\n") == 1, bad.stderr
        assert f"{manifest}: not a crispml manifest" in bad.stderr and "Traceback" not in bad.stderr


def _wait_for(condition: Any, what: str, timeout: float = 90) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


GATED = """
import pathlib, time
import crispml


def _wait(stage):
    folder = pathlib.Path(__file__).parent
    (folder / f"{stage}.started").touch()
    while not (folder / "release").exists():
        time.sleep(0.01)


@crispml.hookimpl
def crispml_declare():
    return crispml.Declaration(stages={"validate": crispml.Options, "train": crispml.Options})


@crispml.hookimpl
def crispml_validate(dataset, context):
    _wait("validate")
    context.links["validated_by"] = "validate"
    return crispml.ValidationReport(success=True)


@crispml.hookimpl
def crispml_train(dataset, context):
    _wait("train")
    context.links["trained_by"] = "train"
    return crispml.TrainedModel(model=1, flavor="test", task="regression", target="y", feature_columns=["x"])
"""


def _gated_project(folder: Path) -> Path:
    _project(folder, "local")
    (folder / "gated.py").write_text(GATED)
    (folder / "recipe.yaml").write_text(
        "name: gated\nplugins: [gated]\nload: {use: files, path: data.csv, target: y}\n"
        "validate: {use: gated}\ntrain: {use: gated}\n"
    )
    return folder


def _popen(project: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [CRISPML, *args], cwd=project, env=_env(project), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_the_same_stage_in_two_processes_at_once_is_refused(tmp_path: Path) -> None:
    project = _gated_project(tmp_path / "p")
    run_id = _started(project)
    assert _cli(project, "run-stage", run_id, "load").returncode == 0
    first = _popen(project, "run-stage", run_id, "train")
    try:
        _wait_for(lambda: (project / "train.started").exists(), "train to start")
        second = _cli(project, "run-stage", run_id, "train")
        assert second.returncode == 2 and second.stderr.count("\n") == 1
        assert f"stage 'train' of run '{run_id}' is already running (pid {first.pid}" in second.stderr
        # The process that started the run is gone, but a stage of it runs: not "interrupted".
        listed = json.loads(_cli(project, "runs", "--json").stdout)
        assert listed[0]["run_id"] == run_id and listed[0]["status"] == "running"
        resumed = _cli(project, "resume", run_id)
        assert resumed.returncode == 2 and f"is still running (pid {first.pid})" in resumed.stderr
    finally:
        (project / "release").touch()
        _, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    manifest = json.loads((project / ".crispml" / "runs" / run_id / "manifest.json").read_text())
    train = manifest["stages"][2]
    assert train["status"] == "succeeded" and len(train["attempts"]) == 1


def test_a_stage_process_killed_mid_stage_can_be_run_again(tmp_path: Path) -> None:
    project = _gated_project(tmp_path / "p")
    run_id = _started(project)
    assert _cli(project, "run-stage", run_id, "load").returncode == 0
    victim = _popen(project, "run-stage", run_id, "train")
    _wait_for(lambda: (project / "train.started").exists(), "train to start")
    victim.kill()  # SIGKILL: the record says "running", held by a process that is gone
    victim.communicate(timeout=30)
    (project / "release").touch()
    again = _cli(project, "run-stage", run_id, "train")
    assert again.returncode == 0 and again.stdout.strip() == "succeeded", again.stderr
    manifest = json.loads((project / ".crispml" / "runs" / run_id / "manifest.json").read_text())
    killed, retried = manifest["stages"][2]["attempts"]
    assert killed["duration"] is None and "interrupted" in killed["error"]
    assert retried["error"] is None and retried["duration"] >= 0


def test_stages_running_side_by_side_lose_none_of_each_others_updates(tmp_path: Path) -> None:
    project = _gated_project(tmp_path / "p")
    run_id = _started(project)
    assert _cli(project, "run-stage", run_id, "load").returncode == 0
    procs = [_popen(project, "run-stage", run_id, name) for name in ("validate", "train")]
    try:
        _wait_for(lambda: all((project / f"{n}.started").exists() for n in ("validate", "train")), "both stages")
    finally:
        (project / "release").touch()  # both finish at once
        outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    finished = subprocess.run(
        [sys.executable, "-c", f"import crispml; print(crispml.finish_run('.', '{run_id}').status)"],
        cwd=project,
        capture_output=True,
        text=True,
        env=_env(project),
        timeout=120,
    )
    assert finished.stdout.strip() == "succeeded", finished.stderr
    manifest = json.loads((project / ".crispml" / "runs" / run_id / "manifest.json").read_text())
    assert _status(manifest) == {"load": "succeeded", "validate": "succeeded", "train": "succeeded"}
    assert manifest["links"] == {"validated_by": "validate", "trained_by": "train"}


WRITER = """
import sys
from pathlib import Path
from crispml.resolve import on_path
from crispml.runs import stored_plan, stored_recipe
from crispml.plugins import get_plugins
from crispml.store import RunStore

project, run_id, me = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
store = RunStore(project)
manifest = store.read_manifest(run_id)
with on_path(project):
    plan = stored_plan(run_id, manifest, stored_recipe(run_id, manifest, "x"), store, get_plugins(), resumed=False)
for i in range(40):
    plan.context.links.clear()  # each write carries only its own new key: a lost write shows
    plan.context.links[f"{me}-{i}"] = i
    plan._update(lambda m: None)
"""


def test_concurrent_manifest_writers_lose_nothing(tmp_path: Path) -> None:
    """The lock under every read-modify-write, hammered: four processes, forty writes each."""
    project = _gated_project(tmp_path / "p")
    run_id = _started(project)
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(project), run_id, f"w{n}"], cwd=project, env=_env(project))
        for n in range(4)
    ]
    assert [p.wait(timeout=300) for p in procs] == [0, 0, 0, 0]
    manifest = json.loads((project / ".crispml" / "runs" / run_id / "manifest.json").read_text())
    assert len(manifest["links"]) == 160
