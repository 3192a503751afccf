"""ModelCache: the one owner of which models are loaded, their statistics and their memory.

Everything that wants a model asks the cache: the app, the HTTP server, the benchmarks. The
cache keeps one plain lock over all entries and never calls out while holding it: events are
queued under the lock and delivered after it is released, in order (:class:`EventOutbox`).

Loads run on the loader pool (long-lived MLX threads), concurrent requests for the same model
share one load, and a request for a loaded model never waits on another model's load. Each
loaded model gets a :class:`~mlx_tui.core.engine.worker.GenerationWorker` (a long-lived MLX
thread that batches its requests). Decisions (what to evict before a load, what a clean-up
unloads) come from the pure functions in :mod:`mlx_tui.core.planner` with the configured
policy from :mod:`mlx_tui.core.policy`.

A model in use is held by a :class:`Lease`; a leased model is never unloaded under a request:
a clean-up marks it and it is unloaded when its last lease ends. Names and identities live in
:class:`~mlx_tui.core.registry.ModelRegistry`; the memory poll, idle unloads and preloads in
:class:`~mlx_tui.core.monitor.CacheMonitor`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterator

from .catalog import Catalog, ModelInfo, inspect_model_folder
from .engine.worker import GenerationWorker
from .events import CacheEvent, EventKind, EventOutbox, Listener
from .loader import LoadedModel, ModelLoader, ModelLoadError, release_pool
from .memory import MemoryProbe, MemorySnapshot
from .mlx_threads import MlxExecutor, MlxThreadPool
from .model_view import ModelState, ModelTooLarge, ModelView
from .plan_words import cleanup_message, nothing_to_unload, prompt_cache_stats
from .planner import CleanupMode, CleanupPlan, Thresholds, plan_admission, plan_cleanup
from .policy import EntryStats, get_policy, prompt_cache_name
from .prompt_cache import PromptCacheItem, PromptCacheStore, PromptCacheView
from .registry import ModelRegistry
from .settings import Settings, SettingsError
from .store import Store
from .units import format_bytes
from .usage import UsageRecorder
from .wired import WiredLimit, WiredNeighbours, wired_advice

__all__ = ["ModelState", "ModelView", "ModelTooLarge", "Lease", "ModelCache"]

log = logging.getLogger("mlx_tui.cache")

RECENT_USES = 16


SIGNAL_CHECK_SECONDS = 0.1


def _wait_interruptibly(future: "Future[Any]", deadline: float | None) -> None:
    """``future.result()``, in short waits: a signal (Ctrl-C) may be delivered to any thread,
    and one that lands on an MLX thread would not wake a main thread blocked for good; between
    two short waits the main thread runs its handlers. Raises what the future raised, or
    ``TimeoutError`` past ``deadline`` (monotonic)."""
    from concurrent.futures import TimeoutError as FutureTimeout

    while True:
        step = SIGNAL_CHECK_SECONDS
        if deadline is not None:
            step = min(step, max(0.0, deadline - time.monotonic()))
        try:
            future.result(timeout=step)
            return
        except FutureTimeout:
            if deadline is not None and time.monotonic() >= deadline:
                raise


def _set_event() -> threading.Event:
    event = threading.Event()
    event.set()
    return event


UNLOAD_WAIT_SECONDS = 120.0


@dataclass(eq=False)
class _Entry:
    """Mutable state of one model; only ModelCache touches it, under its lock."""

    info: ModelInfo
    name: str = ""
    state: ModelState = ModelState.NOT_LOADED
    use_count: int = 0
    last_used: float = 0.0
    loaded_at: float = 0.0
    load_time_seconds: float = 0.0
    weights_seconds: float = 0.0
    tokenizer_seconds: float = 0.0
    resident_bytes: int = 0
    pinned: bool = False
    leases: int = 0
    error: str | None = None
    load_started_at: float = 0.0
    evict_when_idle: bool = False
    abandon: str | None = None  # why a running load is to be dropped when it returns
    idle_unload: float | None = None  # this model's own idle unload (None: the settings')
    recent_uses: deque[float] = field(default_factory=lambda: deque(maxlen=RECENT_USES))
    worker: GenerationWorker | None = None
    future: Future[ModelView] | None = None
    unloaded: threading.Event = field(default_factory=_set_event)
    """Clear while an eviction is under way: a new load of the model waits for the old worker
    to let go of the model and its prompt caches before it starts."""

    @property
    def key(self) -> str:
        return self.info.key

    def stats(self) -> EntryStats:
        return EntryStats(
            name=self.name,
            use_count=self.use_count,
            last_used=self.last_used,
            loaded_at=self.loaded_at,
            load_time_seconds=self.load_time_seconds,
            size_bytes=self.resident_bytes or self.info.estimated_bytes,
            pinned=self.pinned,
            in_use=self.leases > 0,
            recent_uses=tuple(self.recent_uses),
        )


@dataclass(frozen=True)
class _Victim:
    """A model on its way out: its entry, its worker, the bytes it held, and why it goes."""

    entry: _Entry
    worker: GenerationWorker | None
    freed_bytes: int
    reason: str
    cause: str  # admission, cleanup, emergency, idle, requested, deferred, shutdown


class Lease:
    """A hold on a loaded model; while any lease is alive the model is not unloaded.

    ``worker`` generates with the model (:meth:`GenerationWorker.submit`); ``tokenizer`` turns
    messages into token ids. Use as a context manager; :meth:`release` drops the references,
    so an eviction afterwards really frees the memory.
    """

    def __init__(self, cache: "ModelCache", entry: _Entry, worker: GenerationWorker) -> None:
        self._cache = cache
        self._entry = entry
        self.name = entry.name
        self.worker: Any = worker
        self.tokenizer: Any = worker.tokenizer
        self._released = False
        self._lock = threading.Lock()

    def release(self) -> None:
        """End the hold (idempotent, any thread; a second caller returns once it has ended)."""
        with self._lock:
            if self._released:
                return
            self._released = True
            self.worker = self.tokenizer = None
            self._cache._release(self._entry)

    def release_soon(self) -> None:
        """:meth:`release` from the cache's release thread: for callers that must not block
        (a generation worker ending a request, an event loop), since a release may unload."""
        self._cache._releaser.submit(self.release)

    def __enter__(self) -> "Lease":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class ModelCache:
    """Keeps the right MLX models loaded within memory thresholds.

    Thread-safe; every public method may be called from any thread. Listeners
    (:meth:`subscribe`) are called with no lock held, in the order events happened, from the
    thread that delivers them (usually the one where the event happened).
    """

    def __init__(
        self,
        settings: Settings,
        loader: ModelLoader,
        probe: MemoryProbe,
        *,
        store: Store | None = None,
        catalog: Catalog | None = None,
        clock: Callable[[], float] = time.time,
        wired: WiredLimit | None = None,
    ) -> None:
        self._settings = settings
        self._loader = loader
        self._probe = probe
        self._usage = UsageRecorder(store) if store is not None else None
        self._store = store
        self._catalog = catalog or Catalog(settings)
        self._clock = clock
        self._lock = threading.Lock()
        self._admission = threading.Lock()
        self._outbox = EventOutbox()
        self._outbox.subscribe(self._log_event)
        self._models: ModelRegistry[_Entry] = ModelRegistry()
        self._prompt_caches: dict[str, PromptCacheStore] = {}  # by model key, kept across unloads
        self._memory: MemorySnapshot | None = None
        self._load_speed: float | None = None  # bytes per second of weights, from past loads
        self._loaders = MlxExecutor("mlx-load", settings.engine.loader_threads)
        # Releases that may unload a model (a deferred clean-up) run here, off the callers'
        # threads: a worker ending a request, an event loop. It never runs MLX work itself.
        self._releaser = ThreadPoolExecutor(1, thread_name_prefix="lease-release")
        self._generation_threads = MlxThreadPool("mlx-generate")
        self._closed = False
        # On a Mac: MLX's wired limit follows the loaded set; another process wiring is noticed.
        self._wired = wired or WiredLimit(enabled=settings.memory.manage_wired_limit)
        self._neighbours = WiredNeighbours()
        # Uses of past sessions and this one, by name (SQLite is read once, then counted here).
        try:
            usage = store.usage() if store else {}
        except Exception:  # noqa: BLE001 - an unreadable database only loses history
            log.warning("usage statistics could not be read; starting from zero")
            usage = {}
        self._lifetime_uses = {n: u.use_count for n, u in usage.items()}
        self.refresh_catalog()

    # -- events ----------------------------------------------------------------------------------
    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the lock for a change; the events it queued go out once it is released."""
        with self._lock:
            yield
        self._outbox.deliver()

    def _event(self, kind: EventKind, message: str, model: str | None = None,
               level: int = logging.INFO, **data: Any) -> None:
        """Queue an event (under the lock or not); it is delivered by the next ``deliver``."""
        data.setdefault("level", level)
        self._outbox.put(CacheEvent(kind, message, model, self._clock(), data))

    def _emit(self, kind: EventKind, message: str, model: str | None = None,
              level: int = logging.INFO, **data: Any) -> None:
        """Queue and deliver now; never call with the lock held."""
        self._event(kind, message, model, level, **data)
        self._outbox.deliver()

    def announce(self, kind: EventKind, message: str, model: str | None = None,
                 level: int = logging.INFO, **data: Any) -> None:
        """Tell the cache's listeners (and the log) something that happened around it: a
        preload, a prompt cache spilled to disk. Never call with the cache's lock held."""
        self._emit(kind, message, model, level, **data)

    @staticmethod
    def _log_event(event: CacheEvent) -> None:
        if event.kind is not EventKind.MEMORY:
            log.log(event.data.get("level", logging.INFO), event.message)

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` for every event; returns a function that unsubscribes."""
        return self._outbox.subscribe(listener)

    # -- observation -----------------------------------------------------------------------------
    @property
    def settings(self) -> Settings:
        return self._settings

    @property
    def thresholds(self) -> Thresholds:
        return self._settings.memory.thresholds

    @property
    def clock(self) -> Callable[[], float]:
        return self._clock

    @property
    def usage_recorder(self) -> UsageRecorder | None:
        return self._usage

    def memory(self, fresh: bool = False) -> MemorySnapshot:
        """The last memory snapshot (taken now when ``fresh`` or when there is none)."""
        if fresh or self._memory is None:
            self._memory = self._probe.snapshot()
        return self._memory

    def _view(self, e: _Entry, now: float | None = None) -> ModelView:
        worker = e.worker
        store = self._prompt_caches.get(e.key)
        pc_memory, pc_disk = store.figures() if store is not None else (0, 0)
        return ModelView(
            name=e.name, info=e.info, state=e.state,
            resident_bytes=e.resident_bytes, use_count=e.use_count, last_used=e.last_used,
            loaded_at=e.loaded_at, load_time_seconds=e.load_time_seconds,
            weights_seconds=e.weights_seconds, tokenizer_seconds=e.tokenizer_seconds,
            pinned=e.pinned, leases=e.leases, error=e.error or e.info.problem,
            load_started_at=e.load_started_at,
            expected_load_seconds=self._expected_seconds(e),
            lifetime_use_count=self._lifetime_uses.get(e.name, 0),
            evict_when_idle=e.evict_when_idle,
            now=self._clock() if now is None else now,
            aliases=self._models.aliases(e.key),
            idle_unload_seconds=(self._settings.cache.idle_unload_seconds
                                 if e.idle_unload is None else e.idle_unload),
            requests_in_flight=worker.in_flight if worker is not None else 0,
            prompt_cache_bytes=pc_memory,
            prompt_cache_disk_bytes=pc_disk,
            ranks=self._ranks_of(e.name),
        )

    def _ranks_of(self, name: str) -> tuple[Any, ...]:
        """The ranks of a model the loader serves across hosts (a loader with ``ranks``)."""
        ranks = getattr(self._loader, "ranks", None)
        return tuple(ranks(name)) if ranks is not None else ()

    def _local_bytes(self, info: ModelInfo) -> int:
        """What loading ``info`` adds to this machine's memory: the whole model, or only this
        host's shard for a model the loader spreads across hosts (``local_estimate``)."""
        local = getattr(self._loader, "local_estimate", None)
        return int(local(info)) if local is not None else info.estimated_bytes

    def _expected_seconds(self, e: _Entry) -> float | None:
        if e.load_time_seconds:
            return e.load_time_seconds
        if self._load_speed and e.info.estimated_bytes:
            return e.info.estimated_bytes / self._load_speed
        return None

    def models(self) -> list[ModelView]:
        """Every known model, loaded ones first, then by name."""
        now = self._clock()
        with self._lock:
            views = [self._view(e, now) for e in self._models.entries()]
        return sorted(views, key=lambda v: (not v.is_loaded, v.state is not ModelState.LOADING, v.name))

    def get(self, name: str, *, allow_paths: bool = True) -> ModelView:
        """One model's view; raises :class:`UnknownModel`."""
        entry = self._entry(name, allow_paths)
        with self._lock:
            return self._view(entry)

    def keep_order(self) -> list[str]:
        """Every known name in the order the policy keeps them: loaded models (pinned first,
        then the policy's ranking, most valuable first), then loads under way, then the usable
        rest ranked the same way, then models that cannot load (failed or broken) last. This is
        the order a clean-up works from, for display."""
        group = {ModelState.LOADED: 0, ModelState.LOADING: 1, ModelState.QUEUED: 1,
                 ModelState.EVICTING: 2}
        with self._lock:
            entries = self._models.entries()
            ranked = get_policy(self._settings.cache.policy)([e.stats() for e in entries], self._clock())
            rank = {s.name: i for i, s in enumerate(ranked)}
            state = {}
            for e in entries:
                usable = e.info.loadable and e.state is not ModelState.FAILED
                state[e.name] = (group.get(e.state, 3 if usable else 4), not e.pinned)
        return sorted(rank, key=lambda n: (*state[n], rank[n]))

    def loaded_names(self) -> list[str]:
        with self._lock:
            return [e.name for e in self._models.entries() if e.state is ModelState.LOADED]

    # -- names -----------------------------------------------------------------------------------
    def refresh_catalog(self) -> None:
        """Rescan aliases, folders and the Hugging Face cache; loaded models stay as they are.

        An alias always points where settings.toml says: a model that lost its alias keeps its
        other names (or gets one from its folder), and is dropped when it is not loaded.
        """
        found = self._catalog.scan_all()
        aliases = set(self._settings.models) | {"demo"}
        with self._locked():
            busy = (ModelState.LOADED, ModelState.LOADING, ModelState.QUEUED, ModelState.EVICTING)
            refreshed = self._models.rebuild(
                ((info, info.source in ("alias", "demo") or (info.name in aliases and info.target))
                 for info in found),
                keep=lambda e: e.state in busy or e.info.source == "path",
                make=_Entry,
            )
            for entry, info in refreshed:
                if entry.state in (ModelState.NOT_LOADED, ModelState.FAILED):
                    entry.info = info
            self._rename_entries()

    def _rename_entries(self) -> None:
        """Under the lock: each entry's name is its registry display name."""
        for entry in self._models.entries():
            entry.name = self._models.display_name(entry.key)

    def _entry(self, name: str, allow_paths: bool = True) -> _Entry:
        """The entry for a name, alias or (with ``allow_paths``) a folder path; raises
        UnknownModel. Call it without the lock: resolving a new name may scan the disk."""
        with self._lock:
            entry = self._models.lookup(name)
        if entry is not None:
            return entry
        info = self._catalog.resolve(name, allow_paths=allow_paths)
        with self._lock:
            entry = self._models.add(info, _Entry)
            self._models.add_alias(name, entry.key)
            self._rename_entries()
            return entry

    # -- loading ---------------------------------------------------------------------------------
    def load(self, name: str, reason: str = "request", *, allow_paths: bool = True) -> "Future[ModelView]":
        """Start loading ``name`` in the background (or join the load under way).

        Returns a future that resolves to the loaded model's view, or raises
        :class:`ModelLoadError` / :class:`ModelTooLarge`. Does not count as a use.
        """
        entry = self._entry(name, allow_paths)
        with self._locked():
            return self._start_load(entry, reason)

    def _start_load(self, entry: _Entry, reason: str) -> "Future[ModelView]":
        """Under the lock: the future of ``entry``'s load, starting one if none runs."""
        if entry.state is ModelState.LOADED:
            done: Future[ModelView] = Future()
            done.set_result(self._view(entry))
            return done
        if entry.future is not None and not entry.future.done():
            return entry.future
        if self._closed:
            raise ModelLoadError(f"{entry.name}: not loaded, mlx-tui is closing")
        recheck = entry.state is ModelState.FAILED or entry.info.problem is not None
        entry.state = ModelState.QUEUED
        entry.error = None
        entry.abandon = None
        future: Future[ModelView] = Future()
        entry.future = future
        self._event(EventKind.LOAD_QUEUED, f"{entry.name}: load queued ({reason})", entry.name,
                    reason=reason)
        self._loaders.submit(self._run_load, entry, future, reason, recheck)
        return future

    def _run_load(self, entry: _Entry, future: Future[ModelView], reason: str, recheck: bool) -> None:
        """On a loader thread: every path out resolves ``future`` (a load never hangs)."""
        outcome: ModelView | ModelLoadError
        try:
            # A load asked for while the model was still being unloaded starts once the old
            # worker has let go of it (and of its prompt caches, which the new one will use).
            if not entry.unloaded.wait(UNLOAD_WAIT_SECONDS):
                raise ModelLoadError(f"{entry.name}: its last unload did not finish in "
                                     f"{UNLOAD_WAIT_SECONDS:g} s")
            if recheck:
                self._recheck_folder(entry)
            outcome = self._load_and_report(entry, reason)
        except ModelLoadError as exc:
            outcome = exc
        except BaseException as exc:  # noqa: BLE001 - any fault becomes a failed entry, not a hang
            log.exception("unexpected load failure")
            outcome = self._fail(entry, ModelLoadError(f"{entry.name}: {type(exc).__name__}: {exc}"),
                                 EventKind.LOAD_FAILED)
        # Waiters go on only now, when this thread holds nothing of the model any more: an
        # eviction right after the load then frees all of it.
        if isinstance(outcome, ModelLoadError):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)

    def _recheck_folder(self, entry: _Entry) -> None:
        """Look at a failed model's folder again (on the load thread: it reads the disk), so a
        folder fixed since the failure loads on this retry."""
        info = entry.info
        if info.path is not None:
            fresh = inspect_model_folder(info.name, info.path, info.source, info.target)
        elif info.target is not None:
            fresh = self._catalog.resolve_target(info.name, info.target)
        else:
            return
        if fresh.key != info.key:
            return  # an alias whose repo moved: the next catalogue scan re-points it
        with self._lock:
            entry.info = fresh

    def _fail(self, entry: _Entry, error: ModelLoadError, kind: EventKind) -> ModelLoadError:
        with self._locked():
            entry.state = ModelState.FAILED
            entry.error = str(error)
            entry.worker = None
            self._event(kind, str(error), entry.name, logging.WARNING)
            if entry.info.source == "path":  # a path a request named: not listed once it fails
                self._models.forget(entry.key)
        return error

    def _load_and_report(self, entry: _Entry, reason: str) -> ModelView:
        """Admit, load and record one model; returns its view or raises ModelLoadError.

        The admission lock is held only while planning and evicting, not while the weights are
        read, so an emergency (or another admission) never waits for a load to finish.
        """
        try:
            with self._admission:
                victims = self._admit(entry)
                self._finish_evictions(victims)
                with self._locked():
                    entry.state = ModelState.LOADING
                    entry.load_started_at = self._clock()
                    expected = self._expected_seconds(entry)
                    self._event(
                        EventKind.LOAD_STARTED,
                        f"{entry.name}: loading {format_bytes(entry.info.estimated_bytes)}"
                        + (f", about {expected:.{1 if expected >= 1 else 2}f} s" if expected else ""),
                        entry.name, expected_seconds=expected,
                    )
            loaded = self._loader.load(entry.info)
        except ModelTooLarge as exc:
            raise self._fail(entry, exc, EventKind.REFUSED) from None
        except ModelLoadError as exc:
            raise self._fail(entry, exc, EventKind.LOAD_FAILED) from None
        view = self._install(entry, loaded, reason)
        if view is None:  # abandoned by an emergency: free it before anyone hears of it
            why = entry.abandon
            del loaded
            self._loader.free()
            raise self._fail(entry, ModelLoadError(f"{entry.name}: load abandoned ({why}); its "
                                                   "memory was freed"), EventKind.LOAD_FAILED)
        return view

    def _install(self, entry: _Entry, loaded: LoadedModel, reason: str) -> ModelView | None:
        """Give a freshly loaded model its worker; None when an emergency abandoned the load
        (the caller frees it)."""
        with self._locked():
            abandoned = entry.abandon
            view = None
            if abandoned is None:
                worker = loaded.worker or GenerationWorker(
                    entry.name, loaded.model, loaded.tokenizer, self._settings.engine,
                    prompt_cache=self._prompt_cache_for(entry))
                worker.start(self._generation_threads)  # before anyone can lease or evict it
                entry.worker = worker
                entry.state = ModelState.LOADED
                entry.loaded_at = self._clock()
                entry.load_time_seconds = loaded.load_seconds
                entry.weights_seconds = loaded.weights_seconds
                entry.tokenizer_seconds = loaded.tokenizer_seconds
                entry.resident_bytes = loaded.resident_bytes
                if loaded.weights_seconds > 0 and loaded.resident_bytes:
                    speed = loaded.resident_bytes / loaded.weights_seconds
                    self._load_speed = speed if self._load_speed is None else 0.5 * (self._load_speed + speed)
                view = self._view(entry)
                tok = ("tokenizer reused" if loaded.tokenizer_reused
                       else f"tokenizer {loaded.tokenizer_seconds:.2f} s")
                self._event(
                    EventKind.LOADED,
                    f"{entry.name}: loaded in {loaded.load_seconds:.2f} s (weights "
                    f"{loaded.weights_seconds:.2f} s, {tok}), {format_bytes(loaded.resident_bytes)} ({reason})",
                    entry.name, load_time_seconds=loaded.load_seconds, resident_bytes=loaded.resident_bytes,
                )
        if view is None:
            return None
        self._follow_wired_limit()
        if self._usage is not None:
            self._usage.record_load(entry.name, loaded.load_seconds)
        return view

    def _follow_wired_limit(self) -> None:
        """Without the lock, after a load or an eviction: wire what the loaded set needs (a
        Mac only; restores the original limit once nothing is loaded)."""
        with self._lock:
            resident = sum(e.resident_bytes for e in self._models.entries() if e.state is ModelState.LOADED)
        self._wired.apply(resident, self.memory())

    # -- prompt caches ----------------------------------------------------------------------------
    def _prompt_cache_for(self, entry: _Entry) -> PromptCacheStore | None:
        """Under the lock: the prompt caches of ``entry``'s model (kept across unloads, so its
        disk tier is found again), or None when ``[prompt_cache]`` is off."""
        settings = self._settings.prompt_cache
        if not settings.enabled:
            return None
        store = self._prompt_caches.get(entry.key)
        if store is None:
            name = entry.name
            key = entry.key
            store = self._prompt_caches[entry.key] = PromptCacheStore(
                name, entry.info, settings, self._clock,
                announce=lambda what, message: self.announce(EventKind.PROMPT_CACHE, message, name,
                                                              what=what),
                admit=lambda item: self._keep_prompt_cache(key, item))
        return store

    def prompt_caches(self) -> list[PromptCacheView]:
        """Every kept prompt cache of every model, in memory or on disk."""
        with self._lock:
            stores = list(self._prompt_caches.values())
        return [v for s in stores for v in s.views()]

    def delete_prompt_cache(self, model: str, entry_id: str, reason: str = "asked by user") -> bool:
        """Delete one prompt cache that is on disk only (its files); False when it is not."""
        entry = self._entry(model)
        with self._lock:
            store = self._prompt_caches.get(entry.key)
        return store.delete(entry_id, reason) if store is not None else False

    def drop_prompt_cache(self, model: str, entry_id: str, reason: str = "asked by user") -> int:
        """Let one prompt cache's memory go (a disk copy stays); returns the bytes freed."""
        entry = self._entry(model)
        with self._lock:
            store = self._prompt_caches.get(entry.key)
        freed = store.drop(entry_id, reason) if store is not None else 0
        if freed:
            release_pool()
        return freed

    def _budget_items(self, entries: list[_Entry]) -> tuple[list[EntryStats], dict[str, tuple[_Entry, str]]]:
        """Under the lock: one list for the one budget, every loaded model and every prompt
        cache it holds in memory, and where each prompt-cache item lives (its model, its id)."""
        items: list[EntryStats] = []
        caches: dict[str, tuple[_Entry, str]] = {}
        for e in entries:
            if e.state is not ModelState.LOADED:
                continue
            items.append(e.stats())
            store = self._prompt_caches.get(e.key)
            for pc in store.memory_items() if store is not None else ():
                name = prompt_cache_name(e.name, pc.id)
                items.append(prompt_cache_stats(name, e.name, pc))
                caches[name] = (e, pc.id)
        return items, caches

    def _drop_cache_items(self, victims: list[tuple[_Entry, str]], reason: str) -> None:
        """Without the lock: write each prompt cache to disk (on its model's worker thread, the
        one that may run MLX for it) and free its memory; waits until they are gone."""
        waits = []
        for entry, cache_id in victims:
            store, worker = self._prompt_caches.get(entry.key), entry.worker
            if store is None:
                continue
            if worker is None:
                store.drop(cache_id, reason)
            else:
                waits.append(worker.call(lambda s=store, i=cache_id: s.spill_and_drop(i, reason)))
        for wait in waits:
            try:
                wait.result(timeout=60)
            except Exception:  # noqa: BLE001 - a cache that could not be written is still dropped
                log.exception("a prompt cache could not be written before it was dropped")
        if victims:
            release_pool()

    def _keep_prompt_cache(self, key: str, item: PromptCacheItem) -> bool:
        """On a worker's thread, after it keeps a request's cache: is it worth its room in the
        one budget? Makes room by freeing lower-valued prompt caches when the plan says so."""
        snap = self.memory(fresh=True)
        with self._lock:
            entries = self._models.entries()
            owner = next((e for e in entries if e.key == key), None)
            if owner is None:
                return False
            items, caches = self._budget_items(entries)
            name = prompt_cache_name(owner.name, item.id)
            plan = plan_admission(item.nbytes, items, snap.used_bytes, snap.total_bytes, self.thresholds,
                                  get_policy(self._settings.cache.policy), self._clock(),
                                  max_loaded=self._settings.cache.max_loaded, name=name,
                                  incoming=prompt_cache_stats(name, owner.name, item))
        if not plan.allowed or any(n not in caches for n in plan.evict):
            return False  # never unload a model to keep a prompt cache
        mine = [caches[n] for n in plan.evict if caches[n][0].key == key]
        others = [caches[n] for n in plan.evict if caches[n][0].key != key]
        store = self._prompt_caches.get(key)
        for _entry, cache_id in mine:  # this worker's own caches: we are on its thread
            if store is not None:
                store.spill_and_drop(cache_id, f"making room for a more valuable prompt cache of {owner.name}")
        for entry, cache_id in others:
            other = self._prompt_caches.get(entry.key)
            if entry.worker is not None and other is not None:
                entry.worker.call(lambda s=other, i=cache_id: s.spill_and_drop(
                    i, f"making room for a more valuable prompt cache of {owner.name}"))
        return True

    def _admit(self, entry: _Entry) -> list[_Victim]:
        """Plan room for ``entry``; returns the models taken for eviction, or raises."""
        if not entry.info.loadable:
            raise ModelLoadError(f"{entry.name}: {entry.info.problem}")
        snap = self.memory(fresh=True)
        with self._locked():
            entries = self._models.entries()
            in_flight = sum(e.info.estimated_bytes for e in entries
                            if e.state is ModelState.LOADING and e is not entry)
            loaded, caches = self._budget_items(entries)
            plan = plan_admission(
                self._local_bytes(entry.info), loaded, snap.used_bytes + in_flight, snap.total_bytes,
                self.thresholds, get_policy(self._settings.cache.policy), self._clock(),
                max_loaded=self._settings.cache.max_loaded, name=entry.name,
            )
            if not plan.allowed:
                raise ModelTooLarge(plan.refused or "refused", need_bytes=plan.need_bytes,
                                    freeable_bytes=plan.freeable_bytes,
                                    used_bytes=snap.used_bytes, total_bytes=snap.total_bytes)
            reason = f"making room for {entry.name}"
            by_name = {e.name: e for e in entries}
            staying = sum(e.resident_bytes for e in entries
                          if e.state is ModelState.LOADED and e.name not in plan.evict)
            advice = wired_advice(entry.info.estimated_bytes + staying, snap, entry.name)
            if advice:
                self._event(EventKind.MEMORY_ADVICE, advice, entry.name, logging.WARNING, wired_advice=advice)
            going = set(plan.evict)
            # A prompt cache of a model that goes too leaves with it (written to disk then).
            dropped = [caches[n] for n in plan.evict if n in caches and caches[n][0].name not in going]
            victims = [v for v in (self._begin_eviction(by_name[n], reason, "admission")
                                   for n in plan.evict if n not in caches) if v]
        self._drop_cache_items(dropped, reason)
        return victims

    # -- using -----------------------------------------------------------------------------------
    def acquire(self, name: str, timeout: float | None = None, *, allow_paths: bool = True) -> Lease:
        """A lease on ``name``, loading it first if needed; counts as one use once the lease
        is held (a request that fails to get one is not counted).

        Blocks until the model is loaded (call it from a worker thread, never an event loop).
        Raises :class:`UnknownModel`, :class:`ModelLoadError` or :class:`ModelTooLarge`.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        entry = self._entry(name, allow_paths)
        while True:
            with self._locked():
                if entry.state is ModelState.LOADED and entry.worker is not None:
                    lease = self._lease(entry)
                    break
                future = self._start_load(entry, "request")
            _wait_interruptibly(future, deadline)
        if self._usage is not None:
            self._usage.record_use(entry.name, entry.last_used)
        return lease

    def _lease(self, entry: _Entry) -> Lease:
        """Under the lock: hold ``entry`` and count the use."""
        assert entry.worker is not None
        now = self._clock()
        entry.leases += 1
        entry.use_count += 1
        entry.last_used = now
        entry.recent_uses.append(now)
        self._lifetime_uses[entry.name] = self._lifetime_uses.get(entry.name, 0) + 1
        self._event(EventKind.USED, f"{entry.name}: use #{entry.use_count}", entry.name,
                    use_count=entry.use_count)
        return Lease(self, entry, entry.worker)

    def _release(self, entry: _Entry) -> None:
        with self._locked():
            entry.leases -= 1
            leases = entry.leases
            victim = None
            if entry.leases == 0 and entry.evict_when_idle:
                victim = self._begin_eviction(entry, "deferred clean-up, request finished", "deferred")
            self._event(EventKind.RELEASED, f"{entry.name}: request finished ({leases} still in use)",
                        entry.name, logging.DEBUG, in_use=leases)
        if victim:
            self._finish_evictions([victim])

    # -- evicting --------------------------------------------------------------------------------
    def _begin_eviction(self, entry: _Entry, reason: str, cause: str = "requested") -> _Victim | None:
        """Under the lock: move a loaded, idle model to ``evicting`` and take its worker (the
        only holder of the model: leases drop theirs on release), so the memory is garbage once
        :meth:`_finish_evictions` stops the worker and collects. A model in use is only marked,
        to go when its last request ends."""
        if entry.state is not ModelState.LOADED or entry.worker is None:
            return None
        if entry.leases > 0:
            if not entry.evict_when_idle:
                entry.evict_when_idle = True
                self._event(EventKind.EVICTION_DEFERRED,
                            f"{entry.name}: in use, will unload when its request ends ({reason})",
                            entry.name, reason=reason)
            return None
        worker, entry.worker = entry.worker, None
        entry.state = ModelState.EVICTING
        entry.evict_when_idle = False
        entry.unloaded.clear()
        return _Victim(entry, worker, entry.resident_bytes, reason, cause)

    def _finish_evictions(self, victims: list[_Victim]) -> None:
        """Without the lock: stop each worker (it drops the model on its own thread), return the
        memory to the system (gc, MLX's buffer pool, malloc_trim), then report."""
        if not victims:
            return
        for victim in victims:
            if victim.worker is not None:
                victim.worker.stop()
        del victim
        self._loader.free()
        pool = self.memory(fresh=True).mlx_cache_bytes  # MLX's buffer pool: 0 once really freed
        with self._locked():
            for victim in victims:
                entry = victim.entry
                if entry.state is ModelState.EVICTING:
                    entry.state = ModelState.NOT_LOADED
                if entry.worker is None:
                    entry.resident_bytes = 0
                entry.unloaded.set()
                self._event(EventKind.EVICTED,
                            f"{entry.name}: unloaded, {format_bytes(victim.freed_bytes)} freed ({victim.reason})"
                            + (f"; MLX still pools {format_bytes(pool)}" if pool else ""),
                            entry.name, reason=victim.reason, cause=victim.cause,
                            freed_bytes=victim.freed_bytes,
                            pool_bytes_after=pool)
        self._follow_wired_limit()

    def evict(self, name: str, reason: str = "asked by user", *, idle_since: float | None = None,
              allow_paths: bool = True, cause: str | None = None) -> bool:
        """Unload ``name`` now; if it is in use, when its request ends. True if unloaded now.

        With ``idle_since``, only a model idle since then is unloaded (and an in-use one is left
        alone): the monitor's idle unload, which must not race a request that just began.
        """
        entry = self._entry(name, allow_paths)
        with self._locked():
            if idle_since is not None and (entry.leases > 0 or max(entry.last_used, entry.loaded_at) > idle_since):
                return False
            victim = self._begin_eviction(entry, reason, cause or ("idle" if idle_since is not None else "requested"))
        self._finish_evictions([victim] if victim else [])
        return victim is not None

    def fail(self, name: str, error: str) -> None:
        """A loaded model broke (a rank of a model served across hosts died): take its worker
        away even while in use (its requests end with the worker), and mark it failed with
        ``error``. A later request loads it again."""
        entry = self._entry(name)
        with self._locked():
            if entry.state is not ModelState.LOADED or entry.worker is None:
                return
            worker, entry.worker = entry.worker, None
            entry.state = ModelState.FAILED
            entry.error = error
            entry.evict_when_idle = False
            entry.unloaded.clear()
            self._event(EventKind.LOAD_FAILED, f"{entry.name}: {error}", entry.name, logging.WARNING)
        worker.stop()
        self._loader.free()
        with self._locked():
            entry.resident_bytes = 0
            entry.unloaded.set()
        self._follow_wired_limit()

    def pin(self, name: str, pinned: bool = True, *, allow_paths: bool = True) -> None:
        """A pinned model survives normal clean-ups and admission (not an emergency)."""
        entry = self._entry(name, allow_paths)
        with self._locked():
            entry.pinned = pinned
            kind = EventKind.PINNED if pinned else EventKind.UNPINNED
            self._event(kind, f"{entry.name}: {'pinned' if pinned else 'unpinned'}", entry.name)

    def set_idle_unload(self, name: str, seconds: float | None, *, allow_paths: bool = True) -> None:
        """This model's own idle unload (Ollama's ``keep_alive``); None goes back to
        ``[cache].idle_unload_seconds``; 0 means never."""
        entry = self._entry(name, allow_paths)
        with self._locked():
            entry.idle_unload = seconds

    def cleanup(self, level: str = "normal", reason: str = "asked by user") -> CleanupPlan:
        """Run a clean-up now as if memory were at the warning (or emergency) threshold; the
        event says what was asked and at which real figure, never the pretended one."""
        snap = self.memory(fresh=True)
        forced = snap.total_bytes if level == "emergency" else int(
            max(snap.used_bytes, self.thresholds.warning * snap.total_bytes + 1))
        asked = f"{reason} at {snap.used_fraction:.0%} memory"
        return self._run_cleanup(replace(snap, used_bytes=min(forced, snap.total_bytes)), asked,
                                 manual=True)

    def _run_cleanup(self, snap: MemorySnapshot, reason: str | None = None, manual: bool = False) -> CleanupPlan:
        m = self._settings.memory
        mode: CleanupMode = m.cleanup
        with self._locked():
            entries = self._models.entries()
            loaded, caches = self._budget_items(entries)
            plan = plan_cleanup(loaded, snap.used_bytes, snap.total_bytes, self.thresholds,
                                get_policy(self._settings.cache.policy), self._clock(),
                                keep=m.keep_on_cleanup, mode=mode)
            if snap.used_fraction >= self.thresholds.emergency:
                self._abandon_loads(entries, snap)
            if not plan.level:
                if manual:
                    models = [s for s in loaded if s.is_model]
                    plan = replace(plan, reason=nothing_to_unload(models, m.keep_on_cleanup, reason))
                    self._event(EventKind.CLEANUP, plan.reason, cleanup="none", evict=[], deferred=[],
                                kept=[s.name for s in models])
                return plan
            why = f"{plan.level} clean-up" + (f", {reason}" if reason else "")
            by_name = {e.name: e for e in entries}
            emergency = plan.level == "emergency"
            cause = "emergency" if emergency else "cleanup"
            going = {n for n in plan.evict if n not in caches}
            dropped = [caches[n] for n in plan.evict if n in caches and caches[n][0].name not in going]
            victims = [v for v in (self._begin_eviction(by_name[n], why, cause) for n in going) if v]
            for name in plan.deferred:
                if name not in caches:
                    self._begin_eviction(by_name[name], why, cause)
            stores = [self._prompt_caches[v.entry.key] for v in victims if v.entry.key in self._prompt_caches]
            message = cleanup_message(plan, reason, manual, caches)
            plan = replace(plan, reason=message)
            self._event(EventKind.CLEANUP, message, level=logging.WARNING, cleanup=plan.level,
                        evict=list(plan.evict), deferred=list(plan.deferred), kept=list(plan.kept))
        if emergency:  # memory back at once: nothing is written to disk first
            for store in {id(s): s for s in stores + [self._prompt_caches[e.key] for e, _ in dropped]}.values():
                store.discard_memory()
            if dropped:
                release_pool()
        else:
            self._drop_cache_items(dropped, why)
        self._finish_evictions(victims)
        return plan

    def _abandon_loads(self, entries: list[_Entry], snap: MemorySnapshot) -> None:
        """Under the lock, in an emergency: loads under way are dropped when they return."""
        for e in entries:
            if e.state in (ModelState.LOADING, ModelState.QUEUED) and e.abandon is None:
                e.abandon = f"emergency clean-up at {snap.used_fraction:.0%} memory"
                self._event(EventKind.CLEANUP, f"{e.name}: load under way will be dropped ({e.abandon})",
                            e.name, logging.WARNING, cleanup="emergency", evict=[], deferred=[], kept=[])

    def check_memory(self) -> MemorySnapshot:
        """Read memory now and clean up past a threshold (the monitor calls this each poll)."""
        snap = self.memory(fresh=True)
        self._emit(EventKind.MEMORY, f"memory {snap.used_fraction:.1%}", snapshot=snap)
        neighbour = self._neighbours.observe(snap)
        if neighbour:
            self._emit(EventKind.MEMORY_ADVICE, neighbour, level=logging.WARNING)
        plan = self._run_cleanup(snap)
        if plan.evict:
            self.report_memory()
        return snap

    def report_memory(self) -> MemorySnapshot:
        """Take and announce a fresh reading (after an unload, so the gauge shows the drop)."""
        snap = self.memory(fresh=True)
        self._emit(EventKind.MEMORY, f"memory {snap.used_fraction:.1%}", snapshot=snap)
        return snap

    # -- settings ---------------------------------------------------------------------------------
    def apply_settings(self, settings: Settings, sections: frozenset[str] | None = None) -> None:
        """Use new settings at once (the runtime calls this with the sections that changed).

        Thresholds and policy apply at once and a lower threshold cleans up; the catalogue is
        rebuilt and rescanned only when ``[models]`` or ``[catalog]`` changed.
        """
        rescan = sections is None or bool(sections & {"models", "catalog"})
        if not settings.memory.manage_wired_limit and self._wired.enabled:
            self._wired.apply(0, self.memory())  # put back the limit it had before
        self._wired.enabled = settings.memory.manage_wired_limit
        with self._lock:
            self._settings = settings
            if rescan:
                self._catalog = Catalog(settings)
        if rescan:
            self.refresh_catalog()
        m = settings.memory
        self._emit(EventKind.SETTINGS,
                   f"settings applied: warning {m.warning_threshold:.0%}, emergency "
                   f"{m.emergency_threshold:.0%}, policy {settings.cache.policy}",
                   warning=m.warning_threshold, emergency=m.emergency_threshold,
                   sections=sorted(sections or ()))
        self.check_memory()

    def report_settings_error(self, error: SettingsError) -> None:
        """An invalid settings file: say so; the last valid settings stay in force."""
        self._emit(EventKind.SETTINGS, f"settings not applied, keeping the last valid ones: {error}",
                   level=logging.WARNING, error=str(error))

    # -- lifetime --------------------------------------------------------------------------------
    def close(self) -> None:
        """Unload every idle model (memory goes back at once) and write the statistics."""
        with self._locked():
            self._closed = True
            victims = [v for v in (self._begin_eviction(e, "closing", "shutdown") for e in self._models.entries()) if v]
        self._finish_evictions(victims)
        self._wired.apply(0, self.memory())
        if self._usage is not None:
            self._usage.close()
