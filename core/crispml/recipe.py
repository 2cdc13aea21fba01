"""The recipe: one pydantic model, spelt in Python (``crispml.Recipe``) or YAML.

A recipe names the plugin for each stage (``use:``) with that plugin's options, a seeded data
split, the trackers and the runner. This module knows the recipe's own fields; the plugins'
options are validated later, against each plugin's declared model (``crispml.resolve``).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from crispml._yaml import MAX_BYTES, YamlProblem, decode, line_of, load_with_lines
from crispml.errors import RecipeError, UsageError, clip
from crispml.stages import STAGE_NAMES

# Stages whose names would shadow BaseModel attributes are stored under another field name.
_FIELD = {"validate": "validate_", "register": "register_"}


class Split(BaseModel):
    """How the loaded data is split into train and test rows. Seeded, so runs reproduce."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    test_size: float = Field(0.2, gt=0, lt=1)
    seed: int = 42
    stratify: str | None = None
    """A column whose class proportions both splits keep (usually the target)."""


class Select(BaseModel):
    """How the best of a step's candidates is chosen: ``select: roc_auc`` (highest wins) or
    ``select: {metric: log_loss, greater_is_better: false}``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    metric: str
    greater_is_better: bool = True


class Step(BaseModel):
    """One stage of a recipe: the plugin that runs it and that plugin's options.

    Every field but crispml's own (``use``, ``gate``, ``cache``, and for the train step
    ``grid``, ``candidates``, ``select``) is an option of the plugin, validated against the
    plugin's declared model when the recipe is checked.
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    use: str
    gate: dict[str, Any] = Field(default_factory=dict)
    """Metric thresholds, e.g. ``{"accuracy": ">= 0.9"}``; a failed gate rejects the run."""
    cache: bool = True
    """Whether this step may reuse a stored result whose inputs are unchanged."""
    grid: dict[str, list[Any]] | None = None
    """Candidates as a grid: option path → values (``{params.max_depth: [4, 8]}``); every
    combination is one candidate (see ``crispml.candidates``)."""
    candidates: list[dict[str, Any]] | None = None
    """Candidates as a list: each one's options over the step's (``[{estimator: ...}, ...]``)."""
    select: Select | None = None
    """The evaluate metric that picks the best candidate."""

    @field_validator("select", mode="before")
    @classmethod
    def _select_by_name(cls, value: Any) -> Any:
        return {"metric": value} if isinstance(value, str) else value

    @property
    def options(self) -> dict[str, Any]:
        """The plugin's options (every field that is not crispml's own)."""
        return dict(self.model_extra or {})


class Runner(BaseModel):
    """Which runner executes the recipe, and its options."""

    model_config = ConfigDict(extra="allow", frozen=True)

    use: str = "local"

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class Recipe(BaseModel):
    """An end-to-end workflow: ``Recipe.from_yaml(path)`` or ``Recipe(name=..., load=Step(...))``."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = ""
    plugins: list[str] = Field(default_factory=list)
    """Modules with hookimpls to load for this recipe (a user's own train function, a check)."""
    split: Split | None = Field(default_factory=lambda: Split())
    tracking: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Trackers to enable: ``[mlflow]`` or ``{mlflow: {tracking_uri: ...}}``."""
    runner: Runner = Field(default_factory=Runner)

    load: Step
    validate_: Step | None = Field(None, alias="validate")
    train: Step | None = None
    evaluate: Step | None = None
    register_: Step | None = Field(None, alias="register")
    deploy: Step | None = None
    monitor: Step | None = None

    _source: Path | None = PrivateAttr(None)
    _overridden: frozenset[tuple[str, ...]] = PrivateAttr(frozenset())

    @field_validator("tracking", mode="before")
    @classmethod
    def _tracking_list(cls, value: Any) -> Any:
        if isinstance(value, list):
            return {str(name): {} for name in value}
        if isinstance(value, dict):
            return {k: ({} if v is None else v) for k, v in value.items()}
        return value

    @field_validator("runner", mode="before")
    @classmethod
    def _runner_name(cls, value: Any) -> Any:
        return {"use": value} if isinstance(value, str) else value

    def __eq__(self, other: object) -> bool:
        """Recipes are equal when they say the same thing, wherever they were read from."""
        return isinstance(other, Recipe) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(self.to_yaml())

    def step(self, stage: str) -> Step | None:
        """The step for ``stage`` (``None`` when the recipe leaves it out)."""
        return getattr(self, _FIELD.get(stage, stage))  # type: ignore[no-any-return]

    def steps(self) -> list[tuple[str, Step]]:
        """The recipe's steps in lifecycle order."""
        return [(s, step) for s in STAGE_NAMES if (step := self.step(s)) is not None]

    # -- YAML ------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        data = self.model_dump(mode="json", by_alias=True, exclude_none=True)
        if self.split is None:  # "no split" must survive a round trip (the default is a split)
            data["split"] = None
        return data

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: list[str] | None = None) -> Recipe:
        """Read a recipe file; ``overrides`` are ``key.path=value`` strings (``--set``)."""
        path = Path(path)
        try:
            with path.open("rb") as fh:
                data = fh.read(MAX_BYTES + 1)  # never more: a recipe is small, a mistake may not be
        except OSError as exc:
            raise UsageError(f"{path}: cannot read recipe: {exc.strerror or exc}") from exc
        try:
            text = decode(data)
        except YamlProblem as exc:
            message = exc.message
            if len(data) > MAX_BYTES:
                message = f"the file is over {MAX_BYTES:,} bytes; a recipe is at most that"
            raise RecipeError(message, file=str(path), line=exc.line) from None
        return cls.from_yaml_text(text, file=str(path), overrides=overrides)

    @classmethod
    def from_yaml_text(cls, text: str, *, file: str | None = None, overrides: list[str] | None = None) -> Recipe:
        try:
            data, lines = load_with_lines(text)
        except YamlProblem as exc:
            raise RecipeError(exc.message, file=file, line=exc.line) from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise RecipeError(
                f"malformed YAML: {clip(problem, 200)}",
                file=file,
                line=mark.line + 1 if mark else None,
            ) from exc
        if not isinstance(data, dict):
            raise RecipeError("expected a mapping of recipe fields at the top level", file=file)
        overridden = apply_overrides(data, overrides or [])
        return cls.from_dict(data, file=file, lines=lines, overridden=overridden)

    @classmethod
    def from_dict(
        cls,
        data: dict[str, Any],
        *,
        file: str | None = None,
        lines: dict[tuple[str | int, ...], int] | None = None,
        overridden: set[tuple[str, ...]] | None = None,
    ) -> Recipe:
        try:
            recipe = cls.model_validate(data)
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = tuple(err["loc"])
            where = file
            if overridden and any(loc[: len(o)] == o or o[: len(loc)] == loc for o in overridden):
                where = "--set"
            raise RecipeError(
                describe_error(err),
                field=dotted(loc),
                file=where,
                line=line_of(lines or {}, loc) if where == file else None,
            ) from None
        recipe._overridden = frozenset(overridden or ())
        return recipe.with_source(Path(file) if file else None)

    @property
    def source(self) -> Path | None:
        """The YAML file this recipe came from, if any."""
        return self._source

    @property
    def overridden(self) -> frozenset[tuple[str, ...]]:
        """Field paths set by ``--set`` overrides (errors there name ``--set``, not a YAML line)."""
        return self._overridden

    def with_source(self, source: Path | None) -> Recipe:
        """Remember the file this recipe came from (relative paths resolve against its folder)."""
        self._source = source
        return self


def dotted(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc)


def describe_error(err: Any, *, show_input: bool = True) -> str:
    """One short phrase for one pydantic error: what was expected and what was given (unless
    ``show_input`` is false: the value of a declared-secret field is never echoed)."""
    kind = err.get("type", "")
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "missing":
        return "missing required field"
    msg = str(err.get("msg", "invalid value"))
    msg = msg.replace("Input should be", "expected").replace("Value error, ", "")
    if show_input and "input" in err and kind not in {"value_error", "assertion_error"}:
        msg += f", got {clip(repr(err['input']))}"
    return msg


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> set[tuple[str, ...]]:
    """Apply ``--set a.b.c=value`` in place (value parsed as YAML); return the paths set."""
    done: set[tuple[str, ...]] = set()
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set {clip(repr(item))}: expected KEY=VALUE, e.g. train.params.C=0.5")
        parts = tuple(p for p in key.strip().split("."))
        if any(not p for p in parts):
            raise UsageError(f"--set {clip(repr(item))}: empty segment in key {clip(repr(key))}")
        try:
            value = load_with_lines(raw)[0] if raw.strip() else ""
        except YamlProblem as exc:
            raise UsageError(f"--set {clip(repr(item))}: {exc.message}") from None
        except yaml.YAMLError:
            value = raw
        node = data
        for i, part in enumerate(parts[:-1]):
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            if not isinstance(nxt, dict):
                where = ".".join(parts[: i + 1])
                raise UsageError(f"--set {clip(repr(item))}: {where} is {type(nxt).__name__}, not a mapping")
            node = nxt
        node[parts[-1]] = copy.deepcopy(value)
        done.add(parts)
    return done
