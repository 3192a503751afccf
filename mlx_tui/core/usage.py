"""Usage statistics written off the request path: a full disk never fails a chat.

:class:`UsageRecorder` takes uses and loads from any thread (a queue put), and one background
thread writes them to the :class:`~mlx_tui.core.store.Store`. A write that fails (disk full,
read-only folder, locked database) is logged once, kept, and tried again later; the queue is
bounded, so a database that never comes back costs at most ``MAX_PENDING`` small records.
This thread never touches MLX.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Callable

from .store import Store

__all__ = ["UsageRecorder"]

log = logging.getLogger("mlx_tui.store")

MAX_PENDING = 10_000
RETRY_SECONDS = 5.0


class UsageRecorder:
    """Queues ``record_use`` / ``record_load`` for the store; owned by the cache."""

    def __init__(self, store: Store, retry_seconds: float = RETRY_SECONDS) -> None:
        self._store = store
        self._retry = retry_seconds
        self._pending: deque[Callable[[], None]] = deque(maxlen=MAX_PENDING)
        self._cond = threading.Condition()
        self._closed = False
        self._failing: str | None = None
        self._busy = False
        self._thread = threading.Thread(target=self._run, name="usage-writer", daemon=True)
        self._thread.start()

    @property
    def failing(self) -> str | None:
        """Why the last write failed, while writes fail; None when they succeed."""
        return self._failing

    def record_use(self, name: str, at: float) -> None:
        self._put(lambda: self._store.record_use(name, at))

    def record_load(self, name: str, seconds: float) -> None:
        self._put(lambda: self._store.record_load(name, seconds))

    def _put(self, write: Callable[[], None]) -> None:
        with self._cond:
            if self._closed:
                return
            self._pending.append(write)
            self._cond.notify()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued is written (or ``timeout``); True when it was."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._cond.notify()
            while self._pending or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.05))
        return True

    def close(self, timeout: float = 5.0) -> None:
        self.flush(timeout)
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if self._closed and not self._pending:
                    return
                write = self._pending[0]
                self._busy = True
            try:
                write()
            except Exception as exc:  # noqa: BLE001 - kept and tried again; the request is done
                why = f"{type(exc).__name__}: {exc}"
                if why != self._failing:
                    log.warning("usage statistics not written (%s); retrying every %g s", why, self._retry)
                self._failing = why
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()
                    if self._closed:
                        return
                    self._cond.wait(self._retry)
                continue
            if self._failing is not None:
                log.info("usage statistics written again")
                self._failing = None
            with self._cond:
                if self._pending and self._pending[0] is write:
                    self._pending.popleft()
                self._busy = False
                self._cond.notify_all()
