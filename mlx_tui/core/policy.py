"""Eviction policies: pure functions that rank cached models by how much they are worth keeping.

A policy never touches the cache. It receives a snapshot of every candidate's statistics
(:class:`EntryStats`) and the current time and returns the same entries ordered from the most
valuable (kept longest) to the least valuable (evicted first). The planner
(:mod:`mlx_tui.core.planner`) and the benchmark replay harness both call policies the same way,
so what the benchmarks measure is exactly what the cache does.
"""

from __future__ import annotations

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


POLICIES: dict[str, Policy] = {
    "frequency": rank_frequency,
    "lru": rank_lru,
    "cost": rank_cost,
}

DEFAULT_POLICY = "frequency"


def get_policy(name: str) -> Policy:
    """Return the policy called ``name``; raises ``KeyError`` naming the known ones."""
    try:
        return POLICIES[name]
    except KeyError:
        known = ", ".join(sorted(POLICIES))
        raise KeyError(f"unknown policy {name!r} (known: {known})") from None
