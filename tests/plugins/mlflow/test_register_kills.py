"""``kill -9`` at every registry write of the register stage, then resume, then a plain re-run.

A real process is killed: a small fork server (a subprocess that has imported crispml, MLflow,
scikit-learn and pandas once) forks a child per kill point; the child runs ``crispml run`` on
real MLflow (SQLite) with a tripwire around ``MlflowClient``'s registry writes that sends the
child ``SIGKILL`` after the N-th write (N = 0: before the first). Nothing is mocked: the writes
happen, the process dies between two of them.

After each kill, in two copies of the killed project: ``crispml.resume`` of the killed run, and
a plain re-run of the recipe, must both succeed with the better model champion, and the
registry must be consistent (aliases, tags, history agree; nothing pending; one version per
trained model).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import crispml

REGISTER = {"use": "mlflow", "model_name": "churn", "compare_on": "roc_auc", "min_improvement": 0.0}
DUMMY = [  # roc_auc 0.5: a weak model (the evaluate gate relaxed for it)
    "train.estimator=sklearn.dummy.DummyClassifier",
    "train.params={}",
    "evaluate.gate.roc_auc=>= 0.0",
]

SERVER = textwrap.dedent(
    """
    import os, signal, sys, json
    import crispml, crispml.cli, mlflow, sklearn.linear_model, sklearn.dummy, pandas  # noqa: F401
    from mlflow import MlflowClient

    WRITES = [
        "create_registered_model", "create_model_version", "delete_model_version",
        "set_registered_model_alias", "delete_registered_model_alias",
        "set_model_version_tag", "delete_model_version_tag",
        "set_registered_model_tag", "delete_registered_model_tag",
    ]
    state = {"after": -1, "done": 0, "log": None}

    def tripwire(name, original):
        def call(self, *args, **kwargs):
            if state["after"] == 0:
                note(f"before the first write ({name} {args[1:3]})")
                os.kill(os.getpid(), signal.SIGKILL)
            out = original(self, *args, **kwargs)
            state["done"] += 1
            if state["done"] == state["after"]:
                note(f"after write {state['done']}: {name} {args[1:3]}")
                os.kill(os.getpid(), signal.SIGKILL)
            return out
        return call

    def note(text):
        with open(state["log"], "w") as f:
            f.write(text)

    for name in WRITES:
        setattr(MlflowClient, name, tripwire(name, getattr(MlflowClient, name)))

    for line in sys.stdin:
        job = json.loads(line)
        pid = os.fork()
        if pid == 0:
            os.chdir(job["project"])
            state.update(after=job["after"], log=job["log"])
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            try:
                crispml.cli.main(job["argv"])
            except SystemExit as exc:
                os._exit(int(exc.code or 0))
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        reply = {"signal": os.WTERMSIG(status)} if os.WIFSIGNALED(status) else {"exit": os.WEXITSTATUS(status)}
        print(json.dumps(reply), flush=True)
    """
)


class ForkServer:
    """Runs ``crispml run`` in forked children that a tripwire kills at a chosen registry write."""

    def __init__(self, cwd: Path) -> None:
        env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONWARNINGS": "ignore"}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=cwd, env=env
        )

    def run(self, project: Path, recipe: str, after: int, args: list[str]) -> tuple[dict[str, int], str]:
        """``crispml run RECIPE --set ARG...``, killed after ``after`` registry writes."""
        sets = [part for value in args for part in ("--set", value)]
        return self.command(project, after, ["run", recipe, *sets])

    def command(self, project: Path, after: int, argv: list[str]) -> tuple[dict[str, int], str]:
        """``crispml ARGV...`` in ``project``, killed after ``after`` registry writes."""
        log = project / "kill-point.txt"
        job = {"project": str(project), "after": after, "argv": argv, "log": str(log)}
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(job) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, "the fork server died"
        return json.loads(line), log.read_text() if log.exists() else ""

    def close(self) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()


@pytest.fixture(scope="module")
def fork_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ForkServer]:
    server = ForkServer(tmp_path_factory.mktemp("fork-server"))
    yield server
    server.close()


def client(project: Path) -> Any:
    from mlflow import MlflowClient

    uri = f"sqlite:///{project / '.crispml' / 'mlflow.db'}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def assert_consistent(c: Any, name: str = "churn") -> dict[str, Any]:
    """Aliases, tags and history agree; nothing is pending; one version per trained model."""
    model = c.get_registered_model(name)
    tags = model.tags or {}
    assert "crispml.pending" not in tags, tags["crispml.pending"]
    aliases = {a: str(v) for a, v in (model.aliases or {}).items()}
    versions = {str(v.version): v.tags or {} for v in c.search_model_versions(f"name='{name}'")}
    for version, vtags in versions.items():
        assert vtags.get("crispml.decision"), f"version {version} has no decision: {vtags}"
    fingerprints = [v["crispml.model_fingerprint"] for v in versions.values()]
    assert len(fingerprints) == len(set(fingerprints)), f"a trained model registered twice: {versions}"
    champion = aliases.get("champion")
    assert champion is not None and champion in versions
    history = json.loads(tags["crispml.champion_history"])
    assert history[-1]["version"] == champion
    assert versions[champion].get("crispml.champion_since") and versions[champion].get("crispml.promotion_reason")
    for ended in ("crispml.replaced_by", "crispml.champion_until", "crispml.rolled_back"):
        assert ended not in versions[champion], (champion, versions[champion])
    promoted = {e["version"] for e in history}
    for version, vtags in versions.items():
        if version == champion:
            continue
        if version in promoted:  # champion once, replaced since
            assert vtags.get("crispml.replaced_by") and vtags.get("crispml.champion_until"), (version, vtags)
        elif "crispml.champion_since" in vtags:  # champion once, rolled back (out of the history)
            assert vtags.get("crispml.rolled_back") and vtags.get("crispml.champion_until"), (version, vtags)
    challenger = aliases.get("challenger")
    assert challenger is None or challenger in versions
    return {"aliases": aliases, "versions": versions, "history": history}


def newest_run(project: Path) -> str:
    runs = [m for m in crispml.RunStore(project).list_runs() if m.get("status") == "running"]
    assert len(runs) == 1, runs
    return str(runs[0]["run_id"])


def kill_at_every_write(
    tmp_path: Path,
    fork_server: ForkServer,
    prepare: Callable[[Path], None],
    args: list[str],
    expect: Callable[[Path, Any, dict[str, Any]], None],
) -> int:
    """Kill after 0, 1, 2, ... registry writes until the run completes; heal each two ways."""
    base = tmp_path / "base"
    prepare(base)
    after = 0
    while True:
        killed = tmp_path / f"kill-{after}"
        shutil.copytree(base, killed)
        outcome, point = fork_server.run(killed, "recipe.yaml", after, args)
        if outcome.get("exit") is not None:
            assert outcome["exit"] == 0, f"the run with no kill failed: {outcome}"
            expect(killed, None, assert_consistent(client(killed)))
            return after
        assert outcome == {"signal": 9}, outcome
        run_id = newest_run(killed)
        healed_by_rerun = tmp_path / f"rerun-{after}"
        shutil.copytree(killed, healed_by_rerun)
        with pytest.MonkeyPatch.context() as mp:
            mp.chdir(killed)
            resumed = crispml.resume(run_id)
            assert resumed.status == "succeeded", f"resume after a kill {point}: {resumed.manifest.get('error')}"
            expect(killed, resumed, assert_consistent(client(killed)))
            mp.chdir(healed_by_rerun)
            rerun = crispml.run(healed_by_rerun / "recipe.yaml", overrides=args)
            assert rerun.status == "succeeded", f"re-run after a kill {point}: {rerun.manifest.get('error')}"
            expect(healed_by_rerun, rerun, assert_consistent(client(healed_by_rerun)))
        after += 1


@pytest.fixture
def recipe_in(write_recipe: Callable[..., Path], mlflow_db_template: Path) -> Callable[..., Path]:
    """``recipe_in(folder, *warm)``: a project folder with the embedded store and the quickstart
    recipe, its load/train/evaluate already run (cached) for each list of overrides in ``warm``,
    so that a forked child spends its time in the register stage."""

    def make(folder: Path, *warm: list[str]) -> Path:
        (folder / ".crispml").mkdir(parents=True)
        shutil.copy(mlflow_db_template, folder / ".crispml" / "mlflow.db")
        shutil.copy(write_recipe(register=REGISTER), folder / "recipe.yaml")
        shutil.copy(write_recipe("warm.yaml"), folder / "warm.yaml")
        with pytest.MonkeyPatch.context() as mp:
            mp.chdir(folder)
            for overrides in warm:
                assert crispml.run(folder / "warm.yaml", overrides=overrides).status == "succeeded"
        return folder / "recipe.yaml"

    return make


@pytest.mark.slow
def test_kill_at_each_write_of_a_promotion(
    tmp_path: Path, fork_server: ForkServer, recipe_in: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A weak champion (version 1), a better challenger killed at each write of its promotion."""

    def prepare(base: Path) -> None:
        recipe = recipe_in(base, [])
        monkeypatch.chdir(base)
        assert crispml.run(recipe, overrides=DUMMY).status == "succeeded"
        monkeypatch.chdir(tmp_path)

    def expect(project: Path, result: Any, registry: dict[str, Any]) -> None:
        champion = registry["aliases"]["champion"]
        assert champion != "1", "the better model did not become champion"
        assert float(registry["versions"][champion]["crispml.metric.roc_auc"]) > 0.5
        assert registry["versions"]["1"]["crispml.replaced_by"] == champion
        assert [e["version"] for e in registry["history"]] == ["1", champion]
        assert registry["aliases"]["challenger"] == champion
        if result is not None:
            assert result["model_version"].version == champion

    writes = kill_at_every_write(tmp_path, fork_server, prepare, [], expect)
    # begin (history copy, record), version, challenger, decision, 4 audit tags, 2 on the old
    # champion, history, champion, end (record, history copy): the kill points are all of them.
    assert writes >= 14, writes


@pytest.mark.slow
def test_kill_at_each_write_of_a_first_registration(
    tmp_path: Path, fork_server: ForkServer, recipe_in: Callable[..., Path]
) -> None:
    """No model registered yet: killed at each write, the first model still becomes champion."""

    def expect(project: Path, result: Any, registry: dict[str, Any]) -> None:
        assert list(registry["versions"]) == [registry["aliases"]["champion"]]
        assert [e["version"] for e in registry["history"]] == [registry["aliases"]["champion"]]

    def prepare(base: Path) -> None:
        recipe_in(base, [])

    writes = kill_at_every_write(tmp_path, fork_server, prepare, [], expect)
    assert writes >= 9, writes


@pytest.mark.slow
def test_kill_at_each_write_of_a_challenger_kept_out(
    tmp_path: Path, fork_server: ForkServer, recipe_in: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A good champion, a weak challenger killed at each write: after healing, the run is
    rejected (not failed, not passed) and the champion never moved."""

    def prepare(base: Path) -> None:
        recipe = recipe_in(base, DUMMY)
        monkeypatch.chdir(base)
        assert crispml.run(recipe).status == "succeeded"
        monkeypatch.chdir(tmp_path)

    after = 0
    while True:
        killed = tmp_path / f"kill-{after}"
        if after == 0:
            prepare(tmp_path / "base")
        shutil.copytree(tmp_path / "base", killed)
        outcome, point = fork_server.run(killed, "recipe.yaml", after, DUMMY)
        if outcome.get("exit") is not None:
            assert outcome["exit"] == 3, outcome  # rejected
            break
        assert outcome == {"signal": 9}, outcome
        rerun_dir = tmp_path / f"rerun-{after}"
        shutil.copytree(killed, rerun_dir)
        with pytest.MonkeyPatch.context() as mp:
            mp.chdir(killed)
            resumed = crispml.resume(newest_run(killed))
            mp.chdir(rerun_dir)
            rerun = crispml.run(rerun_dir / "recipe.yaml", overrides=DUMMY)
        for project, result in ((killed, resumed), (rerun_dir, rerun)):
            assert result.status == "rejected", f"after a kill {point}: {result.manifest.get('error')}"
            assert "champion is version 1" in str(result.manifest["rejection"]) or (
                "does not beat champion version 1" in str(result.manifest["rejection"])
            ), point
            registry = assert_consistent(client(project))
            assert registry["aliases"]["champion"] == "1"
            assert len(registry["versions"]) == 2 and registry["aliases"]["challenger"] != "1"
            assert [e["version"] for e in registry["history"]] == ["1"]
        after += 1
    assert after >= 5, after


def cli_in(project: Path, *argv: str) -> tuple[int, str]:
    """The real ``crispml`` entry point in this process (MLflow already imported), in ``project``."""
    from crispml.cli import main

    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(project)
        try:
            main(list(argv))
        except SystemExit as exc:
            return int(exc.code or 0), ""
    return 0, ""


@pytest.mark.slow
@pytest.mark.parametrize("command", ["promote", "rollback"])
def test_kill_at_each_write_of_promote_and_rollback(
    command: str,
    tmp_path: Path,
    fork_server: ForkServer,
    recipe_in: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Version 1 champion, version 2 kept out. ``promote churn 2`` (or, after that promotion,
    ``rollback churn``) killed at each write; the user's next promote/rollback heals it."""
    base = tmp_path / "base"
    recipe = recipe_in(base, DUMMY)
    monkeypatch.chdir(base)
    assert crispml.run(recipe).status == "succeeded"
    assert crispml.run(recipe, overrides=DUMMY).status == "rejected"
    if command == "promote":
        argv, target = ["promote", "churn", "2"], "2"
    else:
        assert cli_in(base, "promote", "churn", "2")[0] == 0
        argv, target = ["rollback", "churn"], "1"
    monkeypatch.chdir(tmp_path)
    after = 0
    while True:
        killed = tmp_path / f"kill-{after}"
        shutil.copytree(base, killed)
        outcome, point = fork_server.command(killed, after, argv)
        if outcome.get("exit") is not None:
            assert outcome["exit"] == 0, outcome
            break
        assert outcome == {"signal": 9}, outcome
        code, _ = cli_in(killed, *argv)  # again: finishes it (exit 2: already done) or does it now
        assert code in (0, 2), (point, code)
        registry = assert_consistent(client(killed))
        assert registry["aliases"]["champion"] == target, point
        expected = ["1", "2"] if command == "promote" else ["1"]
        assert [e["version"] for e in registry["history"]] == expected, point
        after += 1
    assert after >= 8, after
