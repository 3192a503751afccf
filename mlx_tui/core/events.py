"""Events the cache emits: every load, eviction, refusal and memory reading, with its reason."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Callable

__all__ = ["EventKind", "CacheEvent", "Listener"]


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
