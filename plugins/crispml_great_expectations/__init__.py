"""The ``great_expectations`` plugin: validate a dataset with Great Expectations 1.x.

    validate: {use: great_expectations, suite: expectations/churn.yaml, on_failure: reject}

or inline::

    validate:
      use: great_expectations
      expectations:
        - {expect: column_values_to_not_be_null, column: tenure_months}
        - {expect: column_values_to_be_between, column: monthly_charges, min_value: 0, mostly: 0.99}

A failed validation ends the run ``rejected`` (``on_failure: warn`` carries on). The report is
stored as ``validation.json`` and ``validation.html`` in the stage's artifact folder.
Commands: ``crispml suggest-suite DATA -o suite.yaml``, ``crispml validate-data RECIPE DATA``
(or, without DATA, ``--deployment NAME --since 24h``: a deployment's production window).

This module only declares; Great Expectations and pandas are imported when a suite is checked
(recipe check) or a stage runs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from crispml import (
    Backend,
    Dataset,
    Declaration,
    ExistingPath,
    Options,
    RunContext,
    ValidationReport,
    backend_check,
    hookimpl,
)

if TYPE_CHECKING:
    import click

    from crispml_great_expectations._suite import Entry

__version__ = "0.1.0"

# Before Great Expectations is first imported (a recipe check imports it to validate a suite):
# no analytics, nothing sent anywhere.
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")


class InlineExpectation(BaseModel):
    """One inline expectation: ``expect`` plus the expectation's own arguments."""

    model_config = ConfigDict(extra="allow", frozen=True, defer_build=True)

    expect: str
    """The expectation type: ``column_values_to_be_between``, ``expect_…`` or ``ExpectColumn…``."""

    @model_validator(mode="after")
    @backend_check
    def _check(self, info: ValidationInfo) -> InlineExpectation:
        from crispml_great_expectations._suite import SuiteError, parse_entry

        try:
            parse_entry(self.raw())
        except SuiteError as exc:
            raise ValueError(str(exc)) from None
        return self

    def raw(self) -> dict[str, Any]:
        return {"expect": self.expect, **(self.model_extra or {})}


class ValidateOptions(Options):
    suite: ExistingPath | None = None
    """A suite YAML file (relative to the recipe's folder); see docs/plugins/great_expectations.md."""
    expectations: list[InlineExpectation] = Field(default_factory=list)
    """Inline expectations, checked after the suite's."""
    on_failure: Literal["reject", "warn"] = "reject"
    """``reject`` ends the run ``rejected``; ``warn`` reports and carries on."""
    unexpected_values: int = Field(default=5, ge=0, le=100)
    """How many unexpected values to keep per expectation."""
    name: str | None = None
    """The suite's name in reports (default: the suite file's stem, else ``inline``)."""

    @field_validator("suite")
    @classmethod
    @backend_check
    def _suite_parses(cls, suite: Path | None, info: ValidationInfo) -> Path | None:
        if suite is not None:
            from crispml_great_expectations._suite import load_suite

            load_suite(suite)  # a SuiteError is a ValueError: the core names file, field, line
        return suite

    @model_validator(mode="after")
    def _suite_or_expectations(self) -> ValidateOptions:
        if self.suite is None and not self.expectations:
            raise ValueError("give a 'suite' file or inline 'expectations' (or both)")
        return self

    @model_validator(mode="after")
    @backend_check
    def _columns_exist(self, info: ValidationInfo) -> ValidateOptions:
        from crispml_great_expectations._suite import check_columns

        load = ((info.context or {}).get("steps") or {}).get("load")
        found = _load_columns(load)
        if found is not None:
            columns, source = found
            check_columns(self.load()[0], columns, source)
        return self

    def load(self) -> tuple[list[Entry], str]:
        """Every expectation (the suite file's, then the inline ones), checked, and the suite's name."""
        from crispml_great_expectations._suite import load_suite, parse_entry

        out: list[Entry] = []
        name = self.name or "inline"
        if self.suite is not None:
            suite = load_suite(self.suite)
            out.extend(suite.entries)
            name = self.name or suite.name
        for i, item in enumerate(self.expectations):
            out.append(parse_entry(item.raw(), f"expectations[{i}]"))
        return out, name

    def external_inputs(self) -> list[Path]:
        return [self.suite] if self.suite is not None else []

    def provided_metrics(self) -> list[str]:
        return ["expectations", "failed", "success_percent", "skipped"]


def _load_columns(load: Any) -> tuple[list[str], str] | None:
    """The columns the recipe's load step will give, when its plugin knows them before it runs
    (``Options.provided_columns``: a file's header), whichever plugin that is. ``None`` when it
    does not (a feature store, read options that change the columns): then columns are checked
    at run time, on the dataset the stage is given."""
    provided = getattr(load, "provided_columns", None)
    if not callable(provided):
        return None
    found = provided()
    if found is None:
        return None
    columns, source = found
    return [str(c) for c in columns], str(source)


@hookimpl
def crispml_declare() -> Declaration:
    return Declaration(
        stages={"validate": ValidateOptions},
        backends=(
            Backend("great-expectations", "great_expectations", extra="gx"),
            Backend("pandas", "pandas", extra="gx"),
        ),
        description="Validate data with Great Expectations 1.x suites; reject runs on bad data.",
    )


@hookimpl
def crispml_environment() -> dict[str, str]:
    """Great Expectations' usage statistics off."""
    return {"GX_ANALYTICS_ENABLED": "false"}


@hookimpl
def crispml_validate(options: ValidateOptions, dataset: Dataset, context: RunContext) -> ValidationReport:
    from crispml_great_expectations._run import validate_dataset

    return validate_dataset(options, dataset, context)


@hookimpl
def crispml_register_commands(cli: click.Group) -> None:
    from crispml_great_expectations._cli import suggest_suite, validate_data

    cli.add_command(suggest_suite)
    cli.add_command(validate_data)
