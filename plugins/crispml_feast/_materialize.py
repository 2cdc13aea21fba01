"""Materializing a feature service's views into the online store, incrementally.

Each view continues from the end of its last materialization (else from ``end - ttl``), as
``materialize_incremental`` does, but one view at a time so that each reports its interval,
the entity rows written and the seconds taken. A view with no ttl that was never materialized
has no start: it is named in the error (give ``--start``), before any view is materialized.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crispml import RunContext, UsageError
from crispml_feast._definitions import Definitions, load_definitions
from crispml_feast._store import check_reachable, open_store, quiet, store_spec

if TYPE_CHECKING:
    from crispml_feast import LoadOptions

log = logging.getLogger("crispml.feast")


@dataclass
class Interval:
    """What one view's materialization did."""

    view: str
    start: datetime
    end: datetime
    rows: int | None
    """Entity rows written (the latest row per entity in the interval); ``None`` if unknown."""
    seconds: float

    def as_json(self) -> dict[str, Any]:
        return {
            "view": self.view,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "rows": self.rows,
            "seconds": round(self.seconds, 3),
        }

    def line(self) -> str:
        rows = "?" if self.rows is None else str(self.rows)
        span = f"{self.start.isoformat(timespec='seconds')} → {self.end.isoformat(timespec='seconds')}"
        return f"{self.view}: {span}  {rows} rows  {self.seconds:.2f} s"


def as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def service_views(store: Any, service_name: str) -> list[Any]:
    """The registry's feature views that ``service_name`` reads (on-demand views have no
    rows of their own to materialize)."""
    with quiet():
        service = store.get_feature_service(service_name)
        names = [p.name for p in service.feature_view_projections]
        views = {v.name: v for v in store.list_feature_views()}
    return [views[n] for n in dict.fromkeys(names) if n in views]


def _start(view: Any, start: datetime | None, end: datetime) -> datetime:
    if start is not None:
        return start
    if view.most_recent_end_time is not None:
        return as_utc(view.most_recent_end_time)
    if view.ttl is not None and view.ttl > timedelta(0):
        return end - view.ttl
    raise UsageError(
        f"feature view '{view.name}' has no ttl and was never materialized, so it has no start: "
        "give --start, or a ttl in its definition"
    )


def _count(store: Any, view: Any, start: datetime, end: datetime) -> int | None:
    """The rows materializing ``view`` over [start, end) writes: the latest per entity."""
    try:
        from feast.infra.offline_stores.offline_utils import get_offline_store_from_config
        from feast.utils import _get_column_names

        with quiet():
            entities = [store.get_entity(name) for name in view.entities]
            keys, features, timestamp, created = _get_column_names(view, entities)
            offline = get_offline_store_from_config(store.config.offline_store)
            job = offline.pull_latest_from_table_or_query(
                config=store.config,
                data_source=view.batch_source,
                join_key_columns=keys,
                feature_name_columns=features,
                timestamp_field=timestamp,
                created_timestamp_column=created,
                start_date=start,
                end_date=end,
            )
            return int(job.to_arrow().num_rows)
    except Exception as exc:  # a count is a courtesy: never fail a materialization over it
        log.debug("feast: could not count rows of %s: %s", view.name, exc)
        return None


def materialize(store: Any, service_name: str, *, end: datetime, start: datetime | None = None) -> list[Interval]:
    """Materialize the views of ``service_name`` up to ``end``; one :class:`Interval` each."""
    end = as_utc(end)
    start = as_utc(start) if start is not None else None
    plan = [(view, _start(view, start, end)) for view in service_views(store, service_name)]
    done = []
    for view, begin in plan:
        t0 = time.perf_counter()
        if begin >= end:
            done.append(Interval(view.name, begin, end, 0, 0.0))
            continue
        rows = _count(store, view, begin, end)
        with quiet():
            store.materialize(begin, end, feature_views=[view.name])
        done.append(Interval(view.name, begin, end, rows, time.perf_counter() - t0))
    return done


def open_for(options: LoadOptions, project_dir: Path) -> tuple[Any, Definitions]:
    """The store a feast load step reads (definitions applied if they changed)."""
    definitions = load_definitions(options.repo)
    spec = store_spec(options.repo, project_dir, project=options.project, online_store=options.online_store)
    check_reachable(spec)
    return open_store(spec, definitions), definitions


def materialize_for_run(options: LoadOptions, context: RunContext) -> list[Interval]:
    """Before ``deploy``: materialize the recipe's feature service up to now, and log it."""
    store, _ = open_for(options, context.project_dir)
    done = materialize(store, options.feature_service, end=datetime.now(UTC))
    logger = context.logger("deploy")
    for interval in done:
        logger.info("feast materialize %s", interval.line())
    context.links["feast_materialized"] = [i.as_json() for i in done]
    return done
