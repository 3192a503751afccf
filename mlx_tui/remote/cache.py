"""A remote host's model cache, read and driven as the app's widgets read and drive a ModelCache.

:class:`RemoteCache` answers ``models()``, ``get()``, ``keep_order()``, ``memory()``,
``thresholds`` and ``settings`` from the host's last ``/health`` reading (fast, no I/O: safe on
an event loop), and tells its subscribers what changed between two readings as the core's
:class:`~mlx_tui.core.events.CacheEvent` values (loaded, evicted, pinned, a memory reading...),
so a models table, a memory gauge and an event log over it work as they do over the local
cache. The actions go through the host's HTTP API: ``load``, ``evict`` and ``cleanup`` block
(the table calls them from worker threads, as it does locally); ``pin`` is called on the event
loop, so it is sent from the host's action thread and its failure comes back as an event.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Executor, Future
from dataclasses import replace
from typing import Any, Callable

from ..core.catalog import UnknownModel
from ..core.events import CacheEvent, EventKind, EventOutbox, Listener
from ..core.loader import ModelLoadError
from ..core.memory import MemorySnapshot
from ..core.model_view import ModelState, ModelView
from ..core.planner import CleanupPlan, Thresholds
from ..core.settings import CacheSettings, Settings
from .client import RemoteClient
from .documents import HealthReading, view_from_document
from .errors import RemoteError
from .poller import HostReport

__all__ = ["RemoteCache", "changes_between"]

_NO_MEMORY = MemorySnapshot(total_bytes=0, used_bytes=0, available_bytes=0, source="not read yet")


def _event(kind: EventKind, model: str | None, message: str, at: float,
           **data: Any) -> CacheEvent:
    return CacheEvent(kind, message, model, at, dict(data))


def changes_between(old: HealthReading | None, new: HealthReading, host: str,
                    at: float) -> list[CacheEvent]:
    """What happened on ``host`` between two readings, as cache events (the first reading
    tells nothing but its memory figures)."""
    events: list[CacheEvent] = []
    before = {v.name: v for v in old.views} if old is not None else {}
    for v in new.views:
        o = before.get(v.name)
        if o is None:
            continue
        if o.state is not v.state:
            if v.state in (ModelState.LOADING, ModelState.QUEUED) and o.state not in (
                    ModelState.LOADING, ModelState.QUEUED):
                events.append(_event(EventKind.LOAD_STARTED, v.name,
                                     f"{v.name}: loading on {host}", at))
            elif v.state is ModelState.LOADED:
                took = f" in {v.load_time_seconds:.2f} s" if v.load_time_seconds else ""
                events.append(_event(EventKind.LOADED, v.name, f"{v.name}: loaded on {host}{took}",
                                     at))
            elif v.state is ModelState.FAILED:
                events.append(_event(EventKind.LOAD_FAILED, v.name,
                                     f"{v.name}: {v.error or f'failed to load on {host}'}", at))
            elif v.state is ModelState.NOT_LOADED and o.state in (
                    ModelState.LOADED, ModelState.EVICTING, ModelState.LOADING):
                events.append(_event(EventKind.EVICTED, v.name, f"{v.name}: unloaded on {host}", at))
        if o.pinned != v.pinned:
            kind = EventKind.PINNED if v.pinned else EventKind.UNPINNED
            events.append(_event(kind, v.name, f"{v.name}: {kind.value} on {host}", at))
        if v.use_count > o.use_count or v.leases != o.leases:
            events.append(_event(EventKind.USED, v.name, f"{v.name}: used on {host}", at))
    events.append(_event(EventKind.MEMORY, None, f"memory of {host}", at, snapshot=new.memory))
    return events


class RemoteCache:
    """The model cache of one remote host, as a ModelCache's readers and callers see one.

    Owned by its :class:`~.host.RemoteHost`, which feeds it each poll (:meth:`apply`, from the
    poller's thread). Reads take a lock for a moment and never do I/O; listeners are called
    outside the lock, in order, from the poller's thread (or the action thread).
    """

    def __init__(self, client: RemoteClient, actions: Executor, poke: Callable[[], None],
                 clock: Callable[[], float] = time.time) -> None:
        self.address = client.address
        self._client = client
        self._actions = actions
        self._poke = poke
        self._clock = clock
        self._lock = threading.Lock()
        self._reading: HealthReading | None = None
        self._outbox = EventOutbox()
        self._waiting: dict[str, list[Future[ModelView]]] = {}
        # The table's title names the policy; a remote orders its models as it lists them.
        self.settings = Settings(cache=replace(CacheSettings(), policy=f"{self.address.name}'s list"))

    @property
    def host(self) -> str:
        return self.address.name

    # -- reads ---------------------------------------------------------------------------------
    @property
    def reading(self) -> HealthReading | None:
        """The last reading that came (an unreachable host keeps its last one)."""
        with self._lock:
            return self._reading

    @property
    def thresholds(self) -> Thresholds:
        reading = self.reading
        return reading.thresholds if reading is not None else Thresholds()

    def models(self) -> list[ModelView]:
        reading = self.reading
        return list(reading.views) if reading is not None else []

    def get(self, name: str, **_: Any) -> ModelView:
        """One model by name or alias; raises :class:`UnknownModel` (a LookupError)."""
        views = self.models()
        for v in views:
            if v.name == name:
                return v
        for v in views:
            if name in v.aliases:
                return v
        raise UnknownModel(name, [v.name for v in views])

    def keep_order(self) -> list[str]:
        """The names as the host lists them: loaded first, then loading, then the rest."""
        return [v.name for v in self.models()]

    def loaded_names(self) -> list[str]:
        return [v.name for v in self.models() if v.is_loaded]

    def memory(self, fresh: bool = False) -> MemorySnapshot:
        reading = self.reading
        return reading.memory if reading is not None else _NO_MEMORY

    # -- news ----------------------------------------------------------------------------------
    def subscribe(self, listener: Listener) -> Callable[[], None]:
        return self._outbox.subscribe(listener)

    def apply(self, report: HostReport) -> None:
        """A poll's report (from the poller's thread): keep its reading, tell what changed,
        settle the loads that finished."""
        reading = report.reading
        if reading is None:
            return  # unreachable: the last reading stays; the host's report says why
        with self._lock:
            old, self._reading = self._reading, reading
            settled = []
            for name in list(self._waiting):
                view = next((v for v in reading.views if v.name == name), None)
                if view is not None and view.state in (ModelState.LOADED, ModelState.FAILED):
                    settled += [(f, view) for f in self._waiting.pop(name)]
        for event in changes_between(old, reading, self.host, report.at):
            self._outbox.put(event)
        self._outbox.deliver()
        for future, view in settled:
            if view.state is ModelState.LOADED:
                future.set_result(view)
            else:
                future.set_exception(ModelLoadError(view.error or f"{view.name} failed on {self.host}"))

    def _refused(self, name: str | None, message: str) -> None:
        self._outbox.put(_event(EventKind.REFUSED, name, message, self._clock()))
        self._outbox.deliver()

    def close(self) -> None:
        """The host is going away: loads still awaited are cancelled."""
        with self._lock:
            waiting, self._waiting = self._waiting, {}
        for futures in waiting.values():
            for future in futures:
                future.cancel()

    # -- actions (through the host's API) ------------------------------------------------------
    def load(self, name: str, reason: str = "asked from the app") -> "Future[ModelView]":
        """Start loading ``name`` on the host (blocks for the request, not the load); the
        future settles when a later poll sees it loaded or failed."""
        future: Future[ModelView] = Future()
        view = view_from_document(self._client.load(name, wait=False), self._clock())
        if view.state is ModelState.LOADED:
            future.set_result(view)
        else:
            with self._lock:
                self._waiting.setdefault(view.name, []).append(future)
        self._poke()
        return future

    def evict(self, name: str, reason: str = "asked from the app") -> bool:
        """Unload ``name`` there now (or when its requests end); True when unloaded now."""
        answer = self._client.evict(name)
        self._poke()
        return bool(answer.get("evicted"))

    def pin(self, name: str, pinned: bool = True, **_: Any) -> None:
        """Pin or unpin ``name`` there. Returns at once (the table calls this on the event
        loop); a refusal comes back as a ``REFUSED`` event."""
        def send() -> None:
            try:
                self._client.pin(name, pinned)
            except RemoteError as exc:
                self._refused(name, f"{name}: not {'pinned' if pinned else 'unpinned'}: {exc}")
            self._poke()

        self._actions.submit(send)

    def cleanup(self, level: str = "normal", reason: str = "asked from the app") -> CleanupPlan:
        """Run a clean-up there; the plan it ran, as the local cache returns one."""
        answer = self._client.cleanup(level)
        self._poke()
        return CleanupPlan(level=answer.get("level"), evict=tuple(answer.get("evicted") or ()),
                           deferred=tuple(answer.get("deferred") or ()),
                           reason=str(answer.get("reason") or ""),
                           kept=tuple(answer.get("kept") or ()))
