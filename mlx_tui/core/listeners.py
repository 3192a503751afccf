"""A thread-safe list of listeners: add one, get a function that removes it, take a snapshot to
call them with no lock held. The cache's events, the settings store and the runtime's settings
dispatch (and the remote hosts) keep their listeners in one of these."""

from __future__ import annotations

import threading
from typing import Callable, Generic, TypeVar

__all__ = ["Listeners"]

L = TypeVar("L")


class Listeners(Generic[L]):
    """Listeners of one kind; :meth:`add` from any thread, :meth:`snapshot` to call them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[L] = []

    def add(self, listener: L) -> Callable[[], None]:
        """Add ``listener``; returns a function that removes it (idempotent)."""
        with self._lock:
            self._items.append(listener)

        def remove() -> None:
            with self._lock:
                if listener in self._items:
                    self._items.remove(listener)

        return remove

    def snapshot(self) -> list[L]:
        """The listeners now, to call outside any lock (one may remove itself meanwhile)."""
        with self._lock:
            return list(self._items)
