"""Prometheus metrics: ``GET /metrics`` in the text (or OpenMetrics) format (``prometheus_client``).

One :class:`ApiMetrics` per cache (so per app; never the process-wide default registry, so
tests and several servers in one process each count their own). It counts from two sources:

- the cache's events (:meth:`ModelCache.subscribe`): loads, load seconds, load failures,
  refusals, evictions by cause, deferred evictions and clean-ups;
- the routes, through :func:`record_request` when a reply ends (requests, tokens, time to
  first token, prompt-cache hits) and :func:`record_error` when a request fails.

What the cache knows at any moment (each model's state, bytes, uses, prompt-cache bytes; the
memory reading and thresholds) is read when Prometheus scrapes, from the cache's fast views.
Fields the core does not expose yet (``ModelView.prompt_cache_bytes``,
``ChatStats.cached_tokens``) read as 0 until it does.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..core.cache import ModelCache
from ..core.chat import ChatStats
from ..core.events import CacheEvent, EventKind
from .replies import cached_tokens_of

__all__ = ["ApiMetrics", "eviction_cause", "record_request", "record_error", "metrics_routes"]

LOAD_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def eviction_cause(reason: str) -> str:
    """A bounded label for an eviction's free-text reason: ``admission`` (room for another
    model), ``idle``, ``cleanup``, ``emergency``, ``keep_alive``, ``shutdown`` or ``requested``
    (a person or a client asked)."""
    text = reason.lower()
    if text.startswith("making room"):
        return "admission"
    if text.startswith("idle"):
        return "idle"
    if "keep_alive" in text:
        return "keep_alive"
    if "emergency" in text:
        return "emergency"
    if "clean-up" in text or "cleanup" in text:
        return "cleanup"
    if text.startswith("closing"):
        return "shutdown"
    return "requested"


class _CacheCollector:
    """Reads the cache's state when the registry is scraped (models, bytes, memory)."""

    def __init__(self, cache: ModelCache) -> None:
        self._cache = weakref.ref(cache)

    def describe(self) -> list[Metric]:
        return []  # names are not known before the first scrape; nothing else registers them

    def collect(self) -> Iterator[Metric]:
        cache = self._cache()
        if cache is None:
            return
        views = cache.models()
        per_model = {
            "loaded": ("1 while the model is loaded", lambda v: 1 if v.is_loaded else 0),
            "resident_bytes": ("bytes the loaded model holds", lambda v: v.resident_bytes),
            "estimated_bytes": ("bytes the model is expected to hold once loaded",
                                lambda v: v.estimated_bytes),
            "use_count": ("uses counted by the cache (the seed's use_count)",
                          lambda v: v.use_count),
            "in_use": ("requests holding the model now", lambda v: v.leases),
            "pinned": ("1 while the model is pinned", lambda v: 1 if v.pinned else 0),
            "prompt_cache_bytes": ("bytes of the model's prompt (KV) caches in memory",
                                   lambda v: getattr(v, "prompt_cache_bytes", 0) or 0),
        }
        for name, (doc, read) in per_model.items():
            family = GaugeMetricFamily(f"mlx_tui_model_{name}", doc, labels=["model"])
            for view in views:
                family.add_metric([view.name], float(read(view)))
            yield family
        snap = cache.memory()
        thresholds = cache.thresholds
        for name, doc, value in (
            ("memory_used_fraction", "fraction of memory in use (the gauge's figure)",
             snap.used_fraction),
            ("memory_used_bytes", "bytes of memory in use", snap.used_bytes),
            ("memory_total_bytes", "bytes of memory in the machine", snap.total_bytes),
            ("memory_warning_threshold", "used fraction where a normal clean-up starts",
             thresholds.warning),
            ("memory_emergency_threshold", "used fraction where an emergency clean-up starts",
             thresholds.emergency),
            ("mlx_active_bytes", "bytes MLX holds in live arrays", snap.mlx_active_bytes),
            ("mlx_cache_bytes", "bytes MLX keeps in its buffer cache", snap.mlx_cache_bytes),
        ):
            yield GaugeMetricFamily(f"mlx_tui_{name}", doc, value=float(value or 0))


class ApiMetrics:
    """The metrics of one cache and the API over it; get it with :meth:`of`.

    Thread-safe: cache events arrive from any thread, routes record from the event loop.
    """

    _by_cache: "weakref.WeakKeyDictionary[ModelCache, ApiMetrics]" = weakref.WeakKeyDictionary()
    _by_cache_lock = threading.Lock()

    def __init__(self, cache: ModelCache) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.loads = Counter("mlx_tui_model_loads", "models loaded", ["model"], registry=r)
        self.load_seconds = Histogram("mlx_tui_model_load_seconds", "seconds each load took",
                                      ["model"], buckets=LOAD_BUCKETS, registry=r)
        self.load_failures = Counter("mlx_tui_model_load_failures", "loads that failed",
                                     ["model"], registry=r)
        self.refusals = Counter("mlx_tui_model_refusals",
                                "loads refused because the model cannot fit", ["model"], registry=r)
        self.evictions = Counter("mlx_tui_model_evictions", "models unloaded, by cause",
                                 ["model", "cause"], registry=r)
        self.deferred = Counter("mlx_tui_model_evictions_deferred",
                                "unloads that waited for the model's requests to end",
                                ["model"], registry=r)
        self.cleanups = Counter("mlx_tui_cleanups", "clean-ups run, by level", ["level"],
                                registry=r)
        self.requests = Counter("mlx_tui_requests", "replies finished, by endpoint and model",
                                ["endpoint", "model", "finish_reason"], registry=r)
        self.errors = Counter("mlx_tui_request_errors",
                              "requests answered with an error status", ["endpoint", "status"],
                              registry=r)
        self.tokens = Counter("mlx_tui_tokens", "tokens read (prompt) and written (completion)",
                              ["endpoint", "model", "kind"], registry=r)
        self.cache_hits = Counter("mlx_tui_prompt_cache_hit_tokens",
                                  "prompt tokens read from the prompt cache instead of computed",
                                  ["model"], registry=r)
        self.ttft = Histogram("mlx_tui_time_to_first_token_seconds",
                              "seconds from the start of generation to the first token",
                              ["endpoint", "model"], buckets=TTFT_BUCKETS, registry=r)
        self.in_flight = Gauge("mlx_tui_requests_in_flight", "replies being generated now",
                               registry=r)
        r.register(_CacheCollector(cache))
        # The cache holds this object through the listener, never the other way round, so a
        # closed runtime's cache and its metrics go together.
        cache.subscribe(self._on_event)

    @classmethod
    def of(cls, cache: ModelCache) -> "ApiMetrics":
        """The metrics of ``cache``, made (and subscribed to its events) on first use."""
        with cls._by_cache_lock:
            metrics = cls._by_cache.get(cache)
            if metrics is None:
                metrics = cls._by_cache[cache] = cls(cache)
            return metrics

    def _on_event(self, event: CacheEvent) -> None:
        model = event.model or ""
        data = event.data
        if event.kind is EventKind.LOADED:
            self.loads.labels(model).inc()
            self.load_seconds.labels(model).observe(float(data.get("load_time_seconds", 0.0)))
        elif event.kind is EventKind.LOAD_FAILED:
            self.load_failures.labels(model).inc()
        elif event.kind is EventKind.REFUSED:
            self.refusals.labels(model).inc()
        elif event.kind is EventKind.EVICTED:
            cause = data.get("cause") or eviction_cause(str(data.get("reason", "")))
            self.evictions.labels(model, cause).inc()
        elif event.kind is EventKind.EVICTION_DEFERRED:
            self.deferred.labels(model).inc()
        elif event.kind is EventKind.CLEANUP and data.get("cleanup"):
            self.cleanups.labels(str(data["cleanup"])).inc()

    def record_request(self, endpoint: str, stats: ChatStats) -> None:
        """Count one finished reply: its tokens, time to first token and prompt-cache hits."""
        model = stats.model
        self.requests.labels(endpoint, model, stats.finish_reason).inc()
        self.tokens.labels(endpoint, model, "prompt").inc(stats.prompt_tokens)
        self.tokens.labels(endpoint, model, "completion").inc(stats.tokens)
        hits = cached_tokens_of(stats)
        if hits:
            self.cache_hits.labels(model).inc(hits)
        if stats.tokens:
            self.ttft.labels(endpoint, model).observe(stats.time_to_first_token)

    def record_error(self, endpoint: str, status: int) -> None:
        self.errors.labels(endpoint, str(status)).inc()

    def render(self, accept: str, in_flight: int) -> tuple[bytes, str]:
        """The scrape body in the format ``accept`` asks for, and its content type."""
        self.in_flight.set(in_flight)
        encode, content_type = choose_encoder(accept)
        return encode(self.registry), content_type


def _metrics(request: Request) -> ApiMetrics:
    return ApiMetrics.of(request.app.state.runtime.cache)


def record_request(request: Request, endpoint: str, stats: ChatStats) -> None:
    """Count one finished reply of ``endpoint`` (call it where the reply's stats arrive)."""
    _metrics(request).record_request(endpoint, stats)


def record_error(request: Request, endpoint: str, status: int) -> None:
    """Count one request of ``endpoint`` answered with an error ``status``."""
    _metrics(request).record_error(endpoint, status)


async def _scrape(request: Request) -> Response:
    metrics = _metrics(request)
    in_flight = len(getattr(request.app.state, "generations", ()))
    # Rendering reads the cache's views under its lock: keep it off the event loop.
    body, content_type = await run_in_threadpool(metrics.render, request.headers.get("accept", ""),
                                                 in_flight)
    return Response(body, media_type=content_type)


def metrics_routes(runtime: Any) -> list[Route]:
    """``GET /metrics``; counting starts now, with the app (loads before the first scrape count)."""
    ApiMetrics.of(runtime.cache)
    return [Route("/metrics", _scrape, methods=["GET"])]
