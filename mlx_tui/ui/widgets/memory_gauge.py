"""The memory gauge: system memory in use against the warning and emergency thresholds.

Four lines::

    ▕████████████████░░░░░░░░░░░░░┃░░░░░░░┃░▏  52% normal     8.3/16.0 GB
                   warning 85% ━┛        ┗━ emergency 98%
    MLX active 1.2 GB · cache 300.0 MB · peak 2.0 GB · swap 0.0/2.0 GB · pressure normal
    history ▄▄▅▅▆▇▼▃▃▄   ▼ clean-up

The gauge keeps the *rounded* figures it shows and repaints only when they change, so an idle
app writes nothing to the terminal. The history is a list of changes (one column per change of
the rounded percentage, one ``▼`` per clean-up), not a time axis, for the same reason.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from rich.style import Style
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widget import Widget

from ...core.memory import MemorySnapshot
from ...core.units import format_bytes
from ..format import gigabytes

__all__ = ["MemoryGauge", "GaugeFigures", "zone_of"]

SPARK = "▁▂▃▄▅▆▇█"
HISTORY = 512


def zone_of(fraction: float, warning: float, emergency: float) -> str:
    """``normal``, ``warning`` or ``emergency``: which side of the thresholds ``fraction`` is."""
    if fraction >= emergency:
        return "emergency"
    if fraction >= warning:
        return "warning"
    return "normal"


@dataclass(frozen=True)
class GaugeFigures:
    """What the gauge shows, rounded: two snapshots with equal figures look the same."""

    percent: int
    zone: str
    used: str
    total: str
    mlx_active: str
    mlx_cache: str
    mlx_peak: str
    swap: str
    pressure: str | None

    @classmethod
    def of(cls, snap: MemorySnapshot, warning: float, emergency: float) -> "GaugeFigures":
        swap = (f"swap {gigabytes(snap.swap_used_bytes)}/{gigabytes(snap.swap_total_bytes)} GB"
                if snap.swap_total_bytes else "no swap")
        return cls(
            percent=int(round(snap.used_fraction * 100)),
            zone=zone_of(snap.used_fraction, warning, emergency),
            used=gigabytes(snap.used_bytes),
            total=gigabytes(snap.total_bytes),
            mlx_active=format_bytes(snap.mlx_active_bytes),
            mlx_cache=format_bytes(snap.mlx_cache_bytes),
            mlx_peak=format_bytes(snap.mlx_peak_bytes),
            swap=swap,
            pressure=snap.pressure_name,
        )


@dataclass(frozen=True)
class _Entry:
    percent: int
    cleanup: str | None = None  # "normal" or "emergency" for a clean-up mark


class _Line(Widget):
    """One line of the gauge, drawn by the gauge; repainted only when its own text changes."""

    DEFAULT_CSS = "_Line { height: 1; width: 1fr; }"

    def __init__(self, gauge: "MemoryGauge", index: int) -> None:
        super().__init__()
        self._gauge = gauge
        self._index = index

    def render(self) -> Text:
        return self._gauge.line(self._index)


class MemoryGauge(Vertical):
    """Renders memory snapshots and thresholds it is given; owns only what it displays.

    The app calls :meth:`show_snapshot`, :meth:`set_thresholds` and :meth:`mark_cleanup` on the
    event loop; each redraws only when the picture changed, and then repaints only the lines
    that differ (a new figure repaints one line, not the panel and its border).
    """

    COMPONENT_CLASSES = {
        "memory-gauge--normal",
        "memory-gauge--warning",
        "memory-gauge--emergency",
        "memory-gauge--track",
        "memory-gauge--marker",
        "memory-gauge--muted",
    }

    DEFAULT_CSS = """
    MemoryGauge {
        height: 6;
        border: round $primary 60%;
        border-title-color: $primary;
        border-subtitle-color: $text-muted;
        padding: 0 1;
    }
    MemoryGauge > .memory-gauge--normal { color: $success; }
    MemoryGauge > .memory-gauge--warning { color: $warning; }
    MemoryGauge > .memory-gauge--emergency { color: $error; }
    MemoryGauge > .memory-gauge--track { color: $foreground 35%; }
    MemoryGauge > .memory-gauge--marker { color: $foreground; text-style: bold; }
    MemoryGauge > .memory-gauge--muted { color: $text-muted; }
    """

    def __init__(self, warning: float, emergency: float, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.border_title = "Memory"
        self._warning = warning
        self._emergency = emergency
        self._snapshot: MemorySnapshot | None = None
        self._figures: GaugeFigures | None = None
        self._history: deque[_Entry] = deque(maxlen=HISTORY)
        self._drawn: tuple[int, list[Text]] | None = None  # (width, lines) last drawn

    def compose(self) -> ComposeResult:
        for index in range(4):
            yield _Line(self, index)

    def on_mount(self) -> None:
        # Colours come from the theme: draw again once the new theme's styles are in place.
        self.app.theme_changed_signal.subscribe(
            self, lambda _theme: self.call_after_refresh(self.redraw))

    # -- what the app tells it ---------------------------------------------------------------------
    @property
    def thresholds(self) -> tuple[float, float]:
        return self._warning, self._emergency

    @property
    def figures(self) -> GaugeFigures | None:
        return self._figures

    def show_snapshot(self, snap: MemorySnapshot) -> bool:
        """Show a new reading; repaints only when the rounded figures differ from the last."""
        self._snapshot = snap
        figures = GaugeFigures.of(snap, self._warning, self._emergency)
        if figures == self._figures:
            return False
        if self._figures is None or figures.percent != self._figures.percent:
            self._history.append(_Entry(figures.percent))
        self._figures = figures
        self.redraw()
        return True

    def set_thresholds(self, warning: float, emergency: float) -> bool:
        """Move the markers (and recolour the zones) at once."""
        if (warning, emergency) == (self._warning, self._emergency):
            return False
        self._warning, self._emergency = warning, emergency
        if self._snapshot is not None:
            self._figures = GaugeFigures.of(self._snapshot, warning, emergency)
        self.redraw()
        return True

    def mark_cleanup(self, level: str) -> None:
        """Put a clean-up mark (``normal`` or ``emergency``) in the history."""
        percent = self._figures.percent if self._figures else 0
        self._history.append(_Entry(percent, cleanup=level))
        self.redraw()

    # -- drawing -----------------------------------------------------------------------------------
    def _style(self, name: str) -> Style:
        style = self.get_component_rich_style(f"memory-gauge--{name}")
        return Style(color=style.color, bold=style.bold)

    def _zone_style(self, fraction: float) -> Style:
        return self._style(zone_of(fraction, self._warning, self._emergency))

    def _marker_columns(self, bar_width: int) -> tuple[int, int]:
        warn = min(bar_width - 1, int(self._warning * bar_width))
        emerg = min(bar_width - 1, int(self._emergency * bar_width))
        if emerg <= warn:  # close thresholds on a narrow bar: keep both markers visible
            emerg = min(bar_width - 1, warn + 1)
            warn = emerg - 1
        return warn, emerg

    def _bar_line(self, width: int) -> tuple[Text, int]:
        figures = self._figures
        assert figures is not None
        zone_word = {"normal": "normal", "warning": "WARNING", "emergency": "EMERGENCY"}[figures.zone]
        right = Text.assemble(
            (f" {figures.percent:>3}% ", self._style(figures.zone) + Style(bold=True)),
            (f"{zone_word:<9}", self._style(figures.zone)),
            f"  {figures.used}/{figures.total} GB",
        )
        bar_width = max(10, width - right.cell_len - 2)
        warn_col, emerg_col = self._marker_columns(bar_width)
        filled = round(figures.percent / 100 * bar_width)
        fill_style = self._style(figures.zone)
        def cell(col: int) -> tuple[str, Style]:
            if col in (warn_col, emerg_col):
                style = self._style("marker")
                return "┃", style + Style(bgcolor=fill_style.color) if col < filled else style
            if col < filled:
                return "█", fill_style
            if col < warn_col:
                return "░", self._style("track")
            return "░", self._style("warning" if col < emerg_col else "emergency") + Style(dim=True)

        bar = Text()
        bar.append("▕", self._style("muted"))
        _append_runs(bar, [cell(col) for col in range(bar_width)])
        bar.append("▏", self._style("muted"))
        bar.append_text(right)
        return bar, bar_width

    def _label_line(self, width: int, bar_width: int) -> Text:
        """Threshold labels under the markers: ``warning 85% ━┛`` and ``┗━ emergency 98%``."""
        warn_col, emerg_col = (c + 1 for c in self._marker_columns(bar_width))  # +1: the ▕
        warn_text = f"warning {self._warning:.0%}"
        emerg_text = f"emergency {self._emergency:.0%}"
        line = [" "] * width
        styles: list[Style | None] = [None] * width

        def put(start: int, text: str, style: Style) -> None:
            for i, ch in enumerate(text):
                if 0 <= start + i < width:
                    line[start + i] = ch
                    styles[start + i] = style

        warn_style, emerg_style = self._style("warning"), self._style("emergency")
        left_warn = f"{warn_text} ━┛"
        if warn_col - len(left_warn) + 1 >= 0:
            put(warn_col - len(left_warn) + 1, left_warn, warn_style)
            warn_end = warn_col
        else:
            put(warn_col, f"┗━ {warn_text}", warn_style)
            warn_end = warn_col + len(warn_text) + 3
        right_emerg = f"┗━ {emerg_text}"
        if emerg_col > warn_end + 1 and emerg_col + len(right_emerg) <= width:
            put(emerg_col, right_emerg, emerg_style)
        else:  # no room beside the marker: a tick under it and the label after the warning's
            put(emerg_col, "┃", emerg_style)
            put(max(warn_end + 2, emerg_col + 2), emerg_text, emerg_style)
        text = Text()
        _append_runs(text, list(zip(line, styles)))
        text.rstrip()
        return text

    def _figures_line(self, width: int) -> Text:
        """MLX, swap and pressure figures; without the peak on narrow terminals."""
        f = self._figures
        assert f is not None
        muted = self._style("muted")
        for compact in (False, True):
            parts: list[tuple[str, str]] = [("MLX ", f.mlx_active) if compact else
                                            ("MLX active ", f.mlx_active), (" · cache ", f.mlx_cache)]
            if not compact:
                parts.append((" · peak ", f.mlx_peak))
            parts.append((" · ", f.swap))
            if f.pressure is not None:
                parts.append((" · pressure ", f.pressure))
            text = Text()
            for label, value in parts:
                text.append(label, muted)
                text.append(value)
            if text.cell_len <= width:
                break
        return text

    def _history_line(self, width: int) -> Text:
        text = Text("history ", self._style("muted"))
        has_cleanup = any(e.cleanup for e in self._history)
        legend = Text("  ▼ clean-up", self._style("muted")) if has_cleanup else Text()
        room = max(0, width - text.cell_len - legend.cell_len)
        for entry in list(self._history)[-room:] if room else []:
            if entry.cleanup:
                text.append("▼", self._style("emergency" if entry.cleanup == "emergency" else "warning")
                            + Style(bold=True))
            else:
                level = max(0, min(len(SPARK) - 1, round(entry.percent / 100 * len(SPARK)) - 1))
                text.append(SPARK[level], self._zone_style(entry.percent / 100))
        text.append_text(legend)
        return text

    def lines(self) -> list[Text]:
        """The four lines for the current width."""
        width = max(20, self.content_size.width)
        if self._figures is None:
            return [Text("reading memory…", self._style("muted")), Text(), Text(), Text()]
        bar, bar_width = self._bar_line(width)
        lines = [bar, self._label_line(width, bar_width), self._figures_line(width), self._history_line(width)]
        for line in lines:
            line.truncate(width, overflow="ellipsis")
            line.no_wrap = True
        return lines

    def line(self, index: int) -> Text:
        """Line ``index`` at the current width (what a :class:`_Line` paints)."""
        width = self.content_size.width
        if self._drawn is None or self._drawn[0] != width:
            self._drawn = (width, self.lines())
        return self._drawn[1][index]

    def redraw(self) -> None:
        """The picture changed: repaint the lines whose text differs from what is shown."""
        if self._drawn is None:
            return  # nothing painted yet: the first paint draws everything
        width, before = self._drawn
        after = self.lines()
        self._drawn = (width, after)
        for widget, old, new in zip(self.query(_Line), before, after):
            if old != new:
                widget.refresh()

    def plain_lines(self) -> list[str]:
        """The gauge as plain text lines (what a person reads; used by tests)."""
        return [line.plain for line in self.lines()]


def _append_runs(text: Text, cells: list[tuple[str, Style | None]]) -> None:
    """Append cells, one span per run of equal style (fewer escape codes on the wire)."""
    run: list[str] = []
    style: Style | None = None
    for ch, cell_style in cells:
        if run and cell_style != style:
            text.append("".join(run), style)
            run = []
        run.append(ch)
        style = cell_style
    if run:
        text.append("".join(run), style)
