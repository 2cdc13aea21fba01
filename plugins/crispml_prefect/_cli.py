"""``crispml server`` and ``crispml schedule(s)``: added in the next step."""

from __future__ import annotations

import click


def add_commands(cli: click.Group) -> None:
    """Nothing yet."""
