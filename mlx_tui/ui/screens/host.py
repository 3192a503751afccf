"""One remote host on screen: the main screen's gauge, models table, chat and event log over it.

The widgets are the app's own, unchanged: they are given the host's
:class:`~mlx_tui.remote.host.RemoteHost`, which reads like a local runtime (``cache``,
``chat``, ``store``). The host's cache events (made from the differences between two polls of
its ``/health``) come here as :class:`~mlx_tui.ui.messages.CacheEventPosted` messages, as the
local cache's come to the app; the host's poll reports come through the app
(:meth:`HostScreen.show_report`). The app's keys (new chat, saved chats, options, copy, log,
zoom) act on this screen's panes while it is shown.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable

from textual import events
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.content import Content
from textual.message import Message
from textual.message_pump import MessagePump
from textual.screen import Screen
from textual.widgets import Footer

from ...core.chat import GenerationParams
from ...core.events import CacheEvent, EventKind
from ..format import clock_time, duration
from ..messages import CacheEventPosted
from ..names import ShownNames, first_model
from ..widgets.chat import ChatInput, ChatPane
from ..widgets.event_log import LOGGED, EventLog
from ..widgets.memory_gauge import MemoryGauge
from ..widgets.models_table import ModelsTable

if TYPE_CHECKING:  # httpx loads with the first remote host, not with the app
    from ...remote.host import RemoteHost
    from ...remote.poller import HostReport

__all__ = ["HostScreen", "state_words", "why_down", "report_line", "fit_table_height",
           "post_from_thread"]

CHAT_REPLY_LINES = 8  # as on the app's own screen: the chat keeps 8 lines, the table gives way
TABLE_MIN_HEIGHT, TABLE_MAX_HEIGHT = 4, 12


def post_from_thread(node: MessagePump, message: Message) -> None:
    """Post ``message`` to ``node`` from a worker thread; nothing once the app has closed."""
    try:
        node.post_message(message)
    except RuntimeError:  # the event loop is gone: the app is closing
        pass


def fit_table_height(height: int) -> int:
    """The models table's height on a screen ``height`` rows tall (the app's own rule)."""
    gauge = 5 if height < 28 else 6
    room = height - 1 - gauge - (2 + CHAT_REPLY_LINES + 3)
    return max(TABLE_MIN_HEIGHT, min(TABLE_MAX_HEIGHT, room))


def state_words(report: "HostReport | None", now: float) -> str:
    """``up`` / ``up · back 15:30:02 after 8s down`` / ``down 12s (3 tries)``."""
    if report is None:
        return "waiting for its first answer"
    if report.reachable:
        if report.down_seconds is not None:
            return f"up · back {clock_time(report.since, now)} after {duration(report.down_seconds)} down"
        return "up"
    tries = f" ({report.failures} tries)" if report.failures > 1 else ""
    return f"down {duration(now - report.since)}{tries}"


def why_down(report: "HostReport", prefix: str = "") -> str:
    """``connection refused (is mlx-tui running there?) · next try 15:30:10``, without the
    ``studio (http://…): `` a remote's problems start with."""
    problem = report.problem or "no answer"
    if prefix and problem.startswith(prefix):
        problem = problem[len(prefix):]
    return f"{problem} · next try {clock_time(report.at + report.next_poll_in, report.at)}"


def report_line(report: "HostReport | None", now: float, prefix: str = "") -> str:
    """The state, and for a host that does not answer, why and when it is asked again."""
    words = state_words(report, now)
    if report is not None and not report.reachable:
        words += f": {why_down(report, prefix)}"
    return words


class HostScreen(Screen[None]):
    """The panes of one remote host. Made (and installed) by the app's host switcher, which
    closes the host; the screen only shows it and sends the user's actions to it."""

    def __init__(self, host: "RemoteHost", params_for: Callable[[str | None], GenerationParams], *,
                 key_clock: Callable[[], float] = time.monotonic,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self.host = host
        self.names = ShownNames()
        self._params_for = params_for
        self._key_clock = key_clock
        self._now = clock
        self._unsubscribe: Callable[[], None] | None = None
        self._report: "HostReport | None" = host.report

    def compose(self) -> ComposeResult:
        cache = self.host.cache
        self.gauge = MemoryGauge(cache.thresholds.warning, cache.thresholds.emergency, id="gauge")
        self.table = ModelsTable(cache, self.names, clock=self._key_clock, id="models")
        self.chat = ChatPane(self.host, self._first_model(), self._params_for,  # type: ignore[arg-type]
                             id="chat")
        self.event_log = EventLog(id="log")
        yield self.gauge
        yield self.table
        with Horizontal(id="lower"):
            yield self.chat
            yield self.event_log
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        self._fit(self.app.size.width, self.app.size.height)
        self.watch(self, "maximized", lambda _: self._fit(self.app.size.width, self.app.size.height))
        self.gauge.show_snapshot(self.host.cache.memory())
        self.gauge.border_title = f"Memory · {self.host.name}"
        self.table.sync()
        self.table.set_chat_model(self.chat.model, select=True)
        self._unsubscribe = self.host.cache.subscribe(self._on_cache_event)
        address = self.host.address
        self.event_log.add_line("host", f"{address.name} at {address.url}", self._now())
        if address.security_note:
            self.event_log.add_line("host", address.security_note, self._now(), "warning")
        self.show_report(self.host.report)
        self.query_one(ChatInput).focus()

    def on_unmount(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        self.chat.stop_all()

    def on_resize(self, event: events.Resize) -> None:
        self._fit(event.size.width, event.size.height)

    def _fit(self, width: int, height: int) -> None:
        """As the app's own screen: the log beside the chat from 100 columns, and the table
        as tall as it may be with 8 lines left for the reply."""
        self.query_one("#lower").set_class(width >= 100, "show-log")
        zoomed = self.maximized is self.table
        self.table.styles.max_height = None if zoomed else fit_table_height(height)

    def _first_model(self) -> str | None:
        """What a chat with this host starts with: its most used model in memory, else the one
        the app would pick (``default``, ``demo``, the first usable)."""
        loaded = [v for v in self.host.cache.models() if v.is_loaded]
        if loaded:
            return max(loaded, key=lambda v: v.use_count).name
        return first_model(self.host.cache, None, self.names)[0]

    # -- the host's news -----------------------------------------------------------------------
    def _on_cache_event(self, event: CacheEvent) -> None:
        """In the poller's (or the action) thread: only post a message."""
        post_from_thread(self, CacheEventPosted(event))

    def on_cache_event_posted(self, message: CacheEventPosted) -> None:
        message.stop()  # the app's handler is for the local cache
        event = message.event
        if event.kind is EventKind.MEMORY:
            thresholds = self.host.cache.thresholds
            self.gauge.set_thresholds(thresholds.warning, thresholds.emergency)
            self.gauge.show_snapshot(event.data["snapshot"])
            self._models_changed()  # every reading ends with its memory figures
            return
        text = self.names.message(event.model, event.message)
        if event.kind is EventKind.LOAD_FAILED:
            self.notify(text, title=f"Load failed on {self.host.name}", severity="error", timeout=10)
        elif event.kind is EventKind.REFUSED:
            self.notify(text, title=f"Refused by {self.host.name}", severity="error", timeout=10)
        if event.kind in LOGGED:
            self.event_log.add(event, text)

    def _models_changed(self) -> None:
        views = self.host.cache.models()
        self.table.sync(views)
        if self.chat.model is None and views:  # the first reading: a model to chat with
            model = self._first_model()
            if model is not None:
                self.chat.set_model(model)
                self.table.set_chat_model(model, select=True)
        self.chat.update_progress()

    def show_report(self, report: "HostReport | None") -> None:
        """A poll's outcome (on the event loop): the line under the gauge, and a log line
        when the host went away or came back."""
        before, self._report = self._report, report
        now = self._now()
        address = self.host.address
        marker = " · plain HTTP" if address.plain_over_network else ""
        prefix = f"{address.name} ({address.url}): "
        self.gauge.border_subtitle = Content(
            f"{address.name} · {address.url}{marker} · {report_line(report, now, prefix)}")
        if report is None or (before is not None and before.reachable == report.reachable):
            return
        if not report.reachable:
            self.event_log.add_line("host", f"unreachable: {why_down(report, prefix)}", report.at,
                                    "error")
        elif before is not None:
            self.event_log.add_line("host", report_line(report, now), report.at, "success")

    # -- what the user asks --------------------------------------------------------------------
    def on_models_table_chat_with(self, message: ModelsTable.ChatWith) -> None:
        message.stop()  # the app's handler is for its own panes
        shown = self.names.shown(message.name)
        self.chat.set_model(shown)
        self.table.set_chat_model(message.name)
        self.query_one(ChatInput).focus()
        self.notify(f"Chatting with {shown} on {self.host.name}.")

    def on_models_table_confirm_emergency(self, message: ModelsTable.ConfirmEmergency) -> None:
        message.stop()
        from .confirm import ConfirmScreen

        def answered(yes: bool | None) -> None:
            if yes:
                self.table.emergency_cleanup()

        self.app.push_screen(ConfirmScreen(
            f"Emergency clean-up on {self.host.name}",
            f"Unload every model on {self.host.name} now? Models in use unload when their "
            "reply ends."), answered)

    def on_chat_pane_reply_ended(self, message: ChatPane.ReplyEnded) -> None:
        self.host.poll_now()  # its use count and lease changed there

    async def open_conversation(self, conversation_id: int) -> None:
        """Show a saved conversation with this host and continue it here."""
        await self.chat.open_conversation(conversation_id)
        self.table.set_chat_model(self.chat.model)
        self.query_one(ChatInput).focus()
