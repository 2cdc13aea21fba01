"""``crispml suggest-suite``: a first suite written from a trusted dataset (pandas only, no GX).

What it writes, for the user to edit:

* the table's column set, and at least one row;
* per column: its type (numbers of any width count as one type: a null turns pandas' ``int64``
  into ``float64``, which is not a type change), and how many nulls it may have (none when it
  had none; otherwise what it had, with a margin);
* numeric columns: their range widened by ``margin`` times its span on each side (never below 0
  for a column that had no negatives; whole numbers for integer columns);
* low-cardinality text or boolean columns, and a low-cardinality target: their value set.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

NUMERIC_TYPES = [
    "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "Int8", "Int16", "Int32", "Int64", "float16", "float32", "float64", "Float32", "Float64",
]  # fmt: skip
BOOL_TYPES = ["bool", "boolean"]
DATETIME_TYPES = ["datetime64[ns]", "datetime64[us]", "datetime64[ms]", "datetime64[s]"]
TEXT_TYPES = ["str"]


def _py(value: Any) -> Any:
    item = getattr(value, "item", None)
    return item() if callable(item) else value


def _down(x: float, digits: int = 4) -> float:
    return math.floor(x * 10**digits) / 10**digits


def _up(x: float, digits: int = 4) -> float:
    return math.ceil(x * 10**digits) / 10**digits


def suggest(
    frame: Any, *, target: str | None = None, margin: float = 0.1, max_categories: int = 20
) -> list[dict[str, Any]]:
    """The suggested expectations for ``frame``, in the suite file's compact form."""
    import pandas as pd
    from pandas.api import types as pdt

    out: list[dict[str, Any]] = [
        {"expect": "table_columns_to_match_set", "column_set": [str(c) for c in frame.columns]},
        {"expect": "table_row_count_to_be_between", "min_value": 1},
    ]
    for name in frame.columns:
        col = frame[name]
        column = str(name)
        is_target = column == target
        values = col.dropna()
        if pdt.is_bool_dtype(col):
            kind, types = "bool", BOOL_TYPES
        elif pdt.is_numeric_dtype(col):
            kind, types = "number", NUMERIC_TYPES
        elif pdt.is_datetime64_any_dtype(col):
            kind, types = "datetime", DATETIME_TYPES
        elif len(values) and all(isinstance(v, str) for v in values.head(1000)):
            kind, types = "text", TEXT_TYPES
        else:
            kind, types = "other", []
        if (kind == "datetime" and str(col.dtype) not in types) or (kind == "text" and str(col.dtype) != "object"):
            # GX 1.24's type check does not recognise a tz-aware datetime (datetime64[ns, UTC]) or
            # pandas' own string dtype by any name (measured): suggest no type check for those
            # columns rather than one that fails on the very data it was made from.
            types = []
        if types:
            out.append({"expect": "column_values_to_be_in_type_list", "column": column, "type_list": types})

        null_fraction = float(col.isna().mean()) if len(col) else 0.0
        if null_fraction == 0.0:
            out.append({"expect": "column_values_to_not_be_null", "column": column})
        else:
            allowed = min(1.0, null_fraction * (1 + margin) + 0.01)
            mostly = _down(1.0 - allowed)
            if mostly > 0:
                out.append({"expect": "column_values_to_not_be_null", "column": column, "mostly": mostly})

        distinct = values.unique() if len(values) else []
        categorical = len(distinct) <= max_categories and (kind in ("text", "bool") or is_target)
        if categorical and len(distinct):
            value_set = sorted((_py(v) for v in distinct), key=lambda v: (str(type(v)), v))
            out.append({"expect": "column_values_to_be_in_set", "column": column, "value_set": value_set})
        elif kind == "number" and len(values):
            lo, hi = float(values.min()), float(values.max())
            span = (hi - lo) or abs(hi) or 1.0
            low, high = lo - margin * span, hi + margin * span
            if lo >= 0:
                low = max(low, 0.0)
            if pdt.is_integer_dtype(col) or bool((values == values.round()).all()):
                low_v: float | int = math.floor(low)
                high_v: float | int = math.ceil(high)
            else:
                low_v, high_v = _down(low), _up(high)
            out.append(
                {"expect": "column_values_to_be_between", "column": column,
                 "min_value": low_v, "max_value": high_v}
            )  # fmt: skip
        elif kind == "datetime" and len(values):
            lo_t, hi_t = pd.Timestamp(values.min()), pd.Timestamp(values.max())
            pad = (hi_t - lo_t) * margin
            out.append(
                {"expect": "column_values_to_be_between", "column": column,
                 "min_value": (lo_t - pad).isoformat(), "max_value": (hi_t + pad).isoformat()}
            )  # fmt: skip
    return out


def suite_yaml(frame: Any, source: str, *, target: str | None, margin: float, max_categories: int, name: str) -> str:
    import yaml

    expectations = suggest(frame, target=target, margin=margin, max_categories=max_categories)
    header = (
        f"# Suggested by `crispml suggest-suite` from {source} "
        f"({len(frame)} rows, {len(frame.columns)} columns) on "
        f"{datetime.now(UTC).strftime('%Y-%m-%d')}.\n"
        f"# A starting point: review it, tighten or loosen it, delete what does not matter.\n"
        f"# Format: docs/plugins/great_expectations.md\n"
    )

    class _NoAliases(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:
            return True

    body = yaml.dump(
        {"name": name, "expectations": expectations},
        Dumper=_NoAliases,
        sort_keys=False,
        default_flow_style=None,
        allow_unicode=True,
        width=100,
    )
    return header + body
