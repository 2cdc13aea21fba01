"""The plugin's commands: ``crispml suggest-suite`` and ``crispml validate-data``.

Loaded when a command that is not a core one is asked for (and by ``--help``): this module
imports click alone; pandas and Great Expectations load in the command bodies.
"""

from __future__ import annotations

import secrets
import sys
import time
from pathlib import Path
from typing import Any

import click

from crispml import UsageError

PLUGIN = "great_expectations"


@click.command("suggest-suite")
@click.argument("data", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--target", help="The column to predict: its value set is kept even if numeric.")
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
    help="Where to write the suite YAML ('-' for stdout).",
)  # fmt: skip
@click.option(
    "--margin",
    default=0.1,
    show_default=True,
    type=click.FloatRange(0, 10),
    help="Widen numeric ranges by this fraction of their span on each side.",
)
@click.option(
    "--max-categories",
    default=20,
    show_default=True,
    type=click.IntRange(1),
    help="Columns with at most this many distinct values get a value set.",
)
@click.option("--name", help="The suite's name (default: the output file's stem).")
@click.option("--force", is_flag=True, help="Overwrite OUTPUT if it exists.")
def suggest_suite(
    data: Path, target: str | None, output: Path, margin: float, max_categories: int,
    name: str | None, force: bool,
) -> None:  # fmt: skip
    """Write a first expectation suite from a trusted DATA file (CSV or Parquet), to edit."""
    import yaml

    from crispml_great_expectations._data import read_data
    from crispml_great_expectations._suggest import suite_yaml

    to_stdout = str(output) == "-"
    if not to_stdout and output.exists() and not force:
        raise UsageError(f"{output} exists (use --force to overwrite it)")
    frame = read_data(data)
    if target is not None and target not in frame.columns:
        raise UsageError(
            f"--target: column '{target}' is not in {data.name} (columns: {', '.join(map(str, frame.columns))})"
        )
    stem = name or (data.stem if to_stdout else output.stem)
    text = suite_yaml(frame, data.name, target=target, margin=margin, max_categories=max_categories, name=stem)
    if to_stdout:
        click.echo(text, nl=False)
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text)
    count = len(yaml.safe_load(text)["expectations"])
    click.echo(f"wrote {output}: {count} expectations on {len(frame.columns)} columns of {data.name}", err=True)


def _load_read_options(resolved: Any) -> dict[str, Any]:
    """The recipe's load step's ``read_options`` (sep, encoding…), when it has any."""
    load = resolved.step("load")
    value = getattr(load.options, "read_options", None) if load is not None else None
    return dict(value) if isinstance(value, dict) else {}


@click.command("validate-data")
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.argument("data", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
@click.option(
    "--report-dir", type=click.Path(file_okay=False, path_type=Path),
    help="Where to write validation.json/.html (default: .crispml/validations/<id>/).",
)  # fmt: skip
@click.option("--deployment", metavar="NAME", help="Without DATA: the deployment whose requests to validate.")
@click.option("--since", metavar="DURATION", help="Without DATA: the requests of the last 30m, 6h, 2d…")
@click.option("--last", type=int, metavar="N", help="Without DATA: the last N predicted records.")
def validate_data(
    recipe: str,
    data: Path | None,
    as_json: bool,
    report_dir: Path | None,
    deployment: str | None,
    since: str | None,
    last: int | None,
) -> None:
    """Validate a new DATA batch against RECIPE's suite — or, without DATA, a deployment's
    production window (a run of kind validate-data). Exit 0 passed, 3 failed, 2 bad input."""
    import crispml

    if data is None:
        _validate_window(recipe, deployment, since, last, as_json, report_dir)
    if deployment is not None or since is not None or last is not None:
        raise UsageError("--deployment, --since and --last validate a deployment's requests: give them without DATA")
    resolved = crispml.check(recipe)
    step = resolved.step("validate")
    if step is None:
        raise UsageError(f"{recipe}: has no 'validate' step to take expectations from")
    if step.plugin != PLUGIN:
        raise UsageError(f"{recipe}: its validate step uses '{step.plugin}', not '{PLUGIN}'")
    options = step.options
    from crispml_great_expectations._data import read_data
    from crispml_great_expectations._run import validate_frame

    frame = read_data(data, _load_read_options(resolved))
    entries, suite_name = options.load()
    if report_dir is None:
        stamp = time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)
        report_dir = crispml.find_project() / ".crispml" / "validations" / stamp
    created = not report_dir.exists()
    report_dir.mkdir(parents=True, exist_ok=True)
    try:
        report = validate_frame(
            frame,
            entries,
            suite_name=suite_name,
            data_name=str(data),
            out_dir=report_dir,
            on_failure="reject",
            unexpected_values=options.unexpected_values,
        )
    except BaseException:
        if created and not any(report_dir.iterdir()):
            report_dir.rmdir()  # bad input writes nothing
        raise
    if as_json:
        click.echo((report_dir / "validation.json").read_text())
    n, failed = len(report.results), len(report.failures)
    verdict = "passed" if report.success else f"failed ({failed} of {n} expectations)"
    click.echo(f"{data}: {verdict}; report {report_dir / 'validation.html'}", err=as_json)
    sys.exit(0 if report.success else 3)


def _validate_window(
    recipe: str, deployment: str | None, since: str | None, last: int | None, as_json: bool, report_dir: Path | None
) -> None:
    """``crispml validate-data RECIPE --deployment NAME [--since 24h | --last N]``: the core's
    ``crispml.validate_data`` (any validate plugin), which records a run; exits with its code."""
    import json

    import crispml

    if report_dir is not None:
        raise UsageError("--report-dir: a deployment's window is validated in a run (its artifacts/validate/)")
    result = crispml.validate_data(recipe, deployment=deployment, since=since, last=last)
    click.echo(json.dumps(result.as_json(), indent=2) if as_json else result.line())
    sys.exit(result.exit_code)
