"""``crispml.serving_features``: a serving spec is answered by the plugin it names, only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from crispml import PluginError, ServingFeatures, UsageError, hookimpl, serving_features
from crispml.testing import plugins_with


class _Store:
    """A feature-store plugin that answers any spec naming it (and counts the calls)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.calls: list[dict[str, Any]] = []

    @hookimpl
    def crispml_serving_features(self, spec: dict[str, Any], project_dir: Path) -> ServingFeatures:
        self.calls.append(spec)
        return ServingFeatures(
            keys={"customer_id": "int64"},
            provides=["minutes"],
            files={"resolver.py": b"class Resolver: ..."},
            module="resolver",
            description=f"{self.name} at {project_dir.name}",
        )


class _Wrong:
    @hookimpl
    def crispml_serving_features(self, spec: dict[str, Any]) -> Any:
        return {"keys": {}}


def test_the_spec_is_routed_to_the_plugin_it_names(project: Path) -> None:
    first, second = _Store("first"), _Store("second")
    plugins = plugins_with({"first": first, "second": second})
    found = serving_features({"plugin": "second", "refs": ["v:f"]}, project, plugins=plugins)
    assert found.description == f"second at {project.name}"
    assert second.calls == [{"plugin": "second", "refs": ["v:f"]}] and first.calls == []


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"refs": []}, "a serving spec names the plugin that fetches its features ('plugin')"),
        ({"plugin": "nowhere"}, "the model's features come from plugin 'nowhere', which is not installed"),
        ({"plugin": "files"}, "plugin 'files' cannot fetch features for serving"),
    ],
)
def test_specs_no_plugin_can_serve_are_usage_errors(project: Path, spec: dict[str, Any], message: str) -> None:
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        serving_features(spec, project, plugins=plugins_with())


def test_a_plugin_returning_something_else_breaks_the_contract(project: Path) -> None:
    with pytest.raises(PluginError, match=r"returned dict, expected crispml\.ServingFeatures"):
        serving_features({"plugin": "wrong"}, project, plugins=plugins_with({"wrong": _Wrong()}))
