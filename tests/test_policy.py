"""Policies and the planner: the seed document's scenarios, then what each rule promises.

Everything here is pure: entry statistics and memory figures in, an order or a plan out.
"""

from __future__ import annotations

import itertools
import random

import pytest

from mlx_tui.core.planner import (
    CLEANUP_MODES,
    KNAPSACK_MAX_ITEMS,
    SEARCHES,
    Thresholds,
    plan_admission,
    plan_cleanup,
)
from mlx_tui.core.policy import (
    DEFAULT_POLICY,
    MODEL,
    POLICIES,
    PROMPT_CACHE,
    EntryStats,
    get_policy,
    prompt_cache_name,
    rank_cost,
    rank_frequency,
    rank_lru,
    rank_value,
    request_rate,
    worth_value,
)
from mlx_tui.core.units import GB

T = Thresholds()  # warning 85%, emergency 98%
TOTAL = 64 * GB
NOW = 100_000.0
ALL = sorted(POLICIES)


def entry(name: str, uses: int = 1, size_gb: float = 4, load_s: float = 5.0, *, last: float | None = None,
          gap: float = 60.0, pinned: bool = False, in_use: bool = False) -> EntryStats:
    """A model used ``uses`` times, every ``gap`` seconds, the last at ``last`` (default: now)."""
    last = NOW if last is None else last
    recent = tuple(last - gap * i for i in reversed(range(min(uses, 16))))
    return EntryStats(name=name, use_count=uses, last_used=last if uses else 0.0, loaded_at=0.0,
                      load_time_seconds=load_s, size_bytes=int(size_gb * GB), pinned=pinned,
                      in_use=in_use, recent_uses=recent if uses else ())


def names(entries: list[EntryStats]) -> list[str]:
    return [e.name for e in entries]


def used(entries: list[EntryStats], fraction_other: float = 0.1) -> int:
    return int(fraction_other * TOTAL) + sum(e.size_bytes for e in entries)


# -- the seed document ---------------------------------------------------------------------------
def seed_models() -> list[EntryStats]:
    """The seed document's three models, their use counts and load times."""
    return [
        entry("qwen2.5-coder-32b", 50, size_gb=17.2, load_s=25.3, last=NOW - 60),
        entry("phi3.5-mini-4k", 5, size_gb=2.0, load_s=8.2, last=NOW - 300),
        entry("deepseek-r1-70b", 2, size_gb=37.0, load_s=90.0, last=NOW - 600),
    ]


def test_seed_scenario_1_normal_cleanup_keeps_only_the_most_used() -> None:
    """50 / 5 / 2 uses, memory between the thresholds: keep_best with keep=1 keeps qwen only."""
    loaded = seed_models()
    memory = int(0.90 * TOTAL)
    plan = plan_cleanup(loaded, memory, TOTAL, T, get_policy("frequency"), NOW, keep=1, mode="keep_best")
    assert plan.level == "normal"
    assert plan.kept == ("qwen2.5-coder-32b",)
    assert sorted(plan.evict) == ["deepseek-r1-70b", "phi3.5-mini-4k"]
    assert plan.deferred == ()
    assert "85%" in plan.reason and "90%" in plan.reason


def test_the_shipped_defaults_keep_the_seeds_main_model_and_free_just_enough() -> None:
    """An untouched install runs the measured best (value, just_enough); in scenario 1 it keeps
    qwen too, and unloads only what brings memory back under the warning threshold."""
    from mlx_tui.core.settings import Settings

    defaults = Settings()
    assert (defaults.cache.policy, defaults.memory.cleanup) == (DEFAULT_POLICY, "just_enough")
    loaded = seed_models()
    used = int(0.90 * TOTAL)
    plan = plan_cleanup(loaded, used, TOTAL, T, get_policy(DEFAULT_POLICY), NOW,
                        keep=defaults.memory.keep_on_cleanup, mode="just_enough")
    assert plan.level == "normal" and "qwen2.5-coder-32b" in plan.kept
    freed = sum(e.size_bytes for e in loaded if e.name in plan.evict)
    assert used - freed < T.warning * TOTAL
    assert len(plan.evict) < len(loaded) - 1 or freed - min(
        e.size_bytes for e in loaded if e.name in plan.evict) < used - T.warning * TOTAL


@pytest.mark.parametrize("policy", ALL)
def test_seed_scenario_2_emergency_unloads_everything(policy: str) -> None:
    loaded = seed_models()
    loaded[0] = entry("qwen2.5-coder-32b", 50, size_gb=17.2, in_use=True)
    plan = plan_cleanup(loaded, int(0.99 * TOTAL), TOTAL, T, get_policy(policy), NOW)
    assert plan.level == "emergency"
    assert sorted(plan.evict) == ["deepseek-r1-70b", "phi3.5-mini-4k"]
    assert plan.deferred == ("qwen2.5-coder-32b",), "in use: unloaded when its request ends"
    assert "unloading all 3 models" in plan.reason


@pytest.mark.parametrize("policy", ALL)
def test_no_cleanup_under_the_warning(policy: str) -> None:
    plan = plan_cleanup(seed_models(), int(0.84 * TOTAL), TOTAL, T, get_policy(policy), NOW)
    assert plan.level is None and plan.evict == ()


# -- the policies ----------------------------------------------------------------------------------
def test_every_policy_is_a_permutation_and_handles_nothing() -> None:
    rng = random.Random(5)
    entries = [entry(f"m{i}", rng.randint(0, 40), rng.uniform(0.5, 40), rng.uniform(1, 30),
                     last=NOW - rng.uniform(0, 5000), gap=rng.uniform(5, 500)) for i in range(7)]
    for name in ALL:
        policy = get_policy(name)
        assert policy([], NOW) == []
        ranked = policy(entries, NOW)
        assert sorted(names(ranked)) == sorted(names(entries)), name
        assert names(policy(list(reversed(entries)), NOW)) == names(ranked), f"{name}: input order matters"


def test_unknown_policy_names_the_known_ones() -> None:
    with pytest.raises(KeyError, match="cost, frequency, lru, value"):
        get_policy("fifo")


def test_frequency_orders_by_use_count_then_recency() -> None:
    ranked = rank_frequency([entry("a", 3, last=NOW - 10), entry("b", 9, last=NOW - 999),
                             entry("c", 3, last=NOW - 5)], NOW)
    assert names(ranked) == ["b", "c", "a"]


def test_lru_orders_by_recency() -> None:
    ranked = rank_lru([entry("a", 30, last=NOW - 10), entry("b", 1, last=NOW - 1),
                       entry("c", 90, last=NOW - 500)], NOW)
    assert names(ranked) == ["b", "a", "c"]


def test_cost_prefers_used_often_slow_to_load_and_small() -> None:
    base = dict(uses=10, size_gb=4, load_s=5.0)
    ranked = rank_cost([
        entry("plain", **base),
        entry("used-more", **{**base, "uses": 20}),
        entry("slower", **{**base, "load_s": 8.0}),
        entry("bigger", **{**base, "size_gb": 8}),
    ], NOW)
    assert names(ranked)[-1] == "bigger" and names(ranked)[2] == "plain"


def test_value_forgets_a_burst_that_has_ended() -> None:
    """A day of work: while a burst of quick uses (every 5 s) is on, the burst model ranks
    first; six minutes after it ended, the main model (a use a minute) is first again: once two
    of its gaps pass unused, the burst model's rate is read off the silence."""
    main = entry("coder-32b", 96, size_gb=17.2, load_s=7.6, last=NOW - 27, gap=60)
    burst_on = entry("qwen-14b", 25, size_gb=7.7, load_s=4.3, last=NOW - 3, gap=5)
    assert names(rank_value([burst_on, main], NOW)) == ["qwen-14b", "coder-32b"]
    burst_over = entry("qwen-14b", 25, size_gb=7.7, load_s=4.3, last=NOW - 338, gap=5)
    assert names(rank_value([burst_over, main], NOW)) == ["coder-32b", "qwen-14b"]
    # LRU keeps the burst model in the first case too: what the value policy fixes.
    assert names(rank_lru([burst_over, entry("coder-32b", 96, last=NOW - 400)], NOW))[0] == "qwen-14b"


def test_value_ranks_a_first_use_below_an_established_model_and_unused_last() -> None:
    established = entry("daily", 16, gap=60, last=NOW - 30)
    once = entry("tried-once", 1, last=NOW - 5)  # more recent, but one use says little
    preloaded = entry("preloaded", 0)
    assert names(rank_value([preloaded, once, established], NOW)) == ["daily", "tried-once", "preloaded"]


def test_value_counts_size_by_its_square_root() -> None:
    """A 32B and a 1.5B model at 3 GB/s, the 32B wanted 20% more often: per byte (cost) the
    small model wins by 4x; the value policy keeps the expensive big one."""
    big = entry("coder-32b", 12, size_gb=17.2, load_s=7.64, gap=50)
    small = entry("coder-1.5b", 10, size_gb=0.81, load_s=1.79, gap=60)
    assert names(rank_cost([big, small], NOW))[0] == "coder-1.5b"
    assert names(rank_value([big, small], NOW))[0] == "coder-32b"
    quarter = entry("coder-1.5b", 40, size_gb=0.81, load_s=1.79, gap=15)
    assert names(rank_value([big, quarter], NOW))[0] == "coder-1.5b", "4x as wanted: the small one"


def test_value_is_stable_under_round_robin() -> None:
    """Every model once, in turns: equal rates, so the order must not follow recency (LRU's
    worst case); it follows reload cost per sqrt(size) whoever was used last."""
    order = ["a", "b", "c"]
    sizes = {"a": 0.8, "b": 4.0, "c": 17.2}
    loads = {"a": 1.8, "b": 2.9, "c": 7.6}
    rankings = set()
    for step in range(3):
        now = NOW + 20 * step
        entries = [entry(n, 30, sizes[n], loads[n], gap=60, last=now - 20 * ((step - i) % 3))
                   for i, n in enumerate(order)]
        rankings.add(tuple(names(rank_value(entries, now + 1))))
    assert len(rankings) == 1, rankings


def test_request_rate_reads_gaps_then_silence() -> None:
    steady = entry("m", 16, gap=30, last=NOW)
    horizon = 16 * 30  # 16 uses in 480 s: the long-run reading agrees with the gaps
    assert request_rate(steady, NOW, horizon) == pytest.approx(1 / 30, rel=0.01)
    quiet = request_rate(steady, NOW + 600, horizon + 600)
    assert quiet < 1 / 30 / 3, "twenty gaps of silence cut the estimate"
    assert request_rate(entry("never", 0), NOW, horizon) == 0.0


# -- admission -------------------------------------------------------------------------------------
@pytest.mark.parametrize("policy", ALL)
def test_admission_never_evicts_pinned_or_in_use(policy: str) -> None:
    loaded = [entry("pinned", 1, 20, pinned=True), entry("busy", 1, 20, in_use=True),
              entry("idle", 50, 10)]
    plan = plan_admission(int(8 * GB), loaded, used(loaded), TOTAL, T, get_policy(policy), NOW, name="new")
    assert plan.allowed and plan.evict == ("idle",)
    refused = plan_admission(int(20 * GB), loaded, used(loaded), TOTAL, T, get_policy(policy), NOW, name="new")
    assert not refused.allowed and refused.evict == ()


@pytest.mark.parametrize("policy", ALL)
def test_admission_evicts_nothing_when_it_fits(policy: str) -> None:
    loaded = [entry("a", 3, 10)]
    plan = plan_admission(int(4 * GB), loaded, used(loaded), TOTAL, T, get_policy(policy), NOW)
    assert plan.allowed and plan.evict == ()
    assert plan.projected_fraction == pytest.approx((used(loaded) + 4 * GB) / TOTAL)


def test_admission_evicts_least_valuable_first_and_gives_back_what_was_not_needed() -> None:
    """Room for 8 GB: frequency ranks small-rare < big < small-popular. Walking up the order
    takes small-rare, then big; big alone was enough, so small-rare is given back."""
    loaded = [entry("small-rare", 1, 2), entry("big", 5, 30), entry("small-popular", 40, 2)]
    memory = int(0.80 * TOTAL)
    plan = plan_admission(int(8 * GB), loaded, memory, TOTAL, T, rank_frequency, NOW)
    assert plan.evict == ("big",)
    assert plan.projected_fraction < T.warning
    # When the small one is enough, it is the one that goes.
    plan = plan_admission(int(4 * GB), loaded, memory, TOTAL, T, rank_frequency, NOW)
    assert plan.evict == ("small-rare",)


def test_admission_loads_over_the_warning_when_under_the_emergency() -> None:
    loaded = [entry("a", 5, 10)]
    need = int(0.80 * TOTAL)  # with the 10% of other apps: 90% even alone
    plan = plan_admission(need, loaded, used(loaded), TOTAL, T, rank_value, NOW, name="huge")
    assert plan.allowed and plan.evict == ("a",)
    assert T.warning <= plan.projected_fraction < T.emergency


def test_admission_refusal_gives_the_figures() -> None:
    loaded = [entry("a", 5, 10, in_use=True), entry("b", 5, 6)]
    plan = plan_admission(int(50 * GB), loaded, used(loaded), TOTAL, T, rank_frequency, NOW,
                          name="deepseek-r1-70b")
    assert not plan.allowed
    assert plan.refused is not None
    for figure in ("deepseek-r1-70b", "needs 50.0 GB", "6.0 GB can be freed", "98%", "of 64.0 GB"):
        assert figure in plan.refused, (figure, plan.refused)
    too_big = plan_admission(80 * GB, [], 0, TOTAL, T, rank_frequency, NOW, name="x")
    assert not too_big.allowed and "more than this machine's 64.0 GB" in (too_big.refused or "")
    assert not plan_admission(GB, [], 0, 0, T, rank_frequency, NOW).allowed


@pytest.mark.parametrize("policy", ALL)
def test_admission_respects_max_loaded(policy: str) -> None:
    loaded = [entry("a", 9, 1), entry("b", 2, 1), entry("c", 5, 1)]
    plan = plan_admission(GB, loaded, used(loaded), TOTAL, T, get_policy(policy), NOW, max_loaded=3)
    assert plan.allowed and len(plan.evict) == 1, "room is plenty, but only 3 may be loaded"
    assert plan.evict[0] == names(get_policy(policy)(loaded, NOW))[-1]
    pinned = [entry("a", 9, 1, pinned=True), entry("b", 2, 1, in_use=True)]
    refused = plan_admission(GB, pinned, used(pinned), TOTAL, T, get_policy(policy), NOW, max_loaded=2)
    assert not refused.allowed and "max_loaded is 2" in (refused.refused or "")


def test_give_back_never_exceeds_max_loaded() -> None:
    """Two must go for the count; the memory would allow giving one back, the count does not."""
    loaded = [entry("a", 1, 1), entry("b", 2, 1), entry("c", 9, 1)]
    plan = plan_admission(GB, loaded, used(loaded), TOTAL, T, rank_frequency, NOW, max_loaded=2)
    assert plan.evict == ("a", "b")


# -- clean-up --------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", CLEANUP_MODES)
@pytest.mark.parametrize("policy", ALL)
def test_cleanup_defers_models_in_use(policy: str, mode: str) -> None:
    loaded = [entry("best", 90, 10), entry("busy", 1, 20, in_use=True), entry("idle", 2, 20)]
    plan = plan_cleanup(loaded, int(0.95 * TOTAL), TOTAL, T, get_policy(policy), NOW, keep=0, mode=mode)
    assert "busy" in plan.deferred and "busy" not in plan.evict
    assert all(not e.in_use for e in loaded if e.name in plan.evict)


@pytest.mark.parametrize("mode", CLEANUP_MODES)
def test_cleanup_spares_pinned_models(mode: str) -> None:
    loaded = [entry("pinned", 1, 30, pinned=True), entry("a", 50, 10), entry("b", 2, 10)]
    plan = plan_cleanup(loaded, int(0.95 * TOTAL), TOTAL, T, rank_frequency, NOW, keep=0, mode=mode)
    assert "pinned" not in plan.evict and "pinned" in plan.kept


def test_keep_best_keeps_exactly_keep() -> None:
    loaded = [entry("a", 50, 4), entry("b", 20, 4), entry("c", 10, 4), entry("d", 1, 4)]
    plan = plan_cleanup(loaded, int(0.9 * TOTAL), TOTAL, T, rank_frequency, NOW, keep=2)
    assert plan.kept == ("a", "b") and sorted(plan.evict) == ["c", "d"]


def test_just_enough_unloads_the_least_valuable_until_under_the_warning() -> None:
    """At 90% of 64 GB, 3.2 GB must go: the 4 GB least-used model is enough, the rest stay."""
    loaded = [entry("a", 50, 4), entry("b", 20, 4), entry("c", 10, 4), entry("d", 1, 4)]
    plan = plan_cleanup(loaded, int(0.9 * TOTAL), TOTAL, T, rank_frequency, NOW, mode="just_enough")
    assert plan.level == "normal" and plan.evict == ("d",)
    assert plan.kept == ("a", "b", "c")


def test_just_enough_gives_back_what_a_larger_victim_made_unnecessary() -> None:
    loaded = [entry("popular", 50, 2), entry("big", 10, 20), entry("rare", 1, 1)]
    plan = plan_cleanup(loaded, int(0.88 * TOTAL), TOTAL, T, rank_frequency, NOW, mode="just_enough")
    assert plan.evict == ("big",), "rare alone frees too little; once big goes, rare can stay"


def test_just_enough_keeps_at_least_keep() -> None:
    """One model that alone sits past the warning (admission let it in under the emergency):
    unloading it would only make the next request load it again."""
    alone = [entry("huge", 5, 50)]
    memory = int(0.9 * TOTAL)
    assert plan_cleanup(alone, memory, TOTAL, T, rank_value, NOW, mode="just_enough").evict == ()
    plan = plan_cleanup(alone, memory, TOTAL, T, rank_value, NOW, keep=0, mode="just_enough")
    assert plan.evict == ("huge",)


def test_plans_only_name_models_they_were_given() -> None:
    rng = random.Random(11)
    for trial, (policy, mode) in enumerate(itertools.product(ALL, CLEANUP_MODES)):
        loaded = [entry(f"m{i}", rng.randint(1, 30), rng.uniform(1, 20), in_use=rng.random() < 0.2)
                  for i in range(5)]
        memory = int(rng.uniform(0.86, 0.97) * TOTAL)
        plan = plan_cleanup(loaded, memory, TOTAL, T, get_policy(policy), NOW, mode=mode)
        assert set(plan.evict) | set(plan.deferred) <= set(names(loaded)), trial
        assert not set(plan.evict) & set(plan.kept)


def test_value_ignores_never_used_models_when_reading_the_horizon() -> None:
    """A preloaded, never-used model (last_used 0 on a wall clock) must not stretch the window
    the long-run rates are read over: that would sink a model used once (rate 1 / window) under
    a stale one. Here the one-use model, small and slow to reload, stays first."""
    now = 1.7e9
    once = entry("once", 1, size_gb=0.5, load_s=20, last=now - 20)
    stale = entry("stale", 2, size_gb=8, load_s=5, gap=1000, last=now - 5000)
    assert names(rank_value([stale, once], now)) == ["once", "stale"]
    assert names(rank_value([stale, entry("preloaded", 0), once], now)) == ["once", "stale", "preloaded"]


# -- prompt caches: one budget with the models ------------------------------------------------------
def cache(model: str, cid: str, size_gb: float, saves_s: float, *, read_ago: float = 5.0, hits: int = 3,
          in_use: bool = False) -> EntryStats:
    """``model``'s prompt cache ``cid``: ``size_gb`` of KV that saves ``saves_s`` of prefill, last
    read ``read_ago`` seconds ago."""
    last = NOW - read_ago
    return EntryStats(name=prompt_cache_name(model, cid), use_count=hits, last_used=last,
                      loaded_at=last - 60 * hits, load_time_seconds=saves_s, size_bytes=int(size_gb * GB),
                      in_use=in_use, recent_uses=tuple(last - 60 * i for i in reversed(range(hits))),
                      kind=PROMPT_CACHE, owner=model)


def test_prompt_cache_names_are_unique_and_map_back_to_their_model() -> None:
    name = prompt_cache_name("qwen2.5:7b", "3f2a9c")
    assert name == "promptcache:qwen2.5:7b:3f2a9c"
    assert name.removeprefix("promptcache:").rsplit(":", 1) == ["qwen2.5:7b", "3f2a9c"]
    assert entry("m").kind == MODEL and entry("m").owner is None, "old callers build models unchanged"


def test_a_cleanup_drops_a_cold_prompt_cache_before_a_model() -> None:
    """Two busy models and an old conversation's cache: the cache saves little per byte now
    (last read 20 minutes ago), so it goes and both models stay."""
    coder = entry("coder-32b", 40, size_gb=17.2, load_s=7.6, gap=30)
    chat = entry("chat-7b", 20, size_gb=4.0, load_s=2.8, gap=60)
    old = cache("chat-7b", "old-conversation", 4.0, saves_s=12.0, read_ago=1200)
    loaded = [coder, chat, old]
    memory = int(T.warning * TOTAL) + int(2 * GB)  # other apps hold the rest
    plan = plan_cleanup(loaded, memory, TOTAL, T, rank_value, NOW, mode="just_enough")
    assert plan.evict == (old.name,)
    assert set(plan.kept) == {"coder-32b", "chat-7b"}


@pytest.mark.parametrize("read_ago", [4.0, 600.0])
def test_a_cleanup_unloads_a_model_worth_less_than_a_big_cache(read_ago: float) -> None:
    """An agent's 8,000-token prompt on the 32B model (2 GB of KV, 27 s of prefill), read
    seconds or ten minutes ago, against a small model nobody asked for in an hour: the model
    goes, the cache stays, although the cache is the larger and, the second time, cold."""
    coder = entry("coder-32b", 40, size_gb=17.2, load_s=7.6, gap=10)
    agent = cache("coder-32b", "agent", 2.0, saves_s=27.0, read_ago=read_ago)
    idle = entry("phi-mini", 3, size_gb=1.5, load_s=2.0, last=NOW - 3600, gap=600)
    loaded = [coder, agent, idle]
    memory = int(T.warning * TOTAL) + int(0.5 * GB)
    plan = plan_cleanup(loaded, memory, TOTAL, T, rank_value, NOW, keep=0, mode="just_enough")
    assert plan.evict == ("phi-mini",)
    assert agent.name in plan.kept and "coder-32b" in plan.kept


@pytest.mark.parametrize("policy", ALL)
def test_unloading_a_model_takes_its_prompt_caches_first(policy: str) -> None:
    """Room for a 12 GB model: the idle 20 GB model must go, and its two caches with it (listed
    before it); the other model's cache stays."""
    busy = entry("busy", 50, size_gb=20, in_use=True)
    idle = entry("idle", 2, size_gb=20, last=NOW - 900)
    caches = [cache("idle", "a", 1.0, 5.0), cache("idle", "b", 0.5, 3.0), cache("busy", "c", 1.0, 5.0)]
    loaded = [busy, idle, *caches]
    plan = plan_admission(int(12 * GB), loaded, used(loaded), TOTAL, T, get_policy(policy), NOW, name="big")
    assert plan.allowed and plan.projected_fraction < T.warning
    assert plan.evict[-1] == "idle" and set(plan.evict) == {"idle", caches[0].name, caches[1].name}
    assert caches[2].name not in plan.evict


@pytest.mark.parametrize("policy", ALL)
def test_an_emergency_drops_models_and_prompt_caches(policy: str) -> None:
    loaded = [entry("a", 9, 10), entry("b", 2, 10, pinned=True), cache("a", "x", 2, 9.0), cache("b", "y", 1, 4.0)]
    plan = plan_cleanup(loaded, int(0.99 * TOTAL), TOTAL, T, get_policy(policy), NOW)
    assert plan.level == "emergency"
    assert set(plan.evict) == {e.name for e in loaded} and plan.deferred == ()
    assert "unloading all 2 models and 2 prompt caches" in plan.reason
    assert plan.evict.index(prompt_cache_name("a", "x")) < plan.evict.index("a"), "a cache goes before its model"


@pytest.mark.parametrize("mode", CLEANUP_MODES)
def test_a_prompt_cache_in_use_is_never_dropped_under_its_request(mode: str) -> None:
    """A request reads the cache now: a clean-up defers it and its model; admission leaves both."""
    reading = cache("m", "live", 4, 1.0, read_ago=3000, in_use=True)  # worth little: still kept
    other = entry("other", 1, 2, last=NOW - 3000)
    loaded = [entry("m", 1, 20, last=NOW - 3000), reading, other]
    plan = plan_cleanup(loaded, int(0.95 * TOTAL), TOTAL, T, rank_value, NOW, keep=0, mode=mode)
    assert reading.name not in plan.evict and "m" not in plan.evict
    assert {reading.name, "m"} <= set(plan.deferred)
    emergency = plan_cleanup(loaded, TOTAL, TOTAL, T, rank_value, NOW)
    assert set(emergency.deferred) == {reading.name, "m"} and emergency.evict == ("other",)
    admit = plan_admission(int(23 * GB), loaded, used(loaded), TOTAL, T, rank_value, NOW)
    assert admit.allowed and admit.evict == ("other",)


@pytest.mark.parametrize("policy", ALL)
def test_max_loaded_and_keep_count_models_only(policy: str) -> None:
    """Two models and four caches with max_loaded = 3: a third model loads without unloading
    anything (caches are not models); a fourth unloads one model with its caches."""
    loaded = [entry("a", 9, 1), entry("b", 2, 1)] + [cache(m, str(i), 0.1, 2.0) for m in "ab" for i in range(2)]
    rank = get_policy(policy)
    assert plan_admission(GB, loaded, used(loaded), TOTAL, T, rank, NOW, max_loaded=3).evict == ()
    full = loaded + [entry("c", 5, 1)]
    plan = plan_admission(GB, full, used(full), TOTAL, T, rank, NOW, max_loaded=3)
    gone_models = [n for n in plan.evict if not n.startswith("promptcache:")]
    assert len(gone_models) == 1
    assert {n for n in plan.evict if n.startswith("promptcache:")} == {
        e.name for e in full if e.owner == gone_models[0]}
    # keep = 1: the best model stays even past the warning, but its caches may go.
    huge = [entry("solo", 5, 50), cache("solo", "x", 2, 1.0, read_ago=600)]
    cleanup = plan_cleanup(huge, int(0.9 * TOTAL), TOTAL, T, rank, NOW, keep=1, mode="just_enough")
    assert cleanup.evict == (huge[1].name,)


@pytest.mark.parametrize("mode", CLEANUP_MODES)
def test_a_pinned_model_stays_but_its_prompt_caches_may_go(mode: str) -> None:
    loaded = [entry("pinned", 1, 40, pinned=True), cache("pinned", "x", 6, 1.0, read_ago=900),
              entry("a", 50, 4)]
    plan = plan_cleanup(loaded, int(0.88 * TOTAL), TOTAL, T, rank_value, NOW, keep=1, mode=mode)
    assert plan.evict == (loaded[1].name,)
    assert "pinned" in plan.kept and "a" in plan.kept


def test_a_new_prompt_cache_is_kept_only_when_worth_its_room() -> None:
    """After a request, its conversation's cache is offered: it may displace what is worth less
    (a stale cache), never what is worth more, never its own model, and never past the warning."""
    coder = entry("coder", 40, size_gb=17.2, load_s=7.6, gap=20)
    other = entry("other", 30, size_gb=17.2, load_s=7.6, gap=30)
    stale = cache("other", "stale", 4.0, saves_s=10.0, read_ago=1800)
    loaded = [coder, other, stale]
    fresh = cache("coder", "agent", 5.0, saves_s=27.0, read_ago=0)
    base = int(T.warning * TOTAL) - sum(e.size_bytes for e in loaded) - int(2 * GB)
    now_used = base + sum(e.size_bytes for e in loaded)
    kept = plan_admission(fresh.size_bytes, loaded, now_used, TOTAL, T, rank_value, NOW,
                          name=fresh.name, incoming=fresh)
    assert kept.allowed and kept.evict == (stale.name,)
    precious = cache("other", "precious", 4.0, saves_s=60.0, read_ago=2)
    refused = plan_admission(fresh.size_bytes, [coder, other, precious], now_used, TOTAL, T, rank_value,
                             NOW, name=fresh.name, incoming=cache("coder", "agent", 5.0, 5.0, read_ago=0))
    assert not refused.allowed and "not kept" in (refused.refused or "")
    alone = plan_admission(int(40 * GB), [coder], int(0.3 * TOTAL), TOTAL, T, rank_value, NOW,
                           name="x", incoming=cache("coder", "huge", 40, 900.0, read_ago=0))
    assert not alone.allowed and "beside what must stay" in (alone.refused or "")
    # A cache that grew is priced at its new size: its old bytes are not counted twice.
    grown = cache("coder", "agent", 5.5, saves_s=30.0, read_ago=0)
    again = plan_admission(grown.size_bytes, [*loaded, fresh], now_used + fresh.size_bytes, TOTAL, T,
                           rank_value, NOW, name=grown.name, incoming=grown)
    assert again.allowed and again.evict == (stale.name,)


def test_value_reads_a_prompt_caches_worth_off_its_silence() -> None:
    """A finished conversation with many past hits against the one being typed in: the recent
    one is worth more, whatever their history; and a cache with no hits yet counts from when it
    was built."""
    finished = cache("m", "finished", 1.0, 10.0, read_ago=900, hits=16)
    typing = cache("m", "typing", 1.0, 10.0, read_ago=30, hits=2)
    assert names(rank_value([finished, typing], NOW)) == [typing.name, finished.name]
    built = EntryStats(name=prompt_cache_name("m", "new"), loaded_at=NOW - 10, load_time_seconds=10.0,
                       size_bytes=GB, kind=PROMPT_CACHE, owner="m")
    assert request_rate(built, NOW, 0.0) == pytest.approx(1 / 10)
    assert names(rank_value([finished, built], NOW))[0] == built.name


# -- the knapsack ------------------------------------------------------------------------------------
def _random_items(rng: random.Random, n_models: int, n_caches: int) -> list[EntryStats]:
    models = [entry(f"m{i}", rng.randint(1, 30), rng.uniform(1, 20), rng.uniform(1, 20),
                    last=NOW - rng.uniform(0, 2000), gap=rng.uniform(10, 300), pinned=rng.random() < 0.15,
                    in_use=rng.random() < 0.1) for i in range(n_models)]
    caches = [cache(f"m{rng.randrange(n_models)}", f"c{j}", rng.uniform(0.2, 8), rng.uniform(1, 60),
                    read_ago=rng.uniform(1, 3000), hits=rng.randint(1, 8), in_use=rng.random() < 0.05)
              for j in range(n_caches)]
    return models + caches


def _best_keep_by_brute_force(items: list[EntryStats], candidates: list[EntryStats], worth: dict[str, float],
                              room: float, max_models: int | None) -> tuple[float, int]:
    """The most (worth, bytes) any closed subset of ``candidates`` keeps under ``room``."""
    names_ = {e.name for e in candidates}
    best = (-1.0, 0)
    for mask in range(1 << len(candidates)):
        kept = [e for i, e in enumerate(candidates) if mask >> i & 1]
        kept_names = {e.name for e in kept}
        if any(not e.is_model and e.owner in names_ and e.owner not in kept_names for e in kept):
            continue
        size = sum(e.size_bytes for e in kept)
        if size >= room or (max_models is not None and sum(e.is_model for e in kept) > max_models):
            continue
        best = max(best, (sum(worth[e.name] for e in kept), size))
    return best


@pytest.mark.parametrize("seed", range(40))
def test_the_knapsack_keeps_what_brute_force_finds_best(seed: int) -> None:
    """Random models and caches, a load that needs room: the knapsack's plan keeps the most
    worth any allowed set could keep (a cache only with its model), and never less than the
    greedy walk's plan."""
    rng = random.Random(seed)
    loaded = _random_items(rng, rng.randint(1, 4), rng.randint(0, 6))
    need = int(rng.uniform(1, 20) * GB)
    memory = int(0.1 * TOTAL) + sum(e.size_bytes for e in loaded)
    max_loaded = rng.choice([0, 0, len([e for e in loaded if e.is_model])])
    worth = worth_value(loaded, NOW)
    by_name = {e.name: e for e in loaded}
    busy_models = {e.owner for e in loaded if not e.is_model and e.in_use}
    candidates = [e for e in loaded if not (e.is_model and (e.pinned or e.in_use or e.name in busy_models))
                  and not e.in_use]
    room = T.warning * TOTAL - (memory + need - sum(e.size_bytes for e in candidates))
    fixed_models = sum(e.is_model for e in loaded) - sum(e.is_model for e in candidates)
    slots = max_loaded - fixed_models - 1 if max_loaded else None
    expected = _best_keep_by_brute_force(loaded, candidates, worth, room, slots)
    plans = {search: plan_admission(need, loaded, memory, TOTAL, T, rank_value, NOW, max_loaded=max_loaded,
                                    search=search) for search in SEARCHES}
    kept = {}
    for search, plan in plans.items():
        if not plan.allowed or plan.projected_fraction >= T.warning:
            continue
        assert all(by_name[c].owner not in plan.evict for c in by_name if c not in plan.evict
                   and not by_name[c].is_model), "a cache outlived its model"
        still = [e for e in candidates if e.name not in plan.evict]
        kept[search] = (sum(worth[e.name] for e in still), sum(e.size_bytes for e in still))
    if expected[0] < 0:
        assert "knapsack" not in kept
        return
    assert kept["knapsack"][0] == pytest.approx(expected[0])
    if "greedy" in kept:
        assert kept["knapsack"][0] >= kept["greedy"][0] - 1e-12


@pytest.mark.parametrize("seed", range(20))
def test_knapsack_cleanups_keep_the_floor_and_fit(seed: int) -> None:
    rng = random.Random(1000 + seed)
    loaded = _random_items(rng, rng.randint(1, 4), rng.randint(0, 6))
    memory = int(rng.uniform(0.86, 0.97) * TOTAL)
    for mode in CLEANUP_MODES:
        plans = [plan_cleanup(loaded, memory, TOTAL, T, rank_value, NOW, keep=1, mode=mode, search=s)
                 for s in SEARCHES]
        for plan in plans:
            gone = set(plan.evict) | set(plan.deferred)
            assert all(e.name in gone for e in loaded if not e.is_model and e.owner in gone)
            assert any(e.is_model and not e.pinned and e.name not in gone for e in loaded) or all(
                e.pinned for e in loaded if e.is_model)
        knap, greedy = plans[1], plans[0]
        freed = {p: sum(e.size_bytes for e in loaded if e.name in set(p.evict) | set(p.deferred))
                 for p in (knap, greedy)}
        if memory - freed[greedy] < T.warning * TOTAL:
            assert memory - freed[knap] < T.warning * TOTAL, "the knapsack fits whenever the walk does"


def test_the_knapsack_falls_back_to_the_walk_when_it_cannot_search() -> None:
    """Policies that only order (lru, frequency) and more than KNAPSACK_MAX_ITEMS candidates are
    planned by the greedy walk, exactly as without the knapsack."""
    rng = random.Random(3)
    many = _random_items(rng, 4, KNAPSACK_MAX_ITEMS)
    memory = int(0.1 * TOTAL) + sum(e.size_bytes for e in many)
    for policy, items in ((rank_lru, many[:8]), (rank_frequency, many[:8]), (rank_value, many)):
        plans = {s: plan_admission(int(10 * GB), items, memory, 4 * TOTAL, T, policy, NOW, search=s)
                 for s in SEARCHES}
        assert plans["knapsack"] == plans["greedy"]


def test_the_knapsack_frontier_stays_bounded() -> None:
    """On a full set of candidates (models and prompt caches, up to KNAPSACK_MAX_ITEMS) the
    knapsack never holds more frontier states than its bound, which keeps a plan to about a
    millisecond (timed in benchmarks/, not here)."""
    from mlx_tui.core import planner

    rng = random.Random(9)
    items = _random_items(rng, 5, KNAPSACK_MAX_ITEMS - 5)
    sizes: list[int] = []
    real = planner._pareto

    def counting(states):  # type: ignore[no-untyped-def]
        out = real(states)
        sizes.append(len(out))
        return out

    planner._pareto = counting  # type: ignore[assignment]
    try:
        plan_cleanup(items, int(0.95 * 4 * TOTAL), 4 * TOTAL, T, rank_value, NOW, mode="just_enough",
                     search="knapsack")
    finally:
        planner._pareto = real  # type: ignore[assignment]
    assert sizes and max(sizes) <= planner._KNAPSACK_MAX_STATES
