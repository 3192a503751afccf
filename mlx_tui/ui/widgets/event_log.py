"""The event log: every load, eviction, refusal, clean-up and settings change, with its time.

Also what happens to prompt caches (``prompt``: dropped from memory, saved to disk, read back
instead of a prefill, a damaged file deleted, a folder that cannot be written) and a Mac's
wired-memory advice (``wired``: a model larger than the GPU may wire, with the sysctl that
would fit it; another process wiring memory). Colours come from the stylesheet (component
classes), so the 16-colour themes draw them with their own ANSI colours.
"""

from __future__ import annotations

from datetime import datetime

from rich.style import Style
from rich.table import Table
from rich.text import Text
from textual import events
from textual.widgets import RichLog

from ...core.events import CacheEvent, EventKind

__all__ = ["EventLog", "LOGGED"]

LOGGED = frozenset(EventKind) - {EventKind.MEMORY, EventKind.USED, EventKind.RELEASED}
"""Memory readings go to the gauge, uses and finished requests to the table; everything else
is logged."""

HEAD_WIDTH = 18
"""``15:30:02 loaded   ``: the columns of the time and the label; wrapped lines start after them."""

_SEVERITY = {
    EventKind.LOAD_FAILED: "error", EventKind.REFUSED: "error", EventKind.EVICTED: "warning",
    EventKind.EVICTION_DEFERRED: "warning", EventKind.CLEANUP: "warning",
    EventKind.LOADED: "success", EventKind.PRELOAD: "success", EventKind.MEMORY_ADVICE: "warning",
    EventKind.PROMPT_CACHE: "info",
}
_LABEL = {
    EventKind.LOAD_QUEUED: "queued", EventKind.LOAD_STARTED: "loading", EventKind.LOADED: "loaded",
    EventKind.LOAD_FAILED: "failed", EventKind.REFUSED: "refused", EventKind.EVICTED: "evicted",
    EventKind.EVICTION_DEFERRED: "deferred", EventKind.CLEANUP: "clean-up",
    EventKind.PINNED: "pinned", EventKind.UNPINNED: "unpinned", EventKind.PRELOAD: "preload",
    EventKind.SETTINGS: "settings", EventKind.PROMPT_CACHE: "prompt",
    EventKind.MEMORY_ADVICE: "wired",
}
_PROMPT_CACHE_SEVERITY = {"restored": "success", "spilled": "info", "dropped": "info",
                          "discarded": "warning", "disk_failed": "error"}
"""A prompt cache's news (``data["what"]``): read back instead of a prefill is good news; a
file deleted (damaged, stale) is worth a look; a folder that cannot be written needs fixing."""
_EVICTION_SEVERITY = {"requested": None, "shutdown": None, "idle": None, "emergency": "error"}
"""An unload by ``data["cause"]``: asked for, at shutdown or after idling is no warning; one
forced by an emergency is an error's colour; the others (admission, clean-up) a warning's."""
SEVERITIES = ("error", "warning", "success", "info")
for _kind in EventKind:  # kinds added later get a short label of their own
    _LABEL.setdefault(_kind, _kind.value.split("_")[0][:8])


class EventLog(RichLog):
    """Appends one line per event it is given; keeps the last 1000."""

    COMPONENT_CLASSES = {f"event-log--{severity}" for severity in SEVERITIES}
    DEFAULT_CSS = """
    EventLog > .event-log--error { color: $error; }
    EventLog > .event-log--warning { color: $warning; }
    EventLog > .event-log--success { color: $success; }
    EventLog > .event-log--info { color: $primary; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, max_lines=1000, min_width=20, wrap=True, markup=False,
                         highlight=False)
        self.border_title = "Events"
        self.lines_written: list[str] = []  # plain text, for people reading tests
        self._entries: list[tuple[str, str, float, str | None]] = []
        self._wrapped_at = 0

    def on_resize(self, event: events.Resize) -> None:
        """Lines are wrapped when written: wrap them again for a new width."""
        width = self.scrollable_content_region.width
        if width != self._wrapped_at and self._entries:
            super().clear()
            for entry in self._entries:
                self._write(*entry)
        self._wrapped_at = width

    def _colour(self, severity: str | None) -> Style:
        # Through the stylesheet, not the theme's colour strings: a 16-colour theme names its
        # colours "ansi_red", which Textual resolves and Rich does not.
        if severity not in SEVERITIES:
            return Style()
        return Style(color=self.get_component_rich_style(f"event-log--{severity}").color)

    def clear(self) -> "EventLog":
        """Forget every line."""
        self._entries.clear()
        self.lines_written.clear()
        super().clear()
        return self

    def add(self, event: CacheEvent, message: str | None = None) -> None:
        """Log a cache event (the caller filters with :data:`LOGGED`), with ``message`` instead
        of the event's own when given."""
        severity = _SEVERITY.get(event.kind)
        if event.kind is EventKind.SETTINGS and event.data.get("error"):
            severity = "error"
        elif event.kind is EventKind.PRELOAD and not event.data.get("ok", True):
            severity = "warning"
        elif event.kind is EventKind.PROMPT_CACHE:
            severity = _PROMPT_CACHE_SEVERITY.get(str(event.data.get("what")), "info")
        elif event.kind is EventKind.EVICTED:
            severity = _EVICTION_SEVERITY.get(str(event.data.get("cause")), "warning")
        self.add_line(_LABEL[event.kind], message or event.message, event.at, severity)

    def add_line(self, label: str, message: str, at: float, severity: str | None = None) -> None:
        """One line: the time, a label and the message; a long message wraps under itself."""
        self._entries.append((label, message, at, severity))
        del self._entries[:-1000]
        stamp = self._write(label, message, at, severity)
        self.lines_written.append(f"{stamp} {label:<8} {message}")
        del self.lines_written[:-1000]

    def _write(self, label: str, message: str, at: float, severity: str | None) -> str:
        stamp = datetime.fromtimestamp(at).strftime("%H:%M:%S")
        label_style = self._colour(severity) + Style(bold=True)
        head = Text.assemble((stamp + " ", "dim"), (f"{label:<8} ", label_style))
        grid = Table.grid()
        grid.add_column(width=HEAD_WIDTH, no_wrap=True)
        grid.add_column(overflow="fold")
        grid.add_row(head, Text(message))
        self.write(grid)
        return stamp
