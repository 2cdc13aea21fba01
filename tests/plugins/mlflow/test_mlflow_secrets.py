"""No secret reaches MLflow: params, tags, dataset inputs, the manifest artifact, the registry.

Real MLflow on SQLite (and, marked ``services``, a real server on PostgreSQL): every value below
is distinctive, and after the run every file under the project — MLflow's database read as bytes
included — and everything printed is searched for it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from test_mlflow import CHURN, REGISTER, client, embedded, main

import crispml
from crispml import Dataset, Declaration, Options, Secret, hash_file, hookimpl

LITERAL = "LIT-S3CR3T-a1"
SET_LITERAL = "SET-S3CR3T-b2"
ENV_TOKEN = "ENVTOK-S3CR3T-c3"
URL_PW = "URLPW-S3CR3T-d4"
OWNER = "OWNER-S3CR3T-e5"
SECRETS = (LITERAL, SET_LITERAL, ENV_TOKEN, URL_PW, OWNER)


def leaks(project: Path, *texts: str) -> list[str]:
    found = []
    for path in project.rglob("*"):
        if path.is_file() and path.name != "recipe.yaml":  # the user's own recipe
            data = path.read_bytes()
            found += [f"{s} in {path}" for s in SECRETS if s.encode() in data]
    for i, text in enumerate(texts):
        found += [f"{s} in output #{i}" for s in SECRETS if s in text]
    return found


class SecretLoad:
    """Loads the churn CSV; declares secret options; its source names its DSN; it can fail
    with an error that echoes every value it was given."""

    class LoadOptions(Options):
        path: str
        db_password: Secret
        api_token: Secret
        extra_token: Secret | None = None
        dsn: str = ""
        url: str = ""
        join_key: str = "customer_id"
        key_columns: list[str] = []
        fail: bool = False

    @hookimpl
    def crispml_declare(self) -> Declaration:
        return Declaration(stages={"load": self.LoadOptions})

    @hookimpl
    def crispml_load(self, options: Any) -> Dataset:
        import pandas as pd

        values = [options.db_password, options.api_token, options.extra_token]
        clear = " ".join(v.get_secret_value() for v in values if v is not None)
        if options.fail:
            raise RuntimeError(f"cannot reach {options.dsn} with {clear}")
        return Dataset(
            frame=pd.read_csv(options.path),
            target="churned",
            name="churn",
            source=options.url,  # MLflow resolves dataset sources: a postgresql:// one it rejects
            fingerprint=hash_file(Path(options.path)),
        )


def _load(**changes: Any) -> dict[str, Any]:
    return {
        "use": "secret_load",
        "path": str(CHURN),
        "db_password": LITERAL,
        "api_token": "${env:CRISPML_TEST_TOKEN}",
        "dsn": f"postgresql://bob:{URL_PW}@db.example:5432/sales",
        "url": f"https://bob:{URL_PW}@data.example/churn.csv",
        "join_key": "customer_id",
        "key_columns": ["customer_id", "month"],
        **changes,
    }


TAGS = {"team": "risk", "owner": "${env:CRISPML_TEST_OWNER}", "signing_key": "readable-by-design"}


@pytest.fixture
def secret_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRISPML_TEST_TOKEN", ENV_TOKEN)
    monkeypatch.setenv("CRISPML_TEST_OWNER", OWNER)


@pytest.mark.usefixtures("secret_env")
def test_no_secret_reaches_mlflow(
    mlflow_project: Path, write_recipe: Callable[..., Path], capfd: pytest.CaptureFixture[str]
) -> None:
    recipe = write_recipe(load=_load(), tracking={"mlflow": {"tags": TAGS}}, register=REGISTER)
    result = crispml.run(
        recipe, overrides=[f"load.extra_token={SET_LITERAL}"], extra_plugins={"secret_load": SecretLoad()}
    )
    assert result.status == "succeeded", result.error
    run = client(embedded(mlflow_project)).get_run(result.manifest["links"]["mlflow_run_id"])
    params, tags = run.data.params, run.data.tags
    # Declared secrets: *** (literal, --set) or the reference; a URL's password: ***.
    assert params["load.db_password"] == "***"
    assert params["load.extra_token"] == "***"
    assert params["load.api_token"] == "${env:CRISPML_TEST_TOKEN}"
    assert params["load.dsn"] == "postgresql://bob:***@db.example:5432/sales"
    # Names are not secrets: readable.
    assert params["load.join_key"] == "customer_id"
    assert params["load.key_columns"] == '["customer_id", "month"]'
    assert tags["signing_key"] == "readable-by-design" and tags["team"] == "risk"
    # A tag from ${env:NAME} is sent as the reference, never the value.
    assert tags["owner"] == "${env:CRISPML_TEST_OWNER}"
    (inp,) = run.inputs.dataset_inputs
    assert "https://bob:***@data.example/churn.csv" in inp.dataset.source
    out, err = capfd.readouterr()
    assert leaks(mlflow_project, out, err) == []


@pytest.mark.usefixtures("secret_env")
def test_a_failure_that_echoes_secrets_reaches_mlflow_masked(
    mlflow_project: Path, write_recipe: Callable[..., Path], capfd: pytest.CaptureFixture[str]
) -> None:
    recipe = write_recipe(load=_load(fail=True), tracking={"mlflow": {"tags": TAGS}})
    result = crispml.run(recipe, extra_plugins={"secret_load": SecretLoad()})
    assert result.status == "failed"
    tags = client(embedded(mlflow_project)).get_run(result.manifest["links"]["mlflow_run_id"]).data.tags
    expected = "postgresql://bob:***@db.example:5432/sales with *** ${env:CRISPML_TEST_TOKEN}"
    assert expected in tags["crispml.stage.load.error"] and expected in tags["crispml.error"]
    out, err = capfd.readouterr()
    assert leaks(mlflow_project, out, err) == []


@pytest.mark.usefixtures("secret_env")
def test_a_run_with_env_secrets_resumes_the_same_mlflow_run(
    mlflow_project: Path, write_recipe: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRISPML_TEST_PW", URL_PW)
    load = _load(
        db_password="${env:CRISPML_TEST_TOKEN}",
        dsn="postgresql://bob:${env:CRISPML_TEST_PW}@db/x",
        url="https://bob:${env:CRISPML_TEST_PW}@data.example/churn.csv",
    )
    recipe = write_recipe(load={**load, "fail": "${env:CRISPML_TEST_FAIL}"}, tracking={"mlflow": {"tags": TAGS}})
    monkeypatch.setenv("CRISPML_TEST_FAIL", "true")
    failed = crispml.run(recipe, extra_plugins={"secret_load": SecretLoad()})
    assert failed.status == "failed"
    monkeypatch.setenv("CRISPML_TEST_FAIL", "false")
    done = crispml.resume(failed.run_id, extra_plugins={"secret_load": SecretLoad()})
    assert done.status == "succeeded", done.error
    assert done.manifest["links"]["mlflow_run_id"] == failed.manifest["links"]["mlflow_run_id"]
    assert leaks(mlflow_project) == []


@pytest.mark.services
def test_a_tracking_uri_password_reaches_neither_the_project_nor_the_terminal(
    project: Path, write_recipe: Callable[..., Path], mlflow_server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The server does not check credentials; the URI still carries a password crispml must hide."""
    uri = mlflow_server.replace("http://", f"http://bob:{URL_PW}@")
    register = {**REGISTER, "model_name": "churn_secret", "tracking_uri": uri}
    write_recipe(tracking={"mlflow": {"tracking_uri": uri}}, register=register)
    code, out, err = main(capsys, "run", "recipe.yaml")
    assert code == 0, err
    (run_dir,) = (project / ".crispml" / "runs").iterdir()
    code, shown, _ = main(capsys, "show", run_dir.name, "--json")
    assert code == 0 and "http://bob:***@127.0.0.1" in shown
    c = client(mlflow_server)
    (found,) = c.search_runs(
        [c.get_experiment_by_name("quickstart-churn").experiment_id], f"tags.`crispml.run_id` = '{run_dir.name}'"
    )
    assert found.data.params["tracking.mlflow.tracking_uri"].startswith("http://bob:***@127.0.0.1")
    assert all(URL_PW not in v for v in [*found.data.params.values(), *found.data.tags.values()])
    assert leaks(project, out, err, shown) == [], out[-3000:]
