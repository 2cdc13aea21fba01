"""Services between plugins: model resolution, deployments, the prediction log, the session.

Every test uses small in-test plugins: the core's contracts hold whichever plugin answers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from test_plugins import _fake_distribution

import crispml
import crispml.testing
from crispml import Deployment, ResolvedModel, UsageError, hookimpl, prediction_records
from crispml.errors import CrispmlError, PluginError
from crispml.testing import plugins_with

from conftest import TableLoader

CRISPML = str(Path(sys.executable).with_name("crispml"))


class FolderRegistry:
    """A registry that is a folder: ``<project>/models/<name>/<version>/``."""

    def __init__(self) -> None:
        self.contexts: list[Any] = []

    @hookimpl
    def crispml_resolve_model(self, reference: str, project_dir: Path, context: Any) -> ResolvedModel | None:
        self.contexts.append(context)
        if "/" not in reference or reference.startswith("models:/"):
            return None
        name, version = reference.split("/", 1)
        folder = project_dir / "models" / name / version
        if not folder.is_dir():
            raise UsageError(f"model '{name}' has no version {version}")
        return ResolvedModel(
            reference=reference,
            name=name,
            version=version,
            path=folder,
            flavor="pickle",
            lineage={"training_run": "run-1", "registry": "folder"},
        )


class Silent:
    @hookimpl
    def crispml_resolve_model(self, reference: str) -> None:
        return None

    @hookimpl
    def crispml_deployment(self, name: str) -> None:
        return None


def test_resolve_model_asks_the_registry_plugin(tmp_path: Path) -> None:
    (tmp_path / "models" / "churn" / "3").mkdir(parents=True)
    registry = FolderRegistry()
    plugins = plugins_with({"folder": registry, "silent": Silent()})
    resolved = crispml.resolve_model("churn/3", tmp_path, plugins=plugins)
    assert resolved.label == "churn/3" and resolved.path == tmp_path / "models" / "churn" / "3"
    assert resolved.lineage["training_run"] == "run-1"
    assert registry.contexts == [None]  # asked outside a run
    with pytest.raises(UsageError, match="has no version 9"):
        crispml.resolve_model("churn/9", tmp_path, plugins=plugins)


def test_no_plugin_resolves_it_is_one_clear_error(tmp_path: Path) -> None:
    plugins = plugins_with({"silent": Silent()}, entry_points=False)
    with pytest.raises(UsageError, match="no installed plugin resolves the model 'churn@champion'"):
        crispml.resolve_model("churn@champion", tmp_path, plugins=plugins)
    with pytest.raises(UsageError, match="no deployment named 'churn'"):
        crispml.deployment("churn", tmp_path, plugins=plugins)


def test_a_plugin_answering_the_wrong_type_is_named(tmp_path: Path) -> None:
    class Wrong:
        @hookimpl
        def crispml_resolve_model(self) -> dict[str, str]:
            return {"path": "/tmp"}

        @hookimpl
        def crispml_deployment(self) -> str:
            return "http://127.0.0.1:3000"

    plugins = plugins_with({"wrong": Wrong()}, entry_points=False)
    with pytest.raises(PluginError, match=r"returned dict .* expected crispml.ResolvedModel"):
        crispml.resolve_model("x/1", tmp_path, plugins=plugins)
    with pytest.raises(PluginError, match=r"returned str .* expected crispml.Deployment"):
        crispml.deployment("x", tmp_path, plugins=plugins)


def test_deployment_asks_the_serving_plugin(tmp_path: Path) -> None:
    class Server:
        @hookimpl
        def crispml_deployment(self, name: str, project_dir: Path) -> Deployment | None:
            if name != "churn":
                return None
            return Deployment(
                name=name,
                url="http://127.0.0.1:1",
                model_uri="folder:churn/3",
                model="churn/3",
                training_run="run-1",
                prediction_log=project_dir / "log.jsonl",
                status="down",
            )

        @hookimpl
        def crispml_deployment_names(self, project_dir: Path) -> list[str]:
            return ["churn", "fraud"]

    class OtherServer:
        @hookimpl
        def crispml_deployment_names(self) -> list[str]:
            return ["ads"]

    plugins = plugins_with({"server": Server(), "silent": Silent()}, entry_points=False)
    found = crispml.deployment("churn", tmp_path, plugins=plugins)
    assert found.model == "churn/3" and found.prediction_log == tmp_path / "log.jsonl"
    assert found.summary()["training_run"] == "run-1"
    with pytest.raises(UsageError) as err:
        crispml.deployment("chrun", tmp_path, plugins=plugins)
    assert str(err.value) == "no deployment named 'chrun' (deployments: churn, fraud)"
    # Every serving plugin's names are listed; none at all is said so.
    plugins = plugins_with({"server": Server(), "other": OtherServer()}, entry_points=False)
    with pytest.raises(UsageError, match=r"\(deployments: ads, churn, fraud\)$"):
        crispml.deployment("chrun", tmp_path, plugins=plugins)
    with pytest.raises(UsageError, match=r"^no deployment named 'x' \(there are no deployments\)$"):
        crispml.deployment("x", tmp_path, plugins=plugins_with({"silent": Silent()}, entry_points=False))


# -- the prediction log --------------------------------------------------------------------------


def _line(when: datetime, inputs: list[dict[str, Any]], *, schema: int | None = 1, **extra: Any) -> str:
    entry: dict[str, Any] = {
        "time": when.isoformat(timespec="milliseconds"),
        "deployment": "churn",
        "model": "churn/3",
        "training_run": "run-1",
        "inputs": inputs,
        "outputs": {
            "predictions": [i % 2 for i in range(len(inputs))],
            "probabilities": [{"0": 0.25, "1": 0.75} for _ in inputs],
        },
        **extra,
    }
    if schema is not None:
        entry["schema"] = schema
    return json.dumps(entry) + "\n"


T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _write_rotated(folder: Path) -> Path:
    """Three files (oldest ``.2``), a request of 5 records, a torn last line."""
    log = folder / "predictions.jsonl"
    (folder / "predictions.jsonl.2").write_text(_line(T0, [{"x": 0}]) + _line(T0 + timedelta(seconds=1), [{"x": 1}]))
    (folder / "predictions.jsonl.1").write_text(
        _line(T0 + timedelta(seconds=2), [{"x": 10 + i} for i in range(5)], features=[{"f": i} for i in range(5)])
    )
    log.write_text(_line(T0 + timedelta(seconds=3), [{"x": 3}]) + _line(T0 + timedelta(seconds=4), [{"x": 4}])[:40])
    return log


def test_prediction_records_reads_rotated_files_in_order_one_per_record(tmp_path: Path) -> None:
    log = _write_rotated(tmp_path)
    records = prediction_records(log)
    assert [r["inputs"]["x"] for r in records] == [0, 1, 10, 11, 12, 13, 14, 3], "torn last line skipped"
    assert all(r["time"].tzinfo is not None and r["time"].utcoffset() == timedelta(0) for r in records)
    five = [r for r in records if r["inputs"]["x"] >= 10]
    assert [r["prediction"] for r in five] == [0, 1, 0, 1, 0]
    assert [r["features"] for r in five] == [{"f": i} for i in range(5)]
    assert records[0]["features"] is None and records[0]["probabilities"] == {"0": 0.25, "1": 0.75}
    assert {r["model"] for r in records} == {"churn/3"} and {r["training_run"] for r in records} == {"run-1"}


def test_prediction_records_since_and_last(tmp_path: Path) -> None:
    log = _write_rotated(tmp_path)
    assert [r["inputs"]["x"] for r in prediction_records(log, last=3)] == [13, 14, 3]
    assert [r["inputs"]["x"] for r in prediction_records(log, since=T0 + timedelta(seconds=2))] == [
        10,
        11,
        12,
        13,
        14,
        3,
    ]
    naive = datetime(2026, 1, 1, 0, 0, 3)  # naive: read as UTC
    assert [r["inputs"]["x"] for r in prediction_records(log, since=naive)] == [3]
    assert [r["inputs"]["x"] for r in prediction_records(log, since=naive, last=0)] == []
    assert prediction_records(log, since=timedelta(hours=1)) == []  # all of it is from January
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "p.jsonl").write_text(_line(datetime.now(UTC), [{"x": 7}]))
    assert [r["inputs"] for r in prediction_records(fresh / "p.jsonl", since=timedelta(minutes=5))] == [{"x": 7}]
    with pytest.raises(UsageError):
        prediction_records(log, last=-1)


def test_prediction_records_of_a_deployment_and_of_nothing(tmp_path: Path) -> None:
    log = _write_rotated(tmp_path)
    dep = Deployment(name="churn", url="", model_uri="", prediction_log=log)
    assert len(prediction_records(dep)) == 8
    assert prediction_records(tmp_path / "never-written.jsonl") == []
    with pytest.raises(UsageError, match="keeps no prediction log"):
        prediction_records(Deployment(name="churn", url="", model_uri=""))


def test_prediction_records_refuses_a_newer_schema_and_reads_lines_without_one(tmp_path: Path) -> None:
    log = tmp_path / "p.jsonl"
    log.write_text(_line(T0, [{"x": 1}], schema=None))  # written before the field existed
    assert [r["inputs"] for r in prediction_records(log)] == [{"x": 1}]
    log.write_text(_line(T0, [{"x": 1}]) + _line(T0, [{"x": 2}], schema=2))
    with pytest.raises(CrispmlError, match="schema 2 is newer"):
        prediction_records(log)


def test_prediction_records_survives_garbage(tmp_path: Path) -> None:
    log = tmp_path / "p.jsonl"
    log.write_bytes(
        b"\x00\xff\xfe binary\n"
        + b"[1, 2, 3]\n"
        + b'{"schema": 1, "time": "yesterday", "inputs": [{"x": 1}]}\n'
        + b'{"schema": 1, "time": "2026-01-01T00:00:00+00:00", "inputs": "nope"}\n'
        + _line(T0, [{"x": 5}]).encode()
        + b"\n\n"
    )
    assert [r["inputs"] for r in prediction_records(log)] == [{"x": 5}]


# -- the session --------------------------------------------------------------------------------


COMMAND_PLUGIN = """
import click
import crispml

@crispml.hookimpl
def crispml_register_commands(cli, session):
    @cli.command("where-is")
    @click.argument("reference")
    def where_is(reference):
        '''Print where a model's files are, found through the session.'''
        assert crispml.session() is session
        click.echo(session.resolve_model(reference).path)

@crispml.hookimpl
def crispml_resolve_model(reference, project_dir):
    if reference == "churn/3":
        return crispml.ResolvedModel(reference=reference, name="churn", version="3",
                                     path=project_dir / "models" / "churn", flavor="pickle")
    return None
"""


def test_a_plugin_command_finds_the_registry_through_the_session(tmp_path: Path) -> None:
    site = tmp_path / "site"
    _fake_distribution(site, "crispml-where", {"where": "tp_where"}, {"tp_where": COMMAND_PLUGIN})
    project = tmp_path / "project"
    (project / ".crispml").mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": str(site), "CRISPML_PROJECT": str(project)}
    done = subprocess.run([CRISPML, "where-is", "churn/3"], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(project / "models" / "churn")
    done = subprocess.run([CRISPML, "where-is", "churn/4"], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 2 and "no installed plugin resolves the model 'churn/4'" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_a_stage_reaches_the_registry_through_its_context(tmp_path: Path) -> None:
    (tmp_path / "models" / "churn" / "3").mkdir(parents=True)
    seen: dict[str, Any] = {}

    class Monitor:
        @hookimpl
        def crispml_declare(self) -> crispml.Declaration:
            return crispml.Declaration(stages={"monitor": crispml.Options})

        @hookimpl
        def crispml_monitor(self, context: crispml.RunContext) -> crispml.MonitorReport:
            seen["resolved"] = context.session.resolve_model("churn/3", context=context)
            return crispml.MonitorReport()

    registry = FolderRegistry()
    recipe = crispml.Recipe(name="r", split=None, load=crispml.Step(use="table"), monitor=crispml.Step(use="monitor"))
    # A monitor step runs in a run of its own (``crispml monitor``; ``crispml run`` leaves it out).
    result = crispml.monitor(
        recipe,
        project=tmp_path,
        plugins=crispml.testing.plugins_with({"table": TableLoader(), "monitor": Monitor(), "folder": registry}),
    ).monitor
    assert result.status == "succeeded", result
    assert seen["resolved"].path == tmp_path / "models" / "churn" / "3"
    assert registry.contexts[-1] is not None and registry.contexts[-1].run_id == result.run_id


def _rotating_writer(log: Path, count: int, max_bytes: int) -> None:
    """What a serving plugin does (the bentoml service's log, in short): append one request per
    line, rotating past ``max_bytes`` — both under an exclusive lock on ``<log>.lock``."""
    from crispml import file_lock

    for i in range(count):
        line = _line(T0 + timedelta(milliseconds=i), [{"x": i}]).encode()
        with file_lock(Path(f"{log}.lock")):
            if log.exists() and log.stat().st_size + len(line) > max_bytes:
                rotated = sorted(int(p.suffix[1:]) for p in log.parent.glob(log.name + ".*") if p.suffix[1:].isdigit())
                for n in reversed(rotated):
                    os.replace(f"{log}.{n}", f"{log}.{n + 1}")
                os.replace(log, f"{log}.1")
            with log.open("ab") as fh:
                fh.write(line)


def test_reading_while_the_writer_rotates_never_skips_or_repeats(tmp_path: Path) -> None:
    import threading

    log = tmp_path / "predictions.jsonl"
    writer = threading.Thread(target=_rotating_writer, args=(log, 3000, 1500))
    writer.start()
    reads = 0
    try:
        while writer.is_alive() or reads == 0:
            xs = [r["inputs"]["x"] for r in prediction_records(log)]
            assert xs == list(range(len(xs))), "a read during rotation lost or repeated lines"
            reads += 1
    finally:
        writer.join()
    assert [r["inputs"]["x"] for r in prediction_records(log)] == list(range(3000))
    assert len(list(tmp_path.glob("predictions.jsonl.*"))) > 100 and reads > 1
