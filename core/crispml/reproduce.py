"""``crispml reproduce RUN``: run a recorded run again and say whether it comes out the same.

A manifest records what a run depended on — the resolved recipe (overrides applied), the split
seed, the files each stage read and their hashes, the git commit and dirty flag, the versions of
the backends. Reproducing first compares each with what is here now and names every difference
(a changed data file, a newer scikit-learn), because that is what a user needs to explain a
metric that moved. Then it re-runs the recipe without the cache (a cached result would
"reproduce" trivially) and without the stages that change the world — register, deploy,
monitor, and trackers — since a reproduction is a check, not a release. Finally every recorded
metric is compared with its new value: exactly for a deterministic model, within a tolerance for
one whose training is random (an estimator's ``random_state`` left unset, and the model trained
again answering differently from the recorded one).

Exit codes: 0 reproduced, 3 a metric differs, 2 the run cannot be reproduced here (a file,
plugin or backend is missing; the run recorded no metrics), 1 the re-run failed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from crispml.environment import git_state
from crispml.errors import EXIT_FAILED, EXIT_REJECTED, EXIT_SUCCEEDED, EXIT_USAGE, CrispmlError, UsageError
from crispml.fingerprint import hash_file
from crispml.manifest import Manifest
from crispml.plugins import Plugins, get_plugins

SKIPPED_STAGES = ("register", "deploy", "monitor")
"""Stages a reproduction never runs: they would move a champion, a deployment or retrain."""

RANDOM_TOLERANCE = 0.01
"""Absolute difference allowed per metric when the model's training is not seeded."""

_DONE = ("succeeded", "cached", "rejected")


@dataclass
class MetricCheck:
    """One recorded metric and its value in the reproduction."""

    stage: str
    metric: str
    recorded: float
    reproduced: float | None
    tolerance: float

    @property
    def same(self) -> bool:
        if self.reproduced is None:
            return False
        if self.tolerance == 0:
            return self.reproduced == self.recorded or (math.isnan(self.recorded) and math.isnan(self.reproduced))
        return abs(self.reproduced - self.recorded) <= self.tolerance

    def as_json(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "metric": self.metric,
            "recorded": self.recorded,
            "reproduced": self.reproduced,
            "tolerance": self.tolerance,
            "same": self.same,
        }


@dataclass
class Reproduction:
    """What ``crispml reproduce`` found: the differences, what is missing, the metric checks."""

    run_id: str
    status: str = "cannot"
    """``reproduced``, ``differs``, ``failed`` (the re-run did) or ``cannot`` (not here)."""
    new_run_id: str | None = None
    differences: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    metrics: list[MetricCheck] = field(default_factory=list)
    tolerance: float = 0.0
    tolerance_reason: str = "seeded model: metrics must be equal"
    error: str | None = None

    @property
    def exit_code(self) -> int:
        return {
            "reproduced": EXIT_SUCCEEDED,
            "differs": EXIT_REJECTED,
            "failed": EXIT_FAILED,
        }.get(self.status, EXIT_USAGE)

    def as_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "status": self.status,
            "reproduction_run_id": self.new_run_id,
            "differences": self.differences,
            "missing": self.missing,
            "skipped": self.skipped,
            "tolerance": self.tolerance,
            "tolerance_reason": self.tolerance_reason,
            "metrics": [m.as_json() for m in self.metrics],
            "error": self.error,
        }


def reproduce(
    run_id: str,
    *,
    overrides: list[str] | None = None,
    tolerance: float | None = None,
    project: str | Path | None = None,
    plugins: Plugins | None = None,
) -> Reproduction:
    """Re-run the recorded run ``run_id`` and compare. ``overrides`` change the recorded recipe
    (to see what a different seed does); ``tolerance`` replaces the automatic one.

    Raises ``UsageError`` for an unknown run id; everything else is in the returned
    :class:`Reproduction`."""
    from crispml.runs import _execute, _new_plan, stored_recipe
    from crispml.store import RunStore, find_project

    store = RunStore(Path(project).resolve() if project else find_project())
    manifest = store.read_manifest(run_id)
    out = Reproduction(run_id=run_id)
    recorded = _recorded_metrics(manifest)
    if not recorded:
        out.missing.append(f"run {run_id} recorded no metrics (status {manifest.status}): nothing to compare")
        return out
    recipe_dir = Path(manifest.recipe_dir)
    if not recipe_dir.is_dir():
        out.missing.append(f"the run's recipe folder {recipe_dir} does not exist here")
        return out
    try:
        recipe = _without_side_effects(stored_recipe(run_id, manifest, "reproduced"), overrides or [], out)
    except UsageError as exc:
        out.missing.append(str(exc))
        return out
    pl = plugins or get_plugins()
    from crispml.resolve import on_path, resolve

    with on_path(recipe_dir):
        try:
            resolved = resolve(recipe, pl)
        except CrispmlError as exc:
            out.missing.append(" ".join(str(exc).split()))
            return out
        _compare_files(manifest, resolved, out)
        _compare_environment(manifest, store.project_dir, out)
        if out.missing:
            return out
        plan = _new_plan(recipe, overrides, False, store.project_dir, pl)
        plan.manifest.reproduces = run_id
        result = _execute(plan)
    out.new_run_id = result.run_id
    _compare_data(manifest, result.manifest, out)
    if result.status == "failed":
        out.status, out.error = "failed", " ".join(str(result.manifest.error or result.error).split())
        return out
    model = result.results.get("model")
    unseeded = _unseeded(model)
    if tolerance is not None:
        out.tolerance, out.tolerance_reason = tolerance, "stated with --tolerance"
    elif unseeded and _same_model(store.load_result(run_id, "train"), model, result.results.get("dataset")):
        out.tolerance_reason = (
            f"{', '.join(unseeded)} unset, but the model trained again answers exactly as the recorded one: "
            "metrics must be equal"
        )
    elif unseeded:
        out.tolerance = RANDOM_TOLERANCE
        out.tolerance_reason = (
            f"training is not seeded ({', '.join(unseeded)} unset): metrics within {RANDOM_TOLERANCE}"
        )
    again = _recorded_metrics(result.manifest)
    for stage, metrics in recorded.items():
        for name, value in metrics.items():
            new = again.get(stage, {}).get(name)
            out.metrics.append(MetricCheck(stage, name, value, new, out.tolerance))
    out.status = "reproduced" if all(m.same for m in out.metrics) else "differs"
    return out


def _recorded_metrics(manifest: Manifest) -> dict[str, dict[str, float]]:
    """``{stage: {metric: value}}`` of the stages that ended with a result."""
    out: dict[str, dict[str, float]] = {}
    for record in manifest.stages:
        metrics = (record.summary or {}).get("metrics") if record.status in _DONE else None
        numbers = {k: float(v) for k, v in (metrics or {}).items() if isinstance(v, int | float)}
        if numbers and record.name not in SKIPPED_STAGES:
            out[record.name] = numbers
    return out


def _without_side_effects(recipe: Any, overrides: list[str], out: Reproduction) -> Any:
    """The recorded recipe without register, deploy, monitor and trackers, ``overrides`` applied."""
    from crispml.recipe import Recipe, apply_overrides

    data = recipe.to_dict()
    for stage in SKIPPED_STAGES:
        if data.pop(stage, None) is not None:
            out.skipped.append(stage)
    if data.get("tracking"):
        out.skipped.append("tracking (" + ", ".join(data["tracking"]) + ")")
        data["tracking"] = {}
    out.differences.extend(f"recipe: --set {o} on top of the recorded recipe" for o in overrides)
    done = apply_overrides(data, overrides) if overrides else set()
    return Recipe.from_dict(data, overridden=done).with_source(recipe.source)


def _short(path: str, base: Path) -> str:
    try:
        return str(Path(path).relative_to(base))
    except ValueError:
        return path


def _compare_files(manifest: Manifest, resolved: Any, out: Reproduction) -> None:
    """Name each file a stage read that is gone or changed, and each one the recipe reads now
    that is missing."""
    base = Path(manifest.recipe_dir)
    seen: set[str] = set()
    for record in manifest.stages:
        for path, digest in (record.files or {}).items():
            if path in seen:
                continue
            seen.add(path)
            if not Path(path).exists():
                out.missing.append(f"{_short(path, base)} is missing (stage {record.name} read it)")
                continue
            now = hash_file(Path(path))
            if now != digest:
                out.differences.append(f"{_short(path, base)} changed: fingerprint {digest[:8]}… → {now[:8]}…")
    for step in resolved.steps:
        for path in step.options.external_inputs():
            if str(path) not in seen and not Path(path).exists():
                out.missing.append(f"{_short(str(path), base)} is missing (stage {step.stage} reads it)")


def _compare_environment(manifest: Manifest, project_dir: Path, out: Reproduction) -> None:
    env = manifest.environment
    was = env.get("git") or {}
    now = git_state(project_dir)
    if was.get("commit") and now.get("commit") and was["commit"] != now["commit"]:
        out.differences.append(f"code: git commit {was['commit'][:10]} → {now['commit'][:10]}")
    if was.get("dirty"):
        out.differences.append("code: the run was made from uncommitted changes (dirty work tree then)")
    if now.get("dirty"):
        out.differences.append("code: the work tree has uncommitted changes now")
    for dist, version in sorted((env.get("backends") or {}).items()):
        current = _version(dist)
        if current is None:
            out.missing.append(f"{dist} {version} is not installed here")
        elif version is not None and current != version:
            out.differences.append(f"{dist} {version} → {current}")
    for name, current in (("crispml", _version("crispml")), ("python", _python())):
        if env.get(name) and current and env[name] != current:
            out.differences.append(f"{name} {env[name]} → {current}")


def _compare_data(recorded: Manifest, again: Manifest, out: Reproduction) -> None:
    """The loaded data's fingerprint: it names a change the file hashes cannot (an older
    manifest without them, or a table read from a database)."""
    before, after = recorded.data.get("fingerprint"), again.data.get("fingerprint")
    if before and after and before != after and not any(" changed: " in d for d in out.differences):
        source = again.data.get("source") or recorded.data.get("source") or "data"
        out.differences.append(
            f"{_short(str(source), Path(recorded.recipe_dir))} changed: fingerprint {before[:8]}… → {after[:8]}…"
        )


def _same_model(recorded: Any, again: Any, dataset: Any) -> bool:
    """Does the re-trained model answer exactly as the recorded one on the data's rows? An
    estimator whose ``random_state`` is unset may still train deterministically (a logistic
    regression's default solver does): then its metrics must be equal, not merely close.
    (Pickled bytes cannot tell: equal fitted pipelines pickle differently.)"""
    import numpy as np

    try:
        frame = dataset.frame[again.feature_columns]
        answers = 0
        for method in ("predict", "predict_proba"):
            old, new = getattr(recorded.model, method, None), getattr(again.model, method, None)
            if old is None or new is None:
                continue
            if not np.array_equal(np.asarray(old(frame)), np.asarray(new(frame))):
                return False
            answers += 1
        return answers > 0
    except Exception:
        return False


def _unseeded(model: Any) -> list[str]:
    """The ``random_state`` parameters left unset in a trained model (scikit-learn-style
    ``get_params``): such a model trains differently each time."""
    fitted = getattr(model, "model", None)
    get_params = getattr(fitted, "get_params", None)
    if get_params is None:
        return []
    try:
        params = get_params(deep=True)
    except Exception:
        return []
    return sorted(k for k, v in params.items() if k.split("__")[-1] == "random_state" and v is None)


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _python() -> str:
    import sys

    return sys.version.split()[0]
