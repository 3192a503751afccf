"""Errors a distributed model can meet, each with a message that names the host and what to do.

They subclass the core's errors, so the cache, the server and the app treat them as they treat a
local model's (:class:`HostfileError` lives with the hostfile, importable without the core): a
load that fails (:class:`DistributedLoadError`), a host that cannot fit its
part (:class:`HostTooSmall`, a :class:`~mlx_tui.core.cache.ModelTooLarge`), and a rank that died
or stopped answering while the model was in use (:class:`RankLost`).
"""

from __future__ import annotations

from ..core.cache import ModelTooLarge
from ..core.loader import ModelLoadError
from .hostfile import HostfileError

__all__ = ["HostfileError", "DistributedLoadError", "HostTooSmall", "RankLost"]


class DistributedLoadError(ModelLoadError):
    """The ranks could not load their shards (a missing folder on one host, a model mlx-lm
    cannot shard, a group that did not start); the message names each host that failed."""


class HostTooSmall(ModelTooLarge):
    """One host cannot hold its part of the model; ``hosts`` lists every host that refused as
    ``(host, need_bytes, used_bytes, total_bytes)``."""

    def __init__(self, message: str, hosts: list[tuple[str, int, int, int]]) -> None:
        host, need, used, total = hosts[0]
        super().__init__(message, need_bytes=need, freeable_bytes=0, used_bytes=used,
                         total_bytes=total)
        self.hosts = hosts


class RankLost(ModelLoadError):
    """A rank died or stopped answering; the model was unloaded on every host. ``host`` is the
    host that failed (None when it cannot be told which). A load error to the server and the
    app (the model is no longer loaded; the next request starts its ranks again)."""

    def __init__(self, message: str, host: str | None = None) -> None:
        super().__init__(message)
        self.host = host
