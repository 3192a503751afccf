"""The fleet overview (f2): one block per host, this machine first, then each remote.

Each block says whether the host answers (or why not, and when it is asked again), its memory
in use against its own thresholds, the models it has in memory with their use counts and load
seconds, and the requests it is serving. Everything shown comes from readings the pollers
already made (and this machine's cache): the screen never waits on a host. It redraws when a
poll report comes and once a second (for the ages), and only the blocks whose text changed.

enter or 1-9 goes to a host's own screen; r asks every host again now; esc or f2 closes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

from rich.style import Style
from rich.table import Table
from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Footer, OptionList, Static
from textual.widgets.option_list import Option

from ...core.model_view import ModelState
from ...remote.documents import HealthReading
from ...remote.poller import HostReport
from ..format import clock_time, gigabytes, middle_cut, reason_cut, seconds
from .host import state_words, why_down

if TYPE_CHECKING:
    from ..hosts import HostSwitcher

__all__ = ["FleetScreen", "FleetRow", "BlockStyles", "host_block", "block_plain", "memory_bar"]

BAR_WIDTH = 20


@dataclass(frozen=True)
class BlockStyles:
    """The colours of a block: the screen takes them from the theme (its component classes)."""

    up: Style = Style(color="green")
    down: Style = Style(color="red")
    warning: Style = Style(color="yellow")


@dataclass(frozen=True)
class FleetRow:
    """What the overview shows of one host: its number (1 is this machine), name, address,
    last reading and, for a remote, its last poll report and security note."""

    number: int
    name: str
    url: str
    reading: HealthReading | None
    report: HostReport | None = None
    note: str | None = None
    local: bool = False
    problem_prefix: str = ""  # "studio (http://…): " that a remote's problems start with

    @property
    def reachable(self) -> bool:
        return self.local or (self.report is not None and self.report.reachable)


def memory_bar(fraction: float, warning: float, emergency: float, width: int = BAR_WIDTH,
               styles: BlockStyles = BlockStyles()) -> Text:
    """``▕██████░░░░░░┃░░░░┃▏``: memory in use with the two thresholds marked."""
    filled = round(max(0.0, min(1.0, fraction)) * width)
    marks = {min(width - 1, round(warning * width)), min(width - 1, round(emergency * width))}
    zone = (styles.down if fraction >= emergency else styles.warning if fraction >= warning
            else styles.up)
    bar = Text("▕", style="dim")
    for col in range(width):
        if col in marks:
            bar.append("┃", style="bold")
        else:
            bar.append("█" if col < filled else "░", style=zone if col < filled else "dim")
    bar.append("▏", style="dim")
    return bar


def _models_text(reading: HealthReading, width: int) -> Text:
    """``tiny-a 3 uses 0.12 s · tiny-b loading 40%``; ``no model in memory``."""
    cached = reading.cached
    if not cached:
        return Text("no model in memory", style="dim")
    parts = []
    for v in cached:
        if v.state is ModelState.LOADING:
            progress = v.progress()
            parts.append(f"{v.name} loading" + (f" {progress:.0%}" if progress is not None else ""))
        else:
            uses = f"{v.use_count} use" + ("" if v.use_count == 1 else "s")
            load = f" · {seconds(v.load_time_seconds)} s" if v.load_time_seconds else ""
            pin = " · pinned" if v.pinned else ""
            parts.append(f"{v.name} ({uses}{load}{pin})")
    return Text(middle_cut(" · ".join(parts), max(10, width)))


def host_block(row: FleetRow, width: int, now: float | None = None,
               styles: BlockStyles = BlockStyles()) -> list[Text]:
    """The lines of one host in ``width`` cells (its number is shown beside them): name,
    address and state; why it does not answer; memory against its thresholds and requests in
    flight; its models in memory; its security note."""
    now = time.time() if now is None else now
    inner = max(20, width)
    state = "up (this machine)" if row.local else state_words(row.report, now)
    head = Text.assemble((row.name, "bold"), "  ", (row.url, "dim"))
    state_style = styles.up if row.reachable else (
        styles.warning if row.report is None else styles.down)
    if inner - head.cell_len - 2 >= len(state):
        head.append("  ")
        head.append(state, style=state_style)
        lines = [head]
    else:  # narrow: the state on a line of its own
        lines = [head, Text(middle_cut(state, inner), style=state_style)]
    if row.report is not None and not row.report.reachable:
        why = why_down(row.report, row.problem_prefix)
        lines.append(Text("✗ " + reason_cut(why, inner - 2), style=state_style))
    reading = row.reading
    if reading is None:
        lines.append(Text("no reading yet", style="dim"))
    else:
        snap, th = reading.memory, reading.thresholds
        memory = memory_bar(snap.used_fraction, th.warning, th.emergency, styles=styles)
        memory.append(f" {snap.used_fraction:.0%} {th.zone(snap.used_fraction)} · "
                      f"{gigabytes(snap.used_bytes)}/{gigabytes(snap.total_bytes)} GB")
        stale = "" if row.reachable or row.report is None else (
            f" (as last seen {clock_time(row.report.at, now)})")
        figures = (f"warning {th.warning:.0%} · emergency {th.emergency:.0%} · "
                   f"{reading.in_flight} in flight{stale}")
        if memory.cell_len + 3 + len(figures) <= inner:
            memory.append(" · " + figures, style=Style(dim=True))
            lines.append(memory)
        else:
            lines += [memory, Text(middle_cut(figures, inner), style=Style(dim=True))]
        models = _models_text(reading, inner)
        if not row.reachable:
            models.stylize("dim")
        lines.append(models)
    if row.note:
        lines.append(Text(f"⚠ {middle_cut(row.note, inner - 2)}", style=styles.warning))
    return lines


def block_plain(row: FleetRow, lines: list[Text]) -> str:
    """A block as plain text, its number before the first line (what tests and people read)."""
    pad = " " * (len(str(row.number)) + 1)
    return "\n".join(f"{row.number} {line.plain}" if i == 0 else f"{pad}{line.plain}"
                     for i, line in enumerate(lines))


def _prompt(row: FleetRow, lines: list[Text]) -> Table:
    grid = Table.grid(padding=(0, 1, 0, 0))
    grid.add_column(no_wrap=True)
    grid.add_column(ratio=1)
    grid.add_row(Text(str(row.number), style="bold"), Text("\n").join(lines))
    return grid


class FleetScreen(ModalScreen["int | None"]):
    """Every host at a glance. Dismisses with the number of the host to go to (1: this
    machine), or None. Reads its rows from the app's :class:`~mlx_tui.ui.hosts.HostSwitcher`."""

    BINDINGS = [
        Binding("escape,f2", "dismiss(None)", "Close", id="fleet-close",
                tooltip="Close the fleet overview"),
        Binding("r", "poll_all", "Ask again", id="fleet-poll",
                tooltip="Ask every remote host again now"),
    ]

    COMPONENT_CLASSES = {"fleet--up", "fleet--down", "fleet--warning"}
    DEFAULT_CSS = """
    FleetScreen > .fleet--up { color: $success; }
    FleetScreen > .fleet--down { color: $error; }
    FleetScreen > .fleet--warning { color: $warning; }
    """

    def __init__(self, switcher: "HostSwitcher") -> None:
        super().__init__()
        self._switcher = switcher
        self._shown: dict[str, str] = {}

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide", id="fleet-dialog") as dialog:
            dialog.border_title = "Hosts · enter or 1-9 goes there · r asks again · esc closes"
            yield OptionList(id="fleet")
            yield Static("", id="fleet-summary")
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        self.refresh_rows()
        options = self.query_one(OptionList)
        options.highlighted = max(0, self._switcher.current)
        options.focus()
        self.set_interval(1.0, self.refresh_rows)

    def on_resize(self, event: events.Resize) -> None:
        self.refresh_rows(force=True)

    @property
    def rows(self) -> Sequence[FleetRow]:
        return self._switcher.rows()

    def block_text(self, name: str) -> str:
        """The plain text of one host's block as shown (tests read this)."""
        return self._shown.get(name, "")

    def refresh_rows(self, force: bool = False) -> None:
        """Redraw the blocks whose text changed (every row when ``force``)."""
        options = self.query_one_optional(OptionList)
        if options is None:  # not composed yet, or being taken down as the app closes
            return
        width = max(20, options.scrollable_content_region.width - 2)
        now = time.time()
        styles = BlockStyles(*(Style(color=self.get_component_rich_style(f"fleet--{name}").color)
                               for name in ("up", "down", "warning")))
        rows = self.rows
        if options.option_count != len(rows):
            options.clear_options()
            self._shown.clear()
            options.add_options([Option(Text(r.name), id=r.name) for r in rows])
        for row in rows:
            lines = host_block(row, width - len(str(row.number)) - 1, now, styles)
            plain = block_plain(row, lines)
            if force or self._shown.get(row.name) != plain:
                self._shown[row.name] = plain
                options.replace_option_prompt(row.name, _prompt(row, lines))
        up = sum(1 for r in rows if r.reachable)
        busy = sum(r.reading.in_flight for r in rows if r.reading is not None and r.reachable)
        summary = self.query_one_optional("#fleet-summary", Static)
        if summary is not None:
            summary.update(Text(f"{up} of {len(rows)} hosts answer · {busy} requests in flight",
                                style="dim"))

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self.dismiss(event.option_index + 1)

    def on_key(self, event: events.Key) -> None:
        if event.character and event.character.isdigit() and event.character != "0":
            number = int(event.character)
            if number <= len(self.rows):
                event.stop()
                self.dismiss(number)

    def action_poll_all(self) -> None:
        self._switcher.poll_all()
        self.notify("Asking every host again.", timeout=3)
