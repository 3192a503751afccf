"""The pace of the ranks' loop: how long rank 0 waits for work when idle, and when memory is read.

Every turn of the loop is a collective, and a rank that waits inside a collective spins (the ring
backend polls): so when nothing is happening, rank 0 waits for work on its own and the other ranks
sleep as long as it says, then all meet in the next collective. The wait is short (``tick``) in
the first second of idleness, so a request that follows another starts at once, then longer
(``idle_tick``), so idle ranks cost almost nothing; the first request after a long idle waits at
most ``idle_tick``. Rank 0 decides; each step carries the decision to the others.
"""

from __future__ import annotations

import time

__all__ = ["Pace"]


class Pace:
    """Rank 0's clocks for idle waits and memory reports. Used by rank 0's MLX thread only."""

    def __init__(self, tick: float, idle_tick: float, probe_seconds: float,
                 idle_after: float = 1.0) -> None:
        self.tick = tick
        self.idle_tick = max(tick, idle_tick)
        self.probe_seconds = probe_seconds
        self.idle_after = idle_after
        self._idle_since: float | None = None
        self._next_probe = 0.0

    def idle_wait(self) -> float:
        """Seconds to wait for work now that there is none."""
        now = time.monotonic()
        if self._idle_since is None:
            self._idle_since = now
        return self.tick if now - self._idle_since < self.idle_after else self.idle_tick

    def busy(self) -> None:
        """Work arrived: the next idle spell starts with short waits again."""
        self._idle_since = None

    def probe_due(self) -> bool:
        now = time.monotonic()
        if now >= self._next_probe:
            self._next_probe = now + self.probe_seconds
            return True
        return False
