"""The cached-models table: one row per known model, live, sortable, with keys to act on a row.

Rows are keyed by model name. :meth:`ModelsTable.sync` takes fresh views from the cache and
updates only the cells whose text changed, so a tick that changes nothing paints nothing. The
default order is the policy's keep order (loaded models first, the one a clean-up keeps longest
on top); any column can sort instead, ascending or descending, shown by an arrow in its header.

The model column takes the width the others leave, and a name too long for it is cut in the
middle (``mlx-communi…truct-4bit``); the line under the table describes the selected model, or
says why it cannot load, keeping the end of the reason.

The ``Prompt cache`` column is the bytes of the model's prompt (KV) caches, in memory and on
disk (``12 MB/40 MB``). A model served across hosts (``ModelView.ranks``) has one line per rank
under its own, inside its row: the host and its memory in use, the rank's state and its shard's
bytes; the line under the table lists every rank in full.

Keys act on the selected model only when pressed one at a time: a key is carried out a moment
after it is pressed (:data:`ModelsTable.BURST_SECONDS`), unless another printable key follows
at once, and keys that come in such a burst (a sentence typed while the table has the focus)
are dropped with a notification.

Actions that touch the cache run in thread workers: an eviction frees memory (``gc`` and
``mx.clear_cache``), a load may rescan a folder; neither belongs on the event loop.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding
from textual.content import Content
from textual.message import Message
from textual.timer import Timer
from textual.widgets import DataTable

from ...core.cache import ModelCache, ModelState, ModelView
from ...core.units import format_bytes
from ..format import clock_time, duration, middle_cut, reason_cut, seconds
from ..names import ShownNames

if TYPE_CHECKING:
    from ...distributed.views import RankView

__all__ = ["ModelsTable", "COLUMNS", "short_bytes", "prompt_cache_text", "prompt_cache_summary",
           "rank_summary"]


@dataclass(frozen=True)
class ColumnSpec:
    key: str
    label: str
    width: int
    sort_key: Callable[[ModelView], Any]
    right: bool = False


_STATE_RANK = {
    ModelState.LOADED: 0, ModelState.LOADING: 1, ModelState.QUEUED: 2, ModelState.EVICTING: 3,
    ModelState.NOT_LOADED: 4, ModelState.FAILED: 5,
}


def _state_key(v: ModelView) -> int:
    """Usable first: loaded, loading, queued, evicting, not loaded, failed, unavailable."""
    if v.state is ModelState.NOT_LOADED and v.error:
        return 6
    return _STATE_RANK[v.state]


def short_bytes(n: int) -> str:
    """Bytes in at most six cells, as a cell that shares its room says them: ``0``, ``512 B``,
    ``545 KB``, ``1.2 MB``, ``40 MB``, ``1.2 GB``."""
    if not n:
        return "0"
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            break
        value /= 1024
    if unit == "B":
        return f"{int(value)} B"
    return f"{value:.1f} {unit}" if value < 9.95 else f"{value:.0f} {unit}"


def prompt_cache_text(v: ModelView) -> str:
    """``12 MB/40 MB``: a model's prompt caches in memory / on disk; ``-`` when it has none."""
    if not (v.prompt_cache_bytes or v.prompt_cache_disk_bytes):
        return "-"
    return f"{short_bytes(v.prompt_cache_bytes)}/{short_bytes(v.prompt_cache_disk_bytes)}"


def prompt_cache_summary(v: ModelView) -> str:
    """``prompt caches 12.0 MB in memory, 40.0 MB on disk``, or nothing without any."""
    if not (v.prompt_cache_bytes or v.prompt_cache_disk_bytes):
        return ""
    return (f"prompt caches {format_bytes(v.prompt_cache_bytes)} in memory, "
            f"{format_bytes(v.prompt_cache_disk_bytes)} on disk")


def rank_summary(ranks: tuple[RankView, ...]) -> str:
    """Every rank of a model served across hosts, for the line under the table: ``2 hosts:
    studio loaded, 20.0 GB shard, memory 61% of 128 GB; mini loading, ~20.0 GB shard, ...``
    (with each rank's number when a host runs more than one)."""
    hosts = len({r.host for r in ranks})
    parts = []
    for r in ranks:
        shard = (format_bytes(r.shard_bytes) if r.shard_bytes else
                 f"~{format_bytes(r.estimated_shard_bytes)}")
        who = r.host if hosts == len(ranks) else f"{r.host} (rank {r.rank})"
        text = f"{who} {r.state}, {shard} shard"
        if r.memory is not None:
            total = r.memory.total_bytes / 2**30
            text += f", memory {r.used_fraction:.0%} of {total:.0f} GB" if total >= 10 else \
                f", memory {r.used_fraction:.0%} of {total:.1f} GB"
        if r.error:
            text += f": {r.error}"
        parts.append(text)
    where = f"{hosts} host{'s' if hosts != 1 else ''}"
    if hosts != len(ranks):  # two ranks on one machine (a loopback test)
        where = f"{len(ranks)} ranks on {where}"
    return f"{where}: " + "; ".join(parts)


COLUMNS: tuple[ColumnSpec, ...] = (
    ColumnSpec("name", "Model", 22, lambda v: v.name.lower()),  # width: the least; takes the rest
    ColumnSpec("state", "State", 15, _state_key),
    ColumnSpec("size", "Size", 10, lambda v: v.size_bytes, right=True),
    ColumnSpec("prompt_cache", "Prompt cache", 14,
               lambda v: (v.prompt_cache_bytes, v.prompt_cache_disk_bytes), right=True),
    ColumnSpec("uses", "Uses", 6, lambda v: v.use_count, right=True),
    ColumnSpec("last_used", "Last use", 10, lambda v: v.last_used),
    ColumnSpec("pinned", "Pin", 5, lambda v: v.pinned),
    ColumnSpec("loaded_at", "Loaded", 9, lambda v: v.loaded_at if v.is_loaded else 0.0),
    ColumnSpec("load_time", "Load s", 8, lambda v: v.load_time_seconds, right=True),
)
_COLUMN_BY_KEY = {c.key: c for c in COLUMNS}
_RANK_STYLES = {"loaded": "loaded", "ready": "loaded", "starting": "busy", "loading": "busy",
                "failed": "failed", "stopped": "muted"}
"""A rank's state (see :class:`~mlx_tui.distributed.views.RankView`) -> the style of its word."""
_SOURCES = {"demo": "bundled demo model", "alias": "alias", "folder": "model folder",
            "huggingface": "Hugging Face cache"}
"""Where a model comes from, as the line under the table says it."""
NAME_MIN_WIDTH = 16
"""The model column never gets narrower than this; the table scrolls sideways instead."""


class ModelsTable(DataTable):
    """Shows every model the cache knows and acts on the selected one.

    Owned by the app, which calls :meth:`sync` when the cache reports a change; the table never
    keeps model state of its own beyond what it displays.
    """

    BINDINGS = [
        Binding("c", "chat_with", "Chat", id="chat-with",
                tooltip="Chat with the selected model (enter does the same)"),
        Binding("l", "load", "Load", id="load",
                tooltip="Load the selected model in the background"),
        Binding("x", "evict", "Evict", id="evict",
                tooltip="Unload the selected model now (when its reply ends, if in use)"),
        Binding("p", "pin", "Pin", id="pin",
                tooltip="Pin or unpin the selected model: pinned models survive normal clean-ups"),
        Binding("u", "cleanup", "Clean up", id="cleanup",
                tooltip="Normal clean-up now: keep the most valuable models, unload the rest"),
        Binding("U", "emergency_cleanup", "Unload all", id="emergency-cleanup",
                tooltip="Emergency clean-up now: unload every model (asks first)"),
        Binding("s", "sort_next", "Sort", id="sort-next",
                tooltip="Sort by the next column (the arrow in the header shows which)"),
        Binding("r", "sort_reverse", "Reverse", id="sort-reverse",
                tooltip="Reverse the sort direction"),
        Binding("0", "sort_default", "Keep order", id="sort-default",
                tooltip="Back to the default order: the policy's keep order"),
        *(Binding(str(i + 1), f"sort_by('{c.key}')", f"Sort by {c.label}", id=f"sort-{i + 1}",
                  show=False, tooltip=f"Sort by {c.label} (again: reverse)")
          for i, c in enumerate(COLUMNS)),
        Binding("home", "first_row", "First", id="first-row", show=False,
                tooltip="Go to the first model"),
        Binding("end", "last_row", "Last", id="last-row", show=False,
                tooltip="Go to the last model"),
    ]

    BURST_SECONDS = 0.25
    """A key acts this long after it is pressed, unless another printable key follows sooner:
    then both belong to a burst of typing, and neither acts."""

    COMPONENT_CLASSES = DataTable.COMPONENT_CLASSES | {
        "models-table--loaded",
        "models-table--busy",
        "models-table--failed",
        "models-table--muted",
        "models-table--chat",
    }

    DEFAULT_CSS = """
    ModelsTable > .models-table--loaded { color: $success; }
    ModelsTable > .models-table--busy { color: $warning; }
    ModelsTable > .models-table--failed { color: $error; }
    ModelsTable > .models-table--muted { color: $text-muted; }
    ModelsTable > .models-table--chat { color: $accent; text-style: bold; }
    """

    class ChatWith(Message):
        """The user picked a model to chat with."""

        def __init__(self, name: str) -> None:
            super().__init__()
            self.name = name

    class ConfirmEmergency(Message):
        """The user asked for an emergency clean-up; the app asks for confirmation."""

    def __init__(self, cache: ModelCache, names: ShownNames | None = None, *,
                 clock: Callable[[], float] = time.monotonic, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=False)
        self._cache = cache
        self._names = names or ShownNames()
        self._clock = clock  # when keys arrive: single presses or a burst of typing
        self._views: dict[str, ModelView] = {}
        self._shown: dict[tuple[str, str], tuple[str, str]] = {}
        self.sort_column: str | None = None  # None: the policy's keep order
        self.sort_reverse = False
        self.chat_model: str | None = None
        self._name_width = COLUMNS[0].width
        self._last_key_at = float("-inf")
        self._pending: Timer | None = None
        self._burst_told = False

    def on_mount(self) -> None:
        for spec in COLUMNS:
            self.add_column(self._label(spec), key=spec.key, width=spec.width)
        self._update_title()
        self.app.theme_changed_signal.subscribe(self, lambda _theme: self.sync(force=True))

    def on_resize(self, event: events.Resize) -> None:
        self._fit_name_column()

    # -- reading -----------------------------------------------------------------------------------
    @property
    def selected(self) -> str | None:
        """Name of the model under the cursor."""
        if not self.row_count:
            return None
        return self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value

    @property
    def key_pending(self) -> bool:
        """A key was pressed and acts in a moment, unless another key follows at once."""
        return self._pending is not None

    def order(self) -> list[str]:
        """Model names top to bottom as shown."""
        return [str(row.key.value) for row in self.ordered_rows]

    def row_text(self, name: str) -> dict[str, str]:
        """The cells of one model's row as the table holds them, plain text by column key."""
        return {spec.key: str(cell) for spec, cell in zip(COLUMNS, self.get_row(name))}

    def header_text(self) -> list[str]:
        return [str(self.columns[spec.key].label).strip() for spec in COLUMNS]  # type: ignore[index]

    # -- cells -------------------------------------------------------------------------------------
    def _style(self, name: str) -> Style:
        # Only the colour and weight: a background here would hide the cursor row's.
        style = self.get_component_rich_style(f"models-table--{name}")
        return Style(color=style.color, bold=style.bold)

    def _state_cell(self, v: ModelView, now: float) -> Text:
        state = v.state
        if state is ModelState.LOADING:
            progress, eta = v.progress(now), v.eta_seconds(now)
            if progress is not None and eta is not None:
                return Text(f"loading {progress:.0%} ~{duration(eta)}", self._style("busy"))
            return Text(f"loading {duration(now - v.load_started_at)}", self._style("busy"))
        if state is ModelState.LOADED:
            if v.leases:
                return Text("in use, unload" if v.evict_when_idle else "in use", self._style("loaded")
                            + Style(bold=True))
            return Text("loaded", self._style("loaded"))
        if state is ModelState.FAILED:
            return Text("failed", self._style("failed"))
        if state in (ModelState.QUEUED, ModelState.EVICTING):
            return Text(state.value, self._style("busy"))
        if v.error:
            return Text("unavailable", self._style("failed"))
        return Text("not loaded", self._style("muted"))

    def _cells(self, v: ModelView, now: float) -> dict[str, Text]:
        size = format_bytes(v.resident_bytes) if v.resident_bytes else (
            f"~{format_bytes(v.estimated_bytes)}" if v.estimated_bytes else "?")
        name_style = self._style("chat") if v.name == self.chat_model else Style()
        cells = {
            "name": Text(middle_cut(self._names.shown(v.name), self._name_width), name_style),
            "state": self._state_cell(v, now),
            "size": Text(size),
            "prompt_cache": Text(prompt_cache_text(v)),
            "uses": Text(str(v.use_count)),
            "last_used": Text(clock_time(v.last_used, now)),
            "pinned": Text("●" if v.pinned else ""),
            "loaded_at": Text(clock_time(v.loaded_at, now) if v.is_loaded else "-"),
            "load_time": Text(seconds(v.load_time_seconds)),
        }
        for rank in v.ranks:  # a line per rank, under the model's own
            self._add_rank_line(cells, rank)
        for spec in COLUMNS:
            if spec.right:
                cells[spec.key].justify = "right"
        return cells

    def _add_rank_line(self, cells: dict[str, Text], rank: RankView) -> None:
        """``  studio 61%`` under the name, the rank's state under the model's, its shard's
        bytes under the size (``~`` while estimated)."""
        fraction = rank.used_fraction
        memory = f" {fraction:.0%}" if fraction is not None else ""
        room = max(1, self._name_width - 2 - len(memory))
        cells["name"].append(f"\n  {middle_cut(rank.host, room)}{memory}", self._style("muted"))
        style = self._style(_RANK_STYLES.get(rank.state, "muted"))
        cells["state"].append(f"\n{rank.state}", style)
        shard = (format_bytes(rank.shard_bytes) if rank.shard_bytes else
                 f"~{format_bytes(rank.estimated_shard_bytes)}" if rank.estimated_shard_bytes else "?")
        cells["size"].append(f"\n{shard}", self._style("muted"))

    # -- updating ----------------------------------------------------------------------------------
    def sync(self, views: list[ModelView] | None = None, force: bool = False) -> None:
        """Show ``views`` (fresh from the cache when None): new rows, changed cells, new order."""
        if not self.is_mounted:
            return
        views = self._cache.models() if views is None else views
        now = time.time()
        self._views = {v.name: v for v in views}
        if force:
            self._shown.clear()
        selected = self.selected
        for v in views:
            cells = self._cells(v, now)
            height = 1 + len(v.ranks)
            if v.name in self.rows and self.rows[v.name].height != height:  # type: ignore[index]
                self._forget_row(v.name)  # ranks came or went: the row is laid out again
            if v.name not in self.rows:
                self.add_row(*(cells[spec.key] for spec in COLUMNS), key=v.name, height=height)
            for spec in COLUMNS:
                cell = cells[spec.key]
                shown = (cell.plain, str(cell.style))
                if self._shown.get((v.name, spec.key)) != shown:
                    if (v.name, spec.key) in self._shown or force:
                        self.update_cell(v.name, spec.key, cell)
                    self._shown[(v.name, spec.key)] = shown
        for gone in [str(k.value) for k in self.rows if k.value not in self._views]:
            self._forget_row(gone)
        self._apply_order()
        if selected is not None and selected in self.rows and self.selected != selected:
            self.move_cursor(row=self.get_row_index(selected), animate=False)
        self._update_subtitle()

    def _forget_row(self, name: str) -> None:
        self.remove_row(name)
        for spec in COLUMNS:
            self._shown.pop((name, spec.key), None)

    def set_chat_model(self, name: str | None, *, select: bool = False) -> None:
        """Highlight the model chatted with (the cache's name for it); ``select`` puts the
        cursor on its row too."""
        if name != self.chat_model:
            self.chat_model = name
            self.sync()
        if select and name is not None and name in self.rows:
            self.move_cursor(row=self.get_row_index(name), animate=False)

    def _fit_name_column(self) -> None:
        """Give the model column the width the other columns leave (at least NAME_MIN_WIDTH)."""
        if not self.columns:
            return
        others = sum(spec.width + 2 * self.cell_padding for spec in COLUMNS[1:])
        room = self.scrollable_content_region.width - others - 2 * self.cell_padding
        width = max(NAME_MIN_WIDTH, room)
        if width == self._name_width:
            return
        self._name_width = width
        column = self.columns[COLUMNS[0].key]  # type: ignore[index]
        column.width = width
        # DataTable measures columns when rows change; a new width needs the same pass.
        self._require_update_dimensions = True
        self.sync(force=True)
        self.refresh()

    def _wanted_order(self) -> list[str]:
        views = list(self._views.values())
        if self.sort_column is None:
            names = [n for n in self._cache.keep_order() if n in self._views]
            names += [n for n in self._views if n not in names]  # new since keep_order()
        else:
            key = _COLUMN_BY_KEY[self.sort_column].sort_key
            names = [v.name for v in sorted(views, key=lambda v: (key(v), v.name.lower()))]
        return names[::-1] if self.sort_reverse else names

    def _apply_order(self) -> None:
        wanted = self._wanted_order()
        if wanted == self.order():
            return
        selected = self.selected
        # DataTable sorts by cell values, and a shown name is not the row's key (a cut name, an
        # alias): the name cells themselves say which row they belong to.
        index = {id(self.get_cell(name, "name")): i for i, name in enumerate(wanted)}
        self.sort("name", key=lambda cell: index[id(cell)])
        if selected is not None and selected in self.rows:
            self.move_cursor(row=self.get_row_index(selected), animate=False)

    # -- sorting -----------------------------------------------------------------------------------
    def _label(self, spec: ColumnSpec) -> Text:
        arrow = "  "
        if spec.key == self.sort_column:
            arrow = " ▼" if self.sort_reverse else " ▲"
        return Text(spec.label + arrow, style="bold" if spec.key == self.sort_column else "")

    def _update_title(self) -> None:
        if self.sort_column is None:
            how = f"keep order ({self._cache.settings.cache.policy})"
            how += ", reversed" if self.sort_reverse else ""
        else:
            spec = _COLUMN_BY_KEY[self.sort_column]
            how = f"{spec.label} {'descending' if self.sort_reverse else 'ascending'}"
        self.border_title = f"Models · sorted by {how}"

    def set_sort(self, column: str | None, reverse: bool) -> None:
        """Sort by ``column`` (None: keep order) ascending, or descending when ``reverse``."""
        self.sort_column, self.sort_reverse = column, reverse
        for spec in COLUMNS:
            self.columns[spec.key].label = self._label(spec)  # type: ignore[index]
        self.notify_style_update()  # header cells are cached; this drops the cache
        self._update_title()
        self._apply_order()

    def action_sort_by(self, column: str) -> None:
        reverse = not self.sort_reverse if column == self.sort_column else False
        self.set_sort(column, reverse)

    def action_sort_next(self) -> None:
        keys = [spec.key for spec in COLUMNS]
        nxt = keys[0] if self.sort_column is None else (
            keys[(keys.index(self.sort_column) + 1) % len(keys)])
        self.set_sort(nxt, False)

    def action_sort_reverse(self) -> None:
        self.set_sort(self.sort_column, not self.sort_reverse)

    def action_sort_default(self) -> None:
        self.set_sort(None, False)

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        event.stop()
        self.action_sort_by(str(event.column_key.value))

    # -- acting on the selected model ----------------------------------------------------------------
    def details(self, v: ModelView) -> str:
        """The line under the table for ``v``: why it cannot load, or what it is."""
        if v.error:
            # The row already names the model; the reason often starts with it.
            for prefix in (f"{v.name}: ", f"{self._names.shown(v.name)}: "):
                if v.error.startswith(prefix):
                    return v.error[len(prefix):]
            return v.error
        aliases = self._names.aliases(v)
        also = f"also {', '.join(aliases)}" if aliases else ""
        if v.ranks:  # the hosts first: the line is short, and what it is matters less here
            facts = [rank_summary(v.ranks), also, prompt_cache_summary(v)]
        else:
            facts = [also, prompt_cache_summary(v), _SOURCES.get(v.source, v.source),
                     v.architecture or "",
                     f"{v.quantization_bits}-bit" if v.quantization_bits else "", v.path or ""]
        return " · ".join(f for f in facts if f)

    def _update_subtitle(self) -> None:
        name = self.selected
        view = self._views.get(name) if name else None
        text = " ".join(self.details(view).split()) if view else ""  # a title has one line
        # A reason too long for the line loses its middle: its end says what to do.
        self.border_subtitle = Content(reason_cut(text, max(10, self.size.width - 6)))

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._update_subtitle()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.post_message(self.ChatWith(str(event.row_key.value)))

    def _in_thread(self, fn: Callable[[], object], what: str) -> None:
        def run() -> None:
            try:
                fn()
            except Exception as exc:  # noqa: BLE001 - any refusal is shown, the app goes on
                self.app.call_from_thread(self.notify, f"{what}: {exc}", severity="error")

        self.run_worker(run, thread=True, group="models", name=what, exit_on_error=False)

    # -- keys: single presses act, bursts of typing do not ---------------------------------------
    def on_key(self, event: events.Key) -> None:
        if not event.is_printable:
            return
        now = self._clock()
        in_burst = now - self._last_key_at < self.BURST_SECONDS
        self._last_key_at = now
        active = self.screen.active_bindings.get(event.key)
        ours = active is not None and active.node is self and active.enabled
        if in_burst:
            held, self._pending = self._pending, None
            if held is not None:
                held.stop()
            if ours or held is not None:
                event.stop()
                event.prevent_default()
                self._tell_burst()
            return
        self._burst_told = False
        if ours:
            assert active is not None
            event.stop()  # carried out in a moment, if no other key follows at once
            event.prevent_default()
            action = active.binding.action
            self._pending = self.set_timer(self.BURST_SECONDS, lambda: self._run_single(action))

    async def _run_single(self, action: str) -> None:
        self._pending = None
        await self.run_action(action)

    def _tell_burst(self) -> None:
        if not self._burst_told:
            self._burst_told = True
            self.notify("Keys typed in a burst were ignored: the models table has the focus, where "
                        "letters act on models one press at a time. Tab moves to the message box.",
                        title="Typing?", severity="warning", timeout=6)

    def action_first_row(self) -> None:
        if self.row_count:
            self.move_cursor(row=0, animate=False)

    def action_last_row(self) -> None:
        if self.row_count:
            self.move_cursor(row=self.row_count - 1, animate=False)

    def action_chat_with(self) -> None:
        if self.selected:
            self.post_message(self.ChatWith(self.selected))

    def action_load(self) -> None:
        name = self.selected
        if not name:
            return
        view = self._views.get(name)
        if view is not None and view.state is ModelState.NOT_LOADED and view.error:
            self.notify(f"{self._names.shown(name)} cannot load: {self.details(view)}",
                        title="Not loaded", severity="error", timeout=10)
            return
        self._in_thread(lambda: self._cache.load(name, reason="asked from the table"),
                        f"load {name}")

    def action_evict(self) -> None:
        name = self.selected
        if name:
            self._in_thread(lambda: self._cache.evict(name, reason="asked from the table"),
                            f"evict {name}")

    def action_pin(self) -> None:
        name = self.selected
        if name:
            view = self._views.get(name)
            self._cache.pin(name, not (view and view.pinned))

    def _cleanup(self, level: str) -> None:
        """In a worker: a clean-up asked from here (the cache's event adds the memory figure of
        the moment); one that unloads nothing says so, and why (the cache's plan tells)."""
        plan = self._cache.cleanup(level, reason="asked from the table")
        if not plan.evict and not plan.deferred:  # the plan's reason says why (pinned, kept...)
            self.app.call_from_thread(self.notify, plan.reason or "no model could be unloaded",
                                      title="Nothing unloaded", timeout=8)

    def action_cleanup(self) -> None:
        self._in_thread(lambda: self._cleanup("normal"), "clean-up")

    def action_emergency_cleanup(self) -> None:
        self.post_message(self.ConfirmEmergency())

    def emergency_cleanup(self) -> None:
        """Unload everything now (after the user confirmed)."""
        self._in_thread(lambda: self._cleanup("emergency"), "emergency clean-up")
