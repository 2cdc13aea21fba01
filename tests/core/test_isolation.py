"""The core's environment set-up: backends' state in the project, telemetry off, nothing created."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from crispml import Declaration, hookimpl
from crispml._isolation import isolate
from crispml.plugins import Plugins


class NeedsHome:
    @hookimpl
    def crispml_declare(self) -> Declaration:
        return Declaration()

    @hookimpl
    def crispml_environment(self, project_dir: Path) -> dict[str, str]:
        return {"FAKEBACKEND_HOME": str(project_dir / ".crispml" / "fake"), "FAKEBACKEND_TELEMETRY": "off"}


NAMES = ("XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME", "DO_NOT_TRACK")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """None of the variables set, and each restored after the test (``setenv`` then ``delenv``:
    ``delenv`` alone does not restore a variable that was absent and is set by the test)."""
    for name in (*NAMES, "FAKEBACKEND_HOME", "FAKEBACKEND_TELEMETRY"):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    import crispml._isolation as iso

    monkeypatch.setattr(iso, "_applied", {})


def test_state_goes_into_the_project_and_nothing_is_created(tmp_path: Path, clean_env: None) -> None:
    plugins = Plugins()
    plugins.register(NeedsHome(), "fake")
    project = tmp_path / "p"
    project.mkdir()
    isolate(project, plugins)
    assert os.environ["XDG_CONFIG_HOME"] == str(project / ".crispml" / "home" / "config")
    assert os.environ["XDG_CACHE_HOME"] == str(project / ".crispml" / "home" / "cache")
    assert os.environ["DO_NOT_TRACK"] == "true"
    assert os.environ["FAKEBACKEND_HOME"] == str(project / ".crispml" / "fake")
    assert os.environ["FAKEBACKEND_TELEMETRY"] == "off"
    assert list(project.iterdir()) == [], "a variable names a folder; nothing is made"
    # Another project in the same process moves what crispml set...
    other = tmp_path / "q"
    isolate(other, plugins)
    assert os.environ["XDG_CONFIG_HOME"] == str(other / ".crispml" / "home" / "config")
    assert os.environ["FAKEBACKEND_HOME"] == str(other / ".crispml" / "fake")


def test_a_variable_the_user_set_is_kept(tmp_path: Path, clean_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "mine"))
    isolate(tmp_path)
    assert os.environ["XDG_CACHE_HOME"] == str(tmp_path / "mine")
    assert os.environ["XDG_CONFIG_HOME"].startswith(str(tmp_path / ".crispml"))


def test_every_command_starts_isolated(tmp_path: Path) -> None:
    """Loading the plugins (what every command does first) sets the variables, for the project
    found from the current folder; the built-in plugins add their backends'."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "MLFLOW_", "BENTOML_", "GX_", "MPL"))}
    env.pop("DO_NOT_TRACK", None)
    env["CRISPML_PROJECT"] = str(tmp_path)
    code = (
        "import os, json\nfrom crispml.plugins import get_plugins\nget_plugins()\n"
        "print(json.dumps({k: v for k, v in os.environ.items()}))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    seen = json.loads(proc.stdout)
    store = str(tmp_path / ".crispml")
    assert seen["DO_NOT_TRACK"] == "true"
    assert seen["XDG_CONFIG_HOME"].startswith(store) and seen["XDG_CACHE_HOME"].startswith(store)
    assert seen["MLFLOW_DISABLE_TELEMETRY"] == "true"
    assert seen["GX_ANALYTICS_ENABLED"] == "false"
    assert seen["BENTOML_HOME"].startswith(store) and seen["BENTOML_DO_NOT_TRACK"] == "True"
    assert seen["MPLCONFIGDIR"].startswith(store)
    assert not (tmp_path / ".crispml").exists()
