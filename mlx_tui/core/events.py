"""Events the cache emits: every load, eviction, refusal and memory reading, with its reason.

:class:`EventOutbox` is how they travel: the cache queues events while it holds its lock and
delivers them after releasing it, in the order they were queued. A listener is therefore free
to call back into the cache, from its own thread or any other.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Callable

from .listeners import Listeners

__all__ = ["EventKind", "CacheEvent", "Listener", "EventOutbox"]

log = logging.getLogger("mlx_tui.cache")


class EventKind(str, Enum):
    LOAD_QUEUED = "load_queued"
    LOAD_STARTED = "load_started"
    LOADED = "loaded"
    LOAD_FAILED = "load_failed"
    REFUSED = "refused"
    EVICTED = "evicted"
    EVICTION_DEFERRED = "eviction_deferred"
    CLEANUP = "cleanup"
    PINNED = "pinned"
    UNPINNED = "unpinned"
    USED = "used"
    RELEASED = "released"
    PRELOAD = "preload"
    MEMORY = "memory"
    SETTINGS = "settings"
    PROMPT_CACHE = "prompt_cache"
    MEMORY_ADVICE = "memory_advice"  # a Mac's wired limit too low for a load, another process wiring


@dataclass(frozen=True)
class CacheEvent:
    """One thing that happened in the cache. ``message`` is for people (the event log)."""

    kind: EventKind
    message: str
    model: str | None = None
    at: float = field(default_factory=time.time)
    data: dict[str, Any] = field(default_factory=dict)


Listener = Callable[[CacheEvent], None]
"""Called from the thread where the event happened: never touch widgets directly from it."""


class EventOutbox:
    """Queues events under the owner's lock; :meth:`deliver` sends them after it is released.

    Delivery never blocks a caller: the thread that finds no delivery under way delivers
    everything queued (its own events and any queued meanwhile by other threads) in queue
    order; a thread that finds one under way returns at once and its events go out with that
    run. So events reach listeners in the order they happened, a listener may call the cache
    (which queues and delivers more) from any thread, and no lock is held while it runs.
    """

    def __init__(self) -> None:
        self._queue: deque[CacheEvent] = deque()
        self._queue_lock = threading.Lock()
        self._delivering = threading.Lock()
        self._listeners: Listeners[Listener] = Listeners()

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` for every event delivered; returns a function that unsubscribes."""
        return self._listeners.add(listener)

    def put(self, event: CacheEvent) -> None:
        """Queue ``event`` (cheap; call it under the owner's lock)."""
        with self._queue_lock:
            self._queue.append(event)

    def deliver(self) -> None:
        """Send every queued event to every listener, in order (call with no lock held)."""
        while True:
            if not self._delivering.acquire(blocking=False):
                return  # the thread delivering now takes ours too
            try:
                while True:
                    with self._queue_lock:
                        if not self._queue:
                            break
                        event = self._queue.popleft()
                    listeners = self._listeners.snapshot()
                    for listener in listeners:
                        try:
                            listener(event)
                        except Exception:  # a broken listener must not break the cache
                            log.exception("event listener failed")
            finally:
                self._delivering.release()
            with self._queue_lock:
                if not self._queue:  # nothing came in between the last pop and the release
                    return
