"""One remote instance as the app reads a :class:`~mlx_tui.core.runtime.Runtime`.

:class:`RemoteHost` has what the app's widgets use of a runtime: ``cache`` (a
:class:`~.cache.RemoteCache`), ``chat`` (a :class:`~.chat.RemoteChat`) and ``store`` (this
machine's store, through :class:`HostStore`, so that a conversation started with a remote
remembers the host). It owns the host's HTTP client, its poller thread and its action thread.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import httpx

from ..core.listeners import Listeners
from ..core.store import ConversationRow, MessageRow, Store
from .address import RemoteAddress
from .cache import RemoteCache
from .chat import RemoteChat
from .client import RemoteClient
from .poller import HostPoller, HostReport

__all__ = ["RemoteHost", "HostStore"]

ReportListener = Callable[[HostReport], None]


class HostStore:
    """This machine's store as one host's chat pane writes to it: conversations it creates
    are saved with ``host``. Everything else is the store's own."""

    def __init__(self, store: Store, host: str) -> None:
        self._store = store
        self.host = host

    def create_conversation(self, title: str, model: str, system_prompt: str = "",
                            params: dict[str, Any] | None = None) -> int:
        return self._store.create_conversation(title, model, system_prompt, params, host=self.host)

    def update_conversation(self, conversation_id: int, **fields: Any) -> None:
        self._store.update_conversation(conversation_id, **fields)

    def add_message(self, conversation_id: int, role: str, content: str,
                    stats: dict[str, Any] | None = None) -> int:
        return self._store.add_message(conversation_id, role, content, stats)

    def conversations(self, limit: int = 200) -> list[ConversationRow]:
        return self._store.conversations(limit)

    def messages(self, conversation_id: int) -> list[MessageRow]:
        return self._store.messages(conversation_id)

    def delete_conversation(self, conversation_id: int) -> None:
        self._store.delete_conversation(conversation_id)


class RemoteHost:
    """A remote instance for the app: its cache, chat and store, kept fresh by one poller.

    :meth:`start` starts polling; :meth:`close` stops the poller and the action thread and
    closes the HTTP client. Report listeners (:meth:`on_report`) are called from the poller's
    thread with every :class:`HostReport`, after the cache took its reading.
    """

    def __init__(self, address: RemoteAddress, store: Store, *, interval: float | None = None,
                 transport: httpx.BaseTransport | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.address = address
        self.name = address.name
        self.client = RemoteClient(address, transport=transport)
        self._actions = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"remote-{self.name}")
        self.cache = RemoteCache(self.client, self._actions, self.poll_now, clock)
        self.chat = RemoteChat(self.client, self.poll_now)
        self.store = HostStore(store, self.name)
        self._listeners: Listeners[ReportListener] = Listeners()
        poll_options = {"interval": interval} if interval is not None else {}
        self.poller = HostPoller(self.name, self.client.health, self._deliver, clock=clock,
                                 **poll_options)

    @property
    def report(self) -> HostReport | None:
        """The last poll's report (None before the first one ends)."""
        return self.poller.last

    def on_report(self, listener: ReportListener) -> Callable[[], None]:
        """Call ``listener`` with every report; returns a function that unsubscribes."""
        return self._listeners.add(listener)

    def _deliver(self, report: HostReport) -> None:
        self.cache.apply(report)
        for listener in self._listeners.snapshot():
            listener(report)

    def start(self) -> None:
        self.poller.start()

    def poll_now(self) -> None:
        self.poller.poll_now()

    def close(self) -> None:
        # A poll waiting on a silent host holds its thread for up to its timeout; the thread
        # is a daemon and its client is closed here, so closing does not wait for it.
        self.poller.stop(timeout=0.5)
        self.cache.close()
        self._actions.shutdown(wait=False, cancel_futures=True)
        self.client.close()
