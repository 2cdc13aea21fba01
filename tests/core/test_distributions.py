"""Reading installed distributions from their metadata folders gives importlib.metadata's answers."""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path

import pytest

from crispml import _distributions


def test_every_installed_version_matches_importlib_metadata() -> None:
    checked = 0
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name and metadata.distribution(name).version == dist.version:  # the one imports see
            assert _distributions.version(name) == dist.version, name
            checked += 1
    assert checked > 20  # the environment really has distributions to compare
    assert _distributions.version("no-such-distribution-anywhere") is None


@pytest.mark.parametrize("group", ["crispml", "console_scripts"])
def test_entry_points_match_importlib_metadata(group: str) -> None:
    ours = sorted((ep.name, ep.value) for ep in _distributions.entry_points(group))
    theirs = sorted({(ep.name, ep.value) for ep in metadata.entry_points(group=group)})
    assert ours and sorted(set(ours)) == theirs


def test_a_distribution_installed_while_running_is_seen(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    assert _distributions.version("late-arrival") is None
    info = tmp_path / "late_arrival-2.0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: late-arrival\nVersion: 2.0.1\n\nbody: 9.9\n")
    (info / "entry_points.txt").write_text("# a comment\n[crispml]\nlate = late_mod:plugin [extra]\n")
    assert _distributions.version("Late_Arrival") == "2.0.1"
    (late,) = [ep for ep in _distributions.entry_points("crispml") if ep.name == "late"]
    assert (late.value, late.distribution, late.version) == ("late_mod:plugin [extra]", "late-arrival", "2.0.1")
    (tmp_path / "late_mod.py").write_text("plugin = object()\n")
    assert late.load() is sys.modules["late_mod"].plugin
