"""The JSON documents about the cache that ``GET /``, ``GET /health`` and ``mlx-tui status`` share.

``cached_models`` follows the seed document: *cached* means in memory, so it lists the models
that are loaded or loading, each with the seed's fields (``name``, ``use_count``,
``last_used``, ``loaded_at``, ``load_time_seconds``) plus ``state``, ``pinned`` and
``size_bytes``. Every model the catalog knows, loaded or not, is under ``models``.

Plain functions of the cache's fast, lock-protected reads: safe to call on an event loop.
"""

from __future__ import annotations

from typing import Any

from .. import __version__
from ..core.cache import ModelCache, ModelState, ModelView
from ..core.memory import MemorySnapshot
from ..core.planner import Thresholds
from ..core.units import iso_seconds

__all__ = ["CACHED_STATES", "memory_document", "model_document", "health_document"]

CACHED_STATES = frozenset({ModelState.LOADED, ModelState.LOADING})


def memory_document(snap: MemorySnapshot, thresholds: Thresholds) -> dict[str, Any]:
    """The memory weights live in, with the thresholds the cache compares it with.

    ``kind`` says which memory ``used_fraction`` / ``total_bytes`` / ``used_bytes`` measure
    (``unified``: a Mac's, ``device``: the GPU's own on CUDA, ``host``: system memory) and
    ``source`` where the figures came from (``"GPU 0 device memory (NVML)"``); ``system_*`` is
    system memory in every case. The wired figures are a Mac's (null elsewhere):
    ``wired_limit_bytes`` is the ``iogpu.wired_limit_mb`` sysctl (0 = macOS's default) and
    ``wired_ceiling_bytes`` what the GPU may wire now (that sysctl, else the recommended set).
    """
    return {
        "kind": snap.kind,
        "source": snap.source,
        "device_name": snap.device_name,
        "used_fraction": round(snap.used_fraction, 4),
        "total_bytes": snap.total_bytes,
        "used_bytes": snap.used_bytes,
        "available_bytes": snap.available_bytes,
        "system_total_bytes": snap.system_total_bytes,
        "system_used_bytes": snap.system_used_bytes,
        "wired_bytes": snap.wired_bytes,
        "wired_limit_bytes": snap.wired_limit_bytes,
        "wired_ceiling_bytes": snap.wired_ceiling_bytes,
        "recommended_working_set_bytes": snap.recommended_working_set_bytes,
        "warning_threshold": thresholds.warning,
        "emergency_threshold": thresholds.emergency,
        "zone": thresholds.zone(snap.used_fraction),
        "mlx_active_bytes": snap.mlx_active_bytes,
        "mlx_cache_bytes": snap.mlx_cache_bytes,
        "mlx_peak_bytes": snap.mlx_peak_bytes,
        "swap_total_bytes": snap.swap_total_bytes,
        "swap_used_bytes": snap.swap_used_bytes,
        "pressure": snap.pressure_name,
        "measured_at": iso_seconds(snap.taken_at),
    }


def model_document(view: ModelView) -> dict[str, Any]:
    """One model: the seed's fields first, then state, pin, sizes and load progress."""
    doc = view.to_dict()
    doc["lifetime_use_count"] = view.lifetime_use_count
    if view.state is ModelState.LOADING:
        doc["progress"] = view.progress()
        doc["eta_seconds"] = view.eta_seconds()
    return doc


def health_document(cache: ModelCache) -> dict[str, Any]:
    """The body of ``GET /`` and ``GET /health``."""
    views = cache.models()
    snap = cache.memory()
    models = [model_document(v) for v in views]
    return {
        "status": cache.thresholds.zone(snap.used_fraction),
        "service": "mlx-tui",
        "version": __version__,
        "cached_models": [doc for doc, v in zip(models, views) if v.state in CACHED_STATES],
        "memory": memory_document(snap, cache.thresholds),
        "models": models,
    }
