"""The recipe model: Python and YAML spellings, round trips, overrides, gates."""

from __future__ import annotations

from pathlib import Path

import pytest

from crispml import Gate, Recipe, RecipeError, Split, Step, UsageError
from crispml.gates import check_gates

QUICKSTART = Path(__file__).resolve().parents[2] / "examples" / "quickstart" / "recipe.yaml"


def test_yaml_round_trips() -> None:
    recipe = Recipe.from_yaml(QUICKSTART)
    again = Recipe.from_yaml_text(recipe.to_yaml())
    assert again == recipe
    assert again.to_yaml() == recipe.to_yaml()


def test_python_and_yaml_spell_the_same_recipe(tmp_path: Path) -> None:
    python = Recipe(
        name="r",
        split=Split(test_size=0.3, seed=1, stratify="y"),
        load=Step(use="files", path="d.csv", target="y"),
        validate=Step(use="checks", columns=["y"]),
        train=Step(use="sklearn", params={"C": 0.5}),
        evaluate=Step(use="sklearn", metrics=["accuracy"], gate={"accuracy": ">= 0.8"}),
        register=Step(use="registry", model_name="m"),
    )
    path = tmp_path / "r.yaml"
    path.write_text(python.to_yaml())
    assert Recipe.from_yaml(path) == python
    assert [s for s, _ in python.steps()] == ["load", "validate", "train", "evaluate", "register"]
    assert python.step("register").options == {"model_name": "m"}  # type: ignore[union-attr]


def test_overrides_set_nested_values_parsed_as_yaml(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("name: r\nload: {use: files, path: d.csv}\ntrain: {use: sklearn, params: {C: 1.0}}\n")
    recipe = Recipe.from_yaml(path, overrides=["train.params.C=0.5", "train.params.penalty=l2", "split.seed=9"])
    assert recipe.step("train").options["params"] == {"C": 0.5, "penalty": "l2"}  # type: ignore[union-attr]
    assert recipe.split is not None and recipe.split.seed == 9


@pytest.mark.parametrize("bad", ["train.params.C", "=1", "a..b=1"])
def test_malformed_overrides_are_usage_errors(tmp_path: Path, bad: str) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("name: r\nload: {use: files}\n")
    with pytest.raises(UsageError, match="--set"):
        Recipe.from_yaml(path, overrides=[bad])


def test_tracking_accepts_a_list_or_a_mapping() -> None:
    a = Recipe(name="r", load=Step(use="x"), tracking=["mlflow"])  # type: ignore[arg-type]
    b = Recipe(name="r", load=Step(use="x"), tracking={"mlflow": None})  # type: ignore[dict-item]
    assert a.tracking == b.tracking == {"mlflow": {}}


def test_recipe_errors_name_file_field_and_line(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("name: r\nload: {use: files}\nsplit:\n  test_size: 2\n")
    with pytest.raises(RecipeError) as info:
        Recipe.from_yaml(path)
    assert str(info.value).startswith(f"{path}:4: split.test_size: expected less than 1")


@pytest.mark.parametrize(
    ("expr", "gate"),
    [
        (">= 0.9", Gate("m", ">=", 0.9)),
        ("<0.1", Gate("m", "<", 0.1)),
        (0.5, Gate("m", ">=", 0.5)),
        ("== 1e-3", Gate("m", "==", 0.001)),
    ],
)
def test_gate_expressions_parse(expr: object, gate: Gate) -> None:
    assert Gate.parse("m", expr) == gate


@pytest.mark.parametrize("expr", ["~0.9", ">= high", "", True, "=> 0.9"])
def test_malformed_gate_expressions_are_rejected(expr: object) -> None:
    with pytest.raises(ValueError, match="expected a comparison"):
        Gate.parse("m", expr)


def test_gates_report_each_failure() -> None:
    gates = [Gate.parse("acc", ">= 0.9"), Gate.parse("loss", "< 0.2"), Gate.parse("auc", ">= 0.5")]
    reasons = check_gates(gates, {"acc": 0.95, "loss": 0.3, "other": 1.0})
    assert reasons == ["loss = 0.3, gate loss < 0.2", "auc was not produced (gate auc >= 0.5)"]
    assert check_gates(gates[:1], {"acc": float("nan")}) == ["acc = nan, gate acc >= 0.9"]


def test_no_split_survives_a_round_trip() -> None:
    recipe = Recipe(name="r", split=None, load=Step(use="files"))
    again = Recipe.from_yaml_text(recipe.to_yaml())
    assert again.split is None and again == recipe
    assert Recipe(name="r", load=Step(use="files")).split == Split()
