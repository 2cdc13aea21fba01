"""Live progress on the terminal: an observer plugin the CLI registers (the API stays quiet)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from rich.console import Console

from crispml._markers import hookimpl
from crispml.errors import MESSAGE_LIMIT, clip

if TYPE_CHECKING:
    from crispml.context import RunContext
    from crispml.manifest import CandidateRecord
    from crispml.results import Result

_STYLE = {
    "succeeded": ("✓", "green"),
    "cached": ("↺", "cyan"),
    "rejected": ("✗", "yellow"),
    "failed": ("✗", "red"),
    "skipped": ("-", "dim"),
}


def _brief(result: Result) -> str:
    summary = result.summary()
    if result.metrics:
        return "  ".join(f"{k}={v:.4g}" for k, v in list(result.metrics.items())[:4])
    if "rows" in summary and "columns" in summary:
        return f"{summary['rows']} rows × {summary['columns']} columns"
    if "estimator" in summary:
        return str(summary["estimator"])
    return ""


class ConsoleReporter:
    """Prints one line per stage (name, plugin, status, time) and a spinner while it runs."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True, highlight=False)
        if console is None and not self.console.is_terminal and "COLUMNS" not in os.environ:
            self.console = Console(stderr=True, highlight=False, width=160)  # logs: no wrapping
        self._status: Any = None

    def _stop(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None

    def _line(self, stage: str, plugin: str, status: str, duration: float | None, note: str) -> None:
        mark, color = _STYLE.get(status, ("?", "white"))
        secs = f"{duration:6.2f}s" if duration is not None else "       "
        self.console.print(f"  [{color}]{mark}[/] {stage:<9} {plugin:<18} [{color}]{status:<9}[/] {secs}  {note}")

    @hookimpl
    def crispml_before_run(self, context: RunContext) -> None:
        resumed = " (resumed)" if context.resumed else ""
        self.console.print(f"[bold]crispml[/] run [bold]{context.recipe.name}[/]  {context.run_id}{resumed}")

    @hookimpl
    def crispml_before_stage(self, stage: str, plugin: str) -> None:
        if self.console.is_terminal:
            self._status = self.console.status(f"{stage} ({plugin}) running…")
            self._status.start()

    @hookimpl
    def crispml_after_stage(
        self, stage: str, plugin: str, status: str, result: Result, duration: float, context: RunContext
    ) -> None:
        self._stop()
        note = _brief(result)
        if status == "rejected" and result.rejection:
            note = result.rejection
        self._line(stage, plugin, status, duration, _said(context.redact(note)))

    @hookimpl
    def crispml_after_candidates(
        self, stage: str, plugin: str, candidates: list[CandidateRecord], selected: int | None, context: RunContext
    ) -> None:
        """One line per candidate, before the stage's own: what each scored, which one won."""
        from crispml.candidates import describe

        self._stop()
        for c in candidates:
            note = c.error or ", ".join(f"{k}={v:.4g}" for k, v in c.metrics.items())
            won = "  ← selected" if c.index == selected else ""
            label = f"{stage}-{c.index}"
            what = describe(c.overrides)
            self._line(label, "", c.status, c.duration, _said(context.redact(f"{what}: {note}{won}")))
        if self.console.is_terminal:
            self._status = self.console.status(f"{stage} ({plugin}) running…")
            self._status.start()

    @hookimpl
    def crispml_on_stage_error(self, stage: str, plugin: str, error: BaseException, context: RunContext) -> None:
        self._stop()
        self._line(stage, plugin, "failed", None, _said(context.redact(f"{type(error).__name__}: {error}")))

    @hookimpl
    def crispml_after_run(self, context: RunContext, status: str) -> None:
        self._stop()
        manifest = context.manifest()
        for record in manifest.stages:
            if record.status == "skipped":
                self._line(record.name, record.plugin, "skipped", None, "")
        _, color = _STYLE.get(status, ("", "white"))
        why = _said(context.redact(manifest.rejection or manifest.error or ""))
        self.console.print(
            f"[{color}]run {status}[/] in {manifest.duration or 0:.2f}s"
            + (f": {why}" if why else "")
            + f"  (.crispml/runs/{context.run_id})"
        )


def _said(text: str) -> str:
    """A message from a stage, printable on one line: whitespace folded, cut to a readable length
    (an exception may carry megabytes), rich markup escaped (``[red]`` in a message is text)."""
    from rich.markup import escape

    return escape(clip(" ".join(str(text).split()), MESSAGE_LIMIT))
