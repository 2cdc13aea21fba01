"""Ready-made recipes shipped with crispml: ``crispml recipes`` lists them, ``crispml init`` copies one.

They live in the repository's ``recipes/`` folder, which the wheel ships as ``crispml/_recipes``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from crispml.errors import UsageError


def recipes_dir() -> Path:
    """Where the ready-made recipes are: inside the installed package, or the source checkout's."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "_recipes", here.parents[1] / "recipes"):
        if candidate.is_dir():
            return candidate
    raise UsageError("crispml's ready-made recipes are not installed (no crispml/_recipes folder)")


def list_recipes() -> list[tuple[str, str]]:
    """``(name, description)`` of every ready-made recipe."""
    out = []
    for path in sorted(recipes_dir().glob("*/recipe.yaml")):
        data = yaml.safe_load(path.read_text()) or {}
        out.append((path.parent.name, str(data.get("description", ""))))
    return out


def init_recipe(name: str, target: Path) -> Path:
    """Copy the ready-made recipe ``name`` into ``target`` (which must not hold a recipe yet)."""
    source = recipes_dir() / name
    if not (source / "recipe.yaml").is_file():
        known = ", ".join(n for n, _ in list_recipes()) or "none"
        raise UsageError(f"no ready-made recipe named '{name}' (available: {known})")
    if (target / "recipe.yaml").exists():
        raise UsageError(f"{target / 'recipe.yaml'} already exists: choose another folder")
    shutil.copytree(source, target, dirs_exist_ok=True)
    return target / "recipe.yaml"
