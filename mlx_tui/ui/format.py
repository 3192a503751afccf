"""How the app writes times, durations and sizes: short, fixed-width, and stable while idle.

Nothing here depends on "now" except :func:`clock_time` choosing between a time and a date, so
a cell that shows a moment does not change while the app sits idle.
"""

from __future__ import annotations

import time
from datetime import datetime

from ..core.units import GB

__all__ = ["clock_time", "date_time", "seconds", "duration", "gigabytes", "middle_cut", "reason_cut"]


def clock_time(ts: float, now: float | None = None) -> str:
    """``15:30:02`` for a moment of today, ``Jan 26`` for an older one, ``-`` for never."""
    if not ts:
        return "-"
    moment = datetime.fromtimestamp(ts)
    today = datetime.fromtimestamp(now if now is not None else time.time()).date()
    return moment.strftime("%H:%M:%S") if moment.date() == today else moment.strftime("%b %d")


def date_time(ts: float) -> str:
    """``2026-01-26 15:30``: a saved moment, whatever day it was."""
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M") if ts else "-"


def seconds(value: float) -> str:
    """A measured time in seconds: ``0.12``, ``12.3``, ``-`` when not measured."""
    if not value:
        return "-"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


def duration(value: float) -> str:
    """A rough remaining or elapsed time: ``3s``, ``2m05s``, ``1h02m``."""
    total = max(0, int(round(value)))
    if total < 60:
        return f"{total}s"
    if total < 3600:
        return f"{total // 60}m{total % 60:02d}s"
    return f"{total // 3600}h{total % 3600 // 60:02d}m"


def gigabytes(n: int) -> str:
    """Bytes as GB with one decimal, without the unit: ``8.3``."""
    return f"{n / GB:.1f}"


def middle_cut(text: str, width: int) -> str:
    """``text`` in at most ``width`` cells, cut in the middle with ``…`` so that both ends stay:
    ``mlx-communi…nstruct-4bit``. The end keeps at least the last ``-part`` (``-4bit``,
    ``-bf16``) when it fits in half the width."""
    if len(text) <= width:
        return text
    if width <= 1:
        return text[:width]
    tail = (width - 1) // 2
    suffix = len(text) - text.rfind("-") if "-" in text else 0
    if tail < suffix <= width - 2:
        tail = suffix
    head = width - 1 - tail
    return f"{text[:head]}…{text[len(text) - tail:]}" if tail else f"{text[:head]}…"


def reason_cut(text: str, width: int) -> str:
    """A reason in at most ``width`` cells: its start says what is wrong and its end what to
    do, so the middle goes (``weights do not match … the download may be incomplete``)."""
    if len(text) <= width:
        return text
    head = width * 2 // 5
    tail = width - head - 1
    return f"{text[:head].rstrip()}…{text[len(text) - tail:]}" if tail > 0 else text[:width]
