"""A remote's ``GET /health`` document read back into the values the local cache gives.

The server writes its views with :func:`mlx_tui.server.documents.health_document`; here the
same JSON becomes real :class:`~mlx_tui.core.model_view.ModelView`,
:class:`~mlx_tui.core.memory.MemorySnapshot` and :class:`~mlx_tui.core.planner.Thresholds`
values, so the app's table, gauge and chat read a remote host exactly as they read their own.
What the document does not carry (the model's folder, its architecture) stays empty.

Times in the document are the remote's local clock to the second; they are read as this
machine's local time (both machines are expected to agree on the time zone).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Mapping, Protocol, Sequence

from ..core.catalog import ModelInfo
from ..core.memory import MemorySnapshot
from ..core.model_view import ModelState, ModelView
from ..core.planner import Thresholds

__all__ = ["HealthReading", "reading_from_health", "reading_from_cache", "view_from_document",
           "snapshot_from_document", "BUSY_STATES"]

BUSY_STATES = frozenset({ModelState.QUEUED, ModelState.LOADING, ModelState.EVICTING})


@dataclass(frozen=True)
class HealthReading:
    """One host's state at one moment: its models, memory and thresholds, as values."""

    status: str  # the zone memory is in: normal, warning, emergency
    version: str
    views: tuple[ModelView, ...]
    memory: MemorySnapshot
    thresholds: Thresholds

    @property
    def cached(self) -> list[ModelView]:
        """Models in memory (loaded or loading), as ``cached_models`` lists them."""
        return [v for v in self.views if v.state in (ModelState.LOADED, ModelState.LOADING)]

    @property
    def in_flight(self) -> int:
        """Requests being served now (each holds a lease on its model)."""
        return sum(v.leases for v in self.views)

    @property
    def busy(self) -> bool:
        """A model is queued, loading or unloading: worth looking again soon."""
        return any(v.state in BUSY_STATES for v in self.views)


class _CacheLike(Protocol):
    thresholds: Thresholds

    def models(self) -> list[ModelView]: ...

    def memory(self, fresh: bool = False) -> MemorySnapshot: ...


def reading_from_cache(cache: _CacheLike, version: str = "") -> HealthReading:
    """This machine's own reading, from its cache's fast lock-protected reads."""
    snap = cache.memory()
    return HealthReading(cache.thresholds.zone(snap.used_fraction), version,
                         tuple(cache.models()), snap, cache.thresholds)


def _moment(iso: Any) -> float:
    """``2026-01-26T15:30:00`` -> epoch seconds (0.0 for none or nonsense)."""
    if not isinstance(iso, str) or not iso:
        return 0.0
    try:
        return datetime.fromisoformat(iso).timestamp()
    except ValueError:
        return 0.0


def _number(doc: Mapping[str, Any], key: str, default: float = 0.0) -> float:
    value = doc.get(key)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else default


def _whole(doc: Mapping[str, Any], key: str) -> int:
    return int(_number(doc, key))


def view_from_document(doc: Mapping[str, Any], now: float | None = None) -> ModelView:
    """One model of ``models`` (or ``cached_models``) as a view taken at ``now``.

    A load under way keeps its progress and ETA: the view's start and expected length are
    chosen so that :meth:`ModelView.progress` and :meth:`ModelView.eta_seconds` give, at
    ``now``, what the remote said and then move on with the clock as a local load would.
    """
    now = time.time() if now is None else now
    state = ModelState(str(doc.get("state", "not_loaded")))
    estimated = _whole(doc, "estimated_bytes")
    info = ModelInfo(str(doc["name"]), None, str(doc.get("source", "remote")),
                     estimated_bytes=estimated)
    started, expected = now, None
    progress, eta = doc.get("progress"), doc.get("eta_seconds")
    if state is ModelState.LOADING and isinstance(progress, (int, float)) and isinstance(
            eta, (int, float)) and progress < 1:
        expected = eta / (1 - progress) if progress else float(eta)
        started = now - progress * expected
    use_count = _whole(doc, "use_count")
    return ModelView(
        name=info.name,
        info=info,
        state=state,
        resident_bytes=_whole(doc, "resident_bytes"),
        use_count=use_count,
        last_used=_moment(doc.get("last_used")),
        loaded_at=_moment(doc.get("loaded_at")),
        load_time_seconds=_number(doc, "load_time_seconds"),
        weights_seconds=0.0,
        tokenizer_seconds=0.0,
        pinned=bool(doc.get("pinned")),
        leases=_whole(doc, "in_use"),
        error=doc.get("error") if isinstance(doc.get("error"), str) else None,
        load_started_at=started,
        expected_load_seconds=expected,
        lifetime_use_count=int(_number(doc, "lifetime_use_count", use_count)),
        evict_when_idle=False,
        now=now,
        aliases=tuple(a for a in doc.get("aliases") or () if isinstance(a, str)),
        requests_in_flight=_whole(doc, "in_use"),
        prompt_cache_bytes=_whole(doc, "prompt_cache_bytes"),
        prompt_cache_disk_bytes=_whole(doc, "prompt_cache_disk_bytes"),
    )


def snapshot_from_document(doc: Mapping[str, Any]) -> MemorySnapshot:
    """The ``memory`` document as a snapshot (figures the remote did not send stay empty)."""
    def optional(key: str) -> int | None:
        value = doc.get(key)
        return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    pressure = {"normal": 1, "warn": 2, "critical": 4}.get(str(doc.get("pressure")))
    kind = doc.get("kind") if doc.get("kind") in ("unified", "device", "host") else "host"
    return MemorySnapshot(
        total_bytes=_whole(doc, "total_bytes"),
        used_bytes=_whole(doc, "used_bytes"),
        available_bytes=_whole(doc, "available_bytes"),
        swap_total_bytes=_whole(doc, "swap_total_bytes"),
        swap_used_bytes=_whole(doc, "swap_used_bytes"),
        mlx_active_bytes=_whole(doc, "mlx_active_bytes"),
        mlx_cache_bytes=_whole(doc, "mlx_cache_bytes"),
        mlx_peak_bytes=_whole(doc, "mlx_peak_bytes"),
        pressure_level=pressure,
        taken_at=_moment(doc.get("measured_at")),
        kind=kind,  # type: ignore[arg-type]
        source=str(doc.get("source") or "remote"),
        device_name=doc.get("device_name") if isinstance(doc.get("device_name"), str) else None,
        system_total_bytes=_whole(doc, "system_total_bytes"),
        system_used_bytes=_whole(doc, "system_used_bytes"),
        wired_bytes=optional("wired_bytes"),
        wired_limit_bytes=optional("wired_limit_bytes"),
        recommended_working_set_bytes=optional("recommended_working_set_bytes"),
    )


def reading_from_health(doc: Mapping[str, Any], now: float | None = None) -> HealthReading:
    """The whole ``GET /health`` document; raises KeyError/TypeError/ValueError when it is not
    one (the caller says "not an mlx-tui instance")."""
    memory = doc["memory"]
    models: Sequence[Mapping[str, Any]] = doc.get("models") or doc["cached_models"]
    thresholds = Thresholds(float(memory["warning_threshold"]), float(memory["emergency_threshold"]))
    now = time.time() if now is None else now
    return HealthReading(str(doc.get("status", "")), str(doc.get("version", "")),
                         tuple(view_from_document(m, now) for m in models),
                         snapshot_from_document(memory), thresholds)
