"""Wiring: one :class:`Runtime` holds the settings, store, cache and chat engine of a process.

The app (``mlx-tui``), the headless server (``mlx-tui serve``) and tests build the same thing
with :func:`build_runtime`, so they share one cache and one set of rules.

The runtime owns the watch on ``settings.toml`` (one thread polls its mtime) and hands each
part only its own sections, only when they changed: ``[memory]``, ``[cache]``, ``[engine]`` and
``[prompt_cache]`` to the cache, ``[models]`` and ``[catalog]`` to the catalogue (through the
cache, which owns the names), and anything else (``[ui]`` to the app, ``[api]`` to the server)
to whoever asked with :meth:`Runtime.on_settings`.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from .cache import ModelCache
from .catalog import Catalog
from .chat import ChatEngine
from .listeners import Listeners
from .loader import MlxLoader, ModelLoader
from .memory import MemoryProbe, SystemMemoryProbe
from .monitor import CacheMonitor
from .settings import SettingsChange, SettingsListener, SettingsStore, find_settings_path
from .store import Store, default_db_path

__all__ = ["Runtime", "build_runtime", "CACHE_SECTIONS"]

log = logging.getLogger("mlx_tui")

CACHE_SECTIONS = frozenset({"memory", "cache", "engine", "prompt_cache", "models", "catalog"})
"""The sections the cache (and through it the catalogue) is handed when they change."""


@dataclass(eq=False)
class _Subscription:
    listener: SettingsListener
    sections: frozenset[str] | None  # None: every change


@dataclass
class Runtime:
    """Everything a front end needs. :meth:`start` starts the cache and the settings watch;
    :meth:`close` stops every background thread and unloads the models."""

    settings_store: SettingsStore
    store: Store
    cache: ModelCache
    chat: ChatEngine
    monitor: CacheMonitor
    problems: list[str] = field(default_factory=list)
    """What went wrong at start that a front end should show (an unwritable database...)."""
    _subscriptions: Listeners[_Subscription] = field(default_factory=Listeners)
    _stop: threading.Event = field(default_factory=threading.Event)
    _watcher: threading.Thread | None = None

    def __post_init__(self) -> None:
        self._unsubscribe_store = self.settings_store.subscribe(self._dispatch)

    # -- settings --------------------------------------------------------------------------------
    def on_settings(self, listener: SettingsListener,
                    sections: Iterable[str] | None = None) -> Callable[[], None]:
        """Call ``listener`` when one of ``sections`` changed (every change when None), and
        with the error when the file became invalid. Called from the watch thread or the
        thread that saved; returns a function that unsubscribes."""
        return self._subscriptions.add(
            _Subscription(listener, frozenset(sections) if sections is not None else None))

    def _dispatch(self, change: SettingsChange) -> None:
        if change.new is not None and change.sections & CACHE_SECTIONS:
            self.cache.apply_settings(change.new, change.sections)
        elif change.error is not None:
            self.cache.report_settings_error(change.error)
        for sub in self._subscriptions.snapshot():
            if change.error is None and sub.sections is not None and not (change.sections & sub.sections):
                continue
            try:
                sub.listener(change)
            except Exception:  # noqa: BLE001 - one broken listener must not stop the others
                log.exception("settings listener failed")

    def check_settings_file(self) -> bool:
        """Re-read settings.toml if it changed on disk (what the watch thread does each poll)."""
        return self.settings_store.reload_if_changed()

    def _watch(self) -> None:
        while not self._stop.wait(self.settings_store.settings.memory.poll_seconds):
            try:
                self.check_settings_file()
            except Exception:  # noqa: BLE001 - the watch must survive any one bad read
                log.exception("settings watch step failed")

    # -- lifetime --------------------------------------------------------------------------------
    def start(self, preload: bool = True) -> None:
        """Start the cache's monitor (and preloads) and the settings watch."""
        self.monitor.start(preload=preload)
        if self._watcher is None:
            self._stop.clear()
            self._watcher = threading.Thread(target=self._watch, name="settings-watch", daemon=True)
            self._watcher.start()

    def close(self) -> None:
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(timeout=5)
            self._watcher = None
        self._unsubscribe_store()
        self.monitor.stop()
        self.cache.close()
        self.store.close()


def build_runtime(
    settings_path: Path | None = None,
    *,
    db_path: Path | str | None = None,
    probe: MemoryProbe | None = None,
    loader: ModelLoader | None = None,
    clock: Callable[[], float] | None = None,
) -> Runtime:
    """Find and read settings, open the store, and build the cache (not started yet)."""
    path, source = find_settings_path(settings_path)
    settings_store = SettingsStore(path, source)
    if settings_store.error is not None:
        log.warning("%s; using defaults until it is fixed", settings_store.error)
    problems: list[str] = []
    path_db = db_path if db_path is not None else default_db_path()
    try:
        store = Store(path_db)
    except Exception as exc:  # noqa: BLE001 - the app runs without statistics, and says so
        problem = (f"the database {path_db} cannot be opened ({type(exc).__name__}: {exc}); "
                   "running with statistics and saved chats off until restart (use --db to "
                   "pick a writable file)")
        log.warning("%s", problem)
        problems.append(problem)
        store = Store(":memory:")
    settings = settings_store.settings
    cache = ModelCache(
        settings,
        loader or MlxLoader(),
        probe or SystemMemoryProbe(),
        store=store,
        catalog=Catalog(settings),
        **({"clock": clock} if clock is not None else {}),
    )
    return Runtime(settings_store, store, cache, ChatEngine(cache), CacheMonitor(cache, store),
                   problems)
