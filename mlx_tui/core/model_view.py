"""What the cache shows of a model: its state, a read-only view of its figures, and the error
of a model too large to load. Plain values, safe to hand to any thread (the app, the API).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any, Mapping

from .catalog import ModelInfo
from .loader import ModelLoadError
from .units import iso_seconds

__all__ = ["ModelState", "ModelView", "ModelTooLarge"]


class ModelState(str, Enum):
    NOT_LOADED = "not_loaded"
    QUEUED = "queued"
    LOADING = "loading"
    LOADED = "loaded"
    EVICTING = "evicting"
    FAILED = "failed"


class ModelTooLarge(ModelLoadError):
    """A load refused because the model cannot fit, with the figures in the message and as
    attributes (bytes): ``need_bytes``, ``freeable_bytes``, ``used_bytes``, ``total_bytes``."""

    def __init__(self, message: str, *, need_bytes: int = 0, freeable_bytes: int = 0,
                 used_bytes: int = 0, total_bytes: int = 0) -> None:
        super().__init__(message)
        self.need_bytes = need_bytes
        self.freeable_bytes = freeable_bytes
        self.used_bytes = used_bytes
        self.total_bytes = total_bytes


@dataclass(frozen=True)
class ModelView:
    """A read-only copy of one model's state and statistics, safe to pass to any thread.

    ``now`` is the cache's clock at the moment the view was taken, so progress and ETA read
    the same clock the cache does.
    """

    name: str
    info: ModelInfo
    state: ModelState
    resident_bytes: int
    use_count: int
    last_used: float
    loaded_at: float
    load_time_seconds: float
    weights_seconds: float
    tokenizer_seconds: float
    pinned: bool
    leases: int
    error: str | None
    load_started_at: float
    expected_load_seconds: float | None
    lifetime_use_count: int
    evict_when_idle: bool
    now: float
    aliases: tuple[str, ...] = ()
    idle_unload_seconds: float = 0.0
    requests_in_flight: int = 0
    prompt_cache_bytes: int = 0
    prompt_cache_disk_bytes: int = 0
    ranks: tuple[Any, ...] = ()  # a model served across hosts: each rank (host, memory, shard)

    # what the catalogue knows, by the names the app and the API have always used
    @property
    def source(self) -> str:
        return self.info.source

    @property
    def path(self) -> str | None:
        return str(self.info.path) if self.info.path else None

    @property
    def architecture(self) -> str | None:
        return self.info.architecture

    @property
    def quantization_bits(self) -> int | None:
        return self.info.quantization_bits

    @property
    def disk_bytes(self) -> int:
        return self.info.disk_bytes

    @property
    def estimated_bytes(self) -> int:
        return self.info.estimated_bytes

    @property
    def generation_defaults(self) -> Mapping[str, Any]:
        """Sampling defaults from the model's ``generation_config.json`` (may be empty)."""
        return self.info.generation_defaults

    @property
    def usable(self) -> bool:
        """Could load now: no known problem and not failed."""
        return self.info.loadable and self.state is not ModelState.FAILED

    @property
    def size_bytes(self) -> int:
        """Measured bytes when loaded, the estimate otherwise."""
        return self.resident_bytes or self.estimated_bytes

    @property
    def is_loaded(self) -> bool:
        return self.state is ModelState.LOADED

    def _load_elapsed(self, now: float | None) -> float | None:
        """Seconds into a load whose length can be estimated; None otherwise."""
        if self.state is not ModelState.LOADING or not self.expected_load_seconds:
            return None
        return (self.now if now is None else now) - self.load_started_at

    def progress(self, now: float | None = None) -> float | None:
        """A load's estimated progress 0..1 from past load speed; None when unknown."""
        elapsed = self._load_elapsed(now)
        if elapsed is None or not self.expected_load_seconds:
            return None
        return max(0.0, min(0.99, elapsed / self.expected_load_seconds))

    def eta_seconds(self, now: float | None = None) -> float | None:
        elapsed = self._load_elapsed(now)
        if elapsed is None or not self.expected_load_seconds:
            return None
        return max(0.0, self.expected_load_seconds - elapsed)

    def to_dict(self) -> dict[str, Any]:
        """The seed document's fields (``name``, ``use_count``, ``last_used``, ``loaded_at``,
        ``load_time_seconds``) plus state, pin, sizes, as JSON-ready data."""
        return {
            "name": self.name,
            "use_count": self.use_count,
            "last_used": iso_seconds(self.last_used),
            "loaded_at": iso_seconds(self.loaded_at) if self.is_loaded else None,
            "load_time_seconds": round(self.load_time_seconds, 3) if self.load_time_seconds else None,
            "state": self.state.value,
            "pinned": self.pinned,
            "size_bytes": self.size_bytes,
            "estimated_bytes": self.estimated_bytes,
            "resident_bytes": self.resident_bytes,
            "in_use": self.leases,
            "source": self.source,
            "aliases": list(self.aliases),
            "error": self.error,
            "prompt_cache_bytes": self.prompt_cache_bytes,
            "prompt_cache_disk_bytes": self.prompt_cache_disk_bytes,
            **({"ranks": [r.to_dict() for r in self.ranks]} if self.ranks else {}),
        }
