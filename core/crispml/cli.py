"""The ``crispml`` command line.

Start-up is kept cheap: this module imports click alone; each command imports what it needs
when it runs, and plugins' own commands (``crispml_register_commands``) are added only when the
command asked for is not a core one, or when ``--help`` lists them all.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from crispml._version import __version__
from crispml.errors import EXIT_USAGE, MESSAGE_LIMIT, CrispmlError, ExitCode, clip, one_line
from crispml.tables import console as _console
from crispml.tables import print_json as _print_json
from crispml.tables import print_rows

_CORE_COMMANDS: tuple[str, ...] = ("plugins", "run", "check", "runs", "show", "resume", "run-stage", "recipes", "init")
_CORE_COMMANDS += ("monitor", "reproduce")


class _Group(click.Group):
    """A group that asks plugins for their commands only when it has to."""

    _plugins_added = False

    def _add_plugin_commands(self) -> None:
        if self._plugins_added:
            return
        self._plugins_added = True
        from crispml._session import Session, set_session

        session = Session()
        set_session(session)  # commands run in this process: crispml.session() is this one
        session.hook.crispml_register_commands(cli=self, session=session)

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._add_plugin_commands()
        return super().list_commands(ctx)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in _CORE_COMMANDS:
            self._add_plugin_commands()
        return super().get_command(ctx, cmd_name)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="crispml")
def cli() -> None:
    """crispml: ML lifecycle recipes with quality gates, on real backends.

    Exit codes (crispml.ExitCode): 0 succeeded, 1 failed, 2 usage or recipe error, 3 rejected
    by a gate.
    """


# -- plugins -------------------------------------------------------------------------------


@cli.command()
@click.argument("recipe", required=False, type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def plugins(recipe: str | None, as_json: bool) -> None:
    """List installed plugins: version, source, stages, hooks, backend status.

    With RECIPE, also the modules it names under `plugins:` (source: recipe).
    """
    from crispml.plugins import get_plugins

    loaded = get_plugins()
    if recipe is not None:
        from crispml.runs import check as check_recipe

        check_recipe(recipe, plugins=loaded)
    infos = loaded.describe()

    def provides(info: Any) -> str:
        decl = info.declaration
        if info.error or decl is None:
            return ""
        roles = (["tracker"] if decl.tracker else []) + (["runner"] if decl.runner else [])
        return ", ".join(sorted(decl.stages) + roles)

    def backend(info: Any) -> str:
        if info.error:
            return f"[red]failed to load: {info.error}[/]"
        cells = []
        for b in info.declaration.backends if info.declaration else ():
            version = b.version()
            cells.append(
                f"{b.distribution} {version}" if b.installed() and version else f"[red]missing: {b.install_hint()}[/]"
            )
        return ", ".join(cells) or "-"

    print_rows(
        infos,
        {
            "plugin": lambda i: i.name,
            "version": lambda i: i.version or "",
            "source": lambda i: i.source,
            "provides": provides,
            "hooks": lambda i: "" if i.error else ", ".join(h.removeprefix("crispml_") for h in i.hooks),
            "backend": backend,
        },
        as_json=as_json,
        json_value=[i.as_json() for i in infos],
    )


# -- run, check, resume ----------------------------------------------------------------------


def _finish(result: Any) -> None:
    sys.exit(result.exit_code)


def _reporter() -> Any:
    from crispml._console import ConsoleReporter
    from crispml.plugins import get_plugins

    plugins = get_plugins()
    plugins.register(ConsoleReporter(), "console", source="builtin")
    return plugins


@cli.command()
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a recipe field, e.g. train.params.C=0.5 (repeatable).",
)
@click.option("--no-cache", is_flag=True, help="Run every stage, reusing no stored result.")
def run(recipe: str, overrides: tuple[str, ...], no_cache: bool) -> None:
    """Check RECIPE against the installed plugins, then run it."""
    from crispml.runs import run as run_recipe

    _finish(run_recipe(recipe, overrides=list(overrides), use_cache=not no_cache, plugins=_reporter()))


@cli.command()
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a recipe field.")
def check(recipe: str, overrides: tuple[str, ...]) -> None:
    """Validate RECIPE (fields, plugins, options, gates) without running anything."""
    from crispml.runs import check as check_recipe

    resolved = check_recipe(recipe, overrides=list(overrides))
    steps = ", ".join(
        f"{s.stage} ({s.plugin}" + (f", {len(s.candidates)} candidates" if s.candidates else "") + ")"
        for s in resolved.steps
    )
    click.echo(f"{recipe}: ok — {steps}; runner {resolved.runner}")


@cli.command()
@click.argument("run_id")
def resume(run_id: str) -> None:
    """Continue a failed or interrupted run from its first unfinished stage."""
    from crispml.runs import resume as resume_run

    _finish(resume_run(run_id, plugins=_reporter()))


@cli.command("run-stage")
@click.argument("run_id")
@click.argument("stage")
def run_stage(run_id: str, stage: str) -> None:
    """Run one STAGE of the started run RUN_ID in this process (for runners and workers).

    Prints the stage's status; exits 0 when it succeeded, was cached or skipped, 3 when a gate
    rejected it, 1 when it failed (it may be run again: a retry).
    """
    from crispml.runner_api import run_stage as run_one
    from crispml.runs import _EXIT
    from crispml.store import find_project

    status = run_one(find_project(), run_id, stage, plugins=_reporter())
    click.echo(status)
    sys.exit(_EXIT.get(status, 0))


@cli.command()
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.option("--since", metavar="DURATION", help="Window: the requests of the last 30m, 6h, 2d…")
@click.option("--last", type=int, metavar="N", help="Window: the last N predicted records.")
@click.option("--batch", metavar="FILE", help="Compare this file instead of the deployment's requests.")
@click.option("--no-retrain", is_flag=True, help="Report drift (exit 3) without retraining.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a recipe field.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def monitor(
    recipe: str,
    since: str | None,
    last: int | None,
    batch: str | None,
    no_retrain: bool,
    overrides: tuple[str, ...],
    as_json: bool,
) -> None:
    """Run RECIPE's monitor step alone: compare production data with what the served model was
    trained on; on drift, retrain as the step says.

    Exit codes: 0 no drift (or too little data to tell), 3 drift not retrained, with a retrain
    its run's code (0 new model served, 3 challenger rejected, 1 failed).
    """
    from crispml.monitoring import monitor as run_monitor

    result = run_monitor(
        recipe,
        since=since,
        last=last,
        batch=batch,
        no_retrain=no_retrain,
        overrides=list(overrides),
        retrain_plugins=_reporter(),
    )
    if as_json:
        _print_json(result.as_json())
    else:
        click.echo(result.line())
    sys.exit(result.exit_code)


@cli.command()
@click.argument("run_id")
@click.option(
    "--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Change the recorded recipe (e.g. split.seed=7)."
)
@click.option(
    "--tolerance",
    type=float,
    metavar="X",
    help="Allowed absolute difference per metric (default: 0 for a deterministic model, 0.01 otherwise).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for CI.")
def reproduce(run_id: str, overrides: tuple[str, ...], tolerance: float | None, as_json: bool) -> None:
    """Re-run the recorded run RUN_ID from its manifest and compare every metric.

    First names what changed since (data files, git commit, backend versions); never registers,
    deploys or monitors. Exit codes: 0 reproduced, 3 a metric differs, 2 cannot be reproduced
    here (what is missing is named), 1 the re-run failed.
    """
    from crispml.plugins import get_plugins
    from crispml.reproduce import reproduce as reproduce_run

    plugins = get_plugins() if as_json else _reporter()
    result = reproduce_run(run_id, overrides=list(overrides), tolerance=tolerance, plugins=plugins)
    if as_json:
        _print_json(result.as_json())
    else:
        _print_reproduction(result)
    sys.exit(result.exit_code)


def _print_reproduction(result: Any) -> None:
    for line in result.differences:
        click.echo(f"changed: {line}")
    if result.missing:
        for line in result.missing:
            click.echo(f"missing: {line}")
        click.echo(f"run {result.run_id} cannot be reproduced here")
        return
    if result.skipped:
        click.echo(f"skipped: {', '.join(result.skipped)} (a reproduction never registers, deploys or monitors)")
    if result.status == "failed":
        click.echo(f"run {result.run_id}: the reproduction {result.new_run_id} failed: {result.error}")
        return
    print_rows(
        result.metrics,
        {
            "stage": lambda m: m.stage,
            "metric": lambda m: m.metric,
            "recorded": lambda m: f"{m.recorded:.6g}",
            "reproduced": lambda m: "-" if m.reproduced is None else f"{m.reproduced:.6g}",
            "same": lambda m: ("yes" if m.reproduced == m.recorded else "within") if m.same else "[red]differs[/]",
        },
    )
    click.echo(f"tolerance {result.tolerance:g}: {result.tolerance_reason}")
    verdict = "reproduced" if result.status == "reproduced" else "differs"
    click.echo(f"run {result.run_id}: {verdict} (reproduction run {result.new_run_id})")


# -- runs, show ----------------------------------------------------------------------------


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.option("--limit", default=20, show_default=True, help="How many runs, newest first.")
def runs(as_json: bool, limit: int) -> None:
    """List runs in this project's run store, newest first."""
    from crispml.runs import run_state
    from crispml.store import RunStore, find_project

    manifests = RunStore(find_project()).list_runs()[:limit]
    rows: list[dict[str, Any]] = [
        {
            "run_id": m.run_id,
            "recipe": m.recipe_name,
            "kind": m.kind,
            "status": run_state(m),
            "started": m.started,
            "duration": m.duration,
            "data": m.data.get("fingerprint"),
            "commit": (m.environment.get("git") or {}).get("commit"),
            "stages": m.stage_status,
        }
        for m in manifests
    ]
    marks = {"succeeded": "✓", "cached": "↺", "rejected": "✗", "failed": "!", "skipped": "-"}
    print_rows(
        rows,
        {
            "run": "run_id",
            "recipe": "recipe",
            "status": "status",
            "started": lambda r: r["started"][:19].replace("T", " "),
            "time": lambda r: f"{r['duration']:.2f}s" if r["duration"] is not None else "",
            "data": lambda r: (r["data"] or "")[:12],
            "stages": lambda r: " ".join(f"{k}{marks.get(v, '?')}" for k, v in r["stages"].items()),
        },
        as_json=as_json,
        empty="no runs yet (crispml run RECIPE)",
        caption="✓ succeeded  ↺ cached  ✗ rejected  ! failed  - skipped",
        no_wrap=("run", "status", "started"),
    )


@cli.command()
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="Print the run's manifest as JSON.")
def show(run_id: str, as_json: bool) -> None:
    """Show one run: outcome, stages, data, versions."""
    from crispml._redact import Redactor
    from crispml.candidates import describe
    from crispml.runs import run_state
    from crispml.store import RunStore, find_project

    # Manifests are written redacted; this also covers ones written before secrets were declared
    # (URL passwords).
    manifest = Redactor().manifest(RunStore(find_project()).read_manifest(run_id))
    if as_json:
        _print_json(manifest.to_dict())
        return
    from rich.table import Table

    console = _console()
    env = manifest.environment
    git = env.get("git") or {}
    console.print(f"[bold]{manifest.run_id}[/]  recipe {manifest.recipe_name}  status [bold]{run_state(manifest)}[/]")
    if manifest.kind:  # not a lifecycle run: a monitor or validate-data run
        window = manifest.window
        served = f"  deployment {window.deployment} ({window.model or 'version unknown'})" if window else ""
        console.print(f"kind: {manifest.kind}{served}")
    if manifest.rejection:
        console.print(f"rejected: {manifest.rejection}")
    if manifest.error:
        console.print(f"error: {manifest.error}")
    data = manifest.data
    if data:
        console.print(f"data: {data.get('source')}  fingerprint {data.get('fingerprint')}  {data.get('rows')} rows")
    for system, ident in manifest.links.items():
        console.print(f"{system}: {ident}")
    dirty = " (dirty)" if git.get("dirty") else ""
    console.print(f"crispml {env.get('crispml')}  python {env.get('python')}  git {git.get('commit') or '-'}{dirty}")
    table = Table(box=None, pad_edge=False)
    for column in ("stage", "plugin", "status", "time", "summary"):
        table.add_column(column)
    for s in manifest.stages:
        summary = s.summary or {}
        brief = ", ".join(f"{k}={v:.4g}" for k, v in (summary.get("metrics") or {}).items())
        if s.reasons:
            brief = "; ".join(s.reasons)
        if s.error:
            brief = s.error
        if len(s.attempts) > 1:
            brief = f"(attempt {len(s.attempts)}) {brief}"
        table.add_row(s.name, s.plugin, s.status, f"{s.duration:.2f}s" if s.duration is not None else "", brief)
        for c in s.candidates or []:
            scores = c.error or ", ".join(f"{k}={v:.4g}" for k, v in c.metrics.items())
            won = "  ← selected" if c.index == s.selected else ""
            took = f"{c.duration:.2f}s" if c.duration is not None else ""
            what = describe(c.overrides)
            table.add_row(f"  {s.name}-{c.index}", "", c.status, took, f"{what}: {scores}{won}")
    console.print(table)


@cli.command()
def recipes() -> None:
    """List the ready-made recipes that `crispml init` can copy."""
    from crispml.templates import list_recipes

    for name, description in list_recipes():
        click.echo(f"{name:<28} {description}")


@cli.command()
@click.argument("recipe")
@click.argument("folder", type=click.Path(file_okay=False), default=".")
def init(recipe: str, folder: str) -> None:
    """Copy the ready-made RECIPE (see `crispml recipes`) into FOLDER."""
    from pathlib import Path

    from crispml.templates import init_recipe

    path = init_recipe(recipe, Path(folder))
    click.echo(f"wrote {path}; run it with: crispml run {path}")


def main(argv: list[str] | None = None) -> None:
    """Entry point: a user's mistake prints one line and exits 2 — never a traceback."""
    try:
        cli.main(args=argv, prog_name="crispml", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except CrispmlError as exc:
        from crispml._redact import mask_urls

        click.echo(f"crispml: error: {clip(mask_urls(' '.join(str(exc).split())), MESSAGE_LIMIT + 200)}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        # A backend failing inside a command (a plugin's, typically): one line, exit 1. Runs
        # never get here (a failing stage is an outcome, recorded in the run store).
        if os.environ.get("CRISPML_DEBUG"):
            raise
        from crispml._redact import mask_urls

        message = one_line(mask_urls(" ".join(str(exc).split())) or type(exc).__name__)
        click.echo(f"crispml: error: {type(exc).__name__}: {message} (CRISPML_DEBUG=1 shows the traceback)", err=True)
        sys.exit(ExitCode.FAILED)
    sys.exit(ExitCode.SUCCEEDED)


if __name__ == "__main__":
    main()


__all__ = ["EXIT_USAGE", "cli", "main"]
