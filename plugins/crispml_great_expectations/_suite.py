"""The suite format: parsing, checking against Great Expectations' own models, columns.

A suite is a YAML file (or the ``expectations:`` list of a recipe's validate step)::

    name: churn                      # optional
    expectations:
      - expect: column_values_to_be_between   # or expect_column_values_to_be_between,
        column: tenure_months                 #    or ExpectColumnValuesToBeBetween
        min_value: 0
        max_value: 80
        mostly: 0.99
      - expect: table_columns_to_match_set
        column_set: [tenure_months, contract]

Every key but ``expect`` is an argument of the Great Expectations class (``type`` may be written
for ``type_``). Checking an entry builds that class, so its own validation says what is wrong.
Great Expectations is imported only when an entry is checked or built, never by this module.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from crispml import YamlProblem, clip, load_yaml

# Arguments a user may not set: crispml owns them (ids, batch, result format).
RESERVED = frozenset({"id", "batch_id", "result_format", "rendered_content", "windows"})
# Expectations that state which columns a table has: a column they name may be missing from a
# batch, and that is a data failure, not a mistake in the suite.
SCHEMA_EXPECTATIONS = frozenset(
    {
        "expect_column_to_exist",
        "expect_table_columns_to_match_set",
        "expect_table_columns_to_match_ordered_list",
    }
)


class SuiteError(ValueError):
    """A suite that cannot be used as written; the message says which entry, field and why."""


@dataclass(frozen=True)
class Entry:
    """One expectation as the user wrote it, normalised."""

    expect: str
    """The Great Expectations type, snake case with the ``expect_`` prefix."""
    kwargs: dict[str, Any]
    where: str = ""
    """``file:line`` or ``expectation 3``, for messages."""
    line: int | None = None
    built: Any = field(default=None, compare=False, repr=False)
    """The GX expectation object checking built (fresh for each parse; used once by a run)."""

    @property
    def columns(self) -> list[str]:
        """The data columns this expectation reads (empty for table-level ones)."""
        out: list[str] = []
        for key in ("column", "column_A", "column_B"):
            if isinstance(self.kwargs.get(key), str):
                out.append(self.kwargs[key])
        listed = self.kwargs.get("column_list")
        if isinstance(listed, list):
            out.extend(str(c) for c in listed)
        return out

    @property
    def declared_columns(self) -> list[str]:
        """Columns this expectation says the table has (schema expectations only)."""
        if self.expect == "expect_column_to_exist":
            return self.columns
        if self.expect in SCHEMA_EXPECTATIONS:
            value = self.kwargs.get("column_set") or self.kwargs.get("column_list") or []
            return [str(c) for c in value] if isinstance(value, list | tuple | set) else []
        return []

    def label(self) -> str:
        cols = self.columns
        on = f" on {', '.join(repr(c) for c in cols)}" if cols else ""
        return f"{self.expect}{on}"

    def as_yaml(self) -> dict[str, Any]:
        short = self.expect.removeprefix("expect_")
        return {"expect": short, **self.kwargs}


@dataclass
class Suite:
    name: str
    entries: list[Entry] = field(default_factory=list)


# -- names ----------------------------------------------------------------------------------


@cache
def known_types() -> dict[str, str]:
    """Snake-case expectation type → class name, for every class in ``gx.expectations``."""
    import great_expectations as gx

    out: dict[str, str] = {}
    for name in dir(gx.expectations):
        cls = getattr(gx.expectations, name)
        kind = getattr(cls, "expectation_type", None)
        if name.startswith("Expect") and isinstance(kind, str) and kind.startswith("expect_"):
            out[kind] = name
    return out


def _snake(name: str) -> str:
    name = re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name.strip())
    name = re.sub(r"(?<=[A-Z])([A-Z][a-z])", r"_\1", name)
    return name.lower().replace("-", "_").replace(" ", "_")


def normalise_type(name: str) -> str:
    """``ExpectColumnValuesToBeBetween``, ``column_values_to_be_between`` → the snake type."""
    snake = _snake(name)
    return snake if snake.startswith("expect_") else f"expect_{snake}"


def resolve_type(name: str) -> str:
    """The GX type for ``name``, or a ``SuiteError`` listing the nearest known names."""
    types = known_types()
    snake = normalise_type(name)
    if snake in types:
        return snake
    short = {t.removeprefix("expect_"): t for t in types}
    near = difflib.get_close_matches(snake.removeprefix("expect_"), list(short), n=3, cutoff=0.5)
    hint = f"; nearest: {', '.join(near)}" if near else ""
    raise SuiteError(f"unknown expectation type '{name}'{hint}")


# -- checking and building --------------------------------------------------------------------


def _field_name(cls: Any, key: str) -> str:
    fields = getattr(cls, "__fields__", {})
    if key not in fields and f"{key}_" in fields:
        return f"{key}_"  # ``type`` → ``type_``: GX's name for a field that shadows a builtin
    return key


def _describe(errors: list[dict[str, Any]], kwargs: dict[str, Any]) -> str:
    """One phrase from a GX (pydantic v1) error list: the field and why, the value given."""
    first = errors[0]
    loc = [str(p) for p in first.get("loc", ()) if p != "__root__"]
    name = loc[0].rstrip("_") if loc else ""
    if first.get("type") == "value_error.extra":
        return f"field '{name}': not an argument of this expectation"
    if first.get("type") == "value_error.missing":
        return f"field '{name}': required argument missing"
    msgs: list[str] = []
    for err in errors:
        here = [str(p) for p in err.get("loc", ()) if p != "__root__"]
        if here[:1] == loc[:1] and err["msg"] not in msgs:
            msgs.append(str(err["msg"]))
    if not name:
        return "; ".join(msgs)
    given = kwargs.get(name, kwargs.get(f"{name}_"))
    return f"field '{name}': {' or '.join(msgs[:2])} (got {given!r})"


def build(entry: Entry) -> Any:
    """The Great Expectations expectation object for ``entry`` (raises ``SuiteError``)."""
    import great_expectations as gx

    cls = getattr(gx.expectations, known_types()[entry.expect])
    kwargs = {_field_name(cls, k): v for k, v in entry.kwargs.items()}
    try:
        return cls(**kwargs)
    except Exception as exc:
        errors = getattr(exc, "errors", None)
        why = _describe(errors(), entry.kwargs) if callable(errors) else f"{type(exc).__name__}: {exc}"
        raise SuiteError(why) from None


def _at(where: str, detail: str = "") -> str:
    """``file:3: expectation 2 (detail)``, or just ``detail`` when there is no place to name."""
    if not where:
        return detail
    return f"{where} ({detail})" if detail else where


def parse_entry(raw: Any, where: str = "", line: int | None = None) -> Entry:
    """Check one raw entry (a mapping) fully; return it normalised or raise ``SuiteError``.

    :param where: how messages name the entry (``churn.yaml:7: expectation 3``); empty when
        the caller's error already points at it (an inline expectation in a recipe).
    """
    prefix = f"{where}: " if where else ""
    if not isinstance(raw, dict):
        raise SuiteError(f"{prefix}expected a mapping with 'expect:', got {type(raw).__name__}")
    if "expect" not in raw:
        keys = ", ".join(map(str, raw)) or "nothing"
        raise SuiteError(f"{prefix}field 'expect': missing (the expectation type; has {keys})")
    name = raw["expect"]
    if not isinstance(name, str) or not name.strip():
        raise SuiteError(f"{prefix}field 'expect': expected an expectation type name, got {name!r}")
    kwargs = {str(k): v for k, v in raw.items() if k != "expect"}
    try:
        kind = resolve_type(name)
    except SuiteError as exc:
        raise SuiteError(f"{prefix}field 'expect': {exc}") from None
    entry = Entry(kind, kwargs, where, line)
    for key in kwargs:
        if key in RESERVED:
            raise SuiteError(f"{_at(where, entry.label())}: field '{key}': set by crispml, not in a suite")
    try:
        built = build(entry)
    except SuiteError as exc:
        raise SuiteError(f"{_at(where, entry.label())}: {exc}") from None
    return Entry(kind, kwargs, where, line, built)


def _lines_of_items(text: str) -> list[int]:
    """1-based line of each item of the top-level ``expectations`` list (or top-level list)."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return []
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if key.value == "expectations" and isinstance(value, yaml.SequenceNode):
                return [item.start_mark.line + 1 for item in value.value]
        return []
    if isinstance(node, yaml.SequenceNode):
        return [item.start_mark.line + 1 for item in node.value]
    return []


MAX_SUITE_BYTES = 1_000_000


def load_suite(path: Path) -> Suite:
    """Read and check a suite file; every problem is a one-line ``SuiteError``."""
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_SUITE_BYTES + 1)
    except OSError as exc:
        raise SuiteError(f"{path.name}: cannot read: {exc.strerror or exc}") from None
    if len(raw) > MAX_SUITE_BYTES:
        raise SuiteError(f"{path.name}: over {MAX_SUITE_BYTES:,} bytes; a suite is at most that")
    try:
        # Hardened: duplicate keys, binary or non-UTF-8 files, alias bombs are one-line errors.
        data = load_yaml(raw)
        text = raw.decode("utf-8-sig")
    except YamlProblem as exc:
        at = f":{exc.line}" if exc.line else ""
        raise SuiteError(f"{path.name}{at}: {exc.message}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SuiteError(f"{path.name}{at}: not valid YAML: {problem}") from None
    name = path.stem
    if isinstance(data, dict):
        unknown = sorted(set(map(str, data)) - {"name", "expectations", "description"})
        if unknown:
            raise SuiteError(
                f"{path.name}: unknown top-level field '{clip(unknown[0])}' (expected name, expectations, description)"
            )
        name = str(data.get("name") or name)
        items = data.get("expectations")
    else:
        items = data
    if not isinstance(items, list) or not items:
        raise SuiteError(f"{path.name}: expected a non-empty 'expectations:' list")
    lines: list[int] | None = None  # found only when a message needs them (composing costs)
    entries = []
    for i, raw in enumerate(items):
        try:
            entries.append(parse_entry(raw, f"{path.name}: expectation {i + 1}"))
        except SuiteError:
            lines = _lines_of_items(text) if lines is None else lines
            line = lines[i] if i < len(lines) else None
            where = f"{path.name}:{line}: expectation {i + 1}" if line else f"{path.name}: expectation {i + 1}"
            parse_entry(raw, where, line)  # raises again, now naming the line
            raise
    return Suite(name, entries)


# -- columns ----------------------------------------------------------------------------------


def check_columns(entries: list[Entry], columns: list[str], data: str) -> set[str]:
    """Columns named by ``entries`` that ``columns`` lacks but a schema expectation declares.

    Those are a data failure (reported, the batch rejected). A missing column no schema
    expectation declares is a mistake in the suite: a ``SuiteError`` naming the nearest columns.
    """
    have = set(columns)
    declared = {c for e in entries for c in e.declared_columns}
    for entry in entries:
        if entry.expect in SCHEMA_EXPECTATIONS:
            continue
        for col in entry.columns:
            if col not in have and col not in declared:
                near = difflib.get_close_matches(col, list(map(str, columns)), n=3)
                hint = f"; nearest: {', '.join(near)}" if near else ""
                raise SuiteError(f"{_at(entry.where, entry.expect)}: column '{col}' is not in {data}{hint}")
    return {c for e in entries for c in e.columns if c not in have}
