"""Eviction policies: pure functions that rank cached models by how much they are worth keeping.

A policy never touches the cache. It receives a snapshot of every candidate's statistics
(:class:`EntryStats`) and the current time and returns the same entries ordered from the most
valuable (kept longest) to the least valuable (evicted first). The planner
(:mod:`mlx_tui.core.planner`) and the benchmark replay harness both call policies the same way,
so what the benchmarks measure is exactly what the cache does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

__all__ = [
    "EntryStats",
    "Policy",
    "POLICIES",
    "DEFAULT_POLICY",
    "get_policy",
    "rank_frequency",
    "rank_lru",
    "rank_cost",
    "rank_value",
    "request_rate",
]


@dataclass(frozen=True, slots=True)
class EntryStats:
    """What a policy may know about one model.

    Times are seconds on the cache's clock (``time.time()`` in the app, a virtual clock in the
    benchmarks). ``recent_uses`` holds the times of the last few uses, oldest first, so a policy
    can estimate how often a model is wanted.
    """

    name: str
    use_count: int = 0
    last_used: float = 0.0
    loaded_at: float = 0.0
    load_time_seconds: float = 0.0
    size_bytes: int = 0
    pinned: bool = False
    in_use: bool = False
    recent_uses: tuple[float, ...] = ()


Policy = Callable[[Sequence[EntryStats], float], list[EntryStats]]
"""``policy(entries, now)`` -> entries ordered best (keep) first."""


def rank_frequency(entries: Sequence[EntryStats], now: float) -> list[EntryStats]:
    """The seed document's order: ``use_count`` descending, then ``last_used`` descending."""
    return sorted(entries, key=lambda e: (-e.use_count, -e.last_used, e.name))


def rank_lru(entries: Sequence[EntryStats], now: float) -> list[EntryStats]:
    """Least recently used goes first: ``last_used`` descending."""
    return sorted(entries, key=lambda e: (-e.last_used, -e.use_count, e.name))


def rank_cost(entries: Sequence[EntryStats], now: float) -> list[EntryStats]:
    """Cost-aware (GreedyDual-Size-Frequency without global aging).

    Value = uses x seconds to reload / gigabytes held. A model that is used often, slow to reload
    and small is the most worth keeping.
    """

    def value(e: EntryStats) -> float:
        size_gb = max(e.size_bytes, 1) / 1e9
        cost = max(e.load_time_seconds, 1e-3)
        return max(e.use_count, 1) * cost / size_gb

    return sorted(entries, key=lambda e: (-value(e), -e.last_used, e.name))


SILENCE_GAPS = 2.0
"""How many of its usual gaps a model may go unused before its rate is read off the silence."""

_FALLBACK_DISK_BYTES_PER_S = 2e9
"""A slow SSD, to price a reload before a model's load time was ever measured."""


def _uses(e: EntryStats) -> tuple[float, ...]:
    return e.recent_uses or ((e.last_used,) if e.use_count else ())


def request_rate(e: EntryStats, now: float, horizon: float) -> float:
    """Requests per second to expect for ``e``, from its uses alone.

    Two readings, combined by their geometric mean:

    * **recent**: one over the mean gap between its ``recent_uses``, but no more than
      ``SILENCE_GAPS`` over the time since the last use, so a burst that has ended stops
      counting (after two of its gaps without a use, the silence is the better estimate).
      A model used once has no gap yet; it is taken to come back once per ``horizon``.
    * **long run**: ``use_count`` over ``horizon`` (the longest span of recent uses among the
      models being ranked, a proxy for how long the cache has been watching), so the main model
      of the day is not forgotten during a burst on another.

    A model never used (preloaded) has rate 0.
    """
    uses = _uses(e)
    if not uses:
        return 0.0
    tiny = 1e-6
    since_last = max(now - uses[-1], tiny)
    if len(uses) >= 2:
        gap = max((uses[-1] - uses[0]) / (len(uses) - 1), tiny)
    else:
        gap = max(horizon, since_last)
    recent = min(1.0 / gap, SILENCE_GAPS / since_last)
    long_run = max(e.use_count, len(uses)) / max(horizon, now - uses[0], tiny)
    return math.sqrt(recent * long_run)


def rank_value(entries: Sequence[EntryStats], now: float) -> list[EntryStats]:
    """Expected reload-seconds saved per second held, per square root of the bytes held.

    Value = request rate (:func:`request_rate`) x seconds to load it again / sqrt(bytes). Rate
    times reload cost is what unloading the model will cost, per second, from now on. Dividing
    that by the full size (reload-seconds per byte-second) would be right if memory were freed
    by the byte, but it is freed a model at a time: unloading a 17 GB model to make room for a
    2 GB one wastes most of what it frees. With the square root, big models still pay for their
    room, but a 32B model wanted as often as a 1.5B one is worth about as much (not a fifth), so
    how often each is wanted decides. Ties go to the most recently used. This leans on the
    planner giving back victims a larger one made unnecessary (``benchmarks/policy_replay.py``
    measures it against the offline optimum).
    """
    if not entries:
        return []
    horizon = max((now - uses[0] for uses in map(_uses, entries) if uses), default=0.0)

    def value(e: EntryStats) -> float:
        cost = e.load_time_seconds if e.load_time_seconds > 0 else e.size_bytes / _FALLBACK_DISK_BYTES_PER_S
        return request_rate(e, now, horizon) * cost / math.sqrt(max(e.size_bytes, 1))

    values = {e.name: value(e) for e in entries}
    return sorted(entries, key=lambda e: (-values[e.name], -e.last_used, e.name))


POLICIES: dict[str, Policy] = {
    "frequency": rank_frequency,
    "lru": rank_lru,
    "cost": rank_cost,
    "value": rank_value,
}

DEFAULT_POLICY = "value"  # chosen from benchmarks/policy_replay.py, see BENCHMARKS.md


def get_policy(name: str) -> Policy:
    """Return the policy called ``name``; raises ``KeyError`` naming the known ones."""
    try:
        return POLICIES[name]
    except KeyError:
        known = ", ".join(sorted(POLICIES))
        raise KeyError(f"unknown policy {name!r} (known: {known})") from None
