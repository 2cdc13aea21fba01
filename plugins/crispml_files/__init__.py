"""The ``files`` plugin: load a CSV or Parquet file as the recipe's dataset.

    load: {use: files, path: data/churn.csv, target: churned}

pandas is imported when the stage runs, not when the plugin loads.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator

from crispml import Backend, Dataset, Declaration, ExistingPath, Options, RunContext, hash_file, hookimpl

__version__ = "0.1.0"


def file_format(path: Path, fmt: str = "auto") -> str:
    """``csv`` or ``parquet``: ``fmt`` when given, else by the file's suffix."""
    if fmt != "auto":
        return fmt
    return "parquet" if path.suffix.lower() in {".parquet", ".pq"} else "csv"


def read_columns(path: Path, fmt: str = "auto", sep: str = ",") -> list[str]:
    """The column names of a data file, read from its header alone (cheap: no pandas)."""
    if file_format(path, fmt) == "parquet":
        import pyarrow.parquet as pq

        return list(pq.read_schema(path).names)
    with path.open(newline="") as fh:
        return next(csv.reader(fh, delimiter=sep), [])


class LoadOptions(Options):
    path: ExistingPath
    """A CSV or Parquet file (relative to the recipe's folder)."""
    format: Literal["auto", "csv", "parquet"] = "auto"
    read_options: dict[str, Any] = Field(default_factory=dict)
    """Passed to ``pandas.read_csv`` / ``read_parquet``."""
    target: str | None = None
    """The column to predict; checked against the file's header (so declared after the fields
    needed to read it: pydantic validates in order)."""
    name: str | None = None
    """The dataset's name (default: the file's stem)."""

    @field_validator("target")
    @classmethod
    def _target_in_header(cls, target: str | None, info: ValidationInfo) -> str | None:
        path = info.data.get("path")
        if target is None or path is None:
            return target
        try:
            columns = read_columns(
                path, info.data.get("format", "auto"), info.data.get("read_options", {}).get("sep", ",")
            )
        except Exception as exc:
            raise ValueError(f"cannot read the header of {path}: {exc}") from exc
        if target not in columns:
            raise ValueError(f"column '{target}' is not in {path.name} (columns: {', '.join(columns)})")
        return target

    @field_validator("path")
    @classmethod
    def _a_file(cls, path: Path) -> Path:
        if path.is_dir():
            raise ValueError(f"expected a CSV or Parquet file, got a folder: {path}")
        return path

    def external_inputs(self) -> list[Path]:
        return [self.path]

    def provided_columns(self) -> tuple[list[str], str] | None:
        """The header's columns, unless read options may change them (then: known at run time)."""
        if not self.path.is_file() or set(self.read_options) - {"sep"}:
            return None
        try:
            return read_columns(self.path, self.format, self.read_options.get("sep", ",")), self.path.name
        except Exception:
            return None  # the load step reports an unreadable file itself


@hookimpl
def crispml_declare() -> Declaration:
    return Declaration(
        stages={"load": LoadOptions},
        backends=(Backend("pandas", "pandas", extra="files"), Backend("pyarrow", "pyarrow", extra="files")),
        description="Load a CSV or Parquet file.",
    )


@hookimpl
def crispml_load(options: LoadOptions, context: RunContext) -> Dataset:
    import pandas as pd

    path = options.path
    if file_format(path, options.format) == "parquet":
        frame = pd.read_parquet(path, **options.read_options)
    else:
        frame = pd.read_csv(path, **options.read_options)
    return Dataset(
        frame=frame,
        target=options.target,
        name=options.name or path.stem,
        source=str(path),
        fingerprint=hash_file(path),
    )
