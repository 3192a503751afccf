"""The memory gauge: the memory weights live in, in use, against the warning and emergency
thresholds.

Four lines::

    ▕████████████████░░░░░░░░░░░░░┃░░░░░░░┃░▏  52% normal      8.3/16.0 GB
                   warning 85% ━┛        ┗━ emergency 98%
    system memory · MLX 1.2 GB active + 300.0 MB pool · peak 2.0 GB · swap 0.0/2.0 GB
    history ▄▅▆▇▼▃▄   ▼ clean-up

The third line says which memory the bar measures and MLX's own figures beside it, per
machine (:func:`detail_pieces`): a Mac's unified memory with its wired memory and ceiling, a
GPU's device memory with system memory beside it, or system memory on the CPU. MLX's buffer
pool (``+ 300.0 MB pool``: memory MLX freed but keeps for reuse) is there so memory an unload
did not give back is seen.

Over SSH every byte written to the terminal counts, so the gauge writes as little as it can:

* It keeps the *rounded* figures it shows and repaints only when they change, so an idle app
  writes nothing.
* Each piece that changes on its own is its own widget: the bar, the percentage and zone, the
  ``used/total GB``, and each of the other lines. Textual repaints a widget's changed cells
  from the widget's left edge (it crops an update on the right only), so a new ``GB`` figure
  repaints ``  8.3`` and not the bar, a new percentage repaints `` 53`` and the bar only when
  its filled width (in cells) changes, and then only up to the changed cell.
* The history is a list of changes, not a time axis: a new column only when what it shows
  (its height and zone colour) differs from the newest column's, and new columns at most once
  per :data:`HISTORY_STEP` seconds, at the first reading after the step: the reading then, and
  before it the highest reading since the last column if that one looks different from both
  (so a short peak is not lost, only shown up to a step late). Each new column repaints the
  history line up to it (the whole line once it scrolls), so memory that moves all the time
  costs one such repaint per step at most, where one column per percentage change repainted
  the line every second; and memory flickering between two figures of the same height (6% and
  7%) adds nothing.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import Callable

from rich.cells import cell_len
from rich.style import Style
from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.geometry import Region
from textual.widget import Widget

from ...core.memory import MemorySnapshot
from ...core.planner import Thresholds
from ...core.units import format_bytes
from ..format import gigabytes

__all__ = ["MemoryGauge", "GaugeFigures", "zone_of", "memory_name", "detail_pieces", "DETAIL_STEPS"]

SPARK = "▁▂▃▄▅▆▇█"
HISTORY = 512
HISTORY_STEP = 5.0  # seconds: the newest history column's age before another may open
BAR_CHUNK = 10  # cells: the bar is drawn by pieces this wide (the last takes what is left) ...
BAR_CHUNKS = 12  # ... this many, so a new filled width repaints at most a piece
ZONE_WORDS = {"normal": "normal", "warning": "WARNING", "emergency": "EMERGENCY"}


def zone_of(fraction: float, warning: float, emergency: float) -> str:
    """``normal``, ``warning`` or ``emergency``: which side of the thresholds ``fraction`` is
    (the planner's :meth:`Thresholds.zone`, the one home of the zone words)."""
    return Thresholds(warning, emergency).zone(fraction)


@dataclass(frozen=True)
class GaugeFigures:
    """What the gauge shows, rounded: two snapshots with equal figures look the same.

    ``memory`` names the memory the bar measures (``unified memory``, ``NVIDIA H200 · GPU 0
    device memory (NVML)``, ``system memory``); the ``wired*`` figures are a Mac's, ``system``
    is system memory beside a GPU's (``2.5/125.0`` GB), None where they do not apply.
    """

    percent: int
    zone: str
    used: str
    total: str
    mlx_active: str
    mlx_cache: str
    mlx_peak: str
    swap: str
    pressure: str | None
    kind: str = "host"
    memory: str = "system memory"
    wired: str | None = None
    wired_ceiling: str | None = None
    wired_limit: str | None = None
    system: str | None = None

    @classmethod
    def of(cls, snap: MemorySnapshot, warning: float, emergency: float) -> "GaugeFigures":
        swap = (f"swap {gigabytes(snap.swap_used_bytes)}/{gigabytes(snap.swap_total_bytes)} GB"
                if snap.swap_total_bytes else "no swap")
        ceiling = snap.wired_ceiling_bytes if snap.kind == "unified" else None
        limit = snap.wired_limit_bytes if snap.kind == "unified" else None
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
            kind=snap.kind,
            memory=memory_name(snap),
            wired=format_bytes(snap.wired_bytes) if snap.kind == "unified" and snap.wired_bytes is not None
            else None,
            wired_ceiling=format_bytes(ceiling) if ceiling else None,
            wired_limit=None if limit is None else (
                "iogpu default" if limit == 0 else f"iogpu.wired_limit_mb={limit // 2**20}"),
            system=(f"{gigabytes(snap.system_used_bytes)}/{gigabytes(snap.system_total_bytes)}"
                    if snap.kind == "device" and snap.system_total_bytes else None),
        )


def memory_name(snap: MemorySnapshot) -> str:
    """Which memory the bar measures: ``unified memory`` (a Mac), the GPU and where its figure
    came from (``NVIDIA H200 · GPU 0 device memory (NVML)``), or ``system memory`` (the CPU)."""
    if snap.kind == "unified":
        return "unified memory"
    if snap.kind == "device":
        return f"{snap.device_name} · {snap.source}" if snap.device_name else snap.source
    return "system memory"


_Segment = tuple[str, bool]  # text, and whether it is a label (muted) or a figure


def detail_pieces(f: GaugeFigures) -> dict[str, tuple[list[_Segment], list[_Segment] | None]]:
    """The detail line's pieces in order, each with its full and (when it has one) short form:

    * a Mac: ``unified memory · MLX 10.2 GB active + 1.1 GB pool · wired 12.3 GB of 21.3 GB
      (iogpu default) · swap 0.5/2.0 GB · pressure normal``
    * a GPU: ``NVIDIA H200 · GPU 0 device memory (NVML) · MLX 22.9 GB active + 0 B pool ·
      system 2.5/125.0 GB``
    * the CPU: ``system memory · MLX 1.2 GB active + 100.0 MB pool · peak 2.0 GB ·
      swap 0.0/2.0 GB``
    """
    short_where = {"unified": "unified", "host": "system"}.get(f.kind, f.memory.split(" · ")[-1])
    pieces: dict[str, tuple[list[_Segment], list[_Segment] | None]] = {
        "where": ([(f.memory, False)], [(short_where, False)] if short_where != f.memory else None),
        "mlx": ([("MLX ", True), (f.mlx_active, False), (" active + ", True), (f.mlx_cache, False),
                 (" pool", True)],
                [("MLX ", True), (f.mlx_active, False), (" + ", True), (f.mlx_cache, False),
                 (" pool", True)]),
    }
    if f.kind == "unified" and f.wired is not None:
        if f.wired_ceiling is None:
            pieces["wired"] = ([("wired ", True), (f.wired, False)], None)
        else:
            note = [(" (", True), (f.wired_limit, False), (")", True)] if f.wired_limit else []
            pieces["wired"] = ([("wired ", True), (f.wired, False), (" of ", True),
                                (f.wired_ceiling, False), *note],
                               [("wired ", True), (f.wired, False), ("/", True), (f.wired_ceiling, False)])
    if f.kind == "host":
        pieces["peak"] = ([("peak ", True), (f.mlx_peak, False)], None)
    if f.system is not None:
        pieces["system"] = ([("system ", True), (f"{f.system} GB", False)], None)
    if f.kind != "device":  # beside a GPU's memory, system memory is the figure to see
        pieces["swap"] = ([(f.swap, False)] if f.swap == "no swap" else
                          [("swap ", True), (f.swap.removeprefix("swap "), False)], None)
    if f.pressure is not None:
        pieces["pressure"] = ([("pressure ", True), (f.pressure, False)], None)
    return pieces


DETAIL_STEPS = (("short", "mlx"), ("drop", "peak"), ("short", "where"), ("drop", "pressure"),
                ("short", "wired"), ("drop", "swap"), ("drop", "system"))
"""How the detail line gives way on a narrow terminal, one step at a time until it fits: the
memory's name and MLX's figures stay longest."""


@dataclass(frozen=True)
class _Entry:
    percent: int
    cleanup: str | None = None  # "normal" or "emergency" for a clean-up mark


def _spark_level(percent: int) -> int:
    """Which of :data:`SPARK`'s heights a history column of ``percent`` gets."""
    return max(0, min(len(SPARK) - 1, round(percent / 100 * len(SPARK)) - 1))


class _Part(Widget):
    """Cells ``[start, stop)`` of one piece of the gauge (see :data:`MemoryGauge.PARTS`).

    The gauge repaints a widget only when its cells change, and then only up to the last
    changed cell (Textual writes an update from the widget's left edge and crops it on the
    right). ``auto`` widgets are as wide as their text; the others as their CSS says.
    """

    DEFAULT_CSS = """
    _Part { height: 1; width: 1fr; }
    _Part.-auto { width: auto; }
    """

    def __init__(self, gauge: "MemoryGauge", part: str, *, auto: bool = False,
                 start: int = 0, stop: int | None = None) -> None:
        super().__init__(name=part, classes=f"-{part}" + (" -auto" if auto else ""))
        self._gauge = gauge
        self.part = part
        self.auto = auto
        self.start, self.stop = start, stop
        if stop is not None:
            self.styles.width = stop - start

    def render(self) -> Text:
        text = self._gauge.part(self.part)
        if (self.start, self.stop) == (0, None):
            return text
        if self.start >= len(text):
            return Text()
        return text[self.start:self.stop]  # the bar: one character a cell

    def cells_changed(self, start: int, end: int) -> None:
        """Cells ``[start, end)`` of the piece changed: repaint those this widget shows."""
        end = end if self.stop is None else min(end, self.stop)
        start = max(start, self.start)
        if start < end:
            self.refresh(Region(start - self.start, 0, end - start, 1))


class _Row(Horizontal):
    """The first line: the bar, the percentage and zone, and ``used/total GB`` side by side."""

    DEFAULT_CSS = """
    _Row { height: 1; width: 1fr; }
    _Row > Horizontal { height: 1; width: 1fr; }
    """


class MemoryGauge(Vertical):
    """Renders memory snapshots and thresholds it is given; owns only what it displays.

    The app calls :meth:`show_snapshot`, :meth:`set_thresholds` and :meth:`mark_cleanup` on the
    event loop; each redraws only when the picture changed, and then repaints only the pieces
    whose cells differ (a new figure repaints a few cells, not the bar, the panel or its border).
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

    PARTS = ("bar", "level", "amount", "labels", "figures", "history")

    def __init__(self, warning: float, emergency: float, *, id: str | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(id=id)
        self.border_title = "Memory"
        self._warning = warning
        self._emergency = emergency
        self._clock = clock
        self._snapshot: MemorySnapshot | None = None
        self._figures: GaugeFigures | None = None
        self._history: deque[_Entry] = deque(maxlen=HISTORY)
        self._column_opened = 0.0  # clock time the newest column opened
        self._peak = 0  # the highest percentage read since then
        self._drawn: tuple[int, dict[str, Text]] | None = None  # (width, parts) last drawn

    def compose(self) -> ComposeResult:
        with _Row():
            with Horizontal():  # the bar, in pieces
                for k in range(BAR_CHUNKS):
                    last = k == BAR_CHUNKS - 1
                    yield _Part(self, "bar", start=k * BAR_CHUNK,
                                stop=None if last else (k + 1) * BAR_CHUNK)
            yield _Part(self, "level", auto=True)
            yield _Part(self, "amount", auto=True)
        for part in ("labels", "figures", "history"):
            yield _Part(self, part)

    def on_mount(self) -> None:
        # Colours come from the theme: draw again once the new theme's styles are in place.
        self.app.theme_changed_signal.subscribe(
            self, lambda _theme: self.call_after_refresh(self.redraw))

    def on_resize(self, event: events.Resize) -> None:
        """A new width moves every piece of the bar and the markers: repaint them all.

        The bar's pieces keep their own width when the gauge's changes, so Textual would keep
        showing what they drew at the old width (two bars on a line after a widening).
        """
        self._drawn = None
        for widget in self.query(_Part):
            widget.refresh()

    # -- what the app tells it ---------------------------------------------------------------------
    @property
    def thresholds(self) -> tuple[float, float]:
        return self._warning, self._emergency

    @property
    def figures(self) -> GaugeFigures | None:
        return self._figures

    def show_snapshot(self, snap: MemorySnapshot) -> bool:
        """Show a new reading; repaints only when the rounded figures (or the history) differ."""
        self._snapshot = snap
        figures = GaugeFigures.of(snap, self._warning, self._emergency)
        history_changed = self._record(figures.percent)
        if figures == self._figures and not history_changed:
            return False
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

    # -- history -----------------------------------------------------------------------------------
    def _look(self, percent: int) -> tuple[int, str]:
        """What a history column of ``percent`` shows: its height and zone colour."""
        return _spark_level(percent), zone_of(percent / 100, self._warning, self._emergency)

    def _record(self, percent: int) -> bool:
        """Note a reading in the history (see the module's notes); True if the history changed."""
        now = self._clock()
        if not self._history:
            self._history.append(_Entry(percent))
            self._column_opened, self._peak = now, percent
            return True
        self._peak = max(self._peak, percent)
        newest = self._history[-1]
        if not newest.cleanup and now - self._column_opened < HISTORY_STEP:
            return False  # too soon for a new column: the first reading after the step adds it
        columns: list[int] = []
        shown = self._look(newest.percent)
        if self._peak > percent and self._look(self._peak) not in (shown, self._look(percent)):
            columns.append(self._peak)  # a peak since the newest column, gone by now
        if self._look(percent) != (self._look(columns[-1]) if columns else shown):
            columns.append(percent)
        if not columns:
            return False  # the newest column shows it already
        self._history.extend(_Entry(p) for p in columns)
        self._column_opened, self._peak = now, percent
        return True

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

    def _readout(self) -> tuple[Text, Text]:
        """The right of the first line: `` 52% normal   `` and ``   8.3/16.0 GB``."""
        figures = self._figures
        assert figures is not None
        level = Text.assemble(
            (f" {figures.percent:>3}% ", self._style(figures.zone) + Style(bold=True)),
            (f"{ZONE_WORDS[figures.zone]:<9}", self._style(figures.zone)),
        )
        # ``used`` padded to the total's width: the piece keeps its width from 9.9 to 10.0 GB, so
        # the bar does not change width (and repaint whole) when the figure gains a digit.
        return level, Text(f"  {figures.used:>{len(figures.total)}}/{figures.total} GB")

    def _bar(self, bar_width: int) -> Text:
        figures = self._figures
        assert figures is not None
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
        return bar

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
        """Which memory, MLX's active memory and buffer pool, and the platform's own figures
        (see :func:`detail_pieces`), shortened step by step (:data:`DETAIL_STEPS`) to fit."""
        f = self._figures
        assert f is not None
        muted = self._style("muted")
        pieces = detail_pieces(f)
        chosen = {name: full for name, (full, _short) in pieces.items()}

        def assemble() -> Text:
            text = Text()
            for i, segments in enumerate(chosen.values()):
                if i:
                    text.append(" · ", muted)
                for segment, is_label in segments:
                    text.append(segment, muted if is_label else None)
            return text

        text = assemble()
        for step, name in DETAIL_STEPS:
            if text.cell_len <= width:
                break
            if name not in chosen:
                continue
            if step == "drop":
                del chosen[name]
            elif (short := pieces[name][1]) is not None:
                chosen[name] = short
            text = assemble()
        return text

    def _history_line(self, width: int) -> Text:
        text = Text("history ", self._style("muted"))
        has_cleanup = any(e.cleanup for e in self._history)
        legend = Text("  ▼ clean-up", self._style("muted")) if has_cleanup else Text()
        room = max(0, width - text.cell_len - legend.cell_len)
        cells: list[tuple[str, Style | None]] = []
        for entry in list(self._history)[-room:] if room else []:
            if entry.cleanup:
                cells.append(("▼", self._style("emergency" if entry.cleanup == "emergency"
                                                else "warning") + Style(bold=True)))
            else:
                cells.append((SPARK[_spark_level(entry.percent)], self._zone_style(entry.percent / 100)))
        _append_runs(text, cells)
        text.append_text(legend)
        return text

    def parts(self, width: int | None = None) -> dict[str, Text]:
        """The gauge's pieces (see :data:`PARTS`) for ``width`` cells (the current width)."""
        if width is None:
            width = self.content_size.width
        width = max(20, width)
        if self._figures is None:
            parts = {name: Text() for name in self.PARTS}
            parts["bar"] = Text("reading memory…", self._style("muted"))
        else:
            level, amount = self._readout()
            bar_width = max(10, width - level.cell_len - amount.cell_len - 2)
            parts = {"bar": self._bar(bar_width), "level": level, "amount": amount,
                     "labels": self._label_line(width, bar_width),
                     "figures": self._figures_line(width), "history": self._history_line(width)}
        for text in parts.values():
            text.truncate(width, overflow="ellipsis")
            text.no_wrap = True
        return parts

    def lines(self) -> list[Text]:
        """The four lines for the current width."""
        width = max(20, self.content_size.width)
        parts = self.parts(width)
        first = Text.assemble(parts["bar"], parts["level"], parts["amount"])
        lines = [first, parts["labels"], parts["figures"], parts["history"]]
        for line in lines:
            line.truncate(width, overflow="ellipsis")
            line.no_wrap = True
        return lines

    def part(self, name: str) -> Text:
        """Piece ``name`` at the current width (what a :class:`_Part` paints)."""
        width = self.content_size.width
        if self._drawn is None or self._drawn[0] != width:
            self._drawn = (width, self.parts(width))
        return self._drawn[1][name]

    def redraw(self) -> None:
        """The picture changed: repaint the cells that differ from what is shown."""
        if self._drawn is None:
            return  # nothing painted yet: the first paint draws everything
        width, before = self._drawn
        now_width = self.content_size.width
        after = self.parts(now_width)
        self._drawn = (now_width, after)
        for widget in self.query(_Part):
            old, new = before[widget.part], after[widget.part]
            if now_width != width:
                widget.refresh()
            elif widget.auto and old.cell_len != new.cell_len:
                widget.refresh(layout=True)  # its width changes: lay the row out again
            elif span := _changed_span(old, new):
                widget.cells_changed(*span)

    def plain_lines(self) -> list[str]:
        """The gauge as plain text lines (what a person reads; used by tests)."""
        return [line.plain for line in self.lines()]


def _cells(text: Text) -> list[tuple[str, tuple[object, ...]]]:
    """``text`` as one (character, styles) pair per cell: what a line looks like, to compare."""
    plain = text.plain
    styles: list[list[object]] = [[text.style] for _ in plain]
    for span in text.spans:
        for i in range(span.start, min(span.end, len(plain))):
            styles[i].append(span.style)
    cells: list[tuple[str, tuple[object, ...]]] = []
    for ch, style in zip(plain, styles):
        cells.append((ch, tuple(style)))
        cells.extend(("", tuple(style)) for _ in range(cell_len(ch) - 1))  # a wide character
    return cells


def _changed_span(old: Text, new: Text) -> tuple[int, int] | None:
    """The cells ``[start, end)`` where ``new`` looks different from ``old``; None if it doesn't."""
    a, b = _cells(old), _cells(new)
    blank: tuple[str, tuple[object, ...]] = (" ", ())
    length = max(len(a), len(b))
    a += [blank] * (length - len(a))
    b += [blank] * (length - len(b))
    changed = [x for x in range(length) if a[x] != b[x]]
    return (changed[0], changed[-1] + 1) if changed else None


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
