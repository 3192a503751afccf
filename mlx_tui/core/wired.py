"""Wired memory on a Mac: advice before a load, MLX's wired limit for the loaded set, neighbours.

On Apple silicon the GPU reads weights from memory the kernel has *wired* (pinned, never paged
out). macOS lets the GPU wire up to a ceiling: the ``iogpu.wired_limit_mb`` sysctl when set,
else its default, which Metal reports as ``max_recommended_working_set_size`` (about 70-75% of
RAM). A model over the ceiling still loads, but the part that is not wired can be paged out and
decode slows many times (mlx-lm's README, "Large Models"). Raising the ceiling takes
``sudo sysctl iogpu.wired_limit_mb=N``; this module works out ``N`` and never runs sudo.

Three pieces, pure or nearly so, for the cache to call (it owns when):

* :func:`wired_advice`: before a load, the sentence to show when the loaded set would not fit
  under the ceiling, with the exact sysctl value that would fit it.
* :class:`WiredLimit`: sets MLX's wired limit (``mx.set_wired_limit``) to the loaded set's size
  after every load and eviction, so the models that fit stay wired between requests, and puts the
  original limit back when the last model leaves. The decision is :func:`plan_wired_limit`.
* :class:`WiredNeighbours`: notices memory another process wires (another MLX app competing for
  the same ceiling); the heuristic is in its docstring.

Everything here is a no-op off a Mac (``snapshot.kind != "unified"``): CUDA and the CPU have no
wired limit (MLX's ``set_wired_limit`` does nothing there).
"""

from __future__ import annotations

import logging
import math
import threading
from typing import Callable

from .memory import MemorySnapshot
from .units import format_bytes

__all__ = [
    "GIB",
    "HEADROOM_FRACTION",
    "WiredLimit",
    "WiredNeighbours",
    "macos_reserve_bytes",
    "plan_wired_limit",
    "suggested_wired_limit_mb",
    "wired_advice",
]

log = logging.getLogger(__name__)

MIB = 1024**2
GIB = 1024**3
HEADROOM_FRACTION = 0.10
"""Room above the weights for what generation adds (KV and prompt caches, activations)."""


def macos_reserve_bytes(memory_bytes: int) -> int:
    """What a wired limit must leave to macOS and other apps: 10% of RAM, at least 4 GiB."""
    return max(4 * GIB, memory_bytes // 10)


def suggested_wired_limit_mb(need_bytes: int, memory_bytes: int) -> int | None:
    """The ``iogpu.wired_limit_mb`` value that wires ``need_bytes`` plus headroom, rounded up to a
    whole GiB (in MB, as the sysctl takes it); None when that would leave macOS less than
    :func:`macos_reserve_bytes` (the model set is too large for this Mac, at any setting)."""
    want = need_bytes * (1 + HEADROOM_FRACTION)
    limit_mb = math.ceil(want / GIB) * 1024
    if limit_mb * MIB > memory_bytes - macos_reserve_bytes(memory_bytes):
        return None
    return limit_mb


def _ceiling_words(snap: MemorySnapshot) -> str:
    if snap.wired_limit_bytes:
        return f"iogpu.wired_limit_mb={snap.wired_limit_bytes // MIB}"
    return "iogpu.wired_limit_mb=0, macOS's default"


def wired_advice(need_bytes: int, snapshot: MemorySnapshot, model: str | None = None) -> str | None:
    """Before a load: the sentence to show when ``need_bytes`` (the loaded set after the load:
    the new model's estimate plus what stays resident) is more than the GPU may wire on this Mac,
    with the ``sudo sysctl iogpu.wired_limit_mb=N`` that would fit it. None when it fits, off a
    Mac, or when the ceiling is unknown."""
    ceiling = snapshot.wired_ceiling_bytes
    if snapshot.kind != "unified" or not ceiling or need_bytes <= ceiling:
        return None
    memory = snapshot.system_total_bytes or snapshot.total_bytes
    who = f"{model} needs" if model else "The loaded models need"
    head = (f"{who} {format_bytes(need_bytes)} wired, more than the {format_bytes(ceiling)} the GPU "
            f"may wire now ({_ceiling_words(snapshot)})")
    limit_mb = suggested_wired_limit_mb(need_bytes, memory)
    if limit_mb is None:
        return (f"{head}, and more than this Mac can wire while leaving macOS "
                f"{format_bytes(macos_reserve_bytes(memory))} of its {format_bytes(memory)}: it "
                f"will load but decode slowly; a smaller model or quantization fits better.")
    return (f"{head}: it will load but decode slowly while part of it is not wired. To wire it, "
            f"run `sudo sysctl iogpu.wired_limit_mb={limit_mb}` ({format_bytes(limit_mb * MIB)} of "
            f"this Mac's {format_bytes(memory)}; until the next restart), then restart mlx-tui.")


def plan_wired_limit(resident_bytes: int, ceiling_bytes: int | None) -> int | None:
    """The wired limit for a loaded set of ``resident_bytes``: the set plus headroom, never more
    than ``ceiling_bytes`` (MLX refuses a limit above its recommended working set). None when
    nothing is loaded (put the original back) or the ceiling is unknown (leave MLX alone)."""
    if resident_bytes <= 0 or not ceiling_bytes:
        return None
    return min(ceiling_bytes, math.ceil(resident_bytes * (1 + HEADROOM_FRACTION)))


def _mlx_set_wired_limit(limit: int) -> int:
    import mlx.core as mx

    return mx.set_wired_limit(limit)


class WiredLimit:
    """Owns MLX's wired limit for the cache's loaded set on a Mac; thread-safe.

    The cache calls :meth:`apply` after every load and every eviction with the bytes its loaded
    models hold (and the last snapshot). The first change remembers the limit MLX had (what
    ``mx.set_wired_limit`` returns: 0 unless someone set it); when the set becomes empty that
    limit is put back, so an idle app wires nothing. The setter is only called when the planned
    limit changes. ``setter`` is injectable so tests check the calls without Metal.

    mlx-lm itself raises the limit to the recommended working set for each generation and puts
    back what it found when the generation ends; if :meth:`apply` runs during a generation that
    restore can undo it until the next load or eviction (harmless: the set stays wireable).
    """

    def __init__(self, setter: Callable[[int], int] = _mlx_set_wired_limit, *,
                 enabled: bool = True) -> None:
        self._setter = setter
        self.enabled = enabled
        self._lock = threading.Lock()
        self._original: int | None = None
        self._applied: int | None = None

    @property
    def applied(self) -> int | None:
        """The limit this object set last (None: it holds no change)."""
        return self._applied

    def apply(self, resident_bytes: int, snapshot: MemorySnapshot) -> int | None:
        """Set the wired limit for ``resident_bytes``; returns the limit MLX has now when this
        call (or an earlier one) set it, None when it leaves MLX alone (off a Mac, disabled, or
        the setter refused; a refusal is logged)."""
        if not self.enabled or snapshot.kind != "unified":
            return None
        target = plan_wired_limit(resident_bytes, snapshot.recommended_working_set_bytes)
        with self._lock:
            if target is None:
                if self._original is not None:
                    self._set(self._original)
                    log.info("wired limit back to %s", format_bytes(self._original))
                self._original = self._applied = None
                return None
            if target == self._applied:
                return target
            previous = self._set(target)
            if previous is None:
                return None
            if self._original is None:
                self._original = previous
            self._applied = target
            log.info("wired limit %s for %s of models", format_bytes(target),
                     format_bytes(resident_bytes))
            return target

    def _set(self, limit: int) -> int | None:
        try:
            return self._setter(limit)
        except (RuntimeError, ValueError) as exc:  # MLX refuses a limit above its maximum
            log.warning("could not set MLX's wired limit to %s: %s", format_bytes(limit), exc)
            return None


class WiredNeighbours:
    """Notices when another process wires memory too (another MLX app: mlx_lm.server, LM Studio,
    a second mlx-tui), which competes for the same wired ceiling.

    The heuristic, from one snapshot at a time: *foreign* wired memory is what the kernel reports
    wired minus everything this process's MLX holds (``mlx_active_bytes + mlx_cache_bytes``, an
    upper bound of what it can have wired, so foreign is never over-counted). The kernel wires
    some memory of its own; the lowest foreign figure seen so far stands for that share. A warning
    is given when foreign memory rises ``margin_bytes`` above that baseline (someone started
    wiring after the app did), or when it is over ``floor_fraction`` of RAM (someone was wiring
    before the app started: the kernel alone rarely wires a quarter of a Mac's memory); it names
    what is wired beyond the baseline (or all foreign memory, in the second case). The
    warning is returned once, when the state starts; it clears when foreign memory falls back
    under half the margin above the baseline and under the floor. Called by the memory monitor.
    """

    def __init__(self, margin_bytes: int = 2 * GIB, floor_fraction: float = 0.25) -> None:
        self.margin_bytes = margin_bytes
        self.floor_fraction = floor_fraction
        self._baseline: int | None = None
        self._warned = False

    @staticmethod
    def foreign_bytes(snap: MemorySnapshot) -> int | None:
        """Wired memory this process's MLX cannot account for (None off a Mac)."""
        if snap.kind != "unified" or snap.wired_bytes is None:
            return None
        return max(0, snap.wired_bytes - snap.mlx_active_bytes - snap.mlx_cache_bytes)

    def observe(self, snap: MemorySnapshot) -> str | None:
        """The warning to show when another process has started wiring memory, else None."""
        foreign = self.foreign_bytes(snap)
        if foreign is None:
            return None
        self._baseline = foreign if self._baseline is None else min(self._baseline, foreign)
        floor = self.floor_fraction * (snap.system_total_bytes or snap.total_bytes)
        above = foreign - self._baseline
        if above >= self.margin_bytes or foreign >= floor:
            if self._warned:
                return None
            self._warned = True
            ceiling = snap.wired_ceiling_bytes
            share = f" of the {format_bytes(ceiling)} the GPU may wire" if ceiling else ""
            theirs = above if above >= self.margin_bytes else foreign  # beyond the kernel's share
            return (f"another process is wiring memory too: {format_bytes(theirs)} is wired "
                    f"beyond what this app's MLX holds ({format_bytes(snap.wired_bytes or 0)} wired "
                    f"in all{share}); another MLX app takes the same wired memory, so models here "
                    f"may be paged out and decode slower")
        if above < self.margin_bytes / 2 and foreign < floor:
            self._warned = False
        return None
