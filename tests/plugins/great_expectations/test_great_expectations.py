"""The great_expectations plugin against real Great Expectations 1.x (no mocks).

Costly things happen once: GX is imported once in this process (the in-process runs share it),
and ``crispml suggest-suite`` runs once per session. Commands run as real subprocesses where
their exit code and terminal output are what is being tested.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import yaml
from suite_helpers import run_cli

import crispml

REPO = Path(__file__).resolve().parents[3]
CHURN = REPO / "examples" / "quickstart" / "data" / "churn.csv"


# -- fixtures and helpers -----------------------------------------------------------------


_cli = partial(run_cli, set_project=False)  # each command finds its project from its folder


@pytest.fixture(scope="session")
def suggested(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``crispml suggest-suite`` run once on the quickstart's data; the suite file it wrote."""
    folder = tmp_path_factory.mktemp("suggested")
    out = folder / "churn.yaml"
    proc = _cli(folder, "suggest-suite", str(CHURN), "--target", "churned", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture(scope="session")
def frame() -> Any:
    import pandas as pd

    return pd.read_csv(CHURN)


def write_recipe(folder: Path, validate: dict[str, Any], data: Path = CHURN, *, train: bool = False) -> Path:
    recipe: dict[str, Any] = {
        "name": "gx-test",
        "load": {"use": "files", "path": str(data), "target": "churned"},
        "validate": {"use": "great_expectations", **validate},
    }
    if train:
        recipe["split"] = {"test_size": 0.25, "seed": 1}
        recipe["train"] = {"use": "sklearn", "params": {"max_iter": 300}}
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def failed_set(report: crispml.ValidationReport) -> set[tuple[str, str | None]]:
    return {(r.expectation.removeprefix("expect_"), r.column) for r in report.failures}


FAILING = [  # one passes, one fails on 1747 of 2000 rows
    {"expect": "column_values_to_not_be_null", "column": "tenure_months"},
    {"expect": "column_values_to_be_between", "column": "tenure_months", "max_value": 10},
]


# -- the suggested suite, and corrupted copies of the data ----------------------------------


def test_suggested_suite_describes_the_data(suggested: Path) -> None:
    suite = yaml.safe_load(suggested.read_text())
    by = {(e["expect"], e.get("column")) for e in suite["expectations"]}
    columns = ["tenure_months", "contract", "internet", "payment_method", "monthly_charges",
               "total_charges", "support_calls", "churned"]  # fmt: skip
    assert ("table_columns_to_match_set", None) in by
    for c in columns:
        assert ("column_values_to_be_in_type_list", c) in by
        assert ("column_values_to_not_be_null", c) in by
    value_sets = {
        e["column"]: e["value_set"] for e in suite["expectations"] if e["expect"] == "column_values_to_be_in_set"
    }
    assert value_sets == {
        "contract": ["month-to-month", "one-year", "two-year"],
        "internet": ["dsl", "fiber", "none"],
        "payment_method": ["bank", "card", "check"],
        "churned": [0, 1],  # the target keeps its classes although it is numeric
    }
    ranges = {
        e["column"]: (e["min_value"], e["max_value"])
        for e in suite["expectations"]
        if e["expect"] == "column_values_to_be_between"
    }
    assert set(ranges) == {"tenure_months", "monthly_charges", "total_charges", "support_calls"}
    lo, hi = ranges["tenure_months"]  # data: 1..72, integers, no negatives
    assert lo == 0 and 72 < hi <= 80 and isinstance(hi, int)


def test_same_data_passes_its_suggested_suite(project: Path, suggested: Path) -> None:
    result = crispml.run(write_recipe(project, {"suite": str(suggested)}))
    report = result["validation"]
    assert result.status == "succeeded", result.manifest
    assert report.success and not report.failures
    assert report.metrics["expectations"] == len(yaml.safe_load(suggested.read_text())["expectations"])


def _nulls(df: Any) -> Any:
    df.loc[::10, "monthly_charges"] = None
    return df


def _drop(df: Any) -> Any:
    return df.drop(columns=["internet"])


def _range(df: Any) -> Any:
    df.loc[:5, "tenure_months"] = 500
    return df


def _category(df: Any) -> Any:
    df.loc[:3, "contract"] = "weekly"
    return df


@pytest.mark.parametrize(
    ("corrupt", "expected"),
    [
        (_nulls, {("column_values_to_not_be_null", "monthly_charges")}),
        (
            _drop,
            {
                ("table_columns_to_match_set", None),
                ("column_values_to_be_in_type_list", "internet"),
                ("column_values_to_not_be_null", "internet"),
                ("column_values_to_be_in_set", "internet"),
            },
        ),
        (_range, {("column_values_to_be_between", "tenure_months")}),
        (_category, {("column_values_to_be_in_set", "contract")}),
    ],
    ids=["nulls", "dropped-column", "out-of-range", "new-category"],
)
def test_corrupted_copy_fails_on_the_right_expectations(
    project: Path, suggested: Path, frame: Any, corrupt: Callable[[Any], Any], expected: set[Any]
) -> None:
    data = project / "batch.csv"
    corrupt(frame.copy()).to_csv(data, index=False)
    result = crispml.run(write_recipe(project, {"suite": str(suggested)}, data))
    assert result.status == "rejected"
    assert failed_set(result["validation"]) == expected


def test_out_of_range_report_names_count_percent_and_values(project: Path, suggested: Path, frame: Any) -> None:
    data = project / "batch.csv"
    _range(frame.copy()).to_csv(data, index=False)
    result = crispml.run(write_recipe(project, {"suite": str(suggested)}, data))
    (failure,) = result["validation"].failures
    assert failure.unexpected_count == 6
    assert failure.unexpected_percent == pytest.approx(0.3)
    assert failure.unexpected_values == [500]


# -- validate-data: the batch check --------------------------------------------------------


def test_validate_data_exit_codes_and_report(project: Path, suggested: Path, frame: Any) -> None:
    recipe = write_recipe(project, {"suite": str(suggested)})
    good = _cli(project, "validate-data", str(recipe), str(CHURN))
    assert good.returncode == 0, good.stderr
    assert "passed" in good.stdout

    bad = project / "bad.csv"
    _category(frame.copy()).to_csv(bad, index=False)
    out = project / "report"
    proc = _cli(project, "validate-data", str(recipe), str(bad), "--report-dir", str(out))
    assert proc.returncode == 3, proc.stderr
    assert "column_values_to_be_in_set" in proc.stderr and "weekly" in proc.stderr  # the table
    assert "Calculating Metrics" not in proc.stderr  # GX's progress bars are off
    report = json.loads((out / "validation.json").read_text())
    assert report["success"] is False
    (failure,) = [r for r in report["results"] if not r["success"]]
    assert failure["column"] == "contract" and failure["unexpected_values"] == ["weekly"]
    assert failure["unexpected_count"] == 4
    assert "weekly" in (out / "validation.html").read_text()


# -- the stage in a run: gate, warn, report, cache --------------------------------------------


def test_failed_validation_rejects_the_run_and_nothing_downstream_runs(project: Path) -> None:
    result = crispml.run(write_recipe(project, {"expectations": FAILING}, train=True))
    assert result.status == "rejected" and result.exit_code == 3
    assert result.stage_status == {"load": "succeeded", "validate": "rejected", "train": "skipped"}
    assert "model" not in result.results
    assert "column_values_to_be_between(tenure_months)" in result.manifest["rejection"]
    report = result["validation"]
    assert report.artifacts == ["validation.json", "validation.html"]
    folder = result.run_dir / "artifacts" / "validate"
    saved = json.loads((folder / "validation.json").read_text())
    assert saved["statistics"] == {"expectations": 2, "failed": 1, "success_percent": 50.0}
    bad = next(r for r in saved["results"] if not r["success"])
    assert bad["unexpected_count"] == 1747 and bad["unexpected_percent"] == pytest.approx(87.35)
    assert len(bad["unexpected_values"]) == 5  # the default number kept
    page = (folder / "validation.html").read_text()
    assert "expect_column_values_to_be_between" in page and "failed" in page


def test_on_failure_warn_carries_on(project: Path) -> None:
    result = crispml.run(write_recipe(project, {"expectations": FAILING, "on_failure": "warn"}, train=True))
    assert result.status == "succeeded"
    assert result.stage_status["train"] == "succeeded"
    assert result["validation"].success is False
    assert result["validation"].rejection is None


def test_html_report_escapes_data(project: Path, frame: Any) -> None:
    data = project / "batch.csv"
    df = frame.copy()
    df.loc[0, "contract"] = "<script>alert(1)</script>"
    df.to_csv(data, index=False)
    expectations = [{"expect": "column_values_to_be_in_set", "column": "contract",
                     "value_set": ["month-to-month", "one-year", "two-year"]}]  # fmt: skip
    result = crispml.run(write_recipe(project, {"expectations": expectations}, data))
    page = (result.run_dir / "artifacts" / "validate" / "validation.html").read_text()
    assert "<script>alert" not in page and "&lt;script&gt;" in page


def test_editing_the_suite_invalidates_the_cache(project: Path) -> None:
    suite = project / "suite.yaml"
    suite.write_text(yaml.safe_dump({"expectations": FAILING[:1]}))
    recipe = write_recipe(project, {"suite": "suite.yaml"})
    first = crispml.run(recipe)
    assert first.stage_status["validate"] == "succeeded"
    assert crispml.run(recipe).stage_status["validate"] == "cached"
    suite.write_text(yaml.safe_dump({"expectations": FAILING}))
    third = crispml.run(recipe)
    assert third.stage_status["validate"] == "rejected"
    options = crispml.check(recipe).step("validate").options
    assert suite.resolve() in [p.resolve() for p in options.external_inputs()]


def test_inline_and_suite_spellings(project: Path) -> None:
    expectations = [
        {"expect": "ExpectColumnValuesToNotBeNull", "column": "contract"},
        {"expect": "expect_column_values_to_be_of_type", "column": "tenure_months", "type": "int64"},
        {"expect": "column_mean_to_be_between", "column": "tenure_months", "min_value": 30, "max_value": 45},
        {"expect": "column_values_to_be_in_set", "column": "internet", "value_set": ["dsl", "fiber"], "mostly": 0.5},
    ]
    result = crispml.run(write_recipe(project, {"expectations": expectations}))
    assert result.status == "succeeded", result.manifest["rejection"]
    assert result["validation"].metrics["expectations"] == 4


def test_run_writes_nothing_outside_the_project_and_shows_a_failure_table(
    project: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    home = tmp_path_factory.mktemp("home")
    recipe = write_recipe(project, {"expectations": FAILING})
    before = {p for p in project.rglob("*") if ".crispml" not in p.parts}
    proc = _cli(project, "run", str(recipe), env={"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config")})
    assert proc.returncode == 3, proc.stderr
    assert "Calculating Metrics" not in proc.stderr
    assert "validation failed: 1 of 2 expectations" in proc.stderr
    assert "column_values_to_be_between" in proc.stderr and "1747" in proc.stderr
    assert list(home.iterdir()) == []
    after = {p for p in project.rglob("*") if ".crispml" not in p.parts}
    assert after == before


# -- bad input: one line, exit 2, nothing run --------------------------------------------------


def _assert_usage_error(proc: subprocess.CompletedProcess[str], project: Path, *needles: str) -> str:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    for written in ("runs", "validations"):  # bad input writes nothing: no run, no report folder
        folder = project / ".crispml" / written
        assert not folder.exists() or not any(folder.iterdir()), written
    return lines[0]


def test_malformed_suite_names_expectation_field_and_why(project: Path) -> None:
    (project / "suite.yaml").write_text(
        "expectations:\n"
        "  - {expect: column_values_to_not_be_null, column: tenure_months}\n"
        "  - expect: column_values_to_be_between\n"
        "    column: tenure_months\n"
        "    min_value: abc\n"
    )
    recipe = write_recipe(project, {"suite": "suite.yaml"})
    line = _assert_usage_error(
        _cli(project, "run", str(recipe)), project,
        "suite.yaml:3: expectation 2", "column_values_to_be_between", "'min_value'", "not a valid float", "'abc'",
    )  # fmt: skip
    assert line.startswith(f"crispml: error: {recipe}:")


def test_unknown_expectation_type_lists_nearest_names(project: Path) -> None:
    (project / "suite.yaml").write_text(
        "expectations:\n  - {expect: column_values_to_be_betwen, column: tenure_months}\n"
    )
    recipe = write_recipe(project, {"suite": "suite.yaml"})
    _assert_usage_error(
        _cli(project, "run", str(recipe)), project,
        "unknown expectation type 'column_values_to_be_betwen'", "nearest: column_values_to_be_between",
    )  # fmt: skip


def test_column_absent_from_data_is_caught_before_anything_runs(project: Path) -> None:
    recipe = write_recipe(
        project, {"expectations": [{"expect": "column_values_to_not_be_null", "column": "tenure_month"}]}
    )
    _assert_usage_error(
        _cli(project, "run", str(recipe)),
        project,
        "column 'tenure_month' is not in churn.csv",
        "nearest: tenure_months",
    )


def test_column_absent_from_a_new_batch_is_a_usage_error(project: Path, frame: Any) -> None:
    """validate-data: the batch lacks a column the suite reads but never declares → exit 2."""
    recipe = write_recipe(project, {"expectations": [{"expect": "column_values_to_not_be_null", "column": "internet"}]})
    batch = project / "batch.csv"
    _drop(frame.copy()).to_csv(batch, index=False)
    _assert_usage_error(
        _cli(project, "validate-data", str(recipe), str(batch)), project, "column 'internet' is not in the data"
    )


def test_unreadable_data_file(project: Path) -> None:
    recipe = write_recipe(project, {"expectations": FAILING[:1]})
    garbage = project / "batch.parquet"
    garbage.write_bytes(b"\x00\x01 not parquet")
    _assert_usage_error(
        _cli(project, "validate-data", str(recipe), str(garbage)), project, "cannot read", "batch.parquet"
    )
    proc = _cli(project, "suggest-suite", str(project / "missing.csv"), "-o", "s.yaml")
    _assert_usage_error(proc, project, "data file not found")
    assert not (project / "s.yaml").exists()


@pytest.mark.parametrize(
    ("suite", "needles"),
    [
        ("expectations:\n  - {column: a}\n", ["expectation 1", "field 'expect': missing"]),
        ("expectations: []\n", ["non-empty 'expectations:' list"]),
        ("expectations: [ {expect: x\n", ["not valid YAML"]),
        ("expectation:\n  - {expect: column_to_exist, column: a}\n", ["unknown top-level field 'expectation'"]),
        (
            "expectations:\n  - {expect: column_to_exist, column: churned, batch_id: x}\n",
            ["field 'batch_id': set by crispml"],
        ),
        (
            "expectations:\n  - {expect: column_values_to_be_in_set, column: contract}\n",
            ["field 'value_set': required argument missing"],
        ),
        (
            "expectations:\n  - {expect: column_values_to_not_be_null, column: contract, mostly: 2}\n",
            ["field 'mostly'", "less than or equal to 1"],
        ),
        (
            "expectations:\n  - {expect: column_values_to_not_be_null, column: contract, colour: red}\n",
            ["field 'colour': not an argument"],
        ),
    ],
    ids=["no-type", "empty", "yaml", "top-level", "reserved", "missing-arg", "bad-mostly", "unknown-arg"],
)
def test_malformed_suites_are_recipe_errors(project: Path, suite: str, needles: list[str]) -> None:
    _check_suite_error(project, suite.encode(), needles)


_BOMB = "a0: &a0 [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 10)
)


@pytest.mark.parametrize(
    ("suite", "needles"),
    [
        (
            b"expectations:\n  - {expect: column_to_exist, column: churned}\nexpectations: []\n",
            ["suite.yaml:3: duplicate key 'expectations' (first given at line 1)"],
        ),
        (bytes(range(256)), ["suite.yaml:1: a binary file, not YAML text"]),
        ("expectations: [caf\xe9]\n".encode("latin-1"), ["suite.yaml:1: not UTF-8 text"]),
        (_BOMB.encode(), ["aliases expand this document to more than 100,000 values"]),
        (b"# " + b"x" * 1_100_000, ["suite.yaml: over 1,000,000 bytes"]),
    ],
    ids=["duplicate-key", "binary", "latin-1", "alias-bomb", "huge"],
)
def test_hostile_suites_are_one_line_recipe_errors(project: Path, suite: bytes, needles: list[str]) -> None:
    started = time.perf_counter()
    _check_suite_error(project, suite, needles)
    assert time.perf_counter() - started < 1.0


def _check_suite_error(project: Path, suite: bytes, needles: list[str]) -> None:
    (project / "suite.yaml").write_bytes(suite)
    recipe = write_recipe(project, {"suite": "suite.yaml"})
    with pytest.raises(crispml.RecipeError) as info:
        crispml.check(recipe)
    message = str(info.value)
    assert message.startswith(f"{recipe}:") and "validate.suite" in message and "\n" not in message
    for needle in needles:
        assert needle in message, message


def test_inline_error_points_at_the_recipe_line(project: Path) -> None:
    recipe = write_recipe(
        project,
        {
            "expectations": [
                FAILING[0],
                {"expect": "column_values_to_be_between", "column": "tenure_months", "max_value": "x"},
            ]
        },
    )
    with pytest.raises(crispml.RecipeError) as info:
        crispml.check(recipe)
    err = info.value
    assert err.field == "validate.expectations.1"
    assert err.line == recipe.read_text().splitlines().index("  - expect: column_values_to_be_between") + 1
    assert "field 'max_value'" in err.message


def test_neither_suite_nor_expectations(project: Path) -> None:
    with pytest.raises(crispml.RecipeError, match="give a 'suite' file or inline 'expectations'"):
        crispml.check(write_recipe(project, {}))


# -- what loading the plugin costs --------------------------------------------------------


def test_loading_the_plugin_imports_no_backend() -> None:
    code = (
        "import sys, crispml\n"
        "from crispml.plugins import get_plugins\n"
        "p = get_plugins(); p.declaration('great_expectations')\n"
        "import crispml_great_expectations._cli\n"
        "bad = [m for m in ('great_expectations', 'pandas', 'numpy') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_a_batch_with_no_rows_fails_validation_instead_of_crashing(project: Path, suggested: Path, frame: Any) -> None:
    recipe = write_recipe(project, {"suite": str(suggested)})
    empty = project / "empty.csv"
    frame.head(0).to_csv(empty, index=False)
    proc = _cli(project, "validate-data", str(recipe), str(empty))
    assert proc.returncode == 3, proc.stderr
    assert "table_row_count_to_be_between" in proc.stderr and "Traceback" not in proc.stderr


def test_suggested_suite_passes_on_tz_aware_datetimes_and_string_dtype(project: Path) -> None:
    import pandas as pd

    data = project / "typed.parquet"
    pd.DataFrame(
        {
            "when": pd.to_datetime(["2024-01-01", "2024-01-02", "2024-01-03"]).tz_localize("UTC"),
            "name": pd.array(["a", "b", "c"], dtype="string"),
            "y": [0, 1, 0],
        }
    ).to_parquet(data)
    assert _cli(project, "suggest-suite", str(data), "-o", "typed.yaml").returncode == 0
    recipe = project / "typed-recipe.yaml"
    recipe.write_text(
        f"name: typed\nsplit: null\nload: {{use: files, path: {data}}}\n"
        "validate: {use: great_expectations, suite: typed.yaml}\n"
    )
    proc = _cli(project, "validate-data", str(recipe), str(data))
    assert proc.returncode == 0, proc.stdout + proc.stderr


# -- the validate stage works on the Dataset it is given, whichever plugin loaded it ---------------


class KeyedLoader:
    """A feature-store-like load plugin: entity keys in, a frame out — no ``path`` to re-read.

    Its data differs from anything on disk (rows are computed), so a validator that re-read a
    file could not see what this loader produced.
    """

    class Opts(crispml.Options):
        rows: int = 50
        bad_rows: int = 0

    @crispml.hookimpl
    def crispml_declare(self) -> crispml.Declaration:
        return crispml.Declaration(stages={"load": self.Opts})

    @crispml.hookimpl
    def crispml_load(self, options: Any) -> crispml.Dataset:
        import pandas as pd

        frame = pd.DataFrame(
            {
                "customer_id": range(options.rows),
                "tenure_months": [(-1 if i < options.bad_rows else i % 72) for i in range(options.rows)],
                "churned": [i % 2 for i in range(options.rows)],
            }
        )
        return crispml.Dataset(
            frame=frame,
            target="churned",
            name="entities",
            source=f"feature-service:churn_v1/{options.rows}/{options.bad_rows}",
            fingerprint=f"keyed-{options.rows}-{options.bad_rows}",
        )


def _keyed_recipe(rows: int, bad_rows: int, expectations: list[dict[str, Any]]) -> crispml.Recipe:
    return crispml.Recipe(
        name="keyed",
        split=None,
        load=crispml.Step(use="keyed", rows=rows, bad_rows=bad_rows),
        validate=crispml.Step(use="great_expectations", expectations=expectations),
    )


def test_validate_checks_the_dataset_a_pathless_loader_gives(project: Path) -> None:
    from crispml.testing import run_with

    expectations = [
        {"expect": "column_values_to_be_between", "column": "tenure_months", "min_value": 0, "max_value": 71},
        {"expect": "column_values_to_not_be_null", "column": "customer_id"},
    ]
    good = run_with(_keyed_recipe(50, 0, expectations), project=project, plugins={"keyed": KeyedLoader()})
    assert good.status == "succeeded", good.manifest
    assert good["validation"].success and len(good["validation"].results) == 2
    bad = run_with(_keyed_recipe(50, 7, expectations), project=project, plugins={"keyed": KeyedLoader()})
    assert bad.status == "rejected", bad.manifest
    (failure,) = bad["validation"].failures
    assert failure.column == "tenure_months" and failure.unexpected_count == 7


def test_a_column_the_pathless_loader_lacks_is_found_at_run_time(project: Path) -> None:
    """No header to read before the run: the check passes, the run reports the missing column."""
    from crispml.testing import plugins_with, run_with

    recipe = _keyed_recipe(20, 0, [{"expect": "column_values_to_not_be_null", "column": "monthly_charges"}])
    crispml.check(recipe, plugins=plugins_with({"keyed": KeyedLoader()}))  # nothing to check it against yet
    result = run_with(recipe, project=project, plugins={"keyed": KeyedLoader()})
    assert result.status != "succeeded"
    assert "monthly_charges" in json.dumps(result.manifest.to_dict())


def test_great_expectations_asks_the_load_step_for_its_columns_not_its_path(project: Path) -> None:
    """A load plugin that declares its columns (``provided_columns``) gets the suite checked
    against them before anything runs, though it has no ``path`` option at all."""

    class Declared(KeyedLoader):
        class Opts(crispml.Options):
            rows: int = 50
            bad_rows: int = 0

            def provided_columns(self) -> tuple[list[str], str]:
                return ["customer_id", "tenure_months", "churned"], "feature service churn_v1"

        @crispml.hookimpl
        def crispml_declare(self) -> crispml.Declaration:
            return crispml.Declaration(stages={"load": self.Opts})

    from crispml.testing import plugins_with

    recipe = _keyed_recipe(20, 0, [{"expect": "column_values_to_not_be_null", "column": "tenure_month"}])
    with pytest.raises(crispml.RecipeError, match="column 'tenure_month' is not in feature service churn_v1"):
        crispml.check(recipe, plugins=plugins_with({"keyed": Declared()}))
