"""The generation worker of a distributed model, as the API process sees it: :class:`RemoteWorker`.

It has the core worker's interface (``submit`` a :class:`GenerationRequest`, read its
:class:`GenerationHandle`; ``in_flight``, ``stop``), so the chat engine and the server use a
distributed model as they use a local one. A request becomes a numbered
:class:`~.protocol.Submit` to rank 0; rank 0's output comes back as :class:`~.protocol.Item`
values that fill the handle. The group's reader thread calls :meth:`RemoteWorker.tick` every
tenth of a second: a request whose cancel event was set is cancelled on the ranks then.

When the group is lost, every request in flight ends with the :class:`~.errors.RankLost` that
names the host. An error rank 0 reported for a request waits ``lost_grace`` seconds first: a
peer that died makes rank 0's step fail a moment before the group is known to be lost, and the
host's name is the better answer.
"""

from __future__ import annotations

import itertools
import threading
import time
from concurrent.futures import Future
from typing import Any, Callable

from ..core.engine.request import GenerationHandle, GenerationRequest, Piece
from ..core.engine.worker import WorkerStopped
from ..core.errors import ModelBusy
from ..core.settings import EngineSettings
from .errors import RankLost
from .protocol import Cancel, Item, RemoteError, Submit

__all__ = ["RemoteWorker", "RemoteGenerationError"]


class RemoteGenerationError(RuntimeError):
    """Rank 0 could not generate one request (the message is rank 0's exception)."""


class RemoteWorker:
    """Requests of one distributed model, between the API's threads and rank 0. Thread-safe."""

    def __init__(self, name: str, tokenizer: Any, settings: EngineSettings,
                 send: Callable[[Submit | Cancel], None], *, on_stop: Callable[[], None] = lambda: None,
                 lost_grace: float = 5.0) -> None:
        self.name = name
        self.tokenizer = tokenizer
        self._settings = settings
        self._send = send
        self._on_stop = on_stop
        self._lost_grace = lost_grace
        self._lock = threading.Lock()
        self._handles: dict[int, GenerationHandle] = {}
        self._cancelled: set[int] = set()
        self._parked: dict[int, tuple[float, BaseException]] = {}
        self._seq = itertools.count(1)
        self._stopped = False
        self._error: RankLost | None = None

    # -- the core worker's interface ---------------------------------------------------------------
    def start(self, threads: Any = None) -> None:
        """Nothing to start: the ranks run the model."""

    @property
    def in_flight(self) -> int:
        with self._lock:
            return len(self._handles)

    def submit(self, request: GenerationRequest,
               on_done: Callable[[object], None] | None = None) -> GenerationHandle:
        """Send ``request`` to rank 0; raises :class:`ModelBusy` when the queue is full and
        :class:`RankLost` when the ranks are gone. ``on_done`` is called (on the group's reader
        thread) when the request ends, however it ends."""
        capacity = self._settings.max_batch + self._settings.queue_size
        with self._lock:
            if self._error is not None:
                raise self._error
            if self._stopped:
                raise WorkerStopped(f"{self.name} was unloaded")
            if len(self._handles) >= capacity:
                raise ModelBusy(self.name, len(self._handles) - self._settings.max_batch)
            seq = next(self._seq)
            handle = GenerationHandle(request)
            handle.on_done = on_done
            self._handles[seq] = handle
        try:
            self._send(Submit(seq, tuple(request.prompt), request.params, request.label))
        except RankLost:
            with self._lock:
                self._handles.pop(seq, None)
            raise
        return handle

    def call(self, fn: Callable[[], Any]) -> "Future[Any]":
        """Run ``fn`` now (a distributed model keeps no prompt cache in this process)."""
        future: Future[Any] = Future()
        try:
            future.set_result(fn())
        except Exception as exc:  # noqa: BLE001 - the caller gets it
            future.set_exception(exc)
        return future

    def stop(self, timeout: float = 60.0) -> None:
        """Take no more requests and free every rank's shard (the cache calls this when it
        unloads the model; the wait is bounded by the group's timeouts)."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        self._on_stop()

    # -- the group's reader thread ------------------------------------------------------------------
    def deliver(self, message: Item) -> None:
        item = message.item
        with self._lock:
            handle = self._handles.get(message.seq)
            if handle is None:
                return
            if isinstance(item, RemoteError):
                error = RemoteGenerationError(f"{self.name}: rank 0: {item.kind}: {item.message}")
                self._parked[message.seq] = (time.monotonic() + self._lost_grace, error)
                return
            if not isinstance(item, Piece):
                self._handles.pop(message.seq, None)
                self._cancelled.discard(message.seq)
        handle.put(item)

    def tick(self) -> None:
        """Cancel what was cancelled; end requests whose error waited long enough."""
        now = time.monotonic()
        with self._lock:
            cancels = [seq for seq, h in self._handles.items()
                       if h.request.cancel.is_set() and seq not in self._cancelled]
            self._cancelled.update(cancels)
            expired = [(seq, err) for seq, (at, err) in self._parked.items() if at <= now]
            for seq, _ in expired:
                self._parked.pop(seq, None)
            ended = [(self._handles.pop(seq), err) for seq, err in expired if seq in self._handles]
        for seq in cancels:
            try:
                self._send(Cancel(seq))
            except RankLost:
                break
        for handle, error in ended:
            handle.put(error)

    def fail_all(self, error: RankLost) -> None:
        """The ranks are gone: every request in flight ends with ``error``."""
        with self._lock:
            self._error = error
            handles = list(self._handles.values())
            self._handles.clear()
            self._parked.clear()
        for handle in handles:
            handle.put(error)
