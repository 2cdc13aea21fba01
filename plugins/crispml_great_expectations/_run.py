"""Running a suite on a DataFrame with Great Expectations 1.x, and turning the outcome into a
:class:`crispml.ValidationReport` with its JSON and HTML pages.

The frame is handed to GX as it is (no copy, no conversion): crispml's cost on top of GX is
building the suite and writing the report.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from crispml import Dataset, ExpectationResult, RunContext, UsageError, ValidationReport
from crispml_great_expectations._suite import SCHEMA_EXPECTATIONS, Entry, SuiteError, build, check_columns

# How many unexpected values GX collects per expectation; the report keeps the first distinct ones.
_COLLECT = 20


def gx_context() -> Any:
    """An ephemeral GX context: nothing on disk, analytics off, no progress bars."""
    os.environ["GX_ANALYTICS_ENABLED"] = "false"
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    return context


def plain(value: Any) -> Any:
    """A JSON-safe copy: numpy scalars to Python, NaN to None, the rest to str."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [plain(v) for v in value]
    item = getattr(value, "item", None)
    if callable(item):
        try:
            return plain(item())
        except (TypeError, ValueError):
            pass
    return str(value)


def _distinct(values: Iterable[Any], n: int) -> list[Any]:
    out: list[Any] = []
    for v in values:
        v = plain(v)
        if v not in out:
            out.append(v)
        if len(out) >= n:
            break
    return out


def run_suite(
    frame: Any, entries: list[Entry], *, suite_name: str, unexpected_values: int = 5
) -> tuple[list[ExpectationResult], list[dict[str, Any]]]:
    """Validate ``frame``; return one result per entry (in order) and the report's records."""
    columns = [str(c) for c in frame.columns]
    try:
        missing = check_columns(entries, columns, "the data")
    except SuiteError as exc:
        raise UsageError(str(exc)) from None
    import great_expectations as gx

    context = gx_context()
    records: list[dict[str, Any] | None] = [None] * len(entries)
    chosen: list[tuple[int, Any]] = []
    for i, entry in enumerate(entries):
        absent = [c for c in entry.columns if c in missing]
        if absent and not entry.declared_columns:
            records[i] = _record(entry, False, error=f"column {', '.join(map(repr, absent))} is missing")
            continue
        try:
            expectation = entry.built if entry.built is not None else build(entry)
        except SuiteError as exc:  # checked when the recipe was, so only on a changed GX
            raise UsageError(f"{entry.where} ({entry.label()}): {exc}") from None
        chosen.append((i, expectation))
    # The suite is built whole and added once: ``suite.add_expectation`` on a suite already in
    # the context re-serialises it into the store each time (~25 ms per expectation here).
    suite = context.suites.add(gx.ExpectationSuite(name=suite_name or "suite", expectations=[e for _, e in chosen]))
    index = {str(e.id): i for (i, _), e in zip(chosen, suite.expectations, strict=True)}
    if index:
        batch = (
            context.data_sources.add_pandas("crispml")
            .add_dataframe_asset("data")
            .add_batch_definition_whole_dataframe("all")
        )
        definition = gx.ValidationDefinition(data=batch, suite=suite, name="crispml")
        outcome = definition.run(
            batch_parameters={"dataframe": frame},
            result_format={"result_format": "BASIC", "partial_unexpected_count": _COLLECT},
        )
        for r in outcome.results:
            i = index[str(r.expectation_config.id)]
            records[i] = _from_gx(entries[i], r, unexpected_values)
    done = [r for r in records if r is not None]
    results = [
        ExpectationResult(
            expectation=r["expectation"],
            column=r["column"],
            success=r["success"],
            unexpected_count=r["unexpected_count"],
            unexpected_percent=r["unexpected_percent"],
            unexpected_values=r["unexpected_values"],
            kwargs=r["kwargs"],
        )
        for r in done
    ]
    return results, done


def _record(entry: Entry, success: bool, **extra: Any) -> dict[str, Any]:
    cols = entry.columns
    return {
        "expectation": entry.expect,
        "column": cols[0] if len(cols) == 1 else (", ".join(cols) or None),
        "success": success,
        "unexpected_count": None,
        "unexpected_percent": None,
        "unexpected_values": [],
        "observed_value": None,
        "error": None,
        "kwargs": plain(entry.kwargs),
        "where": entry.where,
    } | extra


def _from_gx(entry: Entry, r: Any, n: int) -> dict[str, Any]:
    result = dict(r.result or {})
    info = r.exception_info or {}
    error = None
    if isinstance(info, dict):
        if info.get("raised_exception"):
            error = info.get("exception_message")
        else:
            nested = [v for v in info.values() if isinstance(v, dict) and v.get("raised_exception")]
            error = nested[0].get("exception_message") if nested else None
    values = _distinct(result.get("partial_unexpected_list") or [], n)
    mismatched = (result.get("details") or {}).get("mismatched")
    if not values and isinstance(mismatched, dict):  # table column expectations
        values = [f"unexpected column {c!r}" for c in mismatched.get("unexpected") or []]
        values += [f"missing column {c!r}" for c in mismatched.get("missing") or []]
        values = values[: max(n, 1)]
    count = result.get("unexpected_count")
    percent = result.get("unexpected_percent")
    return _record(
        entry,
        bool(r.success),
        unexpected_count=None if count is None else int(count),
        unexpected_percent=None if percent is None else round(float(percent), 4),
        unexpected_values=values,
        observed_value=plain(result.get("observed_value")),
        error=error,
    )


def validate_frame(
    frame: Any,
    entries: list[Entry],
    *,
    suite_name: str,
    data_name: str,
    out_dir: Path,
    on_failure: str = "reject",
    unexpected_values: int = 5,
    logger: logging.Logger | None = None,
    skipped: list[dict[str, Any]] | None = None,
) -> ValidationReport:
    """Validate ``frame`` against ``entries``; write the report to ``out_dir``; print failures.

    ``skipped``: records of expectations not run (reported under ``skipped``, neither passed
    nor failed)."""
    from crispml_great_expectations import _report

    results, records = run_suite(frame, entries, suite_name=suite_name, unexpected_values=unexpected_values)
    failed = [r for r in results if not r.success]
    success = not failed
    n = len(results)
    metrics = {
        "expectations": float(n),
        "failed": float(len(failed)),
        "success_percent": round(100.0 * (n - len(failed)) / n, 4) if n else 100.0,
    }
    if skipped:
        metrics["skipped"] = float(len(skipped))
    summary = {
        "suite": suite_name,
        "data": data_name,
        "rows": int(len(frame)),
        "columns": int(len(frame.columns)),
        "success": success,
        "on_failure": on_failure,
        "statistics": {k: (int(v) if k != "success_percent" else v) for k, v in metrics.items()},
        "results": records,
        "skipped": list(skipped or []),
    }
    artifacts = _report.write(summary, out_dir)
    rejection = None
    if failed:
        labels = [
            f"{r.expectation.removeprefix('expect_')}({r.column})"
            if r.column
            else r.expectation.removeprefix("expect_")
            for r in failed
        ]
        more = f" and {len(labels) - 3} more" if len(labels) > 3 else ""
        why = f"{len(failed)} of {n} expectations failed: {', '.join(labels[:3])}{more}"
        _report.print_failures(summary)
        if on_failure == "reject":
            rejection = why
        elif logger is not None:
            logger.warning("validation failed (on_failure: warn, carrying on): %s", why)
    return ValidationReport(success=success, results=results, metrics=metrics, artifacts=artifacts, rejection=rejection)


_COLUMN_COUNT = frozenset({"expect_table_column_count_to_equal", "expect_table_column_count_to_be_between"})


def without_target(entries: list[Entry], target: str) -> tuple[list[Entry], list[Entry]]:
    """``(to run, skipped)`` for data that names its target but lacks the column — production
    data, which has no labels yet. Expectations on the target are skipped; schema expectations
    are checked without it; column counts (which counted it) are skipped."""
    keep: list[Entry] = []
    skipped: list[Entry] = []
    for entry in entries:
        key = next((k for k in ("column_set", "column_list") if k in entry.kwargs), None)
        if entry.expect in SCHEMA_EXPECTATIONS and entry.expect != "expect_column_to_exist" and key:
            listed = [c for c in entry.kwargs[key] if c != target]
            keep.append(dataclasses.replace(entry, kwargs={**entry.kwargs, key: listed}, built=None))
        elif target in entry.columns or entry.expect in _COLUMN_COUNT:
            skipped.append(entry)
        else:
            keep.append(entry)
    return keep, skipped


def validate_dataset(options: Any, dataset: Dataset, context: RunContext) -> ValidationReport:
    """The ``crispml_validate`` hook's body."""
    entries, name = options.load()
    skipped: list[Entry] = []
    if dataset.target is not None and dataset.target not in dataset.frame.columns:
        entries, skipped = without_target(entries, dataset.target)
    return validate_frame(
        dataset.frame,
        entries,
        suite_name=name,
        data_name=dataset.source or dataset.name,
        out_dir=context.artifact_dir("validate"),
        on_failure=options.on_failure,
        unexpected_values=options.unexpected_values,
        logger=context.logger("validate"),
        skipped=[
            _record(e, True, skipped=f"the data has no '{dataset.target}' column (no labels yet)") for e in skipped
        ],
    )
