"""Rows on the terminal: a rich table for people, ``--json`` for scripts, the same for every command.

Core and plugin commands that list things (``crispml runs``, ``plugins``, ``models``,
``deployments``) print through :func:`print_rows`, so that they look alike, keep their width
when piped into a log, and print JSON the same way. Rich is imported when a table is printed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import click

Column = str | Callable[[Any], Any]
"""A column: the row's key to show, or a function of the row giving the cell (rich markup allowed)."""


def console() -> Any:
    """A rich console for tables: the terminal's width, or a wide one when output is piped."""
    from rich.console import Console

    out = Console(highlight=False)
    if not out.is_terminal and "COLUMNS" not in os.environ:
        out = Console(highlight=False, width=160)
    return out


def print_json(value: Any) -> None:
    """``value`` as indented JSON on stdout (what every ``--json`` prints)."""
    click.echo(json.dumps(value, indent=2, default=str))


def print_rows(
    rows: Sequence[Any],
    columns: Mapping[str, Column],
    *,
    as_json: bool = False,
    json_value: Any = None,
    empty: str | None = None,
    caption: str | None = None,
    no_wrap: Collection[str] = (),
) -> None:
    """Print ``rows`` as a table with ``columns`` (header → key or function), or as JSON.

    ``json_value``: what ``--json`` prints when it is not the rows themselves (e.g. nested
    records the table flattens). ``empty``: the line printed instead of an empty table (an
    empty list is still printed as ``[]`` with ``--json``)."""
    if as_json:
        print_json(rows if json_value is None else json_value)
        return
    if not rows:
        if empty:
            click.echo(empty)
        return
    from rich.table import Table

    table = Table(box=None, pad_edge=False, caption=caption)
    for header in columns:
        table.add_column(header, no_wrap=header in no_wrap)
    for row in rows:
        table.add_row(*(_cell(row, column) for column in columns.values()))
    console().print(table)


def _cell(row: Any, column: Column) -> str:
    value = column(row) if callable(column) else row.get(column)
    return "" if value is None else str(value)
