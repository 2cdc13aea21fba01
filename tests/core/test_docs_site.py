"""The docs site (mkdocs.yml): every plugin has a page in its nav, it builds with --strict, and a
broken link or a page left out of nav fails that build (what CI relies on)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
MKDOCS = Path(sys.executable).with_name("mkdocs")


def _nav_pages(nav: Any) -> list[str]:
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, list):
        return [page for item in nav for page in _nav_pages(item)]
    if isinstance(nav, dict):
        return [page for value in nav.values() for page in _nav_pages(value)]
    return []


def test_every_installed_plugin_has_a_page_in_the_nav() -> None:
    config = yaml.safe_load((REPO / "mkdocs.yml").read_text())
    pages = _nav_pages(config["nav"])
    plugins = sorted(ep.name for ep in entry_points(group="crispml"))
    assert len(plugins) >= 8
    for name in plugins:
        assert f"plugins/{name}.md" in pages, f"plugin '{name}' has no page in mkdocs.yml's nav"
        assert (REPO / "docs" / "plugins" / f"{name}.md").is_file(), name
    for page in ("three-ways.md", "ready-made-recipes.md", "hooks.md", "performance.md", "examples/churn.md"):
        assert page in pages, page


def _build(root: Path, site: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    return subprocess.run(
        [str(MKDOCS), "build", "--strict", "--site-dir", str(site)],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


@pytest.fixture
def docs_copy(tmp_path: Path) -> Path:
    """The site's sources (config, pages, and the files its snippets include), copied."""
    root = tmp_path / "repo"
    root.mkdir()
    shutil.copy(REPO / "mkdocs.yml", root)
    ignore = shutil.ignore_patterns(".crispml", "__pycache__", "*.egg-info")
    for folder in ("docs", "recipes", "examples"):
        shutil.copytree(REPO / folder, root / folder, ignore=ignore)
    return root


def test_the_site_builds_strictly_and_includes_the_real_recipe_files(docs_copy: Path, tmp_path: Path) -> None:
    built = _build(docs_copy, tmp_path / "site")
    assert built.returncode == 0, built.stderr[-3000:]
    page = (tmp_path / "site" / "ready-made-recipes" / "index.html").read_text()
    assert "RandomForestRegressor" in page and "roc_auc_ovr" in page  # snippets of the real files
    assert (tmp_path / "site" / "plugins" / "mlflow" / "index.html").is_file()


@pytest.mark.parametrize(
    ("breakage", "named"),
    [
        ("link", "no-such-page.md"),
        ("anchor", "no-such-anchor"),
        ("omitted page", "orphan.md"),
        ("snippet", "delivery-time-regression/recipe.yaml"),
    ],
)
def test_a_broken_link_a_page_left_out_of_nav_or_a_lost_snippet_fails_the_build(
    docs_copy: Path, tmp_path: Path, breakage: str, named: str
) -> None:
    index = docs_copy / "docs" / "index.md"
    if breakage == "link":
        index.write_text(index.read_text() + "\n[gone](no-such-page.md)\n")
    elif breakage == "anchor":
        index.write_text(index.read_text() + "\n[gone](hooks.md#no-such-anchor)\n")
    elif breakage == "omitted page":
        (docs_copy / "docs" / "orphan.md").write_text("# Not in nav\n")
    else:
        (docs_copy / "recipes" / "delivery-time-regression" / "recipe.yaml").unlink()
    built = _build(docs_copy, tmp_path / "site")
    assert built.returncode != 0, f"{breakage}: the strict build passed"
    assert named in built.stdout + built.stderr, built.stdout[-1000:] + built.stderr[-2000:]
