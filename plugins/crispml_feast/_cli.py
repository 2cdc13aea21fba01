"""``crispml features RECIPE`` and ``crispml materialize RECIPE``.

Both read the recipe's feast ``load`` step (checked like ``crispml check`` does) and open its
store in the current project, applying the definitions first if they changed. Feast is imported
in the command bodies: ``crispml --help`` builds these commands without it.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import click


def _load_options(recipe: str) -> Any:
    from crispml import UsageError, check

    resolved = check(recipe)
    step = resolved.step("load")
    if step is None or step.plugin != "feast":
        raise UsageError(f"{recipe}: its load step does not use feast (load: {{use: feast, ...}})")
    return step.options


def _time(value: str | None, option: str) -> datetime | None:
    from crispml import UsageError

    if value is None:
        return None
    if value == "now":
        return datetime.now(UTC)
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"{option} {value!r}: expected 'now' or an ISO 8601 time (2026-01-31T12:00:00Z)") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _seconds(ttl: timedelta | None) -> float | None:
    return None if ttl is None else ttl.total_seconds()


def describe(store: Any) -> dict[str, Any]:
    """Services and views of a store's registry, as JSON-able rows."""
    from crispml_feast._store import quiet

    with quiet():
        services = sorted(store.list_feature_services(), key=lambda s: s.name)
        views = sorted(store.list_feature_views(), key=lambda v: v.name)
    return {
        "project": store.project,
        "services": [
            {
                "name": s.name,
                "features": [f"{p.name_to_use()}:{f.name}" for p in s.feature_view_projections for f in p.features],
            }
            for s in services
        ],
        "views": [
            {
                "name": v.name,
                "entities": [e for e in v.entities if e != "__dummy"],
                "features": [f.name for f in v.features],
                "ttl_seconds": _seconds(v.ttl) if v.ttl else None,
                "last_materialized": v.most_recent_end_time.isoformat() if v.most_recent_end_time else None,
                "intervals": len(v.materialization_intervals),
            }
            for v in views
        ],
    }


@click.command()
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def features(recipe: str, as_json: bool) -> None:
    """Feature services and views of RECIPE's Feast repository (feast): TTL, last materialized."""
    from crispml import find_project
    from crispml_feast._materialize import open_for

    options = _load_options(recipe)
    store, _ = open_for(options, find_project())
    info = describe(store)
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    services = Table(box=None, pad_edge=False, title=f"feature services ({info['project']})", title_justify="left")
    services.add_column("service")
    services.add_column("features")
    for s in info["services"]:
        services.add_row(s["name"], ", ".join(s["features"]))
    console.print(services)
    views = Table(box=None, pad_edge=False, title="feature views", title_justify="left")
    for column in ("view", "entities", "features", "ttl", "last materialized"):
        views.add_column(column)
    for v in info["views"]:
        ttl = "none" if v["ttl_seconds"] is None else str(timedelta(seconds=v["ttl_seconds"]))
        views.add_row(
            v["name"], ", ".join(v["entities"]), ", ".join(v["features"]), ttl, v["last_materialized"] or "never"
        )
    console.print(views)


@click.command()
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.option("--start", default=None, metavar="TIME", help="Start (ISO 8601); default: where each view stopped.")
@click.option("--end", default="now", show_default=True, metavar="TIME", help="End: 'now' or ISO 8601.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def materialize(recipe: str, start: str | None, end: str, as_json: bool) -> None:
    """Load RECIPE's feature service into the online store, incrementally (feast)."""
    from crispml import find_project
    from crispml_feast._materialize import materialize as run_materialize
    from crispml_feast._materialize import open_for

    begin, finish = _time(start, "--start"), _time(end, "--end")
    assert finish is not None
    if begin is not None and begin >= finish:
        from crispml import UsageError

        raise UsageError(f"--start {start} is not before --end {end}")
    options = _load_options(recipe)
    store, _ = open_for(options, find_project())
    done = run_materialize(store, options.feature_service, end=finish, start=begin)
    if as_json:
        click.echo(json.dumps([i.as_json() for i in done], indent=2))
        return
    for interval in done:
        click.echo(interval.line())
    if not done:
        click.echo(f"{options.feature_service} reads no feature view to materialize")
