"""Keeping secrets out of trackers and logs.

Any option whose name contains password, secret, token, key or credential is shown as ``***``
wherever crispml hands options to something outside the run store (a tracker, the terminal).
"""

from __future__ import annotations

import re
from typing import Any

MASK = "***"
_SECRET = re.compile(r"password|passwd|secret|token|key|credential", re.IGNORECASE)


def is_secret(name: str) -> bool:
    return bool(_SECRET.search(name))


def redact(value: Any) -> Any:
    """A copy of ``value`` (dicts and lists, nested) with secret-named fields masked."""
    if isinstance(value, dict):
        return {k: (MASK if is_secret(str(k)) and v is not None else redact(v)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    return value


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """``{"train": {"params": {"C": 1}}}`` → ``{"train.params.C": 1}`` (lists kept whole)."""
    out: dict[str, Any] = {}
    if isinstance(value, dict):
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    out[prefix.rstrip(".")] = value
    return out
