"""One worker thread per remote host: ``GET /health`` now and then, and what came of it.

The poller asks, hands a :class:`HostReport` to its listener, and only then waits for the
next poll, so polls of one host never overlap (Dolphie's way). A host that answers is asked
every :data:`INTERVAL_SECONDS` (every :data:`BUSY_INTERVAL_SECONDS` while a model loads or
unloads there); one that does not is asked again after 2, 4, 8... seconds, up to
:data:`MAX_BACKOFF_SECONDS`, and each report says when the next try is. A host going away
and coming back is two reports with ``reachable`` changing, never an exception.
:meth:`HostPoller.poll_now` asks at once (after an action, so its effect shows).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable

from .documents import HealthReading
from .errors import RemoteError

__all__ = ["HostReport", "HostPoller", "INTERVAL_SECONDS", "BUSY_INTERVAL_SECONDS",
           "MAX_BACKOFF_SECONDS"]

log = logging.getLogger("mlx_tui.remote")

INTERVAL_SECONDS = 2.0
BUSY_INTERVAL_SECONDS = 0.5
MAX_BACKOFF_SECONDS = 30.0


@dataclass(frozen=True)
class HostReport:
    """One poll of one host: its reading, or why there is none.

    ``since`` is when the host last changed between reachable and not; ``down_seconds`` is how
    long the last outage lasted, once it is back (None if it never went away); ``failures``
    counts the polls in a row that failed; ``next_poll_in`` is the wait before the next one.
    """

    host: str
    reading: HealthReading | None
    problem: str | None
    at: float
    since: float
    failures: int = 0
    next_poll_in: float = INTERVAL_SECONDS
    down_seconds: float | None = None
    outages: int = 0

    @property
    def reachable(self) -> bool:
        return self.reading is not None


class HostPoller:
    """Polls one host from its own daemon thread until :meth:`stop`.

    ``fetch`` reads the host (raising :class:`~.errors.RemoteError` when it cannot);
    ``deliver`` gets each report, in the poller's thread: it must only hand it on (post a
    message), never block. :meth:`poll` runs one poll in the caller's thread (tests).
    """

    def __init__(self, host: str, fetch: Callable[[], HealthReading],
                 deliver: Callable[[HostReport], None], *, interval: float = INTERVAL_SECONDS,
                 busy_interval: float = BUSY_INTERVAL_SECONDS,
                 max_backoff: float = MAX_BACKOFF_SECONDS,
                 clock: Callable[[], float] = time.time) -> None:
        self.host = host
        self._fetch = fetch
        self._deliver = deliver
        self._interval = interval
        self._busy_interval = busy_interval
        self._max_backoff = max_backoff
        self._clock = clock
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last: HostReport | None = None

    # -- one poll ------------------------------------------------------------------------------
    def _wait_after(self, reading: HealthReading | None, failures: int) -> float:
        if reading is not None:
            return self._busy_interval if reading.busy else self._interval
        return min(self._max_backoff, self._interval * 2 ** (failures - 1))

    def poll(self) -> HostReport:
        """Ask the host once; the report also goes to ``deliver``."""
        reading, problem = None, None
        try:
            reading = self._fetch()
        except RemoteError as exc:
            problem = str(exc)
        except Exception as exc:  # noqa: BLE001 - a poller must outlive any one bad answer
            if not self._stop.is_set():  # stopping closes the client under a poll: no news
                log.exception("poll of %s failed", self.host)
            problem = f"{self.host}: {type(exc).__name__}: {exc}"
        now = self._clock()
        last = self.last
        was_up = last.reachable if last is not None else None
        up = reading is not None
        failures = 0 if up else (last.failures if last is not None else 0) + 1
        changed = was_up is None or was_up != up
        since = now if changed or last is None else last.since
        down_seconds = last.down_seconds if last is not None else None
        outages = last.outages if last is not None else 0
        if up and was_up is False and last is not None:
            down_seconds = now - last.since
        if not up and was_up is True:
            outages += 1
        report = HostReport(self.host, reading, problem, now, since, failures,
                            self._wait_after(reading, failures), down_seconds, outages)
        self.last = report
        if changed and was_up is not None:
            log.info("%s is %s", self.host, "reachable again" if up else f"unreachable: {problem}")
        try:
            self._deliver(report)
        except Exception:  # noqa: BLE001 - a broken listener must not stop the polls
            log.exception("report of %s not delivered", self.host)
        return report

    # -- the thread ----------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name=f"poll-{self.host}", daemon=True)
            self._thread.start()

    def poll_now(self) -> None:
        """Poll at once (or as soon as the poll under way ends)."""
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            report = self.poll()
            if self._stop.is_set():
                return
            self._wake.wait(report.next_poll_in)
