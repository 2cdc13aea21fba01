"""Secrets through the real ``crispml`` command: the terminal, ``show``, ``runs``, ``resume``.

A recipe-named plugin module (written into the project) declares a secret option, logs what it
received, names it in its dataset's source and (while ``SECRETSTEPS_FAIL`` is set) fails with an
error that echoes every value. The values are distinctive; the test
greps everything the commands printed and every file under the project for them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from test_secrets import ENV_VALUE, TOKEN, URL_PW, leaks

PLUGIN = """
import hashlib, os
import pandas as pd
from crispml import Dataset, Declaration, Options, Secret, TrainedModel, hookimpl

class LoadOptions(Options):
    api_token: Secret | None = None
    dsn: str = ""
    region: str = "eu"
    join_key: str = "id"
    count: int = 1

@hookimpl
def crispml_declare():
    return Declaration(stages={"load": LoadOptions, "train": Options})

@hookimpl
def crispml_load(options, context):
    token = options.api_token.get_secret_value() if options.api_token else ""
    context.logger("load").warning("connecting to %s as %s in %s", options.dsn, token, options.region)
    if os.environ.get("SECRETSTEPS_FAIL"):
        raise RuntimeError(f"could not reach {options.dsn} as {token} in {options.region}")
    frame = pd.DataFrame({"x": [float(i) for i in range(20)], "y": [i % 2 for i in range(20)]})
    digest = hashlib.sha256(frame.to_csv().encode()).hexdigest()
    source = f"{options.dsn} {token} {options.region}"
    return Dataset(frame=frame, target="y", name="t", source=source, fingerprint=digest)

@hookimpl
def crispml_train(dataset):
    assert "://" not in dataset.source or ":***@" in dataset.source or "${env:" in dataset.source
    return TrainedModel(model=1, flavor="test", task="classification", target="y", feature_columns=["x"])
"""


def _project(project: Path, load: str) -> Path:
    (project / "secretsteps.py").write_text(PLUGIN)
    recipe = project / "r.yaml"
    recipe.write_text(f"name: s\nplugins: [secretsteps]\nload: {load}\ntrain: {{use: secretsteps}}\n")
    return recipe


def _run_id(project: Path) -> str:
    (run,) = [p.name for p in (project / ".crispml" / "runs").iterdir()]
    return run


def test_literal_secrets_never_reach_the_terminal_or_the_project(
    project: Path, crispml_cli: Callable[..., Any]
) -> None:
    _project(project, f"{{use: secretsteps, dsn: 'postgresql://bob:{URL_PW}@db.example/x', region: '${{env:R}}'}}")
    env = {"R": ENV_VALUE, "SECRETSTEPS_FAIL": "1"}
    outputs = []
    ran = crispml_cli("run", "r.yaml", "--set", f"load.api_token={TOKEN}", env=env)
    outputs += [ran.stdout, ran.stderr]
    assert ran.returncode == 1, ran.stderr
    assert "could not reach postgresql://bob:***@db.example/x as *** in ${env:R}" in ran.stderr
    assert "connecting to postgresql://bob:***@db.example/x as *** in ${env:R}" in ran.stderr  # the log line
    run_id = _run_id(project)
    for args in (("show", run_id, "--json"), ("show", run_id), ("runs",), ("runs", "--json")):
        shown = crispml_cli(*args, env=env)
        assert shown.returncode == 0, shown.stderr
        outputs += [shown.stdout, shown.stderr]
    manifest = json.loads(outputs[2])
    assert manifest["overrides"] == ["load.api_token=***"]
    assert manifest["recipe"]["load"] == {
        "use": "secretsteps",
        "gate": {},
        "cache": True,
        "dsn": "postgresql://bob:***@db.example/x",
        "region": "${env:R}",
        "api_token": "***",
    }
    refused = crispml_cli("resume", run_id, env=env)
    outputs += [refused.stdout, refused.stderr]
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1
    assert "cannot be resumed: write secrets as ${env:NAME}" in refused.stderr
    assert leaks(project, *outputs) == []


def test_a_run_whose_secrets_are_env_references_resumes(project: Path, crispml_cli: Callable[..., Any]) -> None:
    _project(project, "{use: secretsteps, api_token: '${env:T}', dsn: 'postgresql://bob:${env:P}@db.example/x'}")
    env = {"T": TOKEN, "P": URL_PW, "R": ENV_VALUE}
    outputs = []
    failed = crispml_cli("run", "r.yaml", "--set", "load.region=${env:R}", env={**env, "SECRETSTEPS_FAIL": "1"})
    outputs += [failed.stdout, failed.stderr]
    assert failed.returncode == 1, failed.stderr
    assert "could not reach postgresql://bob:${env:P}@db.example/x as ${env:T} in ${env:R}" in failed.stderr
    run_id = _run_id(project)
    manifest = json.loads((project / ".crispml" / "runs" / run_id / "manifest.json").read_text())
    assert manifest["overrides"] == ["load.region=${env:R}"]
    assert manifest["recipe"]["load"]["api_token"] == "${env:T}"
    resumed = crispml_cli("resume", run_id, env=env)
    outputs += [resumed.stdout, resumed.stderr]
    assert resumed.returncode == 0, resumed.stderr
    shown = crispml_cli("show", run_id, "--json", env=env)
    outputs += [shown.stdout]
    assert json.loads(shown.stdout)["status"] == "succeeded"
    assert leaks(project, *outputs) == []


def test_a_recipe_error_prints_the_env_reference(project: Path, crispml_cli: Callable[..., Any]) -> None:
    _project(project, "{use: secretsteps, count: '${env:R}', join_key: customer_id}")
    bad = crispml_cli("check", "r.yaml", env={"R": ENV_VALUE})
    assert bad.returncode == 2
    expected = "load.count: expected a valid integer, unable to parse string as an integer, got '${env:R}'"
    assert bad.stderr == f"crispml: error: r.yaml:3: {expected}\n"
    assert not (project / ".crispml").exists()
