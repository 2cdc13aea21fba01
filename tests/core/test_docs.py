"""The hook reference is generated from the hookspecs, and every hook is documented."""

from __future__ import annotations

import inspect
from pathlib import Path

from crispml import _docgen, hookspecs
from crispml.stages import STAGES

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_hooks_md_is_current() -> None:
    assert (DOCS / "hooks.md").read_text() == _docgen.render(), "docs/hooks.md is stale: run `make docs`"


def test_every_hook_is_prefixed_documented_and_stage_hooks_are_firstresult() -> None:
    names = hookspecs._all_hook_names()
    assert len(names) >= 15
    for name in names:
        func = getattr(hookspecs, name)
        doc = inspect.getdoc(func) or ""
        assert name.startswith("crispml_")
        assert len(doc.splitlines()[0]) > 10, name
        params = [p for p in inspect.signature(func).parameters]
        for param in params:
            assert f":param {param}:" in doc, f"{name} does not document {param}"
    for stage in STAGES:
        spec = getattr(hookspecs, stage.hook)
        assert spec.crispml_spec["firstresult"] is True
        assert "Stops at first non-None result." in (spec.__doc__ or "")


def test_user_docs_exist_and_link_the_reference() -> None:
    for page in ("index.md", "recipes.md", "writing-plugins.md", "performance.md"):
        assert (DOCS / page).is_file(), page
    assert "hooks.md" in (DOCS / "writing-plugins.md").read_text()
