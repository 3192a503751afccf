"""The event log: every load, eviction, refusal, clean-up and settings change, with its time."""

from __future__ import annotations

from datetime import datetime

from rich.style import Style
from rich.text import Text
from textual.widgets import RichLog

from ...core.events import CacheEvent, EventKind

__all__ = ["EventLog", "LOGGED"]

LOGGED = frozenset(EventKind) - {EventKind.MEMORY, EventKind.USED, EventKind.RELEASED}
"""Memory readings go to the gauge, uses and finished requests to the table; everything else
is logged."""

_SEVERITY = {
    EventKind.LOAD_FAILED: "error", EventKind.REFUSED: "error", EventKind.EVICTED: "warning",
    EventKind.EVICTION_DEFERRED: "warning", EventKind.CLEANUP: "warning",
    EventKind.LOADED: "success", EventKind.PRELOAD: "success",
}
_LABEL = {
    EventKind.LOAD_QUEUED: "queued", EventKind.LOAD_STARTED: "loading", EventKind.LOADED: "loaded",
    EventKind.LOAD_FAILED: "failed", EventKind.REFUSED: "refused", EventKind.EVICTED: "evicted",
    EventKind.EVICTION_DEFERRED: "deferred", EventKind.CLEANUP: "clean-up",
    EventKind.PINNED: "pinned", EventKind.UNPINNED: "unpinned", EventKind.PRELOAD: "preload",
    EventKind.SETTINGS: "settings",
}


class EventLog(RichLog):
    """Appends one line per event it is given; keeps the last 1000."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, max_lines=1000, min_width=20, wrap=True, markup=False,
                         highlight=False)
        self.border_title = "Events"
        self.lines_written: list[str] = []  # plain text, for people reading tests

    def _colour(self, severity: str | None) -> Style:
        theme = self.app.current_theme
        colour = {"error": theme.error, "warning": theme.warning, "success": theme.success}.get(
            severity or "")
        return Style(color=colour) if colour else Style()

    def add(self, event: CacheEvent) -> None:
        """Log a cache event (the caller filters with :data:`LOGGED`)."""
        severity = _SEVERITY.get(event.kind)
        if event.kind is EventKind.SETTINGS and event.data.get("error"):
            severity = "error"
        elif event.kind is EventKind.PRELOAD and not event.data.get("ok", True):
            severity = "warning"
        self.add_line(_LABEL.get(event.kind, event.kind.value), event.message, event.at, severity)

    def add_line(self, label: str, message: str, at: float, severity: str | None = None) -> None:
        stamp = datetime.fromtimestamp(at).strftime("%H:%M:%S")
        line = Text.assemble((stamp + " ", "dim"), (f"{label:<8} ", self._colour(severity) + Style(bold=True)),
                             message)
        self.lines_written.append(line.plain)
        del self.lines_written[:-1000]
        self.write(line)
