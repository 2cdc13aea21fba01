"""Plugin loading: entry points one at a time, broken plugins by name, strictness, validation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from crispml import PluginError, hookimpl
from crispml.plugins import get_plugins

CRISPML = str(Path(sys.executable).with_name("crispml"))


def _fake_distribution(root: Path, name: str, entry_points: dict[str, str], modules: dict[str, str]) -> None:
    """A distribution on ``root`` (put on PYTHONPATH) whose entry points are in the crispml group."""
    dist = root / f"{name.replace('-', '_')}-1.2.3.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.2.3\n")
    lines = "\n".join(f"{k} = {v}" for k, v in entry_points.items())
    (dist / "entry_points.txt").write_text(f"[crispml]\n{lines}\n")
    for module, source in modules.items():
        (root / f"{module}.py").write_text(textwrap.dedent(source))


GOOD = """
import crispml

class Opts(crispml.Options):
    pass

@crispml.hookimpl
def crispml_declare():
    return crispml.Declaration(stages={"monitor": Opts})

@crispml.hookimpl
def crispml_monitor(options):
    return crispml.MonitorReport()
"""


@pytest.fixture
def site(tmp_path: Path) -> Path:
    root = tmp_path / "site"
    _fake_distribution(
        root,
        "crispml-thirdparty",
        {"good": "tp_good", "broken": "tp_broken", "misspelt": "tp_misspelt"},
        {
            "tp_good": GOOD,
            "tp_broken": "raise ImportError('libfoo.so: cannot open shared object file')\n",
            "tp_misspelt": "import crispml\n\n@crispml.hookimpl\ndef crispml_trian(options):\n    pass\n",
        },
    )
    return root


def _plugins_cmd(site: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CRISPML, "plugins", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(site), "COLUMNS": "250", **env},
    )


def test_a_broken_plugin_is_reported_by_name_and_the_rest_load(site: Path) -> None:
    proc = _plugins_cmd(site, "--json")
    assert proc.returncode == 0, proc.stderr
    infos = {p["name"]: p for p in json.loads(proc.stdout)}
    assert infos["good"]["error"] is None and infos["good"]["stages"] == ["monitor"]
    assert infos["good"]["version"] == "1.2.3" and infos["good"]["distribution"] == "crispml-thirdparty"
    assert "libfoo.so" in infos["broken"]["error"]
    assert "unknown hook(s): crispml_trian" in infos["misspelt"]["error"]
    assert infos["sklearn"]["error"] is None  # built-ins load regardless
    assert "plugin 'broken' (tp_broken) failed to load" in proc.stderr


def test_strict_mode_makes_a_broken_plugin_fatal(site: Path) -> None:
    proc = _plugins_cmd(site, "--json", CRISPML_STRICT_PLUGINS="1")
    assert proc.returncode != 0
    assert "plugin 'broken' failed to load" in proc.stderr and "Traceback" not in proc.stderr


def test_disabled_plugins_are_not_loaded(site: Path) -> None:
    proc = _plugins_cmd(site, "--json", CRISPML_DISABLE_PLUGINS="broken,misspelt", CRISPML_STRICT_PLUGINS="1")
    assert proc.returncode == 0, proc.stderr
    assert {p["name"] for p in json.loads(proc.stdout)} >= {"good", "files", "sklearn", "local"}
    assert "broken" not in proc.stdout


def test_plugins_table_shows_versions_sources_stages_hooks_and_backends(site: Path) -> None:
    proc = _plugins_cmd(site)
    table = proc.stdout
    assert "sklearn" in table and "entry point" in table and "evaluate, train" in table
    assert "scikit-learn" in table and "good" in table and "failed to load" in table


def test_a_missing_backend_names_the_extra_to_install() -> None:
    from crispml import Backend

    backend = Backend("not-a-real-dist", "not_a_real_module_xyz", extra="xyz")
    assert not backend.installed()
    assert backend.install_hint() == "pip install 'crispml[xyz]'"


def test_unknown_hook_names_and_parameters_are_rejected() -> None:
    plugins = get_plugins(entry_points=False)

    class Misspelt:
        @hookimpl
        def crispml_trian(self) -> None: ...

    class BadParameter:
        @hookimpl
        def crispml_train(self, optoins):  # type: ignore[no-untyped-def]
            ...

    with pytest.raises(PluginError, match="unknown hook"):
        plugins.register(Misspelt(), "misspelt")
    with pytest.raises(PluginError, match="optoins"):
        plugins.register(BadParameter(), "bad")
    assert plugins.names() == ["local"]


def test_recipe_modules_are_loaded_as_plugins(project: Path) -> None:
    (project / "mine.py").write_text(GOOD)
    (project / "r.yaml").write_text("name: r\nplugins: [mine]\nload: {use: files, path: d.csv}\nmonitor: {use: mine}\n")
    (project / "d.csv").write_text("a\n1\n")
    from crispml import check

    resolved = check(project / "r.yaml")
    assert resolved.plugins.infos["mine"].source == "recipe"
    assert resolved.step("monitor").plugin == "mine"  # type: ignore[union-attr]
    sys.modules.pop("mine", None)


def test_a_recipe_module_that_fails_to_import_is_a_recipe_error(project: Path) -> None:
    (project / "r.yaml").write_text("name: r\nplugins: [no_such_module_here]\nload: {use: files, path: d.csv}\n")
    from crispml import RecipeError, check

    with pytest.raises(RecipeError, match=r"r.yaml:2: plugins.0: cannot import module 'no_such_module_here'"):
        check(project / "r.yaml")


def test_tracing_prints_hook_calls() -> None:
    proc = subprocess.run(
        [CRISPML, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "CRISPML_TRACE_PLUGINS": "1"},
    )
    assert proc.returncode == 0
    assert "crispml_register_commands" in proc.stderr


EXPLODING = """
import click
import crispml

@crispml.hookimpl
def crispml_register_commands(cli):
    @cli.command()
    def explode():
        '''A plugin command whose backend fails.'''
        raise RuntimeError("backend went away\\nwhile listing")
"""


def test_a_plugin_command_that_fails_prints_one_line_not_a_traceback(tmp_path: Path) -> None:
    root = tmp_path / "site"
    _fake_distribution(root, "crispml-exploding", {"exploding": "tp_exploding"}, {"tp_exploding": EXPLODING})
    env = {**os.environ, "PYTHONPATH": str(root)}
    proc = subprocess.run([CRISPML, "explode"], capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "crispml: error: RuntimeError: backend went away while listing (CRISPML_DEBUG=1 shows the traceback)"
    ]
    debug = subprocess.run(
        [CRISPML, "explode"], capture_output=True, text=True, timeout=60, env={**env, "CRISPML_DEBUG": "1"}
    )
    assert "Traceback" in debug.stderr


def test_a_recipe_module_without_hooks_is_a_recipe_error(project: Path) -> None:
    (project / "r.yaml").write_text("name: r\nplugins: [json]\nload: {use: files, path: d.csv}\n")
    from crispml import RecipeError, check

    with pytest.raises(RecipeError, match=r"plugins\.0: module 'json' has no crispml hooks"):
        check(project / "r.yaml")


def test_a_step_whose_plugin_lacks_its_backend_names_the_extra(project: Path) -> None:
    from crispml import Backend, Declaration, Options, Recipe, RecipeError, Step, check
    from crispml.testing import plugins_with

    class NeedsNothingInstalled:
        @hookimpl
        def crispml_declare(self) -> Declaration:
            return Declaration(
                stages={"load": Options}, backends=(Backend("crispml-nope", "crispml_nope_mod", "nope"),)
            )

    recipe = Recipe(name="r", load=Step(use="needy"))
    with pytest.raises(
        RecipeError,
        match=r"load\.use: plugin 'needy' needs crispml-nope, which is not installed: "
        r"pip install 'crispml\[nope\]'",
    ):
        check(recipe, plugins=plugins_with({"needy": NeedsNothingInstalled()}))


def test_plugins_with_a_recipe_lists_its_modules_as_source_recipe(project: Path) -> None:
    (project / "mine.py").write_text(GOOD)
    (project / "d.csv").write_text("a\n1\n")
    (project / "r.yaml").write_text("name: r\nplugins: [mine]\nload: {use: files, path: d.csv}\nmonitor: {use: mine}\n")
    proc = subprocess.run(
        [CRISPML, "plugins", "r.yaml", "--json"], cwd=project, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    info = {p["name"]: p for p in json.loads(proc.stdout)}["mine"]
    assert (info["source"], info["stages"]) == ("recipe", ["monitor"])
    without = subprocess.run([CRISPML, "plugins", "--json"], cwd=project, capture_output=True, text=True, timeout=60)
    assert "mine" not in {p["name"] for p in json.loads(without.stdout)}
