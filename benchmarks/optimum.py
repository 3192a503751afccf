"""The offline optimum: the least total load time any cache could spend on a trace.

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
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["optimal_load_seconds", "feasible"]


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
