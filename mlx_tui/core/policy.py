"""Eviction policies: pure functions that rank what the cache holds by how much it is worth keeping.

A policy never touches the cache. It receives a snapshot of every candidate's statistics
(:class:`EntryStats`) and the current time and returns the same entries ordered from the most
valuable (kept longest) to the least valuable (evicted first). The planner
(:mod:`mlx_tui.core.planner`) and the benchmark replay harness both call policies the same way,
so what the benchmarks measure is exactly what the cache does.

Two kinds of item share one memory budget and one ranking: loaded **models** (what unloading
one costs is its reload seconds) and **prompt caches** (the KV cache of a prompt a model has
read; what dropping one costs is the prefill seconds to read that prompt again). A policy ranks
both with the same value, seconds saved per byte held; the planner adds the one rule between
them (a prompt cache goes with its model). Policies whose value adds up (``value``, ``cost``)
also give it as a number (:func:`worth_for`), for the planner's exact choice of what stays.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

__all__ = [
    "EntryStats",
    "MODEL",
    "PROMPT_CACHE",
    "KINDS",
    "prompt_cache_name",
    "Policy",
    "Worth",
    "Density",
    "Valuation",
    "valuation_for",
    "worth_for",
    "POLICIES",
    "DEFAULT_POLICY",
    "get_policy",
    "rank_frequency",
    "rank_lru",
    "rank_cost",
    "rank_value",
    "request_rate",
    "worth_cost",
    "worth_value",
    "density_cost",
    "density_value",
]

MODEL = "model"
PROMPT_CACHE = "prompt_cache"
KINDS: tuple[str, ...] = (MODEL, PROMPT_CACHE)


@dataclass(frozen=True, slots=True)
class EntryStats:
    """What a policy may know about one item the cache holds: a model or a prompt cache.

    Times are seconds on the cache's clock (``time.time()`` in the app, a virtual clock in the
    benchmarks). ``recent_uses`` holds the times of the last few uses, oldest first, so a policy
    can estimate how often an item is wanted.

    For a **model** (``kind="model"``, the default): ``size_bytes`` is what unloading it frees,
    ``load_time_seconds`` its measured reload time, uses are requests it served.

    For a **prompt cache** (``kind="prompt_cache"``): ``name`` is unique among all items (use
    :func:`prompt_cache_name`), ``owner`` is the name of its model, ``size_bytes`` its KV bytes in
    memory, ``load_time_seconds`` the seconds it saves (the prefill seconds to rebuild it at the
    model's own measured prefill speed), uses are the requests that read it (``recent_uses``,
    ``use_count``, ``last_used``: its hits), ``loaded_at`` when it was built (a cache no request
    has read yet counts from then), ``in_use`` says a request reads it now (it is never dropped
    under that request), ``pinned`` is False.
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
    kind: str = MODEL
    owner: str | None = None

    @property
    def is_model(self) -> bool:
        return self.kind != PROMPT_CACHE


def prompt_cache_name(model: str, cache_id: str) -> str:
    """The item name of ``model``'s prompt cache ``cache_id``: ``"promptcache:MODEL:ID"``.

    Unique beside model names (no model is called ``promptcache:...``); plans return it as
    given, so the cache maps it back with ``name.rsplit(":", 1)`` (model names may hold colons,
    cache ids do not)."""
    return f"promptcache:{model}:{cache_id}"


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

    worth = worth_cost(entries, now)
    return sorted(entries, key=lambda e: (-density_cost(worth[e.name], e.size_bytes), -e.last_used, e.name))


def density_cost(worth: float, size_bytes: int) -> float:
    """``cost``'s value from its worth: per gigabyte held."""
    return worth / (max(size_bytes, 1) / 1e9)


def worth_cost(entries: Sequence[EntryStats], now: float) -> dict[str, float]:
    """``cost``'s value before the size: uses x seconds to reload (or to prefill again)."""
    return {e.name: max(e.use_count, 1) * max(e.load_time_seconds, 1e-3) for e in entries}


SILENCE_GAPS = 2.0
"""How many of its usual gaps a model may go unused before its rate is read off the silence."""

CACHE_MIN_SILENCE = 1.0
"""Seconds: a prompt cache read or built just now is priced as if last read this long ago."""

_FALLBACK_DISK_BYTES_PER_S = 2e9
"""A slow SSD, to price a reload before a model's load time was ever measured."""


def _uses(e: EntryStats) -> tuple[float, ...]:
    return e.recent_uses or ((e.last_used,) if e.use_count else ())


def request_rate(e: EntryStats, now: float, horizon: float) -> float:
    """Requests per second to expect for ``e``, from its uses alone.

    For a **model**, two readings, combined by their geometric mean:

    * **recent**: one over the mean gap between its ``recent_uses``, but no more than
      ``SILENCE_GAPS`` over the time since the last use, so a burst that has ended stops
      counting (after two of its gaps without a use, the silence is the better estimate).
      A model used once has no gap yet; it is taken to come back once per ``horizon``.
    * **long run**: ``use_count`` over ``horizon`` (the longest span of recent uses among the
      models being ranked, a proxy for how long the cache has been watching), so the main model
      of the day is not forgotten during a burst on another.

    A model never used (preloaded) has rate 0.

    For a **prompt cache**, one over the time since it was last read or built (at least
    ``CACHE_MIN_SILENCE``): a conversation's next turn is likeliest right after its last one,
    and a conversation ends without saying so, so its silence is the estimate (a model's demand
    lasts the day; a conversation's does not). Its gaps would keep a finished conversation's
    cache above the one a person is typing in (on half-length runs of the conversation traces of
    ``benchmarks/policy_replay.py``, read like a model's: worst cases 1.52x and 1.45x the
    optimum; by the silence: 1.10x and 1.12x).
    """
    if e.kind == PROMPT_CACHE:
        last = max(e.last_used, e.loaded_at, e.recent_uses[-1] if e.recent_uses else 0.0)
        return 1.0 / max(now - last, CACHE_MIN_SILENCE) if last > 0 else 0.0
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
    """Expected seconds saved per second held, per square root of the bytes held.

    Value = request rate (:func:`request_rate`) x seconds to load it again / sqrt(bytes), for a
    prompt cache the prefill seconds it saves: one value for both kinds, so a 2 GB cache that
    saves 27 s of prefill on every agent step outranks a model nobody asked for in an hour, and
    a finished conversation's cache goes before a model in use. Rate times reload cost is what
    unloading the item will cost, per second, from now on (:func:`worth_value`). Dividing
    that by the full size (reload-seconds per byte-second) would be right if memory were freed
    by the byte, but it is freed a model at a time: unloading a 17 GB model to make room for a
    2 GB one wastes most of what it frees. With the square root, big models still pay for their
    room, but a 32B model wanted as often as a 1.5B one is worth about as much (not a fifth), so
    how often each is wanted decides. Ties go to the most recently used. This leans on the
    planner giving back victims a larger one made unnecessary (``benchmarks/policy_replay.py``
    measures it against the offline optimum).
    """
    worth = worth_value(entries, now)
    values = {e.name: density_value(worth[e.name], e.size_bytes) for e in entries}
    return sorted(entries, key=lambda e: (-values[e.name], -e.last_used, e.name))


def density_value(worth: float, size_bytes: int) -> float:
    """``value``'s value from its worth: per square root of the bytes held."""
    return worth / math.sqrt(max(size_bytes, 1))


def worth_value(entries: Sequence[EntryStats], now: float) -> dict[str, float]:
    """``value``'s worth of each entry before the size: request rate x seconds it saves, the
    seconds per second that losing it would cost from now on (a model: its reload; a prompt
    cache: its prefill). The rates are read over the window of all ``entries`` together."""
    models = [e for e in entries if e.kind != PROMPT_CACHE]
    horizon = max((now - uses[0] for uses in map(_uses, models) if uses), default=0.0)

    def worth(e: EntryStats) -> float:
        cost = e.load_time_seconds if e.load_time_seconds > 0 else e.size_bytes / _FALLBACK_DISK_BYTES_PER_S
        return request_rate(e, now, horizon) * cost

    return {e.name: worth(e) for e in entries}


POLICIES: dict[str, Policy] = {
    "frequency": rank_frequency,
    "lru": rank_lru,
    "cost": rank_cost,
    "value": rank_value,
}

DEFAULT_POLICY = "value"  # chosen from benchmarks/policy_replay.py, see BENCHMARKS.md

Worth = Callable[[Sequence[EntryStats], float], dict[str, float]]
"""``worth(entries, now)`` -> each entry's value as an amount that adds up over a set (seconds
saved per second, or a proxy): what a knapsack over the items maximises under the room."""

Density = Callable[[float, int], float]
"""``density(worth, size_bytes)`` -> the value the policy ranks by (worth per what it holds)."""


@dataclass(frozen=True, slots=True)
class Valuation:
    """The numbers behind a policy whose value adds up: ``policy`` orders entries by
    ``density(worth[e.name], e.size_bytes)``, highest first (ties: most recent, then name)."""

    worth: Worth
    density: Density


_VALUATIONS: dict[str, Valuation] = {
    "value": Valuation(worth_value, density_value),
    "cost": Valuation(worth_cost, density_cost),
}


def valuation_for(policy: Policy) -> Valuation | None:
    """The additive value behind ``policy`` (one of :data:`POLICIES`), or None for policies that
    only order (``frequency``, ``lru``): those are planned by the greedy walk alone, and a
    model is ranked just above its most valuable prompt cache."""
    for name, known in POLICIES.items():
        if known is policy:
            return _VALUATIONS.get(name)
    return getattr(policy, "valuation", None)


def worth_for(policy: Policy) -> Worth | None:
    """``valuation_for(policy).worth``, or None."""
    valuation = valuation_for(policy)
    return valuation.worth if valuation is not None else None


def get_policy(name: str) -> Policy:
    """Return the policy called ``name``; raises ``KeyError`` naming the known ones."""
    try:
        return POLICIES[name]
    except KeyError:
        known = ", ".join(sorted(POLICIES))
        raise KeyError(f"unknown policy {name!r} (known: {known})") from None
