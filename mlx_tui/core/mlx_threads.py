"""Long-lived threads for MLX work: the only threads of the process that run MLX.

MLX keeps streams per thread, and MLX 0.32 leaves an OS thread behind for every short-lived
Python thread that ran MLX work (even after ``mx.clear_streams()``): a thread per request or
per load leaks without bound. So MLX work runs on threads that never end:

* :class:`MlxExecutor` - a fixed pool (the loader pool) running jobs from one queue, in order;
* :class:`MlxThreadPool` - threads lent one at a time to a long job (a model's generation
  worker) and given back when it returns; a new thread is made only when none is idle, so the
  count is bounded by the most models ever loaded at once.

All are daemon threads: Ctrl-C never waits for a load. :func:`busy` says whether any is
running a job now, so the process can leave with ``os._exit`` instead of letting C++ static
destructors run under a busy MLX thread (which aborts with "terminate called without an active
exception").
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
from concurrent.futures import Future
from typing import Any, Callable, TypeVar

__all__ = ["MlxThread", "MlxExecutor", "MlxThreadPool", "busy", "thread_count"]

log = logging.getLogger("mlx_tui.threads")

T = TypeVar("T")

_busy_lock = threading.Lock()
_busy = 0
_made = itertools.count(1)
_all: list["MlxThread"] = []


def busy() -> bool:
    """True while any MLX thread runs a job (a load, a generation worker)."""
    with _busy_lock:
        return _busy > 0


def thread_count() -> int:
    """How many MLX threads this process has made (they never end)."""
    with _busy_lock:
        return len(_all)


_Job = tuple[Future, Callable[..., Any], tuple[Any, ...]]


class MlxThread:
    """One daemon thread that runs submitted jobs one at a time, forever, in order."""

    def __init__(self, name: str, jobs: "queue.SimpleQueue[_Job | None] | None" = None) -> None:
        self.name = f"{name}-{next(_made)}"
        self._jobs: queue.SimpleQueue[_Job | None] = jobs if jobs is not None else queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
        with _busy_lock:
            _all.append(self)
        self._thread.start()

    @property
    def ident(self) -> int | None:
        return self._thread.ident

    def is_current(self) -> bool:
        """True when called from this thread."""
        return threading.get_ident() == self._thread.ident

    def submit(self, fn: Callable[..., T], *args: Any) -> "Future[T]":
        future: Future[T] = Future()
        self._jobs.put((future, fn, args))
        return future

    def _loop(self) -> None:
        global _busy
        while True:
            job = self._jobs.get()
            if job is None:  # only tests stop a thread; the process never does
                return
            future, fn, args = job
            if not future.set_running_or_notify_cancel():
                continue
            with _busy_lock:
                _busy += 1
            try:
                result = fn(*args)
            except BaseException as exc:  # noqa: BLE001 - the job's owner gets it
                future.set_exception(exc)
            else:
                future.set_result(result)
            finally:
                with _busy_lock:
                    _busy -= 1
                del job, future, fn, args  # drop references to the job's objects at once


class MlxExecutor:
    """``size`` MLX threads sharing one job queue: the loader pool."""

    def __init__(self, name: str, size: int = 1) -> None:
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._threads = [MlxThread(name, self._jobs) for _ in range(max(1, size))]

    def submit(self, fn: Callable[..., T], *args: Any) -> "Future[T]":
        """Run ``fn(*args)`` on the first free thread; the future has its result or error."""
        future: Future[T] = Future()
        self._jobs.put((future, fn, args))
        return future

    def runs_here(self) -> bool:
        return any(t.is_current() for t in self._threads)


class MlxThreadPool:
    """Lends whole threads to long jobs (one generation worker each) and takes them back.

    :meth:`run` starts ``fn`` on an idle thread (a new one only when none is idle); when ``fn``
    returns, the thread is idle again for the next job.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._lock = threading.Lock()
        self._idle: list[MlxThread] = []

    def run(self, fn: Callable[[], T]) -> tuple[MlxThread, "Future[T]"]:
        with self._lock:
            thread = self._idle.pop() if self._idle else MlxThread(self._name)

        def job() -> T:
            try:
                return fn()
            finally:
                with self._lock:
                    self._idle.append(thread)

        return thread, thread.submit(job)

    def idle_count(self) -> int:
        with self._lock:
            return len(self._idle)
