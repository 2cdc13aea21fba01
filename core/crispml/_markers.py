"""The pluggy markers. ``hookimpl`` is public (re-exported by ``crispml``); the spec marker is not.

Kept in a module of its own so that plugins, the hookspecs and the core can all import the
markers without importing each other.
"""

from __future__ import annotations

import pluggy

PROJECT = "crispml"

hookimpl = pluggy.HookimplMarker(PROJECT)
"""Decorator that marks a function or method as a crispml hook implementation."""

_hookspec = pluggy.HookspecMarker(PROJECT)
