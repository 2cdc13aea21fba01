"""``--cron`` and ``--interval``, checked before anything reaches Prefect, with one-line reasons.

Prefect's own check of a cron expression says only that it is invalid; a user needs to know
which field is wrong (``not a cron expression: minute 61 out of range``).
"""

from __future__ import annotations

import re

from crispml import UsageError

MIN_INTERVAL = 60.0
"""Seconds. Prefect's scheduler plans runs a minute apart at best; shorter would pile up."""

_FIELDS = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    (
        "month",
        1,
        12,
        {
            m: i + 1
            for i, m in enumerate(["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"])
        },
    ),
    ("day of week", 0, 7, {d: i for i, d in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])}),
)
_MACROS = {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}


def _value(text: str, name: str, low: int, high: int, names: dict[str, int]) -> int:
    key = text.lower()
    if key in names:
        return names[key]
    if not text.isdigit():
        raise UsageError(f"not a cron expression: {name} {text!r} is not a number")
    value = int(text)
    if not low <= value <= high:
        raise UsageError(f"not a cron expression: {name} {value} out of range ({low}-{high})")
    return value


def check_cron(expression: str) -> str:
    """Return ``expression`` (whitespace normalised) or raise a ``UsageError`` naming the field."""
    text = " ".join(expression.split())
    if text.lower() in _MACROS:
        return text.lower()
    parts = text.split(" ")
    if len(parts) != 5:
        raise UsageError(
            f"not a cron expression: {expression!r} has {len(parts)} fields, expected 5 "
            "(minute hour day-of-month month day-of-week, e.g. '0 3 * * *')"
        )
    for part, (name, low, high, names) in zip(parts, _FIELDS, strict=True):
        for item in part.split(","):
            body, slash, step = item.partition("/")
            if slash and (not step.isdigit() or int(step) == 0):
                raise UsageError(f"not a cron expression: {name} step {step!r} must be a positive number")
            if body == "*":
                continue
            start, dash, end = body.partition("-")
            first = _value(start, name, low, high, names)
            if dash:
                last = _value(end, name, low, high, names)
                if last < first:
                    raise UsageError(f"not a cron expression: {name} range {body} runs backwards")
    return text


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_INTERVAL = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$", re.IGNORECASE)


def parse_interval(text: str) -> float:
    """``30m``, ``1h``, ``90s``, ``2d`` or a number of seconds → seconds (at least 60)."""
    match = _INTERVAL.match(text)
    if not match:
        raise UsageError(f"--interval {text!r}: expected a duration such as 90s, 30m, 1h or 2d")
    seconds = float(match.group(1)) * _UNITS[(match.group(2) or "s").lower()]
    if seconds < MIN_INTERVAL:
        raise UsageError(f"--interval {text!r} is under {MIN_INTERVAL:g} s: a schedule runs at most once a minute")
    return seconds


def describe_interval(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"every {int(seconds // size)}{unit}"
    return f"every {seconds:g}s"
