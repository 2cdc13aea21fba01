"""The ``files`` plugin: load a CSV or Parquet file as the recipe's dataset.

    load: {use: files, path: data/churn.csv, target: churned}

pandas is imported when the stage runs, not when the plugin loads.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator

from crispml import Backend, Dataset, Declaration, ExistingPath, Options, RunContext, clip, hash_file, hookimpl

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


CSV_SUFFIXES = (".csv", ".tsv", ".txt", ".dat")
PARQUET_SUFFIXES = (".parquet", ".pq")
COMPRESSED = (".gz", ".bz2", ".zip", ".xz", ".zst")
_SNIFF_BYTES = 64 * 1024


def check_data_file(path: Path, fmt: str = "auto") -> None:
    """Refuse, before anything reads it, a file that is not a CSV or Parquet file: by its suffix
    (unless ``fmt`` names the format) and by its first bytes. Messages name the file, never its
    content: a recipe may point at any file on the machine (``/etc/passwd``, a key)."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in COMPRESSED:
        suffixes = suffixes[:-1]
    suffix = suffixes[-1] if suffixes else ""
    known = ", ".join(CSV_SUFFIXES + PARQUET_SUFFIXES)
    if fmt == "auto" and suffix not in CSV_SUFFIXES + PARQUET_SUFFIXES:
        raise ValueError(
            f"expected a CSV or Parquet file ({known}), got {path.name!r}; "
            "if it is one, say which with 'format: csv' or 'format: parquet'"
        )
    if path.suffix.lower() in COMPRESSED:
        return  # pandas decompresses it; its first bytes say nothing here
    try:
        with path.open("rb") as fh:
            head = fh.read(_SNIFF_BYTES)
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    if file_format(path, fmt) == "parquet":
        if not head.startswith(b"PAR1"):
            raise ValueError(f"expected a Parquet file, got something else: {path}")
        return
    if b"\0" in head:
        raise ValueError(f"expected a CSV file, got a binary file: {path}")
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # not merely a character cut at the end of the sample
            raise ValueError(f"expected a CSV file of UTF-8 text, got bytes that are not: {path}") from None


class LoadOptions(Options):
    # Declared first: pydantic validates fields in order, and checking ``path`` needs them.
    format: Literal["auto", "csv", "parquet"] = "auto"
    read_options: dict[str, Any] = Field(default_factory=dict)
    """Passed to ``pandas.read_csv`` / ``read_parquet``."""
    path: ExistingPath
    """A CSV or Parquet file (relative to the recipe's folder)."""
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
            raise ValueError(f"cannot read the header of {path}: {type(exc).__name__}") from None
        if target not in columns:
            raise ValueError(f"column '{clip(target)}' is not in {path.name} ({_describe(columns, path, info)})")
        return target

    @field_validator("path")
    @classmethod
    def _a_file(cls, path: Path, info: ValidationInfo) -> Path:
        if path.is_dir():
            raise ValueError(f"expected a CSV or Parquet file, got a folder: {path}")
        if not path.is_file():  # a FIFO or a device: reading it could block or never end
            raise ValueError(f"expected a CSV or Parquet file, got a special file: {path}")
        check_data_file(path, info.data.get("format", "auto"))
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


def _describe(columns: list[str], path: Path, info: ValidationInfo) -> str:
    """The header's columns for a file in the recipe's folder; only their number for one outside
    it, whose first line may be anything (``/etc/passwd`` read as a CSV file)."""
    base = (info.context or {}).get("base_dir")
    inside = base is not None and path.resolve().is_relative_to(Path(base).resolve())
    if inside:
        return "columns: " + clip(", ".join(columns), 200)
    return f"its header has {len(columns)} column{'s' if len(columns) != 1 else ''}"


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
