"""CacheMonitor: the background rhythm of the cache: memory polls, idle unloads, preloads.

The cache decides and acts; the monitor only says *when*: every ``[memory].poll_seconds`` it
asks the cache to read memory and clean up past a threshold (:meth:`ModelCache.check_memory`),
unloads models idle longer than their idle-unload time, and at start it preloads
``[cache].preload`` plus the most popular models of past sessions while memory is below
``background_load_below``. One thread, which never touches MLX itself (loads run on the
cache's loader pool).
"""

from __future__ import annotations

import logging
import threading

from .cache import ModelCache, ModelState
from .catalog import UnknownModel
from .events import EventKind
from .loader import ModelLoadError
from .store import Store

__all__ = ["CacheMonitor"]

log = logging.getLogger("mlx_tui.cache")


class CacheMonitor:
    """Owns the poll thread of one :class:`ModelCache`; the runtime starts and stops it."""

    def __init__(self, cache: ModelCache, store: Store | None = None) -> None:
        self._cache = cache
        self._store = store
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._preloader: threading.Thread | None = None

    def step(self) -> None:
        """One poll: memory and thresholds, then idle models."""
        self._cache.check_memory()
        if self.unload_idle():
            self._cache.report_memory()

    def unload_idle(self) -> list[str]:
        """Unload every loaded, unpinned, unused model idle past its idle-unload time."""
        now = self._cache.clock()
        gone = []
        for view in self._cache.models():
            idle = view.idle_unload_seconds
            if (idle <= 0 or view.state is not ModelState.LOADED or view.pinned or view.leases
                    or now - max(view.last_used, view.loaded_at) < idle):
                continue
            if self._cache.evict(view.name, f"idle for {idle:g} s", idle_since=now - idle):
                gone.append(view.name)
        return gone

    def preload_names(self) -> list[str]:
        """``[cache].preload`` then the ``preload_popular`` most used models of past sessions."""
        settings = self._cache.settings.cache
        names = list(settings.preload)
        if settings.preload_popular and self._store is not None:
            try:
                popular = self._store.most_used(settings.preload_popular + len(names))
            except Exception:  # noqa: BLE001 - no history: only the configured preloads
                popular = []
            for name in popular:
                if name not in names and len(names) < len(settings.preload) + settings.preload_popular:
                    names.append(name)
        return names

    def preload(self) -> None:
        """Load the preload list in order, each only while memory is below
        ``background_load_below``; logs "preloaded NAME in S s" or why not."""
        cache = self._cache
        limit = cache.settings.memory.background_load_below
        for name in self.preload_names():
            if self._stop.is_set():
                return
            snap = cache.memory(fresh=True)
            if snap.used_fraction >= limit:
                cache.announce(EventKind.PRELOAD,
                            f"could not preload {name}: memory {snap.used_fraction:.0%} >= "
                            f"background_load_below {limit:.0%}", name, logging.WARNING, ok=False)
                continue
            try:
                view = cache.load(name, reason="preload").result()
            except (ModelLoadError, UnknownModel) as exc:
                cache.announce(EventKind.PRELOAD, f"could not preload {name}: {exc}", name,
                            logging.WARNING, ok=False)
                continue
            cache.announce(EventKind.PRELOAD, f"preloaded {view.name} in {view.load_time_seconds:.2f} s",
                        view.name, ok=True)

    # -- lifetime --------------------------------------------------------------------------------
    def start(self, preload: bool = True) -> None:
        """Start polling (and the preloads) in background threads."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="memory-monitor", daemon=True)
        self._thread.start()
        if preload:
            self._preloader = threading.Thread(target=self.preload, name="preload", daemon=True)
            self._preloader.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
            except Exception:  # the monitor must keep running whatever one step meets
                log.exception("memory monitor step failed")
            self._stop.wait(self._cache.settings.memory.poll_seconds)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
