"""The check cache: an unchanged recipe is not checked against its backends twice, and any
change that could alter the check's answer — a file it reads, an option, an environment value,
a plugin or backend version, a project module it imports — checks it again (never stale)."""

from __future__ import annotations

import stat
import textwrap
from functools import partial
from pathlib import Path

import pytest
from pydantic import ValidationInfo, field_validator
from suite_helpers import run_cli

import crispml.check_cache
from crispml import (
    Backend,
    Dataset,
    Declaration,
    ExistingPath,
    Options,
    Recipe,
    RecipeError,
    Secret,
    Step,
    backend_check,
    hookimpl,
)
from crispml.testing import run_with

from conftest import MeanModel, TableLoader

CHECKS: list[str] = []
"""Every time the backend check below ran, the name it checked."""


class SuiteOptions(Options):
    suite: ExistingPath
    name: str = "ok"
    rows: int = 40
    offset: float = 0.0
    token: Secret | None = None
    """A declared secret: written down masked, so only its ``${env:NAME}`` value can tell."""

    @field_validator("token")
    @classmethod
    @backend_check
    def _token_in_suite(cls, token: Secret | None, info: ValidationInfo) -> Secret | None:
        suite = info.data.get("suite")
        if token is not None:
            CHECKS.append("token")
            if suite is not None and token.get_secret_value() not in suite.read_text().split():
                raise ValueError(f"the token is not in {suite.name}")
        return token

    @field_validator("name")
    @classmethod
    @backend_check
    def _name_in_suite(cls, name: str, info: ValidationInfo) -> str:
        CHECKS.append(name)
        suite = info.data.get("suite")
        if suite is not None and name not in suite.read_text().split():
            raise ValueError(f"'{name}' is not in {suite.name}")
        return name

    def external_inputs(self) -> list[Path]:
        return [self.suite]


class SuiteLoader(TableLoader):
    """A load step whose check reads a file and 'needs a backend' (pluggy stands in for one)."""

    def __init__(self, version: str = "1.0") -> None:
        super().__init__()
        self.version = version

    @hookimpl
    def crispml_declare(self) -> Declaration:
        return Declaration(stages={"load": SuiteOptions}, backends=(Backend("pluggy", "pluggy"),))

    @hookimpl
    def crispml_load(self, options: SuiteOptions) -> Dataset:
        return super().crispml_load(options)  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def _no_checks_yet() -> None:
    CHECKS.clear()


def _recipe(project: Path, name: str = "ok") -> Recipe:
    suite = project / "suite.txt"
    if not suite.exists():
        suite.write_text("ok other\n")
    return Recipe(
        name="checked",
        load=Step(use="suite", suite=str(suite), name=name),
        train=Step(use="mean"),
        evaluate=Step(use="mean", gate={"score": ">= 0.5"}),
    )


def _plugins() -> dict[str, object]:
    return {"suite": SuiteLoader(), "mean": MeanModel()}


def test_an_unchanged_rerun_skips_the_backend_check(project: Path) -> None:
    plugins = _plugins()
    first = run_with(_recipe(project), project=project, plugins=plugins)
    assert first.status == "succeeded" and CHECKS == ["ok"]
    again = run_with(_recipe(project), project=project, plugins=plugins)
    assert set(again.stage_status.values()) == {"cached"}
    assert CHECKS == ["ok"]  # the check passed before under the same key: not run again
    crispml.check(_recipe(project), plugins=None, extra_plugins=plugins)
    assert CHECKS == ["ok"]  # crispml check on the unchanged recipe: as fast


def test_no_cache_checks_again(project: Path) -> None:
    plugins = _plugins()
    run_with(_recipe(project), project=project, plugins=plugins)
    run_with(_recipe(project), project=project, plugins=plugins, use_cache=False)
    assert CHECKS == ["ok", "ok"]


def test_a_changed_suite_file_is_checked_again_and_its_error_found(project: Path) -> None:
    plugins = _plugins()
    run_with(_recipe(project), project=project, plugins=plugins)
    (project / "suite.txt").write_text("other\n")  # 'ok' is gone: the recipe is now wrong
    with pytest.raises(RecipeError, match=r"load\.name.*'ok' is not in suite.txt"):
        run_with(_recipe(project), project=project, plugins=plugins)
    assert CHECKS == ["ok", "ok"]


def test_a_changed_option_is_checked_again(project: Path) -> None:
    plugins = _plugins()
    run_with(_recipe(project), project=project, plugins=plugins)
    run_with(_recipe(project, "other"), project=project, plugins=plugins)
    with pytest.raises(RecipeError, match=r"'missing' is not in suite\.txt"):
        run_with(_recipe(project, "missing"), project=project, plugins=plugins)
    assert CHECKS == ["ok", "other", "missing"]


def test_a_changed_backend_version_is_checked_again(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plugins = _plugins()
    run_with(_recipe(project), project=project, plugins=plugins)
    real = crispml.check_cache._version
    monkeypatch.setattr(crispml.check_cache, "_version", lambda d: "99.0" if d == "pluggy" else real(d))
    run_with(_recipe(project), project=project, plugins=plugins)
    assert CHECKS == ["ok", "ok"]
    monkeypatch.setattr(crispml.check_cache, "_version", real)  # back to the version checked first
    run_with(_recipe(project), project=project, plugins=plugins)
    assert CHECKS == ["ok", "ok"]  # its entry is still valid


def test_a_changed_plugin_version_is_checked_again(project: Path) -> None:
    from crispml import run
    from crispml.plugins import get_plugins

    def plugins(version: str):  # type: ignore[no-untyped-def]
        pl = get_plugins()
        pl.register(SuiteLoader(), "suite", version=version)
        pl.register(MeanModel(), "mean")
        return pl

    run(_recipe(project), project=project, plugins=plugins("1.0"))
    run(_recipe(project), project=project, plugins=plugins("1.0"))
    run(_recipe(project), project=project, plugins=plugins("1.1"))
    assert CHECKS == ["ok", "ok"]


def test_an_env_reference_whose_value_changed_is_checked_again(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plugins = _plugins()
    monkeypatch.setenv("CHECKED_NAME", "ok")
    run_with(_recipe(project, "${env:CHECKED_NAME}"), project=project, plugins=plugins)
    run_with(_recipe(project, "${env:CHECKED_NAME}"), project=project, plugins=plugins)
    assert CHECKS == ["ok"]
    monkeypatch.setenv("CHECKED_NAME", "nope")
    with pytest.raises(RecipeError, match=r"is not in suite\.txt"):
        run_with(_recipe(project, "${env:CHECKED_NAME}"), project=project, plugins=plugins)
    assert CHECKS == ["ok", "nope"]


def test_a_secret_from_the_environment_whose_value_changed_is_checked_again(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plugins = _plugins()
    _recipe(project)  # writes the suite
    recipe = Recipe(
        name="checked",
        load=Step(use="suite", suite=str(project / "suite.txt"), token="${env:CHECKED_TOKEN}"),
        train=Step(use="mean"),
    )
    monkeypatch.setenv("CHECKED_TOKEN", "other")
    run_with(recipe, project=project, plugins=plugins)
    run_with(recipe, project=project, plugins=plugins)
    assert CHECKS == ["token"]  # checked once (the default name is not validated)
    monkeypatch.setenv("CHECKED_TOKEN", "wrong")
    with pytest.raises(RecipeError, match=r"the token is not in suite\.txt"):
        run_with(recipe, project=project, plugins=plugins)


def test_the_entries_hold_no_environment_value_and_the_key_is_private(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (project / "suite.txt").write_text("ok s3cr3t-value-4711\n")
    monkeypatch.setenv("CHECKED_NAME", "s3cr3t-value-4711")
    run_with(_recipe(project, "${env:CHECKED_NAME}"), project=project, plugins=_plugins())
    folder = project / ".crispml" / "cache" / "checks"
    entries = list(folder.glob("*.json"))
    assert len(entries) == 1
    for path in folder.iterdir():
        assert b"s3cr3t-value-4711" not in path.read_bytes()
    secret = project / ".crispml" / "hmac.key"
    assert b"s3cr3t-value-4711" not in secret.read_bytes()
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600 and len(secret.read_bytes()) == 32


def test_a_failed_check_writes_nothing(tmp_path: Path) -> None:
    (tmp_path / "suite.txt").write_text("other\n")
    with pytest.raises(RecipeError):
        run_with(_recipe(tmp_path, "ok"), project=tmp_path, plugins=_plugins())
    assert not (tmp_path / ".crispml").exists()


def test_check_in_a_folder_that_never_ran_leaves_no_trace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRISPML_PROJECT", str(tmp_path))
    crispml.check(_recipe(tmp_path), extra_plugins=_plugins())
    crispml.check(_recipe(tmp_path), extra_plugins=_plugins())
    assert CHECKS == ["ok", "ok"]
    assert not (tmp_path / ".crispml").exists()


def test_a_torn_key_file_is_replaced_and_checks_are_remembered_again(project: Path) -> None:
    plugins = _plugins()
    folder = project / ".crispml"
    folder.mkdir(parents=True)
    (folder / "hmac.key").write_bytes(b"")  # killed between creating the key file and writing it
    run_with(_recipe(project), project=project, plugins=plugins)
    assert len((folder / "hmac.key").read_bytes()) == 32
    run_with(_recipe(project), project=project, plugins=plugins)
    assert CHECKS == ["ok"]
    assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == []  # no temporary left


def test_a_corrupt_entry_is_checked_again(project: Path) -> None:
    plugins = _plugins()
    run_with(_recipe(project), project=project, plugins=plugins)
    (entry,) = (project / ".crispml" / "cache" / "checks").glob("*.json")
    entry.write_text('{"code": ')  # a torn write, a disk error: never trusted
    run_with(_recipe(project), project=project, plugins=plugins)
    assert CHECKS == ["ok", "ok"]


def test_backend_check_passes_the_value_through_when_skipped() -> None:
    """The decorator returns the validated value (field validators) or the model (model
    validators) unchanged when the context says the check passed before."""

    class Opts(Options):
        n: int = 1

        @field_validator("n")
        @classmethod
        @backend_check
        def _never(cls, n: int, info: ValidationInfo) -> int:
            raise ValueError("ran")

    with pytest.raises(ValueError, match="ran"):
        Opts.model_validate({"n": 3})
    assert Opts.model_validate({"n": 3}, context={crispml.check_cache.SKIP_BACKEND_CHECKS: True}).n == 3


# -- project code the check imports: re-hashed before an entry is trusted -------------------


def _definitions_project(project: Path) -> None:
    """A plugin (next to the recipe) whose check imports the project's definitions, which
    import a module, which imports the file that holds the names (two imports away)."""
    (project / "data.csv").write_text("x,y\n" + "".join(f"{i},{i % 2}\n" for i in range(30)))
    (project / "defs.py").write_text("from defs_mid import NAMES\n")
    (project / "defs_mid.py").write_text("from defs_leaf import NAMES\n")
    (project / "defs_leaf.py").write_text("NAMES = ['churn_v1', 'churn_v2']\n")
    (project / "defplugin.py").write_text(
        textwrap.dedent(
            """
            import importlib
            from pathlib import Path

            from pydantic import ValidationInfo, field_validator

            import crispml


            class Opts(crispml.Options):
                service: str

                @field_validator("service")
                @classmethod
                @crispml.backend_check
                def _defined(cls, service: str, info: ValidationInfo) -> str:
                    with open(Path(__file__).with_name("checks.log"), "a") as fh:
                        fh.write(service + "\\n")
                    names = importlib.import_module("defs").NAMES
                    if service not in names:
                        raise ValueError(f"no service '{service}' in the definitions ({', '.join(names)})")
                    return service


            @crispml.hookimpl
            def crispml_declare():
                return crispml.Declaration(stages={"train": Opts})


            @crispml.hookimpl
            def crispml_train(dataset):
                return crispml.TrainedModel(model=1, flavor="test", task="regression", target="y",
                                            feature_columns=["x"])
            """
        )
    )
    (project / "recipe.yaml").write_text(
        "name: defs\nplugins: [defplugin]\nload: {use: files, path: data.csv, target: y}\n"
        "train: {use: defplugin, service: churn_v1}\n"
    )


_cli = partial(run_cli, timeout=120, columns=None)


def test_a_definitions_file_two_imports_away_is_checked_again(project: Path) -> None:
    _definitions_project(project)
    log = project / "checks.log"
    assert _cli(project, "run", "recipe.yaml").returncode == 0
    assert log.read_text().split() == ["churn_v1"]
    assert _cli(project, "run", "recipe.yaml").returncode == 0
    assert _cli(project, "check", "recipe.yaml").returncode == 0
    assert log.read_text().split() == ["churn_v1"]  # neither the re-run nor check checked again
    (project / "defs_leaf.py").write_text("NAMES = ['churn_v2']\n")
    proc = _cli(project, "check", "recipe.yaml")
    assert proc.returncode == 2, proc.stderr
    assert "train.service" in proc.stderr and "no service 'churn_v1'" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert log.read_text().split() == ["churn_v1", "churn_v1"]
