"""Durations as people write them in recipes and on the command line: ``30m``, ``6h``, ``2d``.

One parser for every place that takes one (``crispml monitor --since``, a monitor's ``window``
and ``retrain.cooldown``), so that each says the same thing about a wrong one.
"""

from __future__ import annotations

import re

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
EXPECTED = "expected a duration like 30m, 6h, 2d"


def parse_duration(text: str | int | float) -> float:
    """Seconds in ``text`` (``90s``, ``30m``, ``6h``, ``2d``, ``1w``); a bare number is seconds.

    :raises ValueError: with :data:`EXPECTED` when ``text`` is not one, or is not positive.
    """
    if isinstance(text, bool):
        raise ValueError(EXPECTED)
    if isinstance(text, int | float):
        seconds = float(text)
    else:
        match = _DURATION.match(str(text))
        if match is None:
            raise ValueError(EXPECTED)
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if not 0 < seconds < 100 * 365 * 86400:
        raise ValueError(EXPECTED)
    return seconds
