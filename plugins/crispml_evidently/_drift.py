"""The drift engine: one Evidently ``DataDriftPreset`` report, read back into crispml's own schema.

Evidently 0.7 has no dataset-drift boolean and its JSON changed between releases, so this
module keeps what crispml promises in ``drift.json`` (schema ``crispml.drift/1``) independent of
Evidently's layout: each column's method, threshold, score and verdict, the share of drifted
feature columns and whether that share reaches ``drift_share``.

Two things Evidently does not see are added here:

* Nulls. Evidently drops missing values before it compares distributions, so a column that
  turned 40 % empty looks unchanged. A column whose share of nulls rises by more than
  ``max_null_increase`` is drifted too (``nulls`` records both shares).
* A column with no value at all in the window cannot be compared: it is drifted (by its nulls)
  and Evidently is not asked about it (it would fail on an empty column).

Evidently (and pandas) are imported inside the functions: this module is loaded only when the
monitor stage runs.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEMA = "crispml.drift/1"
PREDICTION = "prediction"
"""The name the model's output column has in the reports."""

# What Evidently's stat tests accept (evidently/legacy/calculations/stattests, 0.7.23).
NUMERICAL_ONLY = frozenset(
    {"anderson", "cramer_von_mises", "ed", "es", "empirical_mmd", "ks", "mannw", "t_test", "wasserstein"}
)
CATEGORICAL_ONLY = frozenset({"chisquare", "fisher_exact", "g_test", "TVD", "z"})
BOTH = frozenset({"hellinger", "jensenshannon", "kl_div", "psi"})
METHODS = NUMERICAL_ONLY | CATEGORICAL_ONLY | BOTH
AUTO = "auto"
"""Evidently's own choice, which depends on the reference's size (see docs/plugins/evidently.md)."""


@dataclass(frozen=True)
class Rule:
    """How one column is compared: a method (``None``: Evidently's choice) and its threshold."""

    method: str | None = None
    threshold: float | None = None


@dataclass(frozen=True)
class DriftSettings:
    """Everything that decides whether a column, and the data set, drifted."""

    drift_share: float = 0.5
    method: str | None = "psi"
    threshold: float | None = 0.2
    num_method: str | None = None
    cat_method: str | None = None
    per_column: dict[str, Rule] = field(default_factory=dict)
    max_null_increase: float = 0.1

    def rule(self, column: str, kind: str) -> Rule:
        """The method and threshold ``column`` (``numerical`` or ``categorical``) is tested with."""
        own = self.per_column.get(column, Rule())
        by_kind = self.num_method if kind == "numerical" else self.cat_method
        method = own.method or by_kind or self.method
        if own.threshold is not None:
            threshold: float | None = own.threshold
        elif method == self.method:
            threshold = self.threshold
        else:
            threshold = None  # another method than the global one: that method's own default
        return Rule(None if method in (None, AUTO) else method, threshold)


def column_types(frame: Any, columns: list[str]) -> tuple[list[str], list[str]]:
    """``(numerical, categorical)`` for ``columns``, from the frame the model was trained on.

    Taken from training data, not from the window: a small window of integers that happen to
    look like categories must be compared as the model saw them.
    """
    import pandas as pd

    numerical, categorical = [], []
    for column in columns:
        dtype = frame[column].dtype
        if pd.api.types.is_bool_dtype(dtype) or not pd.api.types.is_numeric_dtype(dtype):
            categorical.append(column)
        else:
            numerical.append(column)
    return numerical, categorical


def _conform(frame: Any, numerical: list[str], categorical: list[str]) -> Any:
    """The frame's columns as the reference has them: numbers as floats (what is not a number
    becomes a null, and so counts against the column), categories as strings. Columns already
    in that form are passed through without a copy (the 100k-row case is most of them)."""
    import pandas as pd
    from pandas.api.types import infer_dtype, is_float_dtype

    out: dict[str, Any] = {}
    for column in numerical:
        values = frame[column].reset_index(drop=True)
        if not is_float_dtype(values.dtype):
            values = pd.to_numeric(values, errors="coerce").astype("float64")
        out[column] = values
    for column in categorical:
        values = frame[column].reset_index(drop=True)
        if not (values.dtype == object and infer_dtype(values, skipna=True) in ("string", "empty")):
            values = values.where(values.isna(), values.astype(str)).astype(object)
        out[column] = values
    return pd.DataFrame(out, index=pd.RangeIndex(len(frame)))


def _null_share(series: Any) -> float:
    return float(series.isna().mean()) if len(series) else 0.0


def _score(value: Any) -> float | None:
    try:
        score = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(score) else score


def _evidently() -> tuple[Any, Any, Any, Any]:
    """Evidently's four names this engine uses, imported (~9 s, once). Its telemetry is off
    through ``DO_NOT_TRACK``, which the core sets for every run (``crispml._isolation``).

    Its import trips DeprecationWarnings of its own and of its dependencies (numpy's
    ``numpy.core`` from evidently/legacy/tests/utils.py, litestar's ``Dependency``): those are
    Evidently's to fix, and under ``-W error`` they would fail every monitor run.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from evidently import DataDefinition, Report
        from evidently import Dataset as EvDataset
        from evidently.presets import DataDriftPreset
    return DataDefinition, Report, EvDataset, DataDriftPreset


def detect(
    reference: Any,
    current: Any,
    *,
    numerical: list[str],
    categorical: list[str],
    settings: DriftSettings,
    prediction: str | None = None,
    out_dir: Path | None = None,
    sources: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Compare ``current`` with ``reference`` and return the ``drift.json`` document.

    :param numerical: feature columns compared as numbers (from :func:`column_types`).
    :param categorical: feature columns compared as categories.
    :param prediction: the model-output column, when both frames have one (``numerical`` for a
        probability or a regression, else categorical); it is compared but not counted in
        ``drift_share``, which is about the model's inputs.
    :param out_dir: where to write ``drift.html``, ``evidently.json`` and ``drift.json``.
    :param sources: what each side is (``{"reference": {...}, "current": {...}}``), recorded.
    """
    DataDefinition, Report, EvDataset, DataDriftPreset = _evidently()

    features = [*numerical, *categorical]
    num_all, cat_all = list(numerical), list(categorical)
    if prediction is not None:
        from pandas.api.types import is_bool_dtype, is_numeric_dtype

        dtype = reference[prediction].dtype
        if is_numeric_dtype(dtype) and not is_bool_dtype(dtype) and reference[prediction].nunique() > 10:
            num_all.append(prediction)
        else:
            cat_all.append(prediction)
    ref = _conform(reference, num_all, cat_all)
    cur = _conform(current, num_all, cat_all)

    kinds = {c: "numerical" for c in num_all} | {c: "categorical" for c in cat_all}
    columns: dict[str, dict[str, Any]] = {}
    compared: list[str] = []
    for column, kind in kinds.items():
        nulls = {"reference": round(_null_share(ref[column]), 6), "current": round(_null_share(cur[column]), 6)}
        entry: dict[str, Any] = {"type": kind, "nulls": nulls}
        entry["null_drift"] = nulls["current"] - nulls["reference"] > settings.max_null_increase
        if ref[column].notna().any() and cur[column].notna().any():
            compared.append(column)
        else:
            rule = settings.rule(column, kind)
            entry.update(method=rule.method, threshold=rule.threshold, score=None, drifted=entry["null_drift"])
        columns[column] = entry

    snapshot = None
    if compared:
        # When every column follows one rule it is given once (DataDriftPreset's method and
        # threshold); otherwise per column — not mixed, because a global threshold would then
        # also apply to a column whose own method should keep that method's default threshold.
        rules = {c: settings.rule(c, kinds[c]) for c in compared}
        one = next(iter(rules.values())) if len(set(rules.values())) == 1 else None
        default = one or Rule()
        methods = {} if one else {c: r.method for c, r in rules.items() if r.method is not None}
        thresholds = {} if one else {c: r.threshold for c, r in rules.items() if r.threshold is not None}
        definition = DataDefinition(
            numerical_columns=[c for c in num_all if c in compared],
            categorical_columns=[c for c in cat_all if c in compared],
        )
        report = Report(
            [
                DataDriftPreset(
                    columns=compared,
                    drift_share=settings.drift_share,
                    method=default.method,
                    threshold=default.threshold,
                    per_column_method=methods or None,
                    per_column_threshold=thresholds or None,
                )
            ],
            include_tests=True,
        )
        with warnings.catch_warnings():
            # scipy warns (divide by zero) when a category is new to the window: that is the
            # drift being measured, not a fault; under warnings-as-errors it would end the run.
            warnings.simplefilter("ignore", RuntimeWarning)
            snapshot = report.run(
                current_data=EvDataset.from_pandas(cur[compared], data_definition=definition),
                reference_data=EvDataset.from_pandas(ref[compared], data_definition=definition),
            )
        _read_snapshot(snapshot.dict(), columns)

    feature_drifted = [c for c in features if columns[c]["drifted"]]
    share = len(feature_drifted) / len(features) if features else 0.0
    document: dict[str, Any] = {
        "schema": SCHEMA,
        "reference": {"rows": len(reference), **((sources or {}).get("reference") or {})},
        "current": {"rows": len(current), **((sources or {}).get("current") or {})},
        "columns": {c: columns[c] for c in features},
        "prediction": columns.get(prediction) if prediction is not None else None,
        "drifted_columns": len(feature_drifted),
        "column_count": len(features),
        "drift_share": share,
        "drift_share_threshold": settings.drift_share,
        "dataset_drift": bool(features) and share >= settings.drift_share,
        "max_null_increase": settings.max_null_increase,
    }
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        if snapshot is not None:
            snapshot.save_html(str(out_dir / "drift.html"))
            (out_dir / "evidently.json").write_text(snapshot.json())
        (out_dir / "drift.json").write_text(json.dumps(document, indent=2))
    return document


def _read_snapshot(data: dict[str, Any], columns: dict[str, dict[str, Any]]) -> None:
    """Fill each compared column's method, threshold, score and Evidently's verdict."""
    for metric in data.get("metrics", []):
        config = metric.get("config") or {}
        column = config.get("column")
        if not str(config.get("type", "")).endswith(":ValueDrift") or column not in columns:
            continue
        columns[column].update(
            method=config.get("method"), threshold=_score(config.get("threshold")), score=_score(metric.get("value"))
        )
    verdicts: dict[str, bool] = {}
    for test in data.get("tests", []):
        params = (test.get("metric_config") or {}).get("params") or {}
        if str(params.get("type", "")).endswith(":ValueDrift") and params.get("column") in columns:
            verdicts[params["column"]] = str(test.get("status", "")).upper().endswith("FAIL")
    for column, entry in columns.items():
        if "score" in entry and column in verdicts:
            entry["evidently_drift"] = verdicts[column]
            entry["drifted"] = verdicts[column] or entry["null_drift"]
        elif "drifted" not in entry:
            raise RuntimeError(f"Evidently's report has no drift verdict for column '{column}'")
