"""Reading data files for the plugin's commands (pandas is imported only by ``read_data``).

A batch given on the command line is a CSV or Parquet file (by its suffix). The validate stage
itself never reads files: it checks the ``Dataset`` it is given, whichever plugin loaded it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from crispml import UsageError


def file_format(path: Path) -> str:
    """``parquet`` for ``.parquet``/``.pq`` files, else ``csv``."""
    return "parquet" if path.suffix.lower() in {".parquet", ".pq"} else "csv"


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
