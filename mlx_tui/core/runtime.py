"""Wiring: one :class:`Runtime` holds the settings, store, cache and chat engine of a process.

The app (``mlx-tui``), the headless server (``mlx-tui serve``) and tests build the same thing
with :func:`build_runtime`, so they share one cache and one set of rules.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from .cache import ModelCache
from .catalog import Catalog
from .chat import ChatEngine
from .loader import MlxLoader, ModelLoader
from .memory import MemoryProbe, SystemMemoryProbe
from .settings import SettingsStore, find_settings_path
from .store import Store, default_db_path

__all__ = ["Runtime", "build_runtime"]

log = logging.getLogger("mlx_tui")


@dataclass
class Runtime:
    """Everything a front end needs; :meth:`close` stops the background threads."""

    settings_store: SettingsStore
    store: Store
    cache: ModelCache
    chat: ChatEngine

    def close(self) -> None:
        self.cache.close()
        self.store.close()


def build_runtime(
    settings_path: Path | None = None,
    *,
    db_path: Path | str | None = None,
    probe: MemoryProbe | None = None,
    loader: ModelLoader | None = None,
) -> Runtime:
    """Find and read settings, open the store, and build the cache (not started yet)."""
    path, source = find_settings_path(settings_path)
    settings_store = SettingsStore(path, source)
    if settings_store.error is not None:
        log.warning("%s; using defaults until it is fixed", settings_store.error)
    store = Store(db_path if db_path is not None else default_db_path())
    settings = settings_store.settings
    cache = ModelCache(
        settings,
        loader or MlxLoader(),
        probe or SystemMemoryProbe(),
        store=store,
        catalog=Catalog(settings),
        settings_store=settings_store,
    )
    return Runtime(settings_store, store, cache, ChatEngine(cache))
