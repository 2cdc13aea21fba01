"""The validation report: ``validation.json``, ``validation.html`` and the terminal table."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from crispml import atomic_write_bytes

JSON_NAME = "validation.json"
HTML_NAME = "validation.html"


def write(summary: dict[str, Any], out_dir: Path) -> list[str]:
    """Write the JSON and HTML reports into ``out_dir``; return their file names."""
    atomic_write_bytes(out_dir / JSON_NAME, json.dumps(summary, indent=2, default=str).encode())
    atomic_write_bytes(out_dir / HTML_NAME, render_html(summary).encode())
    return [JSON_NAME, HTML_NAME]


def _values(record: dict[str, Any]) -> str:
    values = record.get("unexpected_values") or []
    notes = ("missing column ", "unexpected column ")
    return ", ".join(repr(v) if isinstance(v, str) and not v.startswith(notes) else str(v) for v in values)


def _count(record: dict[str, Any]) -> str:
    if record.get("unexpected_count") is None:
        return ""
    percent = record.get("unexpected_percent")
    if percent is None:  # no rows to take a percentage of
        return str(record["unexpected_count"])
    return f"{record['unexpected_count']} ({percent:.4g}%)"


def _detail(record: dict[str, Any]) -> str:
    if record.get("error"):
        return str(record["error"])
    observed = record.get("observed_value")
    if observed is not None and not record.get("unexpected_values"):
        return f"observed {observed}"
    return _values(record)


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem;color:#222}
h1{font-size:1.4rem} .ok{color:#1a7f37} .bad{color:#c62828}
table{border-collapse:collapse;width:100%;font-size:.9rem}
th,td{border-bottom:1px solid #ddd;padding:.35rem .5rem;text-align:left;vertical-align:top}
th{background:#f5f5f5} tr.failed td{background:#fff4f4} code{font-size:.85rem}
.meta{color:#555}
"""


def render_html(summary: dict[str, Any]) -> str:
    """A self-contained page: outcome, statistics, then every expectation (failures first)."""
    esc = html.escape
    stats = summary["statistics"]
    verdict = '<span class="ok">passed</span>' if summary["success"] else '<span class="bad">failed</span>'
    rows = []
    ordered = sorted(summary["results"], key=lambda r: r["success"])
    for r in ordered:
        args = {k: v for k, v in (r.get("kwargs") or {}).items() if k not in ("column",)}
        rows.append(
            f'<tr class="{"passed" if r["success"] else "failed"}">'
            f"<td>{'✓' if r['success'] else '✗'}</td>"
            f"<td><code>{esc(r['expectation'])}</code></td>"
            f"<td>{esc(str(r.get('column') or ''))}</td>"
            f"<td><code>{esc(json.dumps(args, default=str))}</code></td>"
            f"<td>{esc(_count(r))}</td>"
            f"<td>{esc(_detail(r))}</td></tr>"
        )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Validation {esc(summary["suite"])}: {"passed" if summary["success"] else "failed"}</title>
<style>{_CSS}</style></head><body>
<h1>Validation of {esc(str(summary["data"]))} against suite {esc(summary["suite"])}: {verdict}</h1>
<p class="meta">{summary["rows"]} rows × {summary["columns"]} columns ·
{stats["expectations"]} expectations, {stats["failed"]} failed
({stats["success_percent"]:.4g}% passed) · on failure: {esc(summary["on_failure"])}</p>
<table><thead><tr><th></th><th>expectation</th><th>column</th><th>arguments</th>
<th>unexpected</th><th>unexpected values / observed</th></tr></thead>
<tbody>
{chr(10).join(rows)}
</tbody></table></body></html>
"""


def print_failures(summary: dict[str, Any], limit: int = 10) -> None:
    """A short table of the failed expectations, on stderr."""
    from rich.console import Console
    from rich.table import Table

    failed = [r for r in summary["results"] if not r["success"]]
    if not failed:
        return
    stats = summary["statistics"]
    table = Table(
        title=f"validation failed: {stats['failed']} of {stats['expectations']} expectations "
        f"(suite {summary['suite']})",
        title_justify="left",
        box=None,
        pad_edge=False,
    )
    for column in ("expectation", "column", "unexpected", "values / observed"):
        table.add_column(column, overflow="fold")
    for r in failed[:limit]:
        detail = _detail(r)
        table.add_row(
            r["expectation"].removeprefix("expect_"),
            str(r.get("column") or ""),
            _count(r),
            detail if len(detail) <= 80 else detail[:77] + "…",
        )
    console = Console(stderr=True, highlight=False)
    console.print(table)
    if len(failed) > limit:
        console.print(f"… and {len(failed) - limit} more (see {HTML_NAME})")
