"""What the cache's plans say, in words: clean-up messages for the event log, the app and the
API, and prompt caches as the planner prices them. Pure functions of the plans and figures.
"""

from __future__ import annotations

from typing import Any, Mapping

from .planner import CleanupPlan
from .policy import PROMPT_CACHE, EntryStats
from .prompt_cache import PromptCacheItem

__all__ = ["prompt_cache_stats", "cleanup_message", "nothing_to_unload"]


def prompt_cache_stats(name: str, model: str, pc: PromptCacheItem) -> EntryStats:
    """A prompt cache as the policy and the planner price it, beside the models."""
    return EntryStats(name=name, kind=PROMPT_CACHE, owner=model, size_bytes=pc.nbytes,
                      load_time_seconds=pc.saves_seconds, recent_uses=pc.hits, use_count=len(pc.hits),
                      last_used=pc.last_used, loaded_at=pc.created, in_use=pc.in_use)


def _shown(names: tuple[str, ...], caches: Mapping[str, tuple[Any, str]]) -> str:
    """Plan names in words: models by name, prompt caches counted per model."""
    models = [n for n in names if n not in caches]
    per_model: dict[str, int] = {}
    for n in names:
        if n in caches:
            per_model[caches[n][0].name] = per_model.get(caches[n][0].name, 0) + 1
    models += [f"{k} prompt cache{'s' if k > 1 else ''} of {m}" for m, k in per_model.items()]
    return ", ".join(models)


def cleanup_message(plan: CleanupPlan, reason: str | None, manual: bool,
                     caches: Mapping[str, tuple[Any, str]]) -> str:
    """What a clean-up did, in words; a manual one says what was asked, not invented figures."""
    if not manual:
        return plan.reason + (f" ({reason})" if reason else "")
    parts = [f"{plan.level} clean-up {reason}"]
    if plan.evict:
        parts.append(f"unloading {_shown(plan.evict, caches)}")
    if plan.deferred:
        parts.append(f"{_shown(plan.deferred, caches)} when {'its' if len(plan.deferred) == 1 else 'their'} "
                     "request ends")
    if plan.kept:
        parts.append(f"keeping {_shown(plan.kept, caches)}")
    return ": ".join(parts[:1]) + (": " + "; ".join(parts[1:]) if parts[1:] else "")


def nothing_to_unload(loaded: list[EntryStats], keep: int, reason: str | None) -> str:
    """Why a clean-up asked for by hand unloaded nothing."""
    asked = f"clean-up {reason}" if reason else "clean-up"
    if not loaded:
        return f"{asked}: nothing to unload, no model is loaded"
    why = []
    pinned = [s.name for s in loaded if s.pinned]
    busy = [s.name for s in loaded if s.in_use and not s.pinned]
    rest = [s.name for s in loaded if not s.pinned and not s.in_use]
    if pinned:
        why.append(f"{', '.join(pinned)} {'is' if len(pinned) == 1 else 'are'} pinned")
    if busy:
        why.append(f"{', '.join(busy)} {'is' if len(busy) == 1 else 'are'} in use")
    if rest:
        why.append(f"{', '.join(rest)} kept by keep_on_cleanup = {keep}")
    return f"{asked}: nothing unloaded: " + "; ".join(why)
