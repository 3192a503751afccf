"""The offline optimum: the least total load (and prefill) time any cache could spend on a trace.

The cache loads on demand: request ``t`` is served only once model ``requests[t]`` is resident.
With the whole trace known in advance, the cheapest schedule is found exactly by dynamic
programming over which subset of the (few) models is resident after each request:

* ``best[S]`` = least load time so far that ends request ``t`` with exactly the set ``S``
  resident. ``S`` must hold the requested model and obey the capacity rule of request ``t``.
* Between requests a cache may unload anything and loads only the requested model (loading
  anything else ahead of time never helps: the same load can wait until it is needed). So
  ``S`` can follow ``P`` when ``S`` is a subset of ``P`` plus the requested model ``m``, and it
  costs ``load[m]`` when ``m`` was not in ``P``:
  ``best_t[S] = min(min_{P >= S} best_{t-1}[P], min_{P >= S - m} best_{t-1}[P] + load[m])``.
  The "min over supersets" is a standard superset-sum transform, ``n`` vector passes.

The capacity rule is the planner's: a resident set is allowed when ``background + its bytes``
is under the warning threshold, or when it is the requested model alone and that is under the
emergency threshold (admission's "still load when it fits under the emergency"). The replay
checks that every set the online cache holds while serving obeys the same rule, so the optimum
is a true lower bound and every ratio is >= 1.

With prompt caches as items (:func:`optimal_total_seconds`), the state also holds one bit per
conversation open at once: a request reads only its new tokens when its conversation's cache is
resident, and may keep the grown cache afterwards, only beside its model. Traces keep this small
(a few models, at most five conversations open: 2^8 states and fewer).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["optimal_load_seconds", "optimal_total_seconds", "conversation_slots", "feasible"]


def feasible(resident_bytes: int, alone: bool, room: float, alone_room: float) -> bool:
    """The capacity rule for one set: under ``room``, or alone and under ``alone_room``."""
    return resident_bytes < room or (alone and resident_bytes < alone_room)


def _superset_min(values: np.ndarray, n: int) -> np.ndarray:
    """``out[S] = min(values[P] for P superset of S)`` over ``n``-bit masks."""
    out = values.copy()
    for bit in range(n):
        view = out.reshape(-1, 2, 1 << bit)
        np.minimum(view[:, 0, :], view[:, 1, :], out=view[:, 0, :])
    return out


def optimal_load_seconds(
    requests: Sequence[int],
    sizes: Sequence[int],
    load_seconds: Sequence[float],
    room: Sequence[float] | float,
    alone_room: Sequence[float] | float | None = None,
) -> float:
    """Least total ``load_seconds`` to serve ``requests`` (model indices), loading on demand.

    ``room[t]``: the resident bytes must stay under it after request ``t`` (the warning threshold
    minus what else holds memory then); ``alone_room[t]``: the bound when the requested model is
    resident alone (emergency threshold minus the rest). Scalars apply to every request. The
    cache starts empty. Raises ``ValueError`` if some request cannot be served at all.
    """
    n = len(sizes)
    if n > 16:
        raise ValueError(f"{n} models: the exact optimum is for a handful (2^n sets)")
    steps = len(requests)
    rooms = np.broadcast_to(np.asarray(room, dtype=float), (steps,))
    alone = rooms if alone_room is None else np.broadcast_to(np.asarray(alone_room, dtype=float), (steps,))
    masks = np.arange(1 << n)
    set_bytes = np.zeros(1 << n, dtype=float)
    for i, size in enumerate(sizes):
        set_bytes[(masks >> i) & 1 == 1] += size
    best = np.full(1 << n, np.inf)
    best[0] = 0.0
    for t, m in enumerate(requests):
        bit = 1 << m
        reach = _superset_min(best, n)
        # For S holding m: stay (P >= S, no load) or load m (P >= S - m).
        step = np.minimum(reach, reach[masks ^ bit] + load_seconds[m])
        allowed = (set_bytes < rooms[t]) | ((masks == bit) & (sizes[m] < alone[t]))
        allowed &= (masks & bit) != 0
        best = np.where(allowed, step, np.inf)
        if not np.isfinite(best).any():
            raise ValueError(f"request {t} (model {m}) cannot be served: it never fits")
    return float(best.min())


# -- models and prompt caches --------------------------------------------------------------------
def conversation_slots(convs: Sequence[int]) -> tuple[list[int], list[bool], int]:
    """Give each conversation a slot from its first request to its last, reusing freed slots:
    (slot of each request, whether it is its conversation's first, number of slots). The
    dynamic programme's state holds one bit per slot, so it grows with the conversations open
    at once, not with all of them."""
    last = {c: t for t, c in enumerate(convs)}
    slot: dict[int, int] = {}
    free: list[int] = []
    count = 0
    slots, fresh = [], []
    for t, c in enumerate(convs):
        first = c not in slot
        if first:
            if free:
                slot[c] = free.pop()
            else:
                slot[c], count = count, count + 1
        slots.append(slot[c])
        fresh.append(first)
        if last[c] == t:
            free.append(slot[c])
            free.sort(reverse=True)  # lowest slot first: the same trace gives the same slots
    return slots, fresh, count


def optimal_total_seconds(
    requests: Sequence[int],
    convs: Sequence[int],
    prompts: Sequence[int],
    keeps: Sequence[int],
    sizes: Sequence[int],
    load_seconds: Sequence[float],
    kv_bytes_per_token: Sequence[int],
    prefill_tokens_per_s: Sequence[float],
    room: Sequence[float] | float,
    alone_room: Sequence[float] | float | None = None,
) -> float:
    """Least reload + prefill seconds to serve a trace with conversations, prompt caches as items.

    Request ``t`` needs model ``requests[t]`` resident and reads ``prompts[t]`` tokens of
    conversation ``convs[t]``; when that conversation's cache is resident it reads only the
    tokens past what the cache holds (the ``keeps`` of the conversation's previous request),
    else all of them, at the model's ``prefill_tokens_per_s``. Afterwards the cache may be kept
    (``keeps[t] x kv_bytes_per_token`` bytes) or not; a cache is resident only with its model.

    The state is the resident models plus one bit per conversation slot
    (:func:`conversation_slots`); a slot handed to a new conversation drops the old one's
    cache, which nothing reads again. For a set ``S`` holding the requested model ``m`` and
    cache ``j``, with ``R`` the superset-min of the previous step:
    ``min(R[S] + hit, R[S - j] + miss, R[S - m - j] + load + miss)``; without ``j``:
    ``min(R[S + j] + hit, R[S] + miss, R[S - m] + load + miss)``. The capacity rule is the
    models-only one (:func:`feasible`): the set after the request is under ``room``, or is the
    requested model alone (no cache) under ``alone_room``.
    """
    n = len(sizes)
    slot_of, fresh, k = conversation_slots(convs)
    bits = n + k
    if bits > 20:
        raise ValueError(f"{n} models and {k} conversation slots: too many for the exact optimum")
    steps = len(requests)
    rooms = np.broadcast_to(np.asarray(room, dtype=float), (steps,))
    alone = rooms if alone_room is None else np.broadcast_to(np.asarray(alone_room, dtype=float), (steps,))
    masks = np.arange(1 << bits)
    has = [(masks >> b) & 1 == 1 for b in range(bits)]
    model_bytes = np.zeros(1 << bits)
    for i, size in enumerate(sizes):
        model_bytes[has[i]] += size
    cache_bytes = np.zeros(1 << bits)
    slot_bytes = [0.0] * k
    owner = [-1] * k
    valid = np.ones(1 << bits, dtype=bool)
    held: dict[int, int] = {}  # conversation -> tokens its cache holds
    best = np.full(1 << bits, np.inf)
    best[0] = 0.0
    for t, (m, c) in enumerate(zip(requests, convs)):
        j = slot_of[t]
        mbit, jbit = 1 << m, 1 << (n + j)
        has_j = has[n + j]
        if fresh[t]:
            best = np.where(has_j, np.inf, np.minimum(best, best[masks | jbit]))
            owner[j] = m
            valid = np.ones(1 << bits, dtype=bool)
            for s, o in enumerate(owner):
                valid &= ~has[n + s] | (has[o] if o >= 0 else False)
        reach = _superset_min(best, bits)
        speed = prefill_tokens_per_s[m]
        hit = (prompts[t] - held.get(c, 0)) / speed
        miss = prompts[t] / speed
        load = load_seconds[m]
        keep_j = np.minimum(np.minimum(reach + hit, reach[masks ^ jbit] + miss),
                            reach[masks & ~(mbit | jbit)] + load + miss)
        drop_j = np.minimum(np.minimum(reach[masks | jbit] + hit, reach + miss),
                            reach[masks & ~mbit] + load + miss)
        new_bytes = keeps[t] * kv_bytes_per_token[m]
        cache_bytes += (new_bytes - slot_bytes[j]) * has_j
        slot_bytes[j] = new_bytes
        held[c] = keeps[t]
        total = model_bytes + cache_bytes
        allowed = valid & has[m] & ((total < rooms[t]) | ((masks == mbit) & (sizes[m] < alone[t])))
        best = np.where(allowed, np.where(has_j, keep_j, drop_j), np.inf)
        if not np.isfinite(best).any():
            raise ValueError(f"request {t} (model {m}) cannot be served: it never fits")
    return float(best.min())
