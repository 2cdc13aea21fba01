"""The helpers the core shares with plugins: exit codes, rows as a table or JSON, one-line
backend errors, MissingBackendError, and the Recorder of every hook call."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import crispml
from crispml import BackendError, ExitCode, MissingBackendError, Step, one_line, print_rows
from crispml.testing import Recorder, run_with

from conftest import basic_recipe

CRISPML = str(Path(sys.executable).with_name("crispml"))


def test_exit_codes_are_one_enum_shared_by_runs_and_errors() -> None:
    assert [int(c) for c in ExitCode] == [0, 1, 2, 3]
    assert crispml.UsageError.exit_code == ExitCode.USAGE
    assert crispml.CrispmlError.exit_code == ExitCode.FAILED
    assert MissingBackendError.exit_code == ExitCode.USAGE


def test_one_line_collapses_and_cuts_a_backend_message() -> None:
    long = "first line\n\n   second\tline " + "x" * 1000
    text = one_line(RuntimeError(long))
    assert "\n" not in text and "\t" not in text and text.startswith("first line second line x")
    assert len(text) == 300 and text.endswith("…")
    assert one_line(RuntimeError()) == "RuntimeError"
    error = BackendError.of("bentoml build", OSError("disk\nfull"))
    assert str(error) == "bentoml build: OSError: disk full" and error.exit_code == ExitCode.FAILED


def test_print_rows_prints_a_table_json_or_the_empty_line(capsys: pytest.CaptureFixture[str]) -> None:
    rows = [{"name": "a", "n": 1, "extra": None}, {"name": "b", "n": 22, "extra": "[x]"}]
    columns = {"NAME": "name", "DOUBLE": lambda r: r["n"] * 2, "EXTRA": "extra"}
    print_rows(rows, columns, caption="the caption")
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "DOUBLE", "EXTRA"]
    assert lines[1].split() == ["a", "2"] and lines[2].split()[:2] == ["b", "44"]
    assert "the caption" in out

    print_rows(rows, columns, as_json=True)
    assert json.loads(capsys.readouterr().out) == rows
    print_rows(rows, columns, as_json=True, json_value={"nested": rows})
    assert json.loads(capsys.readouterr().out) == {"nested": rows}

    print_rows([], columns, empty="nothing here")
    assert capsys.readouterr().out == "nothing here\n"
    print_rows([], columns, as_json=True, empty="nothing here")
    assert json.loads(capsys.readouterr().out) == []


def test_recorder_sees_every_hook_call_stage_hooks_and_execute_included(
    project: Path, fakes: dict[str, object]
) -> None:
    recorder = Recorder()
    result = run_with(basic_recipe(), project=project, plugins={**fakes, "rec": recorder})
    assert result.status == "succeeded"
    names = recorder.names()
    for hook in ("crispml_execute", "crispml_load", "crispml_train", "crispml_evaluate"):
        assert hook in names, (hook, names)
    # Order: the runner starts after before_run, and runs each stage between its events.
    assert names.index("crispml_before_run") < names.index("crispml_execute")
    every = recorder.events(every=True)
    assert every.index("before_stage:train") < every.index("train") < every.index("after_stage:train:succeeded")
    # Stage hooks reach only the bound plugin, and their results are recorded.
    (train,) = recorder.called("train")
    assert train.plugins == ["mean"]
    assert train.result.summary() == result["model"].summary()
    (execute,) = recorder.called("execute")
    assert execute.result == "succeeded" and execute.error is None
    # The event view is what it always was.
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


def test_recorder_records_a_hook_that_raised_and_detaches(project: Path, fakes: dict[str, object]) -> None:
    recorder = Recorder()
    failed = run_with(
        basic_recipe(train=Step(use="mean", fail=True)), project=project, plugins={**fakes, "rec": recorder}
    )
    assert failed.status == "failed"
    (train,) = recorder.called("crispml_train")
    assert isinstance(train.error, RuntimeError) and train.result is None
    seen = len(recorder.calls)
    recorder.detach()
    pm = crispml.get_plugins().pm
    pm.hook.crispml_declare()
    assert len(recorder.calls) == seen


NEEDY = """
import crispml

@crispml.hookimpl
def crispml_declare():
    return crispml.Declaration(
        stages={"load": crispml.Options},
        backends=(crispml.Backend("crispml-nope", "crispml_nope_mod", extra="nope"),),
    )

@crispml.hookimpl
def crispml_load(options):
    import crispml_nope_mod  # never reached: the recipe check stops first
"""


def test_a_stage_whose_backend_is_missing_raises_missing_backend_error(project: Path) -> None:
    (project / "needy.py").write_text(NEEDY)
    (project / "r.yaml").write_text("name: r\nplugins: [needy]\nload:\n  use: needy\n")
    with pytest.raises(MissingBackendError) as info:
        crispml.check(project / "r.yaml")
    assert info.value.backend is not None and info.value.backend.extra == "nope"
    assert "pip install 'crispml[nope]'" in str(info.value)

    env = {**os.environ, "CRISPML_PROJECT": str(project)}
    done = subprocess.run([CRISPML, "run", "r.yaml"], cwd=project, capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == ExitCode.USAGE, done.stderr
    assert done.stderr.strip().splitlines() == [
        "crispml: error: r.yaml:4: load.use: plugin 'needy' needs crispml-nope, which is not installed: "
        "pip install 'crispml[nope]'"
    ]
    assert not (project / ".crispml").exists()


def test_backend_require_names_the_extra() -> None:
    missing = crispml.Backend("crispml-nope", "crispml_nope_mod", extra="nope")
    with pytest.raises(MissingBackendError, match=r"crispml models needs crispml-nope.*pip install 'crispml\[nope\]'"):
        missing.require("crispml models")
    crispml.Backend("pluggy", "pluggy").require("anything")  # installed: no error
