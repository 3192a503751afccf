"""Eviction planning: pure decisions about which models to unload, and whether a load may start.

The cache (:class:`mlx_tui.core.cache.ModelCache`) owns the state and carries plans out; this
module only decides. Everything is a function of the figures passed in, so tests and the
benchmark replay harness drive exactly the logic the app runs.

Two moments need a decision:

* **Admission** (:func:`plan_admission`): before a model is loaded, evict what must go so the
  new model fits under the warning threshold; if even unloading every idle, unpinned model
  cannot bring it under the warning threshold, still load when it fits under the emergency
  threshold; otherwise refuse with the figures.
* **Clean-up** (:func:`plan_cleanup`): when memory in use crosses the warning threshold, either
  keep the ``keep`` best models and unload the rest (the seed document's rule, ``keep_best``) or
  unload the least valuable until use is back under the threshold, never fewer than ``keep``
  (``just_enough``). Past the emergency threshold, everything goes.

Both walk the policy's order from the least valuable up until enough is freed, then give back
the victims a later, larger one made unnecessary (most valuable first): without that, making
room for 2 GB could unload a small model *and* the 17 GB one after it, when the 17 GB one alone
was enough.

Models with a live lease (``in_use``) are never chosen to be unloaded now; a clean-up returns
them as ``deferred`` so the cache unloads them when their lease ends.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Sequence

from .policy import EntryStats, Policy
from .units import format_bytes

__all__ = [
    "Zone",
    "Thresholds",
    "AdmissionPlan",
    "CleanupPlan",
    "CleanupMode",
    "CLEANUP_MODES",
    "plan_admission",
    "plan_cleanup",
]

CleanupMode = Literal["keep_best", "just_enough"]
CLEANUP_MODES: tuple[str, ...] = ("keep_best", "just_enough")


Zone = Literal["normal", "warning", "emergency"]


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Fractions of the memory weights occupy: a normal clean-up at ``warning``, unload all at
    ``emergency``. The one home of the zone names the gauge, ``/health`` and ``status`` show."""

    warning: float = 0.85
    emergency: float = 0.98

    def zone(self, fraction: float) -> Zone:
        """``"normal"``, ``"warning"`` or ``"emergency"``: where ``fraction`` in use stands."""
        if fraction >= self.emergency:
            return "emergency"
        if fraction >= self.warning:
            return "warning"
        return "normal"


@dataclass(frozen=True, slots=True)
class AdmissionPlan:
    """The decision for one load: which models to unload first, or why it cannot load."""

    evict: tuple[str, ...] = ()
    refused: str | None = None
    projected_fraction: float = 0.0
    need_bytes: int = 0
    freeable_bytes: int = 0

    @property
    def allowed(self) -> bool:
        return self.refused is None


@dataclass(frozen=True, slots=True)
class CleanupPlan:
    """The decision of one clean-up: ``evict`` now, ``deferred`` when their lease ends."""

    level: Literal["normal", "emergency"] | None = None
    evict: tuple[str, ...] = ()
    deferred: tuple[str, ...] = ()
    reason: str = ""
    kept: tuple[str, ...] = field(default=())


def _evictable(entries: Sequence[EntryStats]) -> list[EntryStats]:
    return [e for e in entries if not e.pinned and not e.in_use]


def _give_back(
    victims: list[EntryStats], projected: float, limit: float, spare_slots: int | None = None
) -> tuple[list[EntryStats], float]:
    """Keep the ``victims`` (least valuable first) that still fit under ``limit`` once the
    others are gone, the most valuable first; at most ``spare_slots`` of them when given."""
    going = list(victims)
    for victim in reversed(victims):
        if spare_slots == 0:
            break
        if projected + victim.size_bytes < limit:
            going.remove(victim)
            projected += victim.size_bytes
            if spare_slots is not None:
                spare_slots -= 1
    return going, projected


def plan_admission(
    need_bytes: int,
    loaded: Sequence[EntryStats],
    used_bytes: int,
    total_bytes: int,
    thresholds: Thresholds,
    policy: Policy,
    now: float,
    *,
    max_loaded: int = 0,
    name: str = "model",
) -> AdmissionPlan:
    """Decide whether a model needing ``need_bytes`` may load, and what to unload first.

    ``loaded`` are the models resident now (their ``size_bytes`` is what unloading them frees);
    ``used_bytes`` is system memory in use now, including loads already under way.
    """
    if total_bytes <= 0:
        return AdmissionPlan(refused="total memory is unknown")
    victims_in_order = list(reversed(policy(_evictable(loaded), now)))
    freeable = sum(v.size_bytes for v in victims_in_order)

    def refuse(reason: str, projected: float) -> AdmissionPlan:
        return AdmissionPlan(refused=reason, projected_fraction=projected / total_bytes,
                             need_bytes=need_bytes, freeable_bytes=freeable)

    if need_bytes >= total_bytes:
        return refuse(f"{name} needs {format_bytes(need_bytes)}, more than this machine's "
                      f"{format_bytes(total_bytes)} of memory", used_bytes + need_bytes)
    warning_bytes = thresholds.warning * total_bytes
    emergency_bytes = thresholds.emergency * total_bytes
    projected = used_bytes + need_bytes
    count_after = len(loaded) + 1
    chosen: list[EntryStats] = []
    for victim in victims_in_order:
        over_count = max_loaded > 0 and count_after > max_loaded
        if projected < warning_bytes and not over_count:
            break
        chosen.append(victim)
        projected -= victim.size_bytes
        count_after -= 1
    if max_loaded > 0 and count_after > max_loaded:
        return refuse(f"{name} cannot load: max_loaded is {max_loaded} and the other loaded "
                      "models are pinned or in use", projected)
    if projected >= emergency_bytes:
        return refuse(
            f"{name} needs {format_bytes(need_bytes)}, {format_bytes(freeable)} can be freed; "
            f"it would bring memory in use to {projected / total_bytes:.0%}, past the "
            f"emergency threshold of {thresholds.emergency:.0%} "
            f"({format_bytes(used_bytes)} of {format_bytes(total_bytes)} in use now)",
            projected,
        )
    slots = max_loaded - count_after if max_loaded > 0 else None
    going, projected = _give_back(chosen, projected, warning_bytes, slots)
    return AdmissionPlan(evict=tuple(v.name for v in going), projected_fraction=projected / total_bytes)


def plan_cleanup(
    loaded: Sequence[EntryStats],
    used_bytes: int,
    total_bytes: int,
    thresholds: Thresholds,
    policy: Policy,
    now: float,
    *,
    keep: int = 1,
    mode: CleanupMode = "keep_best",
) -> CleanupPlan:
    """Decide a clean-up for the memory figures given; an empty plan when under the warning."""
    if total_bytes <= 0 or not loaded:
        return CleanupPlan()
    fraction = used_bytes / total_bytes
    if fraction >= thresholds.emergency:
        names = [e.name for e in loaded]
        return CleanupPlan(
            level="emergency",
            evict=tuple(e.name for e in loaded if not e.in_use),
            deferred=tuple(e.name for e in loaded if e.in_use),
            reason=(
                f"memory {fraction:.0%} >= emergency threshold {thresholds.emergency:.0%}: "
                f"unloading all {len(names)} models"
            ),
        )
    if fraction < thresholds.warning:
        return CleanupPlan()
    ranked = policy([e for e in loaded if not e.pinned], now)
    pinned = tuple(e.name for e in loaded if e.pinned)
    floor = max(keep, 0)
    if mode == "keep_best":
        kept = ranked[:floor]
        going = ranked[floor:]
    else:
        # ``keep`` is a floor here too: unloading the last model that admission just let in
        # (alone it may sit past the warning, under the emergency) would only make the next
        # request load it again, and again.
        going = []
        projected = used_bytes
        warning_bytes = thresholds.warning * total_bytes
        for victim in reversed(ranked[floor:]):
            if projected < warning_bytes:
                break
            going.append(victim)
            projected -= victim.size_bytes
        going, _ = _give_back(going, projected, warning_bytes)
        kept = [e for e in ranked if e not in going]
    if not going:
        return CleanupPlan()
    return CleanupPlan(
        level="normal",
        evict=tuple(e.name for e in going if not e.in_use),
        deferred=tuple(e.name for e in going if e.in_use),
        kept=pinned + tuple(e.name for e in kept),
        reason=(
            f"memory {fraction:.0%} >= warning threshold {thresholds.warning:.0%}: "
            + (f"keeping the {len(kept)} most valuable" if mode == "keep_best"
               else "unloading the least valuable until under the threshold")
        ),
    )
