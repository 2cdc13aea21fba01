"""A third-party plugin distribution (examples/plugin_package) works once pip-installed:
found through its entry point, listed by `crispml plugins`, usable in a recipe."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "examples" / "plugin_package"
CRISPML = str(Path(sys.executable).with_name("crispml"))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package pip-installed (built by its own pyproject) into a folder put on PYTHONPATH."""
    target = tmp_path_factory.mktemp("site")
    build = tmp_path_factory.mktemp("src") / "pkg"
    shutil.copytree(PACKAGE, build, ignore=shutil.ignore_patterns(".crispml", "__pycache__"))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(build),
        ],
        check=True,
        timeout=300,
    )
    return target


def _env(site: Path, project: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(site), "CRISPML_PROJECT": str(project)}


def test_pip_installed_plugin_is_listed_with_its_distribution(site: Path, tmp_path: Path) -> None:
    proc = subprocess.run([CRISPML, "plugins", "--json"], capture_output=True, text=True, env=_env(site, tmp_path))
    assert proc.returncode == 0, proc.stderr
    info = {p["name"]: p for p in json.loads(proc.stdout)}["baseline"]
    assert (info["source"], info["distribution"], info["version"]) == ("entry point", "crispml-baseline", "0.2.0")
    assert info["stages"] == ["train"] and info["error"] is None


def test_pip_installed_plugin_runs_in_a_recipe(site: Path, tmp_path: Path, churn_csv: Path) -> None:
    shutil.copy(churn_csv, tmp_path / "churn.csv")
    (tmp_path / "r.yaml").write_text(
        "name: baseline\nload: {use: files, path: churn.csv, target: churned}\n"
        "train: {use: baseline, strategy: most_frequent}\n"
        "evaluate: {use: sklearn, metrics: [accuracy], gate: {accuracy: '>= 0.6'}}\n"
    )
    proc = subprocess.run(
        [CRISPML, "run", "r.yaml"], cwd=tmp_path, capture_output=True, text=True, env=_env(site, tmp_path), timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert "train     baseline" in proc.stderr
    manifest = json.loads(next((tmp_path / ".crispml" / "runs").glob("*/manifest.json")).read_text())
    assert manifest["plugins"]["baseline"] == {
        "version": "0.2.0",
        "source": "entry point",
        "module": "crispml_baseline",
    }


def test_the_plugins_own_tests_pass_with_crispmls_test_kit(site: Path, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(PACKAGE / "tests")],
        capture_output=True,
        text=True,
        env=_env(site, tmp_path),
        cwd=tmp_path,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 passed" in proc.stdout
