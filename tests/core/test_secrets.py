"""Secrets by declaration: what a run writes down and prints never holds a secret.

Each test sets distinctive values, runs a path a secret can take (manifest, overrides,
``show --json``, terminal, logs, error messages, resume) and greps everything the run left —
every file under the project, captured output — for them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import stat
import string
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationInfo, field_validator

from crispml import Dataset, Declaration, Evaluation, Options, RecipeError, Secret, Step, UsageError, hookimpl, resume
from crispml._redact import MASK, Redactor, has_masked, mask_urls, redact
from crispml.testing import plugins_with, run_with

from conftest import basic_recipe

TOKEN = "TOK-S3CR3T-9f1"
URL_PW = "URLPW-S3CR3T-7c2"
ENV_VALUE = "ENVVAL-S3CR3T-4d8"
SECRETS = (TOKEN, URL_PW, ENV_VALUE)


def leaks(folder: Path, *texts: str) -> list[str]:
    """Every file under ``folder`` (as bytes; the user's own recipe ``r.yaml`` aside) and every
    text that holds one of ``SECRETS``."""
    found = []
    for path in folder.rglob("*"):
        if path.is_file() and path != folder / "r.yaml":
            data = path.read_bytes()
            found += [f"{s} in {path}" for s in SECRETS if s.encode() in data]
    for i, text in enumerate(texts):
        found += [f"{s} in output #{i}" for s in SECRETS if s in text]
    return found


# -- the in-process plugin ------------------------------------------------------------------


class SecretOptions(Options):
    api_token: Secret | None = None
    headers: dict[str, Secret] = {}
    dsn: str = ""
    region: str = "eu"
    join_key: str = ""
    primary_key: str = ""
    key_columns: list[str] = []
    monkey: str = ""
    fail: bool = False
    tokens: list[Secret] = []
    split_tokens: list[Secret] = []
    """Given as one comma-separated string: the validator reshapes it into a list."""

    @field_validator("split_tokens", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        return value.split(",") if isinstance(value, str) else value


class Secretive:
    """An evaluate step with secret and secret-looking options; it echoes them when it fails."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    @hookimpl
    def crispml_declare(self) -> Declaration:
        return Declaration(stages={"evaluate": SecretOptions})

    @hookimpl
    def crispml_evaluate(self, options: SecretOptions, context: Any) -> Evaluation:
        token = options.api_token.get_secret_value() if options.api_token else ""
        values = {"token": token, "dsn": options.dsn, "region": options.region}
        values.update({k: v.get_secret_value() for k, v in options.headers.items()})
        self.seen.append(values)
        context.logger("evaluate").warning("connecting with %s", values)
        if options.fail:
            raise RuntimeError(f"cannot connect with {values}")
        return Evaluation(metrics={"score": 1.0})


def _run(project: Path, fakes: dict[str, object], sec: Secretive, **options: Any) -> Any:
    return run_with(basic_recipe(evaluate=Step(use="sec", **options)), project=project, plugins={**fakes, "sec": sec})


def _manifest(result: Any) -> dict[str, Any]:
    return json.loads((result.run_dir / "manifest.json").read_text())  # type: ignore[no-any-return]


# -- declared secrets -------------------------------------------------------------------------


def test_a_declared_secret_is_masked_and_a_secret_looking_name_is_not(project: Path, fakes: dict[str, object]) -> None:
    sec = Secretive()
    result = _run(
        project,
        fakes,
        sec,
        api_token=TOKEN,
        headers={"Authorization": f"Bearer {TOKEN}"},
        join_key="customer_id",
        primary_key="order_id",
        key_columns=["a", "b"],
        monkey="banana",
    )
    assert result.status == "succeeded" and sec.seen[-1]["token"] == TOKEN
    evaluate = _manifest(result)["recipe"]["evaluate"]
    assert evaluate["api_token"] == MASK and evaluate["headers"] == {"Authorization": MASK}
    assert (evaluate["join_key"], evaluate["primary_key"], evaluate["monkey"]) == ("customer_id", "order_id", "banana")
    assert evaluate["key_columns"] == ["a", "b"]
    assert leaks(project) == []


def test_secret_looking_names_stay_readable_and_resumable(project: Path, fakes: dict[str, object]) -> None:
    sec = Secretive()
    options = {"join_key": "customer_id", "primary_key": "id", "key_columns": ["k1"], "monkey": "m"}
    failed = _run(project, fakes, sec, fail=True, **options)
    assert failed.status == "failed"
    done = resume(failed.run_id, project=project, plugins=plugins_with({**fakes, "sec": sec}))
    # The plugin fails by option, so resuming runs it again with the same options: still failing,
    # but it ran (the old name-guessing refused to resume at all).
    assert done.status == "failed" and len(sec.seen) == 2
    recipe = _manifest(done)["recipe"]["evaluate"]
    assert {k: recipe[k] for k in options} == options


def test_a_literal_secret_refuses_resume_with_one_clear_line(project: Path, fakes: dict[str, object]) -> None:
    failed = _run(project, fakes, Secretive(), api_token=TOKEN, fail=True)
    assert failed.status == "failed"
    with pytest.raises(UsageError, match=r"cannot be resumed: write secrets as \$\{env:NAME\}") as info:
        resume(failed.run_id, project=project, plugins=plugins_with({**fakes, "sec": Secretive()}))
    assert "\n" not in str(info.value) and TOKEN not in str(info.value)
    assert "(evaluate.api_token is masked in its manifest)" in str(info.value)
    assert leaks(project) == []


# -- ${env:NAME} -------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["api_token", "region"])
def test_an_env_value_is_never_written_and_the_run_resumes(
    field: str, project: Path, fakes: dict[str, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever the field — declared secret or not — the manifest keeps the reference."""
    monkeypatch.setenv("CRISPML_TEST_VALUE", ENV_VALUE)
    sec = Secretive()
    failed = _run(project, fakes, sec, fail=True, **{field: "${env:CRISPML_TEST_VALUE}"})
    assert failed.status == "failed"
    manifest = _manifest(failed)
    assert manifest["recipe"]["evaluate"][field] == "${env:CRISPML_TEST_VALUE}"
    # The failure echoed the value and the plugin logged it: the manifest shows the reference.
    assert "${env:CRISPML_TEST_VALUE}" in manifest["error"]
    assert leaks(project) == []
    # Resume reads the environment again: the plugin gets the value.
    monkeypatch.setenv("CRISPML_TEST_VALUE", ENV_VALUE + "-rotated")
    done = resume(failed.run_id, project=project, plugins=plugins_with({**fakes, "sec": sec}))
    key = "token" if field == "api_token" else field
    assert sec.seen[-1][key] == ENV_VALUE + "-rotated" and done.manifest["resumes"] == 1


def test_an_env_reference_inside_a_url_is_kept_and_its_value_never_written(
    project: Path, fakes: dict[str, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRISPML_TEST_PW", URL_PW)
    sec = Secretive()
    dsn = "postgresql://bob:${env:CRISPML_TEST_PW}@db.example/sales"
    failed = _run(project, fakes, sec, dsn=dsn, fail=True)
    assert sec.seen[-1]["dsn"] == f"postgresql://bob:{URL_PW}@db.example/sales"
    assert _manifest(failed)["recipe"]["evaluate"]["dsn"] == dsn
    assert leaks(project) == []
    resume(failed.run_id, project=project, plugins=plugins_with({**fakes, "sec": sec}))
    assert len(sec.seen) == 2


# -- --set ------------------------------------------------------------------------------------


def test_set_of_a_declared_secret_is_masked_in_overrides(project: Path, fakes: dict[str, object]) -> None:
    result = run_with(
        basic_recipe(evaluate=Step(use="sec")),
        project=project,
        plugins={**fakes, "sec": Secretive()},
        overrides=[f"evaluate.api_token={TOKEN}", "evaluate.region=us", f"evaluate.headers={{X-Key: {TOKEN}}}"],
    )
    manifest = _manifest(result)
    assert manifest["overrides"] == [
        f"evaluate.api_token={MASK}",
        "evaluate.region=us",
        f'evaluate.headers={{"X-Key":"{MASK}"}}',
    ]
    assert leaks(project) == []


def test_set_with_an_env_reference_keeps_the_reference(
    project: Path, fakes: dict[str, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRISPML_TEST_VALUE", ENV_VALUE)
    overrides = ["evaluate.api_token=${env:CRISPML_TEST_VALUE}", "evaluate.monkey=${env:CRISPML_TEST_VALUE}"]
    sec = Secretive()
    result = run_with(
        basic_recipe(evaluate=Step(use="sec")), project=project, plugins={**fakes, "sec": sec}, overrides=overrides
    )
    assert result.status == "succeeded" and sec.seen[-1]["token"] == ENV_VALUE
    assert _manifest(result)["overrides"] == overrides
    assert leaks(project) == []


# -- URL passwords ------------------------------------------------------------------------------


def test_a_url_password_is_masked_and_the_run_refuses_resume(project: Path, fakes: dict[str, object]) -> None:
    failed = _run(project, fakes, Secretive(), dsn=f"postgresql://bob:{URL_PW}@db.example/sales", fail=True)
    manifest = _manifest(failed)
    assert manifest["recipe"]["evaluate"]["dsn"] == "postgresql://bob:***@db.example/sales"
    assert leaks(project) == []
    with pytest.raises(UsageError, match="cannot be resumed"):
        resume(failed.run_id, project=project, plugins=plugins_with({**fakes, "sec": Secretive()}))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("postgresql://user:pw@host/db", "postgresql://user:***@host/db"),
        ("http://u:p@h", "http://u:***@h"),
        (
            "see http://u:p@h:8080/x?y=1 and redis://:pw2@127.0.0.1:6379/0",
            "see http://u:***@h:8080/x?y=1 and redis://:***@127.0.0.1:6379/0",
        ),
        ("mysql+pymysql://u:p@ss:w0rd@h/db", "mysql+pymysql://u:***@h/db"),
        ("postgresql://u:${env:PW}@h/db", "postgresql://u:${env:PW}@h/db"),
        ("http://host:5000/path", "http://host:5000/path"),
        ("http://user@host/path", "http://user@host/path"),
        ("key: value", "key: value"),
    ],
)
def test_mask_urls(text: str, expected: str) -> None:
    assert mask_urls(text) == expected


def test_no_generated_url_password_survives_masking() -> None:
    """Fuzz: passwords of any printable characters a URL's authority can hold."""
    rng = random.Random(1234)
    alphabet = "".join(c for c in string.printable if c not in "/?#" and not c.isspace())
    for _ in range(2000):
        password = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 30)))
        if password.startswith("${env:"):
            continue
        user = "".join(rng.choice(string.ascii_letters) for _ in range(rng.randint(0, 8)))
        url = f"{rng.choice(['postgresql', 'http', 's3+x'])}://{user}:{password}@host.example:5432/db"
        masked = mask_urls(f"failed on {url}: refused")
        assert masked == f"failed on {url.split('://')[0]}://{user}:***@host.example:5432/db: refused", url


# -- redactor rules -------------------------------------------------------------------------------


def test_short_secrets_are_masked_only_where_they_stand_alone() -> None:
    r = Redactor()
    r.add_env("REGION", "eu")
    r.add("hunter2")
    assert r({"a": "eu", "b": "Europe", "c": "pw hunter2!"}) == {"a": "${env:REGION}", "b": "Europe", "c": "pw ***!"}


def test_ids_and_digests_are_never_edited() -> None:
    r = Redactor()
    r.add("abcd")
    digest = "0123abcd" * 8
    assert r.text(digest) == digest
    assert r.manifest({"run_id": "x-abcd", "stages": [{"name": "s", "fingerprint": digest, "error": "abcd!"}]}) == {
        "run_id": "x-abcd",
        "stages": [{"name": "s", "fingerprint": digest, "error": "***!"}],
    }


def test_redact_without_a_run_masks_declared_secrets_and_url_passwords() -> None:
    from pydantic import SecretStr

    value = {"token": SecretStr(TOKEN), "uri": f"http://u:{URL_PW}@h", "key": "readable"}
    assert redact(value) == {"token": MASK, "uri": "http://u:***@h", "key": "readable"}
    assert has_masked(redact(value)) and not has_masked({"key": "readable"})


# -- error messages and logs ----------------------------------------------------------------------


class Counted(Options):
    count: int = 1
    api_token: Secret | None = None


class CountedPlugin:
    @hookimpl
    def crispml_declare(self) -> Declaration:
        return Declaration(stages={"evaluate": Counted})

    @hookimpl
    def crispml_evaluate(self) -> Evaluation:
        return Evaluation(metrics={"score": 1.0})


def test_a_recipe_error_shows_the_env_reference_not_its_value(
    project: Path, fakes: dict[str, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRISPML_TEST_VALUE", ENV_VALUE)
    recipe = basic_recipe(evaluate=Step(use="cnt", count="${env:CRISPML_TEST_VALUE}"))
    with pytest.raises(RecipeError) as info:
        run_with(recipe, project=project, plugins={**fakes, "cnt": CountedPlugin()})
    assert "evaluate.count: expected a valid integer" in str(info.value)
    assert "${env:CRISPML_TEST_VALUE}" in str(info.value) and ENV_VALUE not in str(info.value)
    assert not (project / ".crispml").exists()


def test_a_recipe_error_never_echoes_a_declared_secret(project: Path, fakes: dict[str, object]) -> None:
    recipe = basic_recipe(evaluate=Step(use="cnt", api_token=[TOKEN]))
    with pytest.raises(RecipeError, match=r"evaluate\.api_token: expected a valid string$") as info:
        run_with(recipe, project=project, plugins={**fakes, "cnt": CountedPlugin()})
    assert TOKEN not in str(info.value)


def test_a_recipe_error_masks_a_url_password(project: Path, fakes: dict[str, object]) -> None:
    recipe_text = f"name: t\ntracking: {{mlflow: 'postgresql://u:{URL_PW}@h/db'}}\nload: {{use: table}}\n"
    (project / "r.yaml").write_text(recipe_text)
    with pytest.raises(RecipeError) as info:
        run_with(project / "r.yaml", project=project, plugins=fakes)
    assert "tracking.mlflow" in str(info.value) and URL_PW not in str(info.value)


def test_the_run_logger_masks_secrets(
    project: Path, fakes: dict[str, object], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("CRISPML_TEST_VALUE", ENV_VALUE)
    with caplog.at_level(logging.WARNING, logger="crispml"):
        _run(project, fakes, Secretive(), api_token=TOKEN, region="${env:CRISPML_TEST_VALUE}")
    assert "connecting with" in caplog.text
    assert leaks(project, caplog.text) == []


class TrackerOptions(Options):
    token: Secret
    url: str = ""


class TokenTracker:
    """A tracker that sends what crispml gives it: the redacted recipe and redacted options."""

    def __init__(self) -> None:
        self.sent: list[Any] = []

    @hookimpl
    def crispml_declare(self) -> Declaration:
        return Declaration(tracker=TrackerOptions)

    @hookimpl
    def crispml_after_run(self, context: Any) -> None:
        options = context.trackers["tok"]
        assert options.token.get_secret_value() == TOKEN  # the tracker itself gets the value
        self.sent += [context.redacted_recipe(), context.redact(options), context.redact(context.manifest())]


def test_a_trackers_declared_secret_is_masked_in_what_it_sends(project: Path, fakes: dict[str, object]) -> None:
    tracker = TokenTracker()
    recipe = basic_recipe(tracking={"tok": {"token": TOKEN, "url": f"https://u:{URL_PW}@h/x"}})
    result = run_with(recipe, project=project, plugins={**fakes, "tok": tracker})
    assert result.status == "succeeded", result.error
    recipe_sent, options_sent, _ = tracker.sent
    assert recipe_sent["tracking"]["tok"] == {"token": MASK, "url": "https://u:***@h/x"}
    assert options_sent == {"token": MASK, "url": "https://u:***@h/x"}
    assert leaks(project, json.dumps(tracker.sent)) == []


def test_an_empty_env_value_masks_nothing(
    project: Path, fakes: dict[str, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRISPML_TEST_EMPTY", "")
    result = _run(project, fakes, Secretive(), region="${env:CRISPML_TEST_EMPTY}", monkey="banana")
    manifest = _manifest(result)
    assert manifest["recipe"]["evaluate"]["monkey"] == "banana" and manifest["run_id"] == result.run_id


class SourceOptions(Options):
    source: str = ""


class CheckOptions(Options):
    """Checks itself against the load step's options, as a validate step checks its columns."""

    strict: bool = False

    @field_validator("strict")
    @classmethod
    def _against_load(cls, value: bool, info: ValidationInfo) -> bool:
        load = (info.context or {}).get("steps", {}).get("load")
        if value and load is not None:
            raise ValueError(f"cannot check {load.source} strictly")
        return value


class SourcePlugin:
    @hookimpl
    def crispml_declare(self) -> Declaration:
        return Declaration(stages={"load": SourceOptions, "evaluate": CheckOptions})


def test_a_recipe_error_naming_another_steps_env_value_shows_the_reference(
    project: Path, fakes: dict[str, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRISPML_TEST_VALUE", ENV_VALUE)
    recipe = basic_recipe(
        load=Step(use="src", source="${env:CRISPML_TEST_VALUE}"), evaluate=Step(use="src", strict=True)
    )
    with pytest.raises(RecipeError, match=r"evaluate\.strict: cannot check \$\{env:CRISPML_TEST_VALUE\} strictly"):
        run_with(recipe, project=project, plugins={**fakes, "src": SourcePlugin()})


def test_a_command_error_masks_a_url_password(capsys: pytest.CaptureFixture[str], project: Path) -> None:
    """A plugin command's one-line error (here: a usage error naming a store) hides the password."""
    from crispml.cli import cli, main

    @cli.command("secrets-test-fail")
    def _fail() -> None:
        raise UsageError(f"no model in postgresql://bob:{URL_PW}@db/x")

    try:
        with pytest.raises(SystemExit) as exit_info:
            main(["secrets-test-fail"])
    finally:
        cli.commands.pop("secrets-test-fail")
    _, err = capsys.readouterr()
    assert exit_info.value.code == 2 and err == "crispml: error: no model in postgresql://bob:***@db/x\n"


def test_the_api_result_holds_the_manifest_as_written(
    project: Path, fakes: dict[str, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRISPML_TEST_VALUE", ENV_VALUE)
    result = _run(project, fakes, Secretive(), api_token=TOKEN, region="${env:CRISPML_TEST_VALUE}", fail=True)
    assert result.manifest.to_dict() == _manifest(result)
    assert leaks(project, json.dumps(result.manifest.to_dict())) == []


def test_secrets_in_lists_and_reshaped_values_are_masked(project: Path, fakes: dict[str, object]) -> None:
    result = _run(project, fakes, Secretive(), tokens=["readable-not", TOKEN], split_tokens=f"{TOKEN}-a,{TOKEN}-b")
    evaluate = _manifest(result)["recipe"]["evaluate"]
    assert evaluate["tokens"] == [MASK, MASK] and evaluate["split_tokens"] == MASK
    assert leaks(project) == []


def test_fuzzed_secrets_never_reach_the_manifest(
    project: Path, fakes: dict[str, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Secrets of any characters (quotes, backslashes, unicode) — also as ``repr`` shows them in
    an error message — are in no string of the manifest once it is read back."""
    rng = random.Random(99)
    alphabet = string.ascii_letters + string.digits + string.punctuation + " äé€\\'\""
    url_alphabet = "".join(c for c in alphabet if c not in "/?#\\ ")

    def strings(value: Any) -> list[str]:
        if isinstance(value, dict):
            return [s for v in value.values() for s in strings(v)] + [str(k) for k in value]
        if isinstance(value, list):
            return [s for v in value for s in strings(v)]
        return [value] if isinstance(value, str) else []

    for _ in range(12):
        literal, env_value, password = (
            "".join(rng.choice(a) for _ in range(rng.randint(6, 24))) for a in (alphabet, alphabet, url_alphabet)
        )
        if any("${env:" in s for s in (literal, env_value, password)):
            continue
        monkeypatch.setenv("CRISPML_TEST_VALUE", env_value)
        result = _run(
            project,
            fakes,
            Secretive(),
            api_token=literal,
            region="${env:CRISPML_TEST_VALUE}",
            dsn=f"postgresql://bob:{password}@db/x",
            fail=True,
        )
        assert result.status == "failed"
        written = strings(_manifest(result))
        for secret in (literal, env_value, password):
            for spelling in (secret, repr(secret)[1:-1]):
                assert not [s for s in written if spelling in s], (secret, spelling)


def test_a_typed_manifest_is_redacted_into_the_same_type() -> None:
    class Typed:
        def __init__(self, data: dict[str, Any]) -> None:
            self.data = data

        def to_dict(self) -> dict[str, Any]:
            return dict(self.data)

        @classmethod
        def load(cls, data: dict[str, Any]) -> Typed:
            return cls(data)

    r = Redactor()
    r.add(TOKEN)
    out = r.manifest(Typed({"run_id": "r1", "error": f"failed with {TOKEN}", "stages": []}))
    assert isinstance(out, Typed) and out.data == {"run_id": "r1", "error": "failed with ***", "stages": []}


def test_stages_run_one_by_one_keep_secrets_out_of_every_attempt(
    project: Path, fakes: dict[str, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A runner's path (start_run, run_stage per stage, a retry, finish_run) writes no secret,
    and a run holding a literal secret cannot be run stage by stage from the store."""
    from crispml import StageError, finish_run, run_stage, start_run

    monkeypatch.setenv("CRISPML_TEST_VALUE", ENV_VALUE)
    monkeypatch.setenv("CRISPML_TEST_TOKEN", TOKEN)
    plugins = plugins_with({**fakes, "sec": Secretive()})
    recipe = basic_recipe(
        evaluate=Step(use="sec", api_token="${env:CRISPML_TEST_TOKEN}", region="${env:CRISPML_TEST_VALUE}", fail=True)
    )
    run_id = start_run(recipe, project=project, plugins=plugins)
    for stage in ("load", "train"):
        assert run_stage(project, run_id, stage, plugins=plugins) == "succeeded"
    for _ in range(2):  # a failed stage and its retry: two attempts, both recorded
        with pytest.raises(StageError) as info:
            run_stage(project, run_id, "evaluate", plugins=plugins)
        # What a runner records of the failure (a Prefect task's state) holds no secret either.
        assert "${env:CRISPML_TEST_TOKEN}" in str(info.value) and leaks(project, str(info.value)) == []
    result = finish_run(project, run_id, plugins=plugins)
    record = result.manifest.stage("evaluate")
    assert len(record.attempts) == 2 and "${env:CRISPML_TEST_TOKEN}" in str(record.attempts[0].error)
    assert leaks(project) == []

    literal = start_run(basic_recipe(evaluate=Step(use="sec", api_token=TOKEN)), project=project, plugins=plugins)
    with pytest.raises(UsageError, match=r"evaluate\.api_token is masked in its manifest"):
        run_stage(project, literal, "load", plugins=plugins)
    assert leaks(project) == []


# -- the cache key ----------------------------------------------------------------------------

DB_PW = ("DBPW-S3CR3T-a1b", "DBPW-S3CR3T-b2c")


class VaultOptions(Options):
    password: Secret | None = None
    region: str = "eu"


class Vault:
    """A load step reading a database with a password: another password (another account),
    other rows. Counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    @hookimpl
    def crispml_declare(self) -> Declaration:
        return Declaration(stages={"load": VaultOptions})

    @hookimpl
    def crispml_load(self, options: VaultOptions) -> Dataset:
        import pandas as pd

        self.calls += 1
        seen = (options.password.get_secret_value() if options.password else "") + options.region
        offset = float(sum(seen.encode()) % 97)
        frame = pd.DataFrame({"x": [i + offset for i in range(40)], "y": [i % 2 for i in range(40)]})
        digest = hashlib.sha256(frame.to_csv().encode()).hexdigest()
        return Dataset(frame=frame, target="y", name="vault", source="vault", fingerprint=digest)


def _statuses(result: Any) -> dict[str, str]:
    return {s["name"]: s["status"] for s in _manifest(result)["stages"]}


@pytest.mark.parametrize(
    ("field", "spelling"),
    [("password", "literal"), ("password", "env"), ("region", "env")],
)
def test_a_secret_enters_the_cache_key_only_as_a_keyed_digest(
    field: str, spelling: str, project: Path, fakes: dict[str, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two runs that differ only in a secret (a declared one, or any ``${env:NAME}`` value) do
    not share a cache entry; the same secret does. Nothing the runs leave — manifests, cache
    entries, ``.crispml/`` as a whole — holds the secret or its plain sha256."""
    vault = Vault()
    plugins = {**fakes, "vault": vault}

    def run(secret: str) -> Any:
        value = secret
        if spelling == "env":
            monkeypatch.setenv("CRISPML_DB_PW", secret)
            value = "${env:CRISPML_DB_PW}"
        return run_with(basic_recipe(load=Step(use="vault", **{field: value})), project=project, plugins=plugins)

    first, second, third = run(DB_PW[0]), run(DB_PW[1]), run(DB_PW[1])
    assert _statuses(first)["load"] == "succeeded"
    assert _statuses(second) == {"load": "succeeded", "train": "succeeded", "evaluate": "succeeded"}
    assert _statuses(third) == {"load": "cached", "train": "cached", "evaluate": "cached"}
    assert vault.calls == 2
    prints = [r.manifest.stage("load").fingerprint for r in (first, second, third)]
    assert prints[0] != prints[1] == prints[2]
    shown = _manifest(second)["recipe"]["load"][field]
    assert shown == ("${env:CRISPML_DB_PW}" if spelling == "env" else MASK)

    for path in project.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for secret in DB_PW:
                assert secret.encode() not in data, path
                assert hashlib.sha256(secret.encode()).hexdigest().encode() not in data, path
    key = project / ".crispml" / "hmac.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and len(key.read_bytes()) == 32


def test_a_recipe_without_secrets_has_cache_keys_without_the_project_key(
    project: Path, fakes: dict[str, object]
) -> None:
    """Only a step that holds a secret is keyed: a new project key (the file deleted) leaves
    every other step's cache entry in use."""
    recipe = basic_recipe(load=Step(use="vault", region="us"))
    plugins = {**fakes, "vault": Vault()}
    run_with(recipe, project=project, plugins=plugins)
    (project / ".crispml" / "hmac.key").unlink(missing_ok=True)
    again = run_with(recipe, project=project, plugins=plugins)
    assert _statuses(again) == {"load": "cached", "train": "cached", "evaluate": "cached"}
