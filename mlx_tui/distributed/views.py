"""What the dashboard, ``/health`` and ``/`` show of a distributed model: one line per rank."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..core.memory import MemorySnapshot

__all__ = ["RankView"]


@dataclass(frozen=True)
class RankView:
    """One rank as last reported: the host it runs on (as the hostfile names it), its state
    (``starting``, ``ready``, ``loading``, ``loaded``, ``failed``, ``stopped``), the bytes of
    its shard (measured once loaded, estimated before) and its host's memory."""

    rank: int
    host: str
    state: str
    shard_bytes: int = 0
    estimated_shard_bytes: int = 0
    memory: MemorySnapshot | None = None
    hostname: str | None = None
    pid: int | None = None
    error: str | None = None

    @property
    def used_fraction(self) -> float | None:
        return self.memory.used_fraction if self.memory is not None else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready figures for ``/health`` and ``/``."""
        m = self.memory
        return {
            "rank": self.rank,
            "host": self.host,
            "hostname": self.hostname,
            "state": self.state,
            "shard_bytes": self.shard_bytes or self.estimated_shard_bytes,
            "measured": bool(self.shard_bytes),
            "memory": None if m is None else {
                "total_bytes": m.total_bytes,
                "used_bytes": m.used_bytes,
                "available_bytes": m.available_bytes,
                "used_fraction": round(m.used_fraction, 4),
                "mlx_active_bytes": m.mlx_active_bytes,
                "mlx_cache_bytes": m.mlx_cache_bytes,
            },
            "pid": self.pid,
            "error": self.error,
        }
