"""The test suite's own layout: what pytest's default import mode needs from it."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_every_test_file_has_its_own_basename() -> None:
    """Test folders have no ``__init__.py`` (they import shared helpers as top-level modules), so
    pytest imports each test file by its basename: two ``test_candidates.py`` in two folders make
    the second an "import file mismatch" error — seen only when both are collected in one run."""
    names = Counter(p.name for p in TESTS.rglob("test_*.py"))
    assert [name for name, count in names.items() if count > 1] == []
