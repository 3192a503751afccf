"""The prompt caches: every kept KV cache of every model, in memory or on disk, and its worth.

One row per prompt cache: its model, what made it (a chat in the app, an API request), its
tokens, its bytes in memory and on disk, where it is now (``memory``, ``disk`` or ``both``),
when it was last read, how often it was read lately, and its value: the prefill seconds it
saves each time it is read (from the model's own measured prefill speed). ``d`` drops the highlighted one from
memory: a copy on disk stays, one only in memory is gone (its next prompt is read in full).

The list is read again when the cache reports news that changes it (a prompt cache dropped,
spilled, restored or deleted; a request finished, which keeps a new one; a model loaded or
unloaded), and the table is rebuilt only when what it shows changed.
"""

from __future__ import annotations

import time
from typing import Callable

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import DataTable, Footer, Static

from ...core.cache import ModelCache
from ...core.events import CacheEvent, EventKind
from ...core.prompt_cache import PromptCacheView
from ...core.units import format_bytes
from ..format import clock_time, middle_cut
from ..names import ShownNames

__all__ = ["PromptCachesScreen", "REFRESHING_KINDS"]

REFRESHING_KINDS = frozenset({EventKind.PROMPT_CACHE, EventKind.RELEASED, EventKind.LOADED,
                              EventKind.EVICTED, EventKind.CLEANUP})
"""Cache events after which the list is read again."""

COLUMNS = (("model", "Model"), ("label", "From"), ("tokens", "Tokens"), ("memory", "Memory"),
           ("disk", "Disk"), ("tier", "In"), ("last_used", "Last use"), ("hits", "Reads"),
           ("saves", "Saves"))
MODEL_WIDTH = 24
"""A longer model name is cut in the middle, so the list fits 80 columns."""
_RIGHT = frozenset({"tokens", "memory", "disk", "hits", "saves"})


def _row_key(view: PromptCacheView) -> str:
    return f"{view.model}\x1f{view.id}"


class PromptCachesScreen(ModalScreen[None]):
    """Lists the cache's prompt caches and drops one on request. Pushed by the app; reads
    the :class:`ModelCache` it is given and subscribes to its events while shown."""

    BINDINGS = [
        Binding("escape", "dismiss(None)", "Close", id="prompt-caches-close",
                tooltip="Close the list of prompt caches"),
        Binding("delete,d", "drop", "Drop", id="prompt-caches-drop",
                tooltip="Drop the highlighted prompt cache from memory (a copy on disk stays)"),
    ]

    class Changed(Message):
        """The cache reported news that may change the list (posted from its threads)."""

    def __init__(self, cache: ModelCache, names: ShownNames | None = None, *,
                 model: str | None = None, clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self._cache = cache
        self._names = names or ShownNames()
        self._model = model  # the cursor starts on this model's first prompt cache
        self._clock = clock
        self._views: dict[str, PromptCacheView] = {}
        self._shown: list[tuple[str, tuple[str, ...]]] | None = None
        self._unsubscribe: Callable[[], None] | None = None

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide") as dialog:
            dialog.border_title = "Prompt caches · d drops one from memory · esc closes"
            yield DataTable(id="prompt-caches", cursor_type="row", zebra_stripes=False)
            yield Static("", id="prompt-caches-summary")
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        for key, label in COLUMNS:
            table.add_column(label, key=key)
        self._unsubscribe = self._cache.subscribe(self._on_cache_event)
        self.refresh_list()
        if self._model is not None:
            for index, key in enumerate(self.order()):
                if self._views[key].model == self._model:
                    table.move_cursor(row=index, animate=False)
                    break
        table.focus()

    def on_unmount(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()

    def _on_cache_event(self, event: CacheEvent) -> None:
        """In the cache's thread: only post a message."""
        if event.kind in REFRESHING_KINDS:
            self.post_message(self.Changed())

    def on_prompt_caches_screen_changed(self, message: Changed) -> None:
        self.refresh_list()

    # -- reading ---------------------------------------------------------------------------------
    def order(self) -> list[str]:
        """Row keys top to bottom (``model\\x1fid``)."""
        return [str(row.key.value) for row in self.query_one(DataTable).ordered_rows]

    def rows_text(self) -> list[dict[str, str]]:
        """The rows as shown, plain text by column key (for people reading tests)."""
        table = self.query_one(DataTable)
        return [{key: str(cell) for (key, _), cell in zip(COLUMNS, table.get_row(row))}
                for row in self.order()]

    @property
    def highlighted(self) -> PromptCacheView | None:
        table = self.query_one(DataTable)
        if not table.row_count:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return self._views.get(str(key))

    def _cells(self, v: PromptCacheView, now: float) -> tuple[str, ...]:
        return (middle_cut(self._names.shown(v.model), MODEL_WIDTH), v.label, f"{v.tokens:,}",
                format_bytes(v.memory_bytes) if v.memory_bytes else "-",
                format_bytes(v.disk_bytes) if v.disk_bytes else "-",
                "both" if v.memory_bytes and v.disk_bytes else v.tier,
                clock_time(v.last_used, now), str(v.hits), f"{v.saves_seconds:.2f} s")

    def refresh_list(self) -> None:
        """Read the prompt caches again; rebuild the table only if what it shows changed.
        Newest first; the cursor stays on its prompt cache while that one is listed."""
        views = sorted(self._cache.prompt_caches(), key=lambda v: (-v.last_used, v.model, v.id))
        now = self._clock()
        self._views = {_row_key(v): v for v in views}
        rows = [(_row_key(v), self._cells(v, now)) for v in views]
        self._show_summary(views)
        if rows == self._shown:
            return
        self._shown = rows
        table = self.query_one(DataTable)
        current = self.highlighted
        keep = _row_key(current) if current is not None else None
        row_index = table.cursor_row
        table.clear()
        for key, cells in rows:
            table.add_row(*(Text(c, justify="right" if k in _RIGHT else "left")
                            for (k, _), c in zip(COLUMNS, cells)), key=key)
        keys = [key for key, _ in rows]
        if keep in keys:
            table.move_cursor(row=keys.index(keep), animate=False)
        elif keys:  # its row went: the one now in its place
            table.move_cursor(row=min(row_index, len(keys) - 1), animate=False)

    def _show_summary(self, views: list[PromptCacheView]) -> None:
        settings = self._cache.settings.prompt_cache
        if not settings.enabled:
            text = "Prompt caches are off: [prompt_cache] enabled = false in settings.toml."
        elif not views:
            text = (f"No prompt caches yet: a reply to a prompt of at least {settings.min_tokens} "
                    "tokens keeps one, so the next prompt that starts the same is not read again.")
        else:
            memory = sum(v.memory_bytes for v in views)
            disk = sum(v.disk_bytes for v in views)
            text = (f"{len(views)} prompt cache{'s' if len(views) != 1 else ''}: "
                    f"{format_bytes(memory)} in memory, {format_bytes(disk)} on disk. Saves: the "
                    "seconds of prefill each read spares; In: memory, disk or both.")
        self.query_one("#prompt-caches-summary", Static).update(Text(text))

    # -- acting ----------------------------------------------------------------------------------
    def action_drop(self) -> None:
        view = self.highlighted
        if view is None:
            return
        shown = self._names.shown(view.model)
        if not view.memory_bytes:
            def delete() -> None:
                gone = self._cache.delete_prompt_cache(view.model, view.id,
                                                       reason="asked from the prompt-cache view")
                message = (f"deleted from disk ({view.tokens:,} tokens of {shown})" if gone
                           else f"it was no longer on disk ({shown})")
                self.app.call_from_thread(self.notify, message, title="Prompt cache deleted",
                                          markup=False)
                self.post_message(self.Changed())

            self.run_worker(delete, thread=True, name="delete prompt cache", exit_on_error=False)
            return

        def drop() -> None:
            freed = self._cache.drop_prompt_cache(view.model, view.id,
                                                  reason="asked from the prompt-cache view")
            message = (f"{format_bytes(freed)} of memory freed ({view.tokens:,} tokens of {shown})"
                       if freed else f"it was no longer in memory ({shown})")
            self.app.call_from_thread(self.notify, message, title="Prompt cache dropped",
                                      markup=False)
            self.post_message(self.Changed())

        self.run_worker(drop, thread=True, group="prompt-caches", name="drop prompt cache",
                        exit_on_error=False)
