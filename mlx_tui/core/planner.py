"""Eviction planning: pure decisions about what to unload, and whether a load may start.

The cache (:class:`mlx_tui.core.cache.ModelCache`) owns the state and carries plans out; this
module only decides. Everything is a function of the figures passed in, so tests and the
benchmark replay harness drive exactly the logic the app runs.

**Items.** What the cache holds in memory is a list of :class:`~mlx_tui.core.policy.EntryStats`:
models, and prompt caches (``kind="prompt_cache"``, ``owner`` = their model). One budget, one
ranking: the policy orders both kinds by the same value (seconds saved per byte held), and a plan
may unload either. The rules between them:

* a prompt cache never outlives its model: a plan that unloads a model lists all of that model's
  prompt caches in ``evict`` too (before the model);
* in the greedy walk a model is never ranked below its most valuable prompt cache (unloading the
  model loses that cache too), so its caches go first and the model after them;
* ``max_loaded`` and ``keep`` count models only; a pinned model stays, its prompt caches may go;
* an emergency unloads everything, models and prompt caches;
* an item in use (``in_use``), or a model whose prompt cache is in use, is never unloaded under
  its request: admission leaves it alone, a clean-up returns it as ``deferred``.

Two moments need a decision:

* **Admission** (:func:`plan_admission`): before a model is loaded, evict what must go so the
  new model fits under the warning threshold; if even unloading every idle, unpinned item
  cannot bring it under the warning threshold, still load when it fits under the emergency
  threshold; otherwise refuse with the figures. For a new prompt cache (``incoming``) the same
  call decides whether it is worth keeping at all: it may displace only what is worth less,
  only under the warning threshold, and never its own model.
* **Clean-up** (:func:`plan_cleanup`): when memory in use crosses the warning threshold, either
  keep the ``keep`` best models and unload the rest (the seed document's rule, ``keep_best``) or
  unload the least valuable until use is back under the threshold, never fewer than ``keep``
  models (``just_enough``). Past the emergency threshold, everything goes.

**Search.** ``greedy`` walks the policy's order from the least valuable up until enough is freed,
then gives back the victims a later, larger one made unnecessary (most valuable first): without
that, making room for 2 GB could unload a small model *and* the 17 GB one after it, when the
17 GB one alone was enough. ``knapsack`` keeps, among the same candidates, the set whose value
(:func:`~mlx_tui.core.policy.worth_for`: seconds saved per second) is largest under the room,
exactly (a Pareto frontier over the few candidates); it needs a policy with an additive value
(``value``, ``cost``) and at most :data:`KNAPSACK_MAX_ITEMS` candidates, and otherwise falls back
to the greedy walk, so a plan stays well under a millisecond for the usual handful of items.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Literal, Mapping, Sequence

from .policy import EntryStats, Policy, valuation_for, worth_for
from .units import format_bytes

__all__ = [
    "Zone",
    "Thresholds",
    "AdmissionPlan",
    "CleanupPlan",
    "CleanupMode",
    "CLEANUP_MODES",
    "Search",
    "SEARCHES",
    "DEFAULT_SEARCH",
    "KNAPSACK_MAX_ITEMS",
    "plan_admission",
    "plan_cleanup",
]

CleanupMode = Literal["keep_best", "just_enough"]
CLEANUP_MODES: tuple[str, ...] = ("keep_best", "just_enough")

Search = Literal["greedy", "knapsack"]
SEARCHES: tuple[str, ...] = ("greedy", "knapsack")
DEFAULT_SEARCH: Search = "greedy"
"""Chosen by ``benchmarks/policy_replay.py`` (see BENCHMARKS.md)."""

KNAPSACK_MAX_ITEMS = 16
"""Above this many candidates a plan uses the greedy walk."""
_KNAPSACK_MAX_STATES = 1024  # a frontier larger than this: the greedy walk (bounds the time)


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
    """The decision for one load: which items to unload first (models and prompt caches, a
    model's caches before it), or why it cannot load."""

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
    """The decision of one clean-up: ``evict`` now, ``deferred`` when their request ends.
    ``kept`` names the pinned models, then what the policy kept (models and prompt caches)."""

    level: Literal["normal", "emergency"] | None = None
    evict: tuple[str, ...] = ()
    deferred: tuple[str, ...] = ()
    reason: str = ""
    kept: tuple[str, ...] = field(default=())


# -- the items and the rules between them ---------------------------------------------------------
class _Items:
    """The resident items of one plan: models, their prompt caches, and who blocks whom."""

    def __init__(self, items: Sequence[EntryStats]) -> None:
        self.all = list(items)
        self.models = {e.name: e for e in self.all if e.is_model}
        self.caches_of: dict[str, list[EntryStats]] = {}
        for e in self.all:
            if not e.is_model and e.owner in self.models:
                self.caches_of.setdefault(e.owner, []).append(e)  # type: ignore[arg-type]

    def owner(self, e: EntryStats) -> str | None:
        """The resident model ``e`` belongs to (None for a model, or a cache without one)."""
        return e.owner if not e.is_model and e.owner in self.models else None

    def busy(self, e: EntryStats) -> bool:
        """In use now, or a model one of whose prompt caches is in use."""
        return e.in_use or (e.is_model and any(c.in_use for c in self.caches_of.get(e.name, ())))

    def closed(self, going: Iterable[EntryStats]) -> list[EntryStats]:
        """``going`` plus the prompt caches of every model in it, each model after its caches."""
        out: list[EntryStats] = []
        seen: set[str] = set()
        for e in going:
            for c in self.caches_of.get(e.name, ()) if e.is_model else ():
                if c.name not in seen:
                    seen.add(c.name)
                    out.append(c)
            if e.name not in seen:
                seen.add(e.name)
                out.append(e)
        return out


def _walk(ranked: Sequence[EntryStats], items: _Items, policy: Policy, now: float) -> list[EntryStats]:
    """``ranked`` (the policy's order, best first) turned into the greedy walk's order, least
    valuable first, with each model lifted for the prompt caches it would take along.

    With a policy whose value adds up (:func:`~mlx_tui.core.policy.valuation_for`), a model is
    ranked as the unit it makes with its caches worth more than it: merged one by one from the
    densest while a cache is denser than the unit so far (a cache can only stay with its model,
    so the two go together; Sidney's rule for ordering under precedence). The walk then takes
    the lighter caches first, then the unit. With a policy that only orders, the model is ranked
    just above its most valuable cache."""
    caches = {m: [c for c in ranked if items.owner(c) == m] for m in items.caches_of}
    if not any(caches.values()):
        return list(reversed(ranked))
    valuation = valuation_for(policy)
    if valuation is None:
        position = {e.name: float(i) for i, e in enumerate(ranked)}
        for model, own in caches.items():
            if model in position and own:
                position[model] = min(position[model], min(position[c.name] for c in own) - 0.5)
        return sorted(ranked, key=lambda e: -position[e.name])
    worth = valuation.worth(ranked, now) if ranked else {}
    key = {e.name: valuation.density(worth[e.name], e.size_bytes) for e in ranked}
    for model, own in caches.items():
        if model not in key:
            continue
        unit_worth, unit_bytes = worth[model], items.models[model].size_bytes
        for c in sorted(own, key=lambda c: -key[c.name]):
            if key[c.name] <= valuation.density(unit_worth, unit_bytes):
                break
            unit_worth += worth[c.name]
            unit_bytes += c.size_bytes
        key[model] = max(key[model], valuation.density(unit_worth, unit_bytes))
    return sorted(reversed(ranked), key=lambda e: key[e.name])  # ties: the policy's order


def _greedy(walk: Sequence[EntryStats], items: _Items, projected: float, limit: float, *,
            models_over: int = 0) -> tuple[list[EntryStats], float, bool]:
    """Take ``walk``'s items (a model with its remaining caches) until ``projected`` is under
    ``limit`` and ``models_over`` more models are gone; then give back what a later, larger
    victim made unnecessary, most valuable first. Returns the victims in the order taken, the
    projected bytes, and whether both targets were met."""
    chosen: list[EntryStats] = []
    taken: set[str] = set()
    for victim in walk:
        if projected < limit and models_over <= 0:
            break
        if victim.name in taken:
            continue
        for e in items.closed([victim]):
            if e.name not in taken:
                taken.add(e.name)
                chosen.append(e)
                projected -= e.size_bytes
                models_over -= e.is_model
    met = projected < limit and models_over <= 0
    if not met:
        return chosen, projected, False
    going = list(chosen)
    for victim in reversed(chosen):
        if victim.is_model and models_over >= 0:
            continue  # giving it back would break max_loaded
        if projected + victim.size_bytes >= limit:
            continue
        owner = items.owner(victim)
        if owner is not None and any(g.name == owner for g in going):
            continue  # its model goes: it cannot stay
        going.remove(victim)
        projected += victim.size_bytes
        models_over += victim.is_model
    return going, projected, True


def _knapsack(candidates: Sequence[EntryStats], items: _Items, worth: Mapping[str, float],
              room: float, model_slots: int | None) -> frozenset[str] | None:
    """The names to keep among ``candidates``: the most ``worth`` whose bytes stay under
    ``room`` and that hold at most ``model_slots`` models (None: any), a prompt cache only with
    its model (when that is a candidate too); ties keep more bytes. None when nothing fits or
    the candidates are too many to search exactly."""
    if room <= 0 or len(candidates) > KNAPSACK_MAX_ITEMS:
        return None
    names = {e.name for e in candidates}
    count_models = model_slots is not None
    # A state: (bytes, models, worth, names kept). One option list per group: a candidate model
    # with its candidate caches (nothing, or the model and any of them), or a loose cache.
    options: list[list[tuple[int, int, float, tuple[str, ...]]]] = []
    loose = [e for e in candidates if not e.is_model and items.owner(e) not in names]
    for e in candidates:
        if not e.is_model:
            continue
        kept = [(e.size_bytes, int(count_models), worth[e.name], (e.name,))]
        for c in items.caches_of.get(e.name, ()):
            if c.name in names:
                kept = _pareto(kept + [(b + c.size_bytes, m, w + worth[c.name], k + (c.name,))
                                       for b, m, w, k in kept if b + c.size_bytes < room])
        options.append([(0, 0, 0.0, ())] + kept)
    options += [[(0, 0, 0.0, ()), (c.size_bytes, 0, worth[c.name], (c.name,))] for c in loose]
    frontier: list[tuple[int, int, float, tuple[str, ...]]] = [(0, 0, 0.0, ())]
    for group in options:
        frontier = _pareto([(b1 + b2, m1 + m2, w1 + w2, k1 + k2)
                            for b1, m1, w1, k1 in frontier for b2, m2, w2, k2 in group
                            if b1 + b2 < room and (model_slots is None or m1 + m2 <= model_slots)])
        if len(frontier) > _KNAPSACK_MAX_STATES:
            return None
    if not frontier:
        return None
    best = max(frontier, key=lambda s: (s[2], s[0], -s[1], sorted(s[3])))
    return frozenset(best[3])


def _pareto(states: list[tuple[int, int, float, tuple[str, ...]]]) -> list[tuple[int, int, float, tuple[str, ...]]]:
    """Drop the states another beats whatever is added to both: no more bytes or models and
    more worth, or the same bytes and worth with no more models."""
    out = []
    best_worth: dict[int, float] = {}  # models -> the most worth kept so far (all had <= bytes)
    seen: dict[tuple[int, float], int] = {}
    for state in sorted(states, key=lambda s: (s[0], -s[2], s[1])):
        b, m, w, _ = state
        if any(w < best for k, best in best_worth.items() if k <= m):
            continue
        if seen.get((b, w), m + 1) <= m:
            continue
        seen[(b, w)] = m
        best_worth[m] = max(best_worth.get(m, w), w)
        out.append(state)
    return out


def _worths(policy: Policy, entries: Sequence[EntryStats], now: float, search: Search
            ) -> Mapping[str, float] | None:
    """The worths a knapsack over ``entries`` needs, or None where it will not run."""
    worth = worth_for(policy) if search == "knapsack" else None
    if worth is None or not entries or len(entries) > KNAPSACK_MAX_ITEMS:
        return None
    return worth(entries, now)


def _kept_worth(kept: Iterable[EntryStats], worth: Mapping[str, float]) -> tuple[float, int]:
    kept = list(kept)
    return sum(worth[e.name] for e in kept), sum(e.size_bytes for e in kept)


def _choose(candidates: list[EntryStats], walk: list[EntryStats], items: _Items, projected: float,
            limit: float, worth: Mapping[str, float] | None, *, models_over: int = 0,
            model_slots: int | None = None) -> tuple[list[EntryStats], float, bool]:
    """The victims among ``candidates``: the greedy walk's, or the knapsack's when ``worth`` is
    given and it keeps more of it."""
    going, after, met = _greedy(walk, items, projected, limit, models_over=models_over)
    if worth is None or not met:
        return going, after, met
    held = sum(e.size_bytes for e in candidates)
    keep = _knapsack(candidates, items, worth, limit - (projected - held), model_slots)
    if keep is None:
        return going, after, met
    gone = {e.name for e in going}
    if _kept_worth((e for e in candidates if e.name in keep), worth) <= _kept_worth(
            (e for e in candidates if e.name not in gone), worth):
        return going, after, met
    going = items.closed(e for e in walk if e.name not in keep)
    return going, projected - sum(e.size_bytes for e in going), True


# -- admission -------------------------------------------------------------------------------------
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
    incoming: EntryStats | None = None,
    search: Search = DEFAULT_SEARCH,
) -> AdmissionPlan:
    """Decide whether an item needing ``need_bytes`` may load, and what to unload first.

    ``loaded`` are the items resident now, models and prompt caches (their ``size_bytes`` is
    what unloading them frees); ``used_bytes`` is system memory in use now, including loads
    already under way. Without ``incoming`` the item is a model that was asked for: it loads if
    it can. With ``incoming`` (a new prompt cache, its stats; ``need_bytes`` its bytes) the item
    is optional: it is kept only under the warning threshold, by unloading only what the policy
    ranks below it and never its own model (``incoming.owner``); otherwise the plan is refused
    and the cache is not kept. A cache that grew (same name in ``loaded``) is priced at its new
    size: its old entry and bytes are taken out first. ``max_loaded`` counts models only.
    """
    if total_bytes <= 0:
        return AdmissionPlan(refused="total memory is unknown")
    optional = incoming is not None and not incoming.is_model
    if optional and incoming is not None:
        old = [e for e in loaded if e.name == incoming.name]
        loaded = [e for e in loaded if e.name != incoming.name]
        used_bytes -= sum(e.size_bytes for e in old)
    items = _Items(loaded)
    protected = incoming.owner if optional and incoming is not None else None
    candidates = [e for e in items.all if not (e.is_model and e.pinned) and not items.busy(e)
                  and e.name != protected]
    freeable = sum(v.size_bytes for v in candidates)

    def refuse(reason: str, projected: float) -> AdmissionPlan:
        return AdmissionPlan(refused=reason, projected_fraction=projected / total_bytes,
                             need_bytes=need_bytes, freeable_bytes=freeable)

    if need_bytes >= total_bytes:
        return refuse(f"{name} needs {format_bytes(need_bytes)}, more than this machine's "
                      f"{format_bytes(total_bytes)} of memory", used_bytes + need_bytes)
    warning_bytes = thresholds.warning * total_bytes
    emergency_bytes = thresholds.emergency * total_bytes
    projected = float(used_bytes + need_bytes)
    if projected < warning_bytes and (optional or max_loaded <= 0 or len(items.models) < max_loaded):
        return AdmissionPlan(projected_fraction=projected / total_bytes)  # it fits: nothing to rank
    if optional:
        assert incoming is not None
        return _admit_optional(incoming, candidates, items, projected, warning_bytes, policy, now,
                               search, refuse, total_bytes, name)
    models_over = (len(items.models) + 1 - max_loaded) if max_loaded > 0 else 0
    fixed_models = len(items.models) - sum(e.is_model for e in candidates)
    walk = _walk(policy(candidates, now), items, policy, now)
    going, projected, _ = _choose(candidates, walk, items, projected, warning_bytes,
                                  _worths(policy, candidates, now, search), models_over=models_over,
                                  model_slots=max_loaded - fixed_models - 1 if max_loaded > 0 else None)
    models_after = len(items.models) + 1 - sum(e.is_model for e in going)
    if max_loaded > 0 and models_after > max_loaded:
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
    return AdmissionPlan(evict=tuple(v.name for v in going), projected_fraction=projected / total_bytes)


def _admit_optional(incoming: EntryStats, candidates: list[EntryStats], items: _Items, projected: float,
                    limit: float, policy: Policy, now: float, search: Search,
                    refuse: Callable[[str, float], AdmissionPlan], total: int, name: str) -> AdmissionPlan:
    """A new prompt cache: kept only if what it displaces is worth less (see plan_admission)."""
    if projected - sum(e.size_bytes for e in candidates) >= limit:
        return refuse(f"{name}: not kept, its {format_bytes(incoming.size_bytes)} do not fit under the "
                      "warning threshold beside what must stay (pinned, in use, its model)", projected)
    ranked = policy(candidates + [incoming], now)
    walk = _walk(ranked, items, policy, now)
    below = walk[:walk.index(incoming)]
    going, after, met = _greedy(below, items, projected, limit)
    worth = _worths(policy, candidates + [incoming], now, search)
    if worth is not None:
        held = sum(e.size_bytes for e in candidates) + incoming.size_bytes
        keep = _knapsack(candidates + [incoming], items, worth, limit - (projected - held), None)
        if keep is not None:
            if incoming.name not in keep:
                return refuse(f"{name}: not kept, the {format_bytes(incoming.size_bytes)} it needs "
                              "would unload items worth more", projected)
            going = items.closed(e for e in walk if e.name not in keep and e is not incoming)
            after, met = projected - sum(e.size_bytes for e in going), True
    if not met:
        return refuse(f"{name}: not kept, its {format_bytes(incoming.size_bytes)} fit under the "
                      "warning threshold only by unloading items worth more", after)
    return AdmissionPlan(evict=tuple(v.name for v in going), projected_fraction=after / total)


# -- clean-up --------------------------------------------------------------------------------------
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
    search: Search = DEFAULT_SEARCH,
) -> CleanupPlan:
    """Decide a clean-up for the memory figures given; an empty plan when under the warning.

    ``loaded`` holds the resident models and prompt caches; ``keep`` counts models only (the
    best ``keep`` unpinned models by the policy are never unloaded by a normal clean-up, their
    prompt caches may be)."""
    if total_bytes <= 0 or not loaded:
        return CleanupPlan()
    fraction = used_bytes / total_bytes
    if fraction < thresholds.warning:
        return CleanupPlan()
    items = _Items(loaded)
    if fraction >= thresholds.emergency:
        n_models = len(items.models)
        n_caches = len(items.all) - n_models
        what = f"{n_models} models" + (f" and {n_caches} prompt caches" if n_caches else "")
        everything = items.closed(items.all)
        return CleanupPlan(
            level="emergency",
            evict=tuple(e.name for e in everything if not items.busy(e)),
            deferred=tuple(e.name for e in everything if items.busy(e)),
            reason=(f"memory {fraction:.0%} >= emergency threshold {thresholds.emergency:.0%}: "
                    f"unloading all {what}"),
        )
    warning_bytes = thresholds.warning * total_bytes
    pinned = tuple(e.name for e in items.all if e.is_model and e.pinned)
    ranked = policy([e for e in items.all if not (e.is_model and e.pinned)], now)
    walk = _walk(ranked, items, policy, now)
    floor = [e for e in reversed(walk) if e.is_model][:max(keep, 0)]
    floor_names = {e.name for e in floor}
    if mode == "keep_best":
        going = items.closed(e for e in reversed(walk) if e.is_model and e.name not in floor_names)
        projected = used_bytes - sum(e.size_bytes for e in going)
        gone = {e.name for e in going}
        rest = [e for e in walk if e.name not in gone and not e.is_model]
        more, _, _ = _choose(rest, rest, items, projected, warning_bytes,
                             _worths(policy, rest, now, search))
        going += more
    else:
        # ``keep`` is a floor here too: unloading the last model that admission just let in
        # (alone it may sit past the warning, under the emergency) would only make the next
        # request load it again, and again.
        candidates = [e for e in walk if e.name not in floor_names]
        going, _, _ = _choose(candidates, candidates, items, float(used_bytes), warning_bytes,
                              _worths(policy, candidates, now, search))
    if not going:
        return CleanupPlan()
    gone = {e.name for e in going}
    kept = [e for e in ranked if e.name not in gone]
    return CleanupPlan(
        level="normal",
        evict=tuple(e.name for e in going if not items.busy(e)),
        deferred=tuple(e.name for e in going if items.busy(e)),
        kept=pinned + tuple(e.name for e in kept),
        reason=(
            f"memory {fraction:.0%} >= warning threshold {thresholds.warning:.0%}: "
            + (f"keeping the {len(floor)} most valuable" if mode == "keep_best"
               else "unloading the least valuable until under the threshold")
        ),
    )
