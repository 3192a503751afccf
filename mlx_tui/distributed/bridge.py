"""What the ranks make the cache do: unload a distributed model after a clean-up on a follower
host, or after its ranks were lost.

The ranks are heard on their group's reader thread, and unloading waits for that thread to
deliver the ranks' answer, so the cache is never called from there: :class:`CacheBridge` hands
each action to one long-lived thread of its own (it never runs MLX work itself beyond the
cache's ``free``).
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any, Callable

from ..core.cache import ModelCache
from .errors import RankLost
from .loader import HostPressure

__all__ = ["CacheBridge"]

log = logging.getLogger("mlx_tui.distributed")


class CacheBridge:
    """Turns ranks' news into cache calls, in order, on one thread. ``pressure`` and ``lost``
    may be called from any thread (they only queue)."""

    def __init__(self, cache: ModelCache) -> None:
        self._cache = cache
        self._actions: queue.SimpleQueue[Callable[[], Any] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="distributed-bridge", daemon=True)
        self._thread.start()

    def pressure(self, pressure: HostPressure) -> None:
        """A follower host is past a threshold: a clean-up there unloads the model (a pinned
        model stays through a warning, not through an emergency)."""
        self._actions.put(lambda: self._clean_up(pressure))

    def lost(self, name: str, error: RankLost) -> None:
        """The ranks are gone: the model is marked failed with the host's name (its requests
        already failed); the next request starts new ranks."""
        self._actions.put(lambda: self._cache.fail(name, str(error)))

    def _clean_up(self, pressure: HostPressure) -> None:
        view = self._cache.get(pressure.model)
        if not view.is_loaded:
            return
        if view.pinned and pressure.zone == "warning":
            log.warning("%s: %s; pinned, so it stays", pressure.model, pressure.reason)
            return
        self._cache.evict(pressure.model, reason=pressure.reason)

    def _run(self) -> None:
        while True:
            action = self._actions.get()
            if action is None:
                return
            try:
                action()
            except Exception:  # noqa: BLE001 - the bridge must outlive one failed action
                log.exception("distributed: acting on the cache failed")

    def close(self) -> None:
        self._actions.put(None)
        self._thread.join(5.0)
