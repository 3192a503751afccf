"""ModelCache: the one owner of which models are loaded, their statistics and their memory.

Everything that wants a model asks the cache: the app, the HTTP server, the benchmarks. The
cache keeps one lock over all entries; loads run in daemon worker threads (so Ctrl-C never waits
for a load), concurrent requests for the same model share one load, and a request for a loaded
model never waits on another model's load. Decisions (what to evict before a load, what a
clean-up unloads) come from the pure functions in :mod:`mlx_tui.core.planner` with the
configured policy from :mod:`mlx_tui.core.policy`.

A model in use is held by a :class:`Lease`; a leased model is never unloaded under a request:
a clean-up marks it and it is unloaded when its last lease ends.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any, Callable

from .catalog import Catalog, ModelInfo, UnknownModel
from .events import CacheEvent, EventKind, Listener
from .loader import LoadedModel, ModelLoader, ModelLoadError, end_mlx_thread
from .memory import MemoryProbe, MemorySnapshot
from .planner import CleanupPlan, Thresholds, plan_admission, plan_cleanup
from .policy import EntryStats, get_policy
from .settings import Settings, SettingsError
from .store import Store
from .units import format_bytes, iso_seconds

__all__ = ["ModelState", "ModelView", "ModelTooLarge", "Lease", "ModelCache"]

log = logging.getLogger("mlx_tui.cache")

RECENT_USES = 16


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
    """A read-only copy of one model's state and statistics, safe to pass to any thread."""

    name: str
    state: ModelState
    source: str
    path: str | None
    architecture: str | None
    quantization_bits: int | None
    disk_bytes: int
    estimated_bytes: int
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
        return (now or time.time()) - self.load_started_at

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
            "error": self.error,
        }


@dataclass
class _Entry:
    """Mutable state of one model; only ModelCache touches it, under its lock."""

    info: ModelInfo
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
    recent_uses: deque[float] = field(default_factory=lambda: deque(maxlen=RECENT_USES))
    loaded: LoadedModel | None = None
    future: Future[ModelView] | None = None

    @property
    def name(self) -> str:
        return self.info.name

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
    """A model taken for eviction: its entry, the bytes it held, and why it goes."""

    entry: _Entry
    freed_bytes: int
    reason: str


class Lease:
    """A hold on a loaded model; while any lease is alive the model is not unloaded.

    Use as a context manager; :meth:`release` drops the references to the model so that an
    eviction afterwards really frees its memory.
    """

    def __init__(self, cache: "ModelCache", name: str, loaded: LoadedModel) -> None:
        self._cache = cache
        self.name = name
        self.model: Any = loaded.model
        self.tokenizer: Any = loaded.tokenizer
        self._released = False

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        self.model = self.tokenizer = None
        self._cache._release(self.name)

    def __enter__(self) -> "Lease":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class ModelCache:
    """Keeps the right MLX models loaded within memory thresholds.

    Thread-safe; every public method may be called from any thread. Listeners
    (:meth:`subscribe`) are called from the thread where an event happened.
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
    ) -> None:
        self._settings = settings
        self._loader = loader
        self._probe = probe
        self._store = store
        self._catalog = catalog or Catalog(settings)
        self._clock = clock
        self._lock = threading.RLock()
        self._admission = threading.Lock()
        self._entries: dict[str, _Entry] = {}  # by canonical name
        self._aliases: dict[str, str] = {}  # any other name or path -> canonical name
        self._listeners: list[Listener] = []
        self._memory: MemorySnapshot | None = None
        self._load_speed: float | None = None  # bytes per second of weights, from past loads
        self._stop = threading.Event()
        self._monitor: threading.Thread | None = None
        # Uses of past sessions and this one, by name (SQLite is read once, then counted here).
        self._lifetime_uses = {n: u.use_count for n, u in (store.usage() if store else {}).items()}
        self.refresh_catalog()

    # -- observation -----------------------------------------------------------------------------
    @property
    def settings(self) -> Settings:
        return self._settings

    @property
    def thresholds(self) -> Thresholds:
        m = self._settings.memory
        return Thresholds(m.warning_threshold, m.emergency_threshold)

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` for every event; returns a function that unsubscribes."""
        with self._lock:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return unsubscribe

    def _emit(self, kind: EventKind, message: str, model: str | None = None,
              level: int = logging.INFO, **data: Any) -> None:
        event = CacheEvent(kind, message, model, self._clock(), data)
        if kind is not EventKind.MEMORY:
            log.log(level, message)
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(event)
            except Exception:  # a broken listener must not break the cache
                log.exception("event listener failed")

    def memory(self, fresh: bool = False) -> MemorySnapshot:
        """The last memory snapshot (taken now when ``fresh`` or when there is none)."""
        if fresh or self._memory is None:
            self._memory = self._probe.snapshot()
        return self._memory

    def _view(self, e: _Entry) -> ModelView:
        return ModelView(
            name=e.name, state=e.state, source=e.info.source,
            path=str(e.info.path) if e.info.path else None,
            architecture=e.info.architecture, quantization_bits=e.info.quantization_bits,
            disk_bytes=e.info.disk_bytes, estimated_bytes=e.info.estimated_bytes,
            resident_bytes=e.resident_bytes, use_count=e.use_count, last_used=e.last_used,
            loaded_at=e.loaded_at, load_time_seconds=e.load_time_seconds,
            weights_seconds=e.weights_seconds, tokenizer_seconds=e.tokenizer_seconds,
            pinned=e.pinned, leases=e.leases, error=e.error or e.info.problem,
            load_started_at=e.load_started_at,
            expected_load_seconds=self._expected_seconds(e),
            lifetime_use_count=self._lifetime_uses.get(e.name, 0),
            evict_when_idle=e.evict_when_idle,
        )

    def _expected_seconds(self, e: _Entry) -> float | None:
        if e.load_time_seconds:
            return e.load_time_seconds
        if self._load_speed and e.info.estimated_bytes:
            return e.info.estimated_bytes / self._load_speed
        return None

    def models(self) -> list[ModelView]:
        """Every known model, loaded ones first, then by name."""
        with self._lock:
            views = [self._view(e) for e in self._entries.values()]
        return sorted(views, key=lambda v: (not v.is_loaded, v.state is not ModelState.LOADING, v.name))

    def get(self, name: str) -> ModelView:
        """One model's view; raises :class:`UnknownModel`."""
        entry = self._entry(name)
        with self._lock:
            return self._view(entry)

    def keep_order(self) -> list[str]:
        """Every known name in the order the policy keeps them: loaded models (pinned first,
        then the policy's ranking, most valuable first), then loads under way, then the rest
        ranked the same way. This is the order a clean-up works from, for display."""
        group = {ModelState.LOADED: 0, ModelState.LOADING: 1, ModelState.QUEUED: 1,
                 ModelState.EVICTING: 2}
        with self._lock:
            entries = list(self._entries.values())
            ranked = get_policy(self._settings.cache.policy)([e.stats() for e in entries], self._clock())
            rank = {s.name: i for i, s in enumerate(ranked)}
            state = {e.name: (group.get(e.state, 3), not e.pinned) for e in entries}
        return sorted(rank, key=lambda n: (*state[n], rank[n]))

    def loaded_names(self) -> list[str]:
        with self._lock:
            return [n for n, e in self._entries.items() if e.state is ModelState.LOADED]

    # -- catalog ---------------------------------------------------------------------------------
    def refresh_catalog(self) -> None:
        """Rescan aliases, folders and the Hugging Face cache; loaded models stay as they are."""
        found = self._catalog.scan()
        with self._lock:
            for info in found.values():
                self._register(info)

    def _register(self, info: ModelInfo) -> _Entry:
        """Under the lock: the entry for ``info``; a second name for the same folder (``demo``
        behind the alias ``default``) becomes an alias of the first, so it loads once."""
        canonical = self._aliases.get(info.name, info.name)
        entry = self._entries.get(canonical)
        if entry is None and info.path is not None:
            entry = next((e for e in self._entries.values() if e.info.path == info.path), None)
            if entry is not None:
                self._aliases[info.name] = entry.name
        if entry is None:
            entry = self._entries[info.name] = _Entry(info)
        elif entry.name == info.name and entry.state in (ModelState.NOT_LOADED, ModelState.FAILED):
            entry.info = info
        return entry

    def _entry(self, name: str) -> _Entry:
        """The entry for a name, alias or folder path; raises UnknownModel.

        Call it before taking the lock: resolving a new name may scan the disk.
        """
        with self._lock:
            entry = self._entries.get(self._aliases.get(name, name))
        if entry is not None:
            return entry
        info = self._catalog.resolve(name)
        with self._lock:
            entry = self._register(info)
            if entry.name != name:
                self._aliases[name] = entry.name
            return entry

    # -- loading ---------------------------------------------------------------------------------
    def load(self, name: str, reason: str = "request") -> "Future[ModelView]":
        """Start loading ``name`` in the background (or join the load under way).

        Returns a future that resolves to the loaded model's view, or raises
        :class:`ModelLoadError` / :class:`ModelTooLarge`. Does not count as a use.
        """
        entry = self._entry(name)
        with self._lock:
            return self._start_load(entry, reason)

    def _start_load(self, entry: _Entry, reason: str) -> "Future[ModelView]":
        if entry.state is ModelState.LOADED:
            done: Future[ModelView] = Future()
            done.set_result(self._view(entry))
            return done
        if entry.future is not None and not entry.future.done():
            return entry.future
        recheck = entry.state is ModelState.FAILED or entry.info.problem is not None
        entry.state = ModelState.QUEUED
        entry.error = None
        future: Future[ModelView] = Future()
        entry.future = future
        self._emit(EventKind.LOAD_QUEUED, f"{entry.name}: load queued ({reason})", entry.name,
                   reason=reason)
        threading.Thread(target=self._run_load, args=(entry, future, reason, recheck),
                         name=f"load-{entry.name}", daemon=True).start()
        return future

    def _recheck_folder(self, entry: _Entry) -> None:
        """Look at a failed model's folder again (on the load thread: it may scan the disk),
        so a folder fixed since the failure loads on this retry."""
        try:
            fresh = self._catalog.resolve(entry.name)
        except UnknownModel:
            return
        with self._lock:
            entry.info = fresh

    def _fail(self, entry: _Entry, error: ModelLoadError, kind: EventKind) -> ModelLoadError:
        with self._lock:
            entry.state = ModelState.FAILED
            entry.error = str(error)
            entry.loaded = None
        self._emit(kind, str(error), entry.name, logging.WARNING)
        return error

    def _run_load(self, entry: _Entry, future: Future[ModelView], reason: str, recheck: bool) -> None:
        # Once running, a caller's future.cancel() fails: the load is shared by every waiter.
        if not future.set_running_or_notify_cancel():
            with self._lock:
                entry.state = ModelState.NOT_LOADED
            return
        outcome: ModelView | ModelLoadError
        try:
            if recheck:
                self._recheck_folder(entry)
            outcome = self._load_and_report(entry, reason)
        finally:
            end_mlx_thread()
        # Waiters go on only now, when this thread holds nothing of the model any more: an
        # eviction right after the load then frees all of it.
        if isinstance(outcome, ModelLoadError):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)

    def _load_and_report(self, entry: _Entry, reason: str) -> ModelView | ModelLoadError:
        """Admit, load and record one model; returns its view, or the error it failed with."""
        try:
            with self._admission:
                victims = self._admit(entry)
                self._finish_evictions(victims)
                with self._lock:
                    entry.state = ModelState.LOADING
                    entry.load_started_at = self._clock()
                    expected = self._expected_seconds(entry)
                self._emit(
                    EventKind.LOAD_STARTED,
                    f"{entry.name}: loading {format_bytes(entry.info.estimated_bytes)}"
                    + (f", about {expected:.1f} s" if expected else ""),
                    entry.name, expected_seconds=expected,
                )
            loaded = self._loader.load(entry.info)
        except ModelTooLarge as exc:
            return self._fail(entry, exc, EventKind.REFUSED)
        except ModelLoadError as exc:
            return self._fail(entry, exc, EventKind.LOAD_FAILED)
        except Exception as exc:  # noqa: BLE001 - any fault becomes a failed entry, not a crash
            log.exception("unexpected load failure")
            return self._fail(entry, ModelLoadError(f"{entry.name}: {type(exc).__name__}: {exc}"),
                              EventKind.LOAD_FAILED)
        with self._lock:
            entry.loaded = loaded
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
        tok = "tokenizer reused" if loaded.tokenizer_reused else f"tokenizer {loaded.tokenizer_seconds:.2f} s"
        self._emit(
            EventKind.LOADED,
            f"{entry.name}: loaded in {loaded.load_seconds:.2f} s (weights "
            f"{loaded.weights_seconds:.2f} s, {tok}), {format_bytes(loaded.resident_bytes)} ({reason})",
            entry.name, load_time_seconds=loaded.load_seconds, resident_bytes=loaded.resident_bytes,
        )
        if self._store is not None:
            self._store.record_load(entry.name, loaded.load_seconds)
        return view

    def _admit(self, entry: _Entry) -> list[_Victim]:
        """Plan room for ``entry``; returns the models taken for eviction, or raises."""
        if not entry.info.loadable:
            raise ModelLoadError(f"{entry.name}: {entry.info.problem}")
        snap = self.memory(fresh=True)
        with self._lock:
            in_flight = sum(
                e.info.estimated_bytes for e in self._entries.values()
                if e.state is ModelState.LOADING and e is not entry
            )
            loaded = [e.stats() for e in self._entries.values() if e.state is ModelState.LOADED]
            plan = plan_admission(
                entry.info.estimated_bytes, loaded, snap.used_bytes + in_flight, snap.total_bytes,
                self.thresholds, get_policy(self._settings.cache.policy), self._clock(),
                max_loaded=self._settings.cache.max_loaded, name=entry.name,
            )
            if not plan.allowed:
                raise ModelTooLarge(plan.refused or "refused", need_bytes=plan.need_bytes,
                                    freeable_bytes=plan.freeable_bytes,
                                    used_bytes=snap.used_bytes, total_bytes=snap.total_bytes)
            reason = f"making room for {entry.name}"
            return [v for v in (self._take(self._entries[n], reason) for n in plan.evict) if v]

    # -- using -----------------------------------------------------------------------------------
    def acquire(self, name: str, timeout: float | None = None) -> Lease:
        """A lease on ``name``, loading it first if needed; counts as one use.

        Blocks until the model is loaded (call it from a worker thread, never an event loop).
        Raises :class:`UnknownModel`, :class:`ModelLoadError` or :class:`ModelTooLarge`.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        entry = self._entry(name)
        now = self._clock()
        with self._lock:
            entry.use_count += 1
            entry.last_used = now
            entry.recent_uses.append(now)
            uses = entry.use_count
        if self._store is not None:
            self._store.record_use(entry.name, now)
            with self._lock:
                self._lifetime_uses[entry.name] = self._lifetime_uses.get(entry.name, 0) + 1
        self._emit(EventKind.USED, f"{entry.name}: use #{uses}", entry.name, use_count=uses)
        while True:
            with self._lock:
                if entry.state is ModelState.LOADED and entry.loaded is not None:
                    entry.leases += 1
                    return Lease(self, entry.name, entry.loaded)
                future = self._start_load(entry, "request")
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            future.result(timeout=remaining)

    def _release(self, name: str) -> None:
        with self._lock:
            entry = self._entries[name]
            entry.leases -= 1
            leases = entry.leases
            victim = None
            if entry.leases == 0 and entry.evict_when_idle:
                victim = self._take(entry, "deferred clean-up, request finished")
        self._emit(EventKind.RELEASED, f"{name}: request finished ({leases} still in use)", name,
                   logging.DEBUG, in_use=leases)
        if victim:
            self._finish_evictions([victim])

    # -- evicting --------------------------------------------------------------------------------
    def _take(self, entry: _Entry, reason: str) -> _Victim | None:
        """Under the lock: move a loaded, idle model to ``evicting`` and drop the cache's
        reference to it. Nothing else holds one (leases drop theirs on release), so the
        memory is garbage once :meth:`_finish_evictions` collects."""
        if entry.state is not ModelState.LOADED or entry.loaded is None:
            return None
        if entry.leases > 0:
            if not entry.evict_when_idle:
                entry.evict_when_idle = True
                self._emit(EventKind.EVICTION_DEFERRED,
                           f"{entry.name}: in use, will unload when its request ends ({reason})",
                           entry.name, reason=reason)
            return None
        freed = entry.loaded.resident_bytes
        entry.loaded = None
        entry.state = ModelState.EVICTING
        entry.evict_when_idle = False
        return _Victim(entry, freed, reason)

    def _finish_evictions(self, victims: list[_Victim]) -> None:
        """Outside the lock: return the memory to the system, then report."""
        if not victims:
            return
        self._loader.free()  # gc.collect() + mx.clear_cache(): the memory really goes back
        for victim in victims:
            entry = victim.entry
            with self._lock:
                if entry.state is ModelState.EVICTING:
                    entry.state = ModelState.NOT_LOADED
                    entry.resident_bytes = 0
            self._emit(EventKind.EVICTED,
                       f"{entry.name}: unloaded, {format_bytes(victim.freed_bytes)} freed ({victim.reason})",
                       entry.name, reason=victim.reason, freed_bytes=victim.freed_bytes)

    def evict(self, name: str, reason: str = "asked by user") -> bool:
        """Unload ``name`` now; if it is in use, when its request ends. True if unloaded now."""
        entry = self._entry(name)
        with self._lock:
            victim = self._take(entry, reason)
        self._finish_evictions([victim] if victim else [])
        return victim is not None

    def pin(self, name: str, pinned: bool = True) -> None:
        """A pinned model survives normal clean-ups and admission (not an emergency)."""
        entry = self._entry(name)
        with self._lock:
            entry.pinned = pinned
        kind = EventKind.PINNED if pinned else EventKind.UNPINNED
        self._emit(kind, f"{name}: {'pinned' if pinned else 'unpinned'}", name)

    def cleanup(self, level: str = "normal", reason: str = "asked by user") -> CleanupPlan:
        """Run a clean-up now as if memory were at the warning (or emergency) threshold."""
        snap = self.memory(fresh=True)
        forced = snap.total_bytes if level == "emergency" else int(
            max(snap.used_bytes, self.thresholds.warning * snap.total_bytes + 1))
        return self._run_cleanup(replace(snap, used_bytes=min(forced, snap.total_bytes)), reason)

    def _run_cleanup(self, snap: MemorySnapshot, reason: str | None = None) -> CleanupPlan:
        m = self._settings.memory
        with self._lock:
            loaded = [e.stats() for e in self._entries.values() if e.state is ModelState.LOADED]
            plan = plan_cleanup(
                loaded, snap.used_bytes, snap.total_bytes, self.thresholds,
                get_policy(self._settings.cache.policy), self._clock(),
                keep=m.keep_on_cleanup, mode=m.cleanup,  # type: ignore[arg-type]
            )
            if not plan.level:
                return plan
            why = f"{plan.level} clean-up" + (f", {reason}" if reason else "")
            victims = [v for v in (self._take(self._entries[n], why) for n in plan.evict) if v]
            for name in plan.deferred:
                self._take(self._entries[name], why)
        self._emit(EventKind.CLEANUP, plan.reason + (f" ({reason})" if reason else ""),
                   level=logging.WARNING, cleanup=plan.level, evict=list(plan.evict),
                   deferred=list(plan.deferred), kept=list(plan.kept))
        self._finish_evictions(victims)
        return plan

    def _idle_victims(self) -> list[_Victim]:
        idle = self._settings.cache.idle_unload_seconds
        if idle <= 0:
            return []
        now = self._clock()
        with self._lock:
            found = [
                e for e in self._entries.values()
                if e.state is ModelState.LOADED and not e.pinned and e.leases == 0
                and now - max(e.last_used, e.loaded_at) >= idle
            ]
            return [v for v in (self._take(e, f"idle for {idle:g} s") for e in found) if v]

    def check_memory(self) -> MemorySnapshot:
        """One monitor step: read memory, clean up past a threshold, unload idle models."""
        snap = self.memory(fresh=True)
        self._emit(EventKind.MEMORY, f"memory {snap.used_fraction:.1%}", snapshot=snap)
        plan = self._run_cleanup(snap)
        victims = self._idle_victims()
        self._finish_evictions(victims)
        if plan.evict or victims:
            snap = self.memory(fresh=True)  # show the drop at once
            self._emit(EventKind.MEMORY, f"memory {snap.used_fraction:.1%}", snapshot=snap)
        return snap

    # -- settings ---------------------------------------------------------------------------------
    def apply_settings(self, settings: Settings, sections: frozenset[str] | None = None) -> None:
        """Use new settings at once (the runtime calls this with the sections that changed).

        Thresholds and policy apply at once and a lower threshold cleans up; the catalogue is
        rebuilt and rescanned only when ``[models]`` or ``[catalog]`` changed.
        """
        rescan = sections is None or bool(sections & {"models", "catalog"})
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
    def start(self, preload: bool = True) -> None:
        """Start the memory monitor (and the preloads) in background threads."""
        if self._monitor is not None:
            return
        self._stop.clear()
        self._monitor = threading.Thread(target=self._monitor_loop, name="memory-monitor", daemon=True)
        self._monitor.start()
        if preload:
            threading.Thread(target=self.preload, name="preload", daemon=True).start()

    def _monitor_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.check_memory()
            except Exception:  # the monitor must keep running whatever one step meets
                log.exception("memory monitor step failed")
            self._stop.wait(self._settings.memory.poll_seconds)

    def preload_names(self) -> list[str]:
        """``[cache].preload`` then the ``preload_popular`` most used models of past sessions."""
        names = list(self._settings.cache.preload)
        popular = self._settings.cache.preload_popular
        if popular and self._store is not None:
            for name in self._store.most_used(popular + len(names)):
                if name not in names and len(names) < len(self._settings.cache.preload) + popular:
                    names.append(name)
        return names

    def preload(self) -> None:
        """Load the preload list in order, each only while memory is below
        ``background_load_below``; logs "preloaded NAME in S s" or why not."""
        limit = self._settings.memory.background_load_below
        for name in self.preload_names():
            if self._stop.is_set():
                return
            snap = self.memory(fresh=True)
            if snap.used_fraction >= limit:
                self._emit(EventKind.PRELOAD,
                           f"could not preload {name}: memory {snap.used_fraction:.0%} >= "
                           f"background_load_below {limit:.0%}", name, logging.WARNING, ok=False)
                continue
            try:
                view = self.load(name, reason="preload").result()
            except (ModelLoadError, UnknownModel) as exc:
                self._emit(EventKind.PRELOAD, f"could not preload {name}: {exc}", name,
                           logging.WARNING, ok=False)
                continue
            self._emit(EventKind.PRELOAD, f"preloaded {name} in {view.load_time_seconds:.2f} s",
                       name, ok=True)

    def close(self) -> None:
        """Stop the monitor and unload every idle model (memory goes back at once)."""
        self._stop.set()
        if self._monitor is not None:
            self._monitor.join(timeout=5)
            self._monitor = None
        with self._lock:
            victims = [v for v in (self._take(e, "closing") for e in self._entries.values()) if v]
        self._finish_evictions(victims)
