"""Remembering what checking a recipe learned, so an unchanged re-run imports no backend.

Checking a recipe has two kinds of work. Most of it is pydantic's: fields, types, paths, gates —
cheap. Some of it needs the plugin's backend: scikit-learn to tell whether an estimator or a
metric name exists, Great Expectations to validate a suite against its models, Feast to load
definitions. Importing those costs seconds, and an unchanged recipe learns nothing new from it.

A plugin marks such a validator :func:`backend_check`. The core checks a recipe twice over:

1. always *without* the backend checks (``resolve(..., checks=False)``), which binds every step
   and gives each one its options — everything the run needs;
2. with them only when no earlier check passed under the same key. The key holds the recipe
   (as resolved: overrides applied, every option with its default), the values of the
   ``${env:NAME}`` it names, the version and source of every plugin it uses, the version of
   every distribution they declare (``importlib.metadata``: nothing is imported), and the
   content of every file their options say the check reads (``Options.check_inputs``). The
   project's code the check imported (a user's estimator module, Feast definitions and what
   they import) is recorded with the entry and re-hashed before it is trusted, as the stage
   cache does for a stage's code.

A changed file, option, environment value or version gives another key, so the check runs
again: the cache is never stale, only unused. The key is an HMAC under the project's random key
(``.crispml/hmac.key``, :func:`crispml.store.project_key`; the stage cache keys secrets with it
too), so that no value it holds — an environment variable's, say — can be guessed back from
the file names by hashing candidates.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from crispml.plugins import Plugins
    from crispml.recipe import Recipe
    from crispml.resolve import Resolved

SKIP_BACKEND_CHECKS = "crispml.skip_backend_checks"
"""The validation context key that tells :func:`backend_check` validators to pass."""

CHECKS_DIR = Path("cache") / "checks"
"""Under ``.crispml/``: one ``<key>.json`` per recipe check that passed."""

_F = TypeVar("_F", bound=Callable[..., Any])


def backend_check(validator: _F) -> _F:
    """Mark a pydantic ``after`` validator as a check that needs the plugin's backend.

    Put it under ``@field_validator``/``@classmethod`` (or ``@model_validator(mode="after")``)
    and take ``info: ValidationInfo`` as the last parameter. When this exact check already
    passed (same recipe, files, plugin and backend versions), the core skips it and the backend
    stays unimported. Whatever the check reads besides its own options — a suite file, a folder
    of definitions — must be in ``Options.check_inputs``.
    """
    params = list(inspect.signature(validator).parameters)
    value_at = 1 if params and params[0] == "cls" else 0

    @functools.wraps(validator)
    def check(*args: Any, **kwargs: Any) -> Any:
        info = args[-1] if args else None
        context = getattr(info, "context", None) or {}
        if context.get(SKIP_BACKEND_CHECKS):
            return args[value_at]
        return validator(*args, **kwargs)

    return check  # type: ignore[return-value]


def resolve_checked(
    recipe: Recipe, plugins: Plugins, project_dir: Path, *, reuse: bool = True, run: bool = False
) -> Resolved:
    """``resolve(recipe, plugins)``, with the backend checks skipped when they passed before.

    :param project_dir: the project whose ``.crispml/`` keeps the passed checks. Nothing is
        written there for a recipe that fails its check, nor, unless ``run``, when ``.crispml/``
        does not exist (``crispml check`` in a folder that never ran anything leaves no trace).
    :param reuse: ``False`` runs every check and records nothing (``--no-cache``: no stored
        result is read, and none is written for a run that asked for none).
    :param run: the recipe is about to run (which makes ``.crispml/`` anyway).
    """
    from crispml.fingerprint import code_dependencies, unchanged
    from crispml.resolve import resolve
    from crispml.store import project_key, read_project_key

    store = project_dir / ".crispml"
    if not reuse or not (run or store.is_dir()):
        return resolve(recipe, plugins)
    before = set(sys.modules)  # what the checks import, the light one's included, is their code
    light = resolve(recipe, plugins, checks=False)
    folder = store / CHECKS_DIR
    secret = read_project_key(store)
    if secret is not None:
        code = _read_entry(folder / f"{check_key(light, secret)}.json")
        if code is not None and unchanged(code):
            return light
    resolved = resolve(recipe, plugins)  # raises on a failed check: nothing is written
    modules = (set(sys.modules) - before) | set(recipe.plugins)
    for options in _all_options(resolved):
        modules.update(options.check_inputs().modules)
    code = code_dependencies(None, {project_dir, resolved.recipe_dir}, modules)
    key = check_key(light, secret if secret is not None else project_key(store))
    _write_entry(folder / f"{key}.json", {"code": code, "recipe": recipe.name, "created": time.time()})
    return resolved


def check_key(resolved: Resolved, secret: bytes) -> str:
    """The key a passed check is kept under (see the module's docstring for what it holds)."""
    from crispml._redact import ENV_REFERENCE
    from crispml._version import __version__
    from crispml.fingerprint import hash_file, keyed_hash_json, module_source_hash
    from crispml.plugins import module_of

    plugins = resolved.plugins
    recipe = resolved.recipe.to_dict()
    used = {s.plugin for s in resolved.steps} | set(resolved.trackers) | {resolved.runner}
    used |= set(resolved.recipe.plugins)
    text = json.dumps(recipe, sort_keys=True, default=str)
    env = {name: os.environ.get(name) for name in sorted(set(ENV_REFERENCE.findall(text)))}
    distributions: set[str] = set()
    versions: dict[str, Any] = {}
    for name in sorted(used):
        plugin = plugins.get(name)
        module = module_of(plugin)
        info = plugins.infos.get(name)
        versions[name] = [
            info.version if info else None,
            module_source_hash(module) if module else type(plugin).__qualname__,
        ]
        distributions.update(b.distribution for b in plugins.declaration(name).backends)
    files: dict[str, str | None] = {}
    for options in _all_options(resolved):
        inputs = options.check_inputs()
        distributions.update(inputs.distributions)
        for path in inputs.files:
            files[str(path)] = hash_file(path) if path.exists() else None
    material = {
        "crispml": __version__,
        "python": sys.version,
        "recipe": recipe,
        "recipe_dir": str(resolved.recipe_dir),
        "options": {s.stage: s.options.model_dump(mode="json") for s in resolved.steps},
        "env": env,
        "plugins": versions,
        "distributions": {d: _version(d) for d in sorted(distributions)},
        "files": files,
    }
    return keyed_hash_json(secret, material)


def _version(distribution: str) -> str | None:
    from crispml.declarations import _distribution_version

    return _distribution_version(distribution)


def _all_options(resolved: Resolved) -> list[Any]:
    return [s.options for s in resolved.steps] + list(resolved.trackers.values()) + [resolved.runner_options]


def _read_entry(entry: Path) -> dict[str, str] | None:
    try:
        code = json.loads(entry.read_text())["code"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return code if isinstance(code, dict) else None


def _write_entry(entry: Path, value: dict[str, Any]) -> None:
    from crispml.store import atomic_write_json

    atomic_write_json(entry, value)
