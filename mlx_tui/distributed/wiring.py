"""A runtime whose loader serves some models across machines, as settings.toml or the command
line says: ``[models.NAME]`` tables with a ``hostfile``, or ``mlx-tui serve --hostfile``.

The app and ``mlx-tui serve`` build their runtime here: with no distributed model configured
this is :func:`mlx_tui.core.runtime.build_runtime` unchanged (and nothing of MLX's distributed
machinery is imported); otherwise the runtime's loader is a
:class:`~.loader.DistributedLoader` wired to the cache (settings in force at each load, a
follower host past a threshold cleans up, lost ranks mark the model failed).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Mapping

from ..core.runtime import Runtime, build_runtime
from ..core.settings import SettingsStore, find_settings_path

__all__ = ["build_runtime_with_hosts"]

log = logging.getLogger("mlx_tui.distributed")


def build_runtime_with_hosts(settings_path: Path | None = None, *, db_path: Path | str | None = None,
                             extra: Mapping[str, Any] | None = None,
                             **kwargs: Any) -> tuple[Runtime, Callable[[], None]]:
    """The runtime, and a function that stops what it started (call it after ``runtime.close``).

    ``extra`` maps a model name to a ready :class:`~.loader.DistributedSpec` (the command
    line's ``--hostfile``); ``[models.NAME]`` tables of settings.toml add theirs. A table whose
    hostfile cannot be read is reported in ``runtime.problems`` and that model loads locally.
    """
    path, source = find_settings_path(settings_path)
    tables = SettingsStore(path, source).settings.distributed
    if not tables and not extra:
        return build_runtime(settings_path, db_path=db_path, **kwargs), lambda: None

    from .bridge import CacheBridge
    from .hostfile import HostfileError
    from .loader import DistributedLoader, DistributedSpec

    specs: dict[str, DistributedSpec] = dict(extra or {})
    problems = []
    for name, table in tables.items():
        try:
            specs.setdefault(name, DistributedSpec.from_table(name, table))
        except HostfileError as exc:
            problems.append(f"{exc}; {name} loads on this machine only")
    bridge: list[CacheBridge] = []
    loader = DistributedLoader(on_pressure=lambda p: bridge[0].pressure(p),
                               on_lost=lambda name, error: bridge[0].lost(name, error))
    runtime = build_runtime(settings_path, db_path=db_path, loader=loader, **kwargs)
    runtime.problems.extend(problems)
    for problem in problems:
        log.warning("%s", problem)
    cache = runtime.cache
    loader.engine = lambda: cache.settings.engine
    loader.thresholds = lambda: cache.thresholds
    bridge.append(CacheBridge(cache))
    for name, spec in specs.items():
        loader.add(name, spec)
        try:
            view = cache.get(name)
        except LookupError:
            continue
        if view.path:
            loader.add(view.path, spec)

    def stop() -> None:
        loader.close()
        bridge[0].close()

    return runtime, stop
