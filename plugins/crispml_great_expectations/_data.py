"""Reading data files for the plugin's commands (pandas is imported only by ``read_data``)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from crispml import UsageError


def file_format(path: Path, fmt: str = "auto") -> str:
    if fmt != "auto":
        return fmt
    return "parquet" if path.suffix.lower() in {".parquet", ".pq"} else "csv"


def read_header(path: Path, fmt: str = "auto", sep: str = ",") -> list[str]:
    """A data file's column names, from its header alone."""
    if file_format(path, fmt) == "parquet":
        import pyarrow.parquet as pq

        return list(pq.read_schema(path).names)
    with path.open(newline="") as fh:
        return next(csv.reader(fh, delimiter=sep), [])


def read_data(path: Path, read_options: dict[str, Any] | None = None) -> Any:
    """A CSV or Parquet file as a DataFrame; anything unreadable is a one-line ``UsageError``."""
    import pandas as pd

    if not path.exists():
        raise UsageError(f"data file not found: {path}")
    if not path.is_file():
        raise UsageError(f"not a data file: {path}")
    try:
        if file_format(path) == "parquet":
            frame = pd.read_parquet(path, **(read_options or {}))
        else:
            frame = pd.read_csv(path, **(read_options or {}))
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0]
        raise UsageError(f"cannot read {path} as {file_format(path)}: {type(exc).__name__}: {first}") from None
    if len(frame.columns) == 0:
        raise UsageError(f"cannot read {path}: no columns")
    return frame
