"""The offline optimum of the policy benchmark, and the replay's promise that no policy beats it.

The dynamic programme is checked three ways: by hand on tiny traces, against Belady's MIN (the
known optimum when every model has the same size and load time), and against a brute-force
search over every schedule on small random instances with sizes, costs and changing room. The
one with prompt caches as items (models plus one cache per conversation) is checked by hand and
against a brute-force search too.
"""

from __future__ import annotations

import itertools
import random
from functools import lru_cache
from typing import Sequence

import pytest

from benchmarks import policy_replay as replay
from benchmarks.optimum import (
    conversation_slots,
    feasible,
    optimal_load_seconds,
    optimal_total_seconds,
)
from benchmarks.traces import (
    CHAT_TRACE_KINDS,
    MACHINES,
    MODELS,
    TRACE_KINDS,
    Machine,
    ModelSpec,
    Trace,
    make_chat_trace,
    make_trace,
)
from mlx_tui.core.planner import CLEANUP_MODES
from mlx_tui.core.policy import POLICIES


def belady_misses(requests: Sequence[int], capacity: int) -> int:
    """Belady's MIN: on a miss with a full cache, evict the model wanted furthest ahead."""
    cache: set[int] = set()
    misses = 0
    for t, m in enumerate(requests):
        if m in cache:
            continue
        misses += 1
        if len(cache) == capacity:
            def next_use(x: int) -> int:
                ahead = requests[t + 1:]
                return ahead.index(x) if x in ahead else len(requests)
            cache.remove(max(sorted(cache), key=next_use))
        cache.add(m)
    return misses


def brute_force(requests: Sequence[int], sizes: Sequence[int], costs: Sequence[float],
                rooms: Sequence[float], alone: Sequence[float]) -> float:
    """Try every resident set after every request (not only demand loading)."""
    n = len(sizes)
    subsets = range(1 << n)

    def ok(t: int, s: int) -> bool:
        bytes_ = sum(sizes[i] for i in range(n) if s >> i & 1)
        return bool(s >> requests[t] & 1) and feasible(bytes_, s == 1 << requests[t], rooms[t], alone[t])

    @lru_cache(maxsize=None)
    def best(t: int, previous: int) -> float:
        if t == len(requests):
            return 0.0
        options = []
        for s in subsets:
            if ok(t, s):
                loads = sum(costs[i] for i in range(n) if s >> i & 1 and not previous >> i & 1)
                options.append(loads + best(t + 1, s))
        return min(options) if options else float("inf")

    return best(0, 0)


# -- by hand -------------------------------------------------------------------------------------
def test_two_slots_a_b_c_a_b() -> None:
    """Room for two unit models: A, B, C (evict B, wanted after A), A hits, B loads: 4 loads."""
    assert optimal_load_seconds([0, 1, 2, 0, 1], [1, 1, 1], [1, 1, 1], room=2.5) == 4


def test_an_expensive_model_is_kept_through_cheap_churn() -> None:
    """A (2 units, 10 s) and two 1-unit, 1 s models in 3.5 units: keep A, swap the cheap ones
    (10 + 1 + 1 + 1 + 1 = 14 s), not reload A (22 s)."""
    assert optimal_load_seconds([0, 1, 2, 1, 2, 0], [2, 1, 1], [10, 1, 1], room=3.5) == 14


def test_the_capacity_bound_is_strict_like_the_planner() -> None:
    # Two unit models in a room of exactly 2: not both (the planner wants used < warning).
    assert optimal_load_seconds([0, 1, 0, 1], [1, 1], [1, 1], room=2) == 4
    assert optimal_load_seconds([0, 1, 0, 1], [1, 1], [1, 1], room=2.01) == 2


def test_a_model_past_the_warning_loads_alone_under_the_emergency() -> None:
    requests = [0, 1, 0]
    assert optimal_load_seconds(requests, [5, 1], [7, 1], room=4, alone_room=6) == 15
    with pytest.raises(ValueError, match="request 0"):
        optimal_load_seconds(requests, [5, 1], [7, 1], room=4, alone_room=5)


def test_room_can_change_per_request() -> None:
    """Both fit, then other apps take room for one request: one of them must go then."""
    requests = [0, 1, 0, 1, 0]
    assert optimal_load_seconds(requests, [1, 1], [3, 2], room=[3, 3, 3, 3, 3]) == 5
    assert optimal_load_seconds(requests, [1, 1], [3, 2], room=[3, 3, 1.5, 3, 3]) == 7


def test_an_empty_trace_costs_nothing() -> None:
    assert optimal_load_seconds([], [1, 2], [1, 2], room=10) == 0


# -- against Belady and brute force --------------------------------------------------------------
@pytest.mark.parametrize("seed", range(30))
def test_unit_sizes_and_costs_give_beladys_misses(seed: int) -> None:
    rng = random.Random(seed)
    n = rng.randint(2, 6)
    capacity = rng.randint(1, n - 1)
    requests = [rng.randrange(n) for _ in range(rng.randint(5, 40))]
    got = optimal_load_seconds(requests, [1] * n, [1.0] * n, room=capacity + 0.5)
    assert got == belady_misses(requests, capacity)


def test_beladys_textbook_trace() -> None:
    """The classic 3-frame example 7 0 1 2 0 3 0 4 2 3 0 3 2 1 2 0 1 7 0 1: 9 page faults."""
    requests = [7, 0, 1, 2, 0, 3, 0, 4, 2, 3, 0, 3, 2, 1, 2, 0, 1, 7, 0, 1]
    ids = {m: i for i, m in enumerate(dict.fromkeys(requests))}
    trace = [ids[m] for m in requests]
    assert belady_misses(trace, 3) == 9
    assert optimal_load_seconds(trace, [1] * len(ids), [1.0] * len(ids), room=3.5) == 9


@pytest.mark.parametrize("seed", range(25))
def test_matches_brute_force_with_sizes_costs_and_changing_room(seed: int) -> None:
    rng = random.Random(100 + seed)
    n = rng.randint(2, 4)
    sizes = [rng.randint(1, 5) for _ in range(n)]
    costs = [round(rng.uniform(0.5, 9), 2) for _ in range(n)]
    steps = rng.randint(3, 9)
    requests = [rng.randrange(n) for _ in range(steps)]
    rooms = [rng.uniform(max(sizes) * 0.8, sum(sizes) + 1) for _ in range(steps)]
    alone = [max(r, max(sizes) + 0.5) for r in rooms]
    expected = brute_force(requests, sizes, costs, rooms, alone)
    assert optimal_load_seconds(requests, sizes, costs, rooms, alone) == pytest.approx(expected)


# -- the replay against it -----------------------------------------------------------------------
SMALL = [MACHINES[0], MACHINES[2]]  # 16 GB (5 models) and 64 GB (7 models)


@pytest.fixture(scope="module")
def short_cases() -> list[replay.Case]:
    return replay.cases(seed=3, scale=0.15, machines=SMALL, bandwidths=(3.0,))


def test_no_policy_beats_the_optimum(short_cases: list[replay.Case]) -> None:
    """Every policy x clean-up rule x search on every trace kind (short): ratio >= 1, and the
    replay's own check that every resident set obeys the optimum's capacity rule held throughout."""
    assert {c.trace.kind for c in short_cases} == set(TRACE_KINDS)
    for case in short_cases:
        best = replay.optimum(case)
        assert best > 0, case.label
        for policy, mode in itertools.product(POLICIES, CLEANUP_MODES):
            got = replay.replay(case, POLICIES[policy], mode)
            assert got.load_seconds >= best - 1e-6, (case.label, policy, mode)
            assert got.loads >= 1
        for strategy in replay.STRATEGIES:
            assert replay.replay(case, strategy).load_seconds >= best - 1e-6, (case.label, strategy)


def test_optimum_is_reached_when_everything_fits() -> None:
    """On a machine whose room holds every model, anyone loads each model once: ratio 1."""
    roomy = Machine(512)
    trace = make_trace("zipf-1.0", roomy, seed=1, scale=0.1)
    case = replay.Case(trace, roomy, 3.0)
    best = replay.optimum(case)
    assert best == pytest.approx(sum(case.load_seconds()[m] for m in set(trace.requests)))
    for policy in POLICIES:
        assert replay.replay(case, POLICIES[policy], "just_enough").load_seconds == pytest.approx(best)


def test_evaluate_tallies_ratios_and_totals(short_cases: list[replay.Case]) -> None:
    some = [c for c in short_cases if c.trace.kind in ("scan", "phases")]
    overall, best_total, by_kind = replay.evaluate(some)
    assert set(by_kind) == {"scan", "phases"}
    for key, tally in overall.items():
        assert len(tally.ratios) == len(some)
        assert all(ratio >= 1 for ratio, _ in tally.ratios)
        assert tally.geo_mean <= tally.worst[0]
        assert tally.seconds >= best_total - 1e-6
    lru = ("lru", "just_enough", "greedy")
    assert overall[lru].loads == sum(t.loads for t in (by_kind[k][lru] for k in by_kind))


def test_round_robin_of_equal_models_lru_against_belady() -> None:
    """Three 7B models in turns on 16 GB (room for two): LRU misses every request; the
    optimum is Belady's count of loads, priced at the one load time."""
    machine = Machine(16)
    models = tuple(ModelSpec(f"7b-{i}", 7.62) for i in range(3))
    requests = tuple(i % 3 for i in range(30))
    trace = Trace("round robin", 0, models, requests, (10.0,) * 30, (0.0,) * 30)
    case = replay.Case(trace, machine, 3.0)
    load = models[0].load_seconds(3.0)
    assert replay.replay(case, POLICIES["lru"], "just_enough").loads == 30
    assert replay.optimum(case) == pytest.approx(belady_misses(requests, 2) * load)
    assert replay.replay(case, POLICIES["value"], "just_enough").loads < 30


# -- the workloads -------------------------------------------------------------------------------
def test_traces_are_repeatable_and_seeded() -> None:
    machine = MACHINES[1]
    for kind in TRACE_KINDS:
        assert make_trace(kind, machine, 1) == make_trace(kind, machine, 1)
        assert make_trace(kind, machine, 1).requests != make_trace(kind, machine, 2).requests


def test_catalogues_hold_only_models_that_can_load_alone() -> None:
    for machine in MACHINES:
        models = machine.catalogue()
        worst = machine.background_bytes(0.12)
        limit = machine.thresholds.emergency * machine.total_bytes
        assert all(worst + m.size_bytes < limit for m in models)
        assert all(worst + m.size_bytes >= limit for m in MODELS if m not in models)
        room = machine.thresholds.warning * machine.total_bytes - machine.base_bytes
        assert sum(m.size_bytes for m in models) > room, "every machine must be short of room"
    assert [len(m.catalogue()) for m in MACHINES] == [5, 6, 7, 8]


def test_the_seed_trace_starts_with_the_documents_counts() -> None:
    machine = MACHINES[2]  # 64 GB: qwen2.5-coder-32b and deepseek-r1-70b both fit
    trace = make_trace("seed", machine, 1)
    head = [trace.models[m].name for m in trace.requests[:57]]
    assert head.count("qwen2.5-coder-32b") == 50
    assert head.count("phi3.5-mini-4k") == 5
    assert head.count("deepseek-r1-70b") == 2


def test_quick_report_has_every_policy_and_both_trace_sets(monkeypatch: pytest.MonkeyPatch) -> None:
    """``run`` on a cut-down matrix (one small machine, one disk, short traces) to keep the test
    short: both parts (models only, with prompt caches), both trace sets, every strategy."""
    monkeypatch.setattr(replay, "MACHINES", (MACHINES[0],))
    monkeypatch.setattr(replay, "BANDWIDTHS_GB_S", (6.0,))
    monkeypatch.setattr(replay, "TRACE_KINDS", {k: v for k, v in TRACE_KINDS.items() if k in ("scan", "day")})
    monkeypatch.setattr(replay, "CHAT_TRACE_KINDS",
                        {k: v for k, v in CHAT_TRACE_KINDS.items() if k in ("chats", "agent")})
    text = replay.run(quick=True)
    assert "### Models only" in text and "### Models and prompt caches" in text
    assert text.count("#### Main traces") == 2 and text.count("#### Held-out traces") == 2
    for strategy in set(replay.STRATEGIES) | set(replay.CHAT_STRATEGIES):
        row = f"| {strategy.label} | {strategy.mode} | {strategy.search} |"
        expected = 2 * (strategy in replay.STRATEGIES) + 2 * (strategy in replay.CHAT_STRATEGIES)
        assert text.count(row) == expected, row
    assert text.count("| optimum |") == 4 and "(shipped)" in text and "### Planning time" in text


# -- models and prompt caches ------------------------------------------------------------------------
def chat_optimum(requests: list[int], convs: list[int], prompts: list[int], keeps: list[int], *,
                 sizes: Sequence[int] = (10,), loads: Sequence[float] = (5.0,), kv: Sequence[int] = (1,),
                 speeds: Sequence[float] = (10.0,), room: float | Sequence[float] = 1000,
                 alone: float | Sequence[float] | None = None) -> float:
    return optimal_total_seconds(requests, convs, prompts, keeps, sizes, loads, kv, speeds, room, alone)


def test_a_kept_conversation_cache_reads_only_the_new_tokens() -> None:
    """One model (5 s to load), one conversation at 10 tokens/s: 100 tokens, then 150 and 200
    of which 120 and 170 are cached: 5 + 10 + 3 + 3 = 21 s."""
    assert chat_optimum([0, 0, 0], [0, 0, 0], [100, 150, 200], [120, 170, 220]) == pytest.approx(21)


def test_without_room_for_the_cache_every_turn_reads_its_whole_prompt() -> None:
    """The model (10 bytes) and a 120-byte cache do not fit under 125: 5 + 10 + 15 + 20 = 50 s."""
    got = chat_optimum([0, 0, 0], [0, 0, 0], [100, 150, 200], [120, 170, 220], room=125)
    assert got == pytest.approx(50)


def test_the_optimum_keeps_the_cache_that_is_read_again() -> None:
    """Room for the model and one 100-token cache; conversation 0, then 1, then 0 twice: keep 0's
    cache through 1's turn: 15 + 10 + 1 + 1 = 27 s (keeping 1's instead costs 11 s more)."""
    got = chat_optimum([0, 0, 0, 0], [0, 1, 0, 0], [100, 100, 110, 120], [100, 100, 110, 120], room=160)
    assert got == pytest.approx(27)


def test_a_cache_cannot_outlive_its_model() -> None:
    """Model A (10 bytes, 100 s to load) with its 5-token cache, then model B (10 bytes, 2 s),
    then A's conversation again, in room 22: both models fit, or one with the cache. Keeping A's
    cache without A would cost 1 s at the end; the optimum must keep A and read 6 tokens again:
    100 + 5 + 2 + 1 + 6 = 114 s."""
    got = chat_optimum([0, 1, 0], [0, 1, 0], [5, 1, 6], [5, 1, 6], sizes=(10, 10), loads=(100.0, 2.0),
                       kv=(1, 1), speeds=(1.0, 1.0), room=22)
    assert got == pytest.approx(114)


def test_a_model_too_big_for_the_room_with_a_cache_loads_alone() -> None:
    """A model alone past the warning room (under the emergency one) is served, but never keeps
    a cache: 5 + 10 + 15 = 30 s; a model that does not fit even alone cannot be served."""
    got = chat_optimum([0, 0], [0, 0], [100, 150], [120, 170], sizes=(50,), room=40, alone=60)
    assert got == pytest.approx(30)
    with pytest.raises(ValueError, match="request 0"):
        chat_optimum([0], [0], [10], [10], sizes=(50,), room=40, alone=45)


def test_conversation_slots_are_reused_after_a_conversation_ends() -> None:
    slots, fresh, count = conversation_slots([0, 1, 0, 2, 1, 3])
    assert slots == [0, 1, 0, 0, 1, 0]
    assert fresh == [True, True, False, True, False, True]
    assert count == 2


def brute_force_chat(requests: Sequence[int], convs: Sequence[int], prompts: Sequence[int],
                     keeps: Sequence[int], sizes: Sequence[int], loads: Sequence[float], kv: Sequence[int],
                     speeds: Sequence[float], rooms: Sequence[float], alone: Sequence[float]) -> float:
    """Every resident set (models and conversation caches) after every request, no slots."""
    owner = dict(zip(convs, requests))
    held_before: list[dict[int, int]] = []
    held: dict[int, int] = {}
    for c, k in zip(convs, keeps):
        held_before.append(dict(held))
        held[c] = k

    @lru_cache(maxsize=None)
    def best(t: int, resident: frozenset[tuple[str, int]]) -> float:
        if t == len(requests):
            return 0.0
        m, c = requests[t], convs[t]
        hit = ("c", c) in resident
        cost = (0.0 if ("m", m) in resident else loads[m]) + (
            prompts[t] - (held_before[t][c] if hit else 0)) / speeds[m]
        after = {**held_before[t], c: keeps[t]}
        pool = sorted(resident | {("m", m), ("c", c)})
        options = []
        for mask in range(1 << len(pool)):
            s = frozenset(x for i, x in enumerate(pool) if mask >> i & 1)
            if ("m", m) not in s or any(kind == "c" and ("m", owner[x]) not in s for kind, x in s):
                continue
            size = sum(sizes[x] if kind == "m" else after[x] * kv[owner[x]] for kind, x in s)
            if size < rooms[t] or (s == {("m", m)} and sizes[m] < alone[t]):
                options.append(cost + best(t + 1, s))
        return min(options, default=float("inf"))

    return best(0, frozenset())


@pytest.mark.parametrize("seed", range(25))
def test_the_prompt_cache_optimum_matches_brute_force(seed: int) -> None:
    rng = random.Random(500 + seed)
    n = rng.randint(1, 2)
    sizes = [rng.randint(2, 8) for _ in range(n)]
    loads = [round(rng.uniform(0.5, 9), 2) for _ in range(n)]
    kv = [rng.randint(1, 3) for _ in range(n)]
    speeds = [rng.choice((1.0, 2.0, 4.0)) for _ in range(n)]
    conv_model = {c: rng.randrange(n) for c in range(rng.randint(1, 4))}
    requests, convs, prompts, keeps = [], [], [], []
    held: dict[int, int] = {}
    for _ in range(rng.randint(2, 7)):
        c = rng.choice(list(conv_model))
        prompt = held.get(c, 0) + rng.randint(1, 4)
        requests.append(conv_model[c])
        convs.append(c)
        prompts.append(prompt)
        keeps.append(prompt + rng.randint(0, 3))
        held[c] = keeps[-1]
    steps = len(requests)
    rooms = [rng.uniform(max(sizes) * 0.8, sum(sizes) + 12) for _ in range(steps)]
    alone = [max(r, max(sizes) + 0.5) for r in rooms]
    expected = brute_force_chat(requests, convs, prompts, keeps, sizes, loads, kv, speeds, rooms, alone)
    got = optimal_total_seconds(requests, convs, prompts, keeps, sizes, loads, kv, speeds, rooms, alone)
    assert got == pytest.approx(expected)


@pytest.fixture(scope="module")
def short_chat_cases() -> list[replay.ChatCase]:
    return replay.chat_cases(seed=3, scale=0.15, machines=SMALL, bandwidths=(3.0,))


def test_no_strategy_beats_the_prompt_cache_optimum(short_chat_cases: list[replay.ChatCase]) -> None:
    """Every strategy on every conversation workload (short): reload + prefill seconds >= the
    optimum's, and the replay's own checks held (every resident set obeys the capacity rule, no
    prompt cache outlived its model)."""
    assert {c.trace.kind for c in short_chat_cases} == set(CHAT_TRACE_KINDS)
    for case in short_chat_cases:
        best = replay.chat_optimum(case)
        assert best >= replay.unavoidable_seconds(case) - 1e-6, case.label
        for strategy in replay.CHAT_STRATEGIES:
            got = replay.replay_chat(case, strategy)
            assert got.seconds >= best - 1e-6, (case.label, strategy)


def test_prompt_caches_pay_for_themselves_in_the_replay(short_chat_cases: list[replay.ChatCase]) -> None:
    """The shipped default with prompt caches spends less than a third of the seconds of the
    same cache keeping none, on every conversation workload."""
    default = replay.Strategy("value", "just_enough")
    none = replay.Strategy("value", "just_enough", prompt_caches=False)
    for case in short_chat_cases:
        with_caches = replay.replay_chat(case, default)
        assert with_caches.hits > 0, case.label
        assert with_caches.seconds < replay.replay_chat(case, none).seconds / 3, case.label


def test_with_room_for_everything_the_optimum_pays_only_what_is_unavoidable() -> None:
    """On a machine whose room holds every model and every conversation's cache, the optimum
    pays each model's first load and each request's new tokens, and the default reaches it."""
    roomy = Machine(1024)
    trace = make_chat_trace("chats", roomy, seed=1, scale=0.1)
    case = replay.ChatCase(trace, roomy, 3.0)
    best = replay.chat_optimum(case)
    assert best == pytest.approx(replay.unavoidable_seconds(case))
    assert replay.replay_chat(case, replay.Strategy("value", "just_enough")).seconds == pytest.approx(best)


def test_chat_traces_are_repeatable_and_grow_their_conversations() -> None:
    machine = MACHINES[1]
    for kind in CHAT_TRACE_KINDS:
        trace = make_chat_trace(kind, machine, 1)
        assert trace == make_chat_trace(kind, machine, 1)
        assert trace.requests != make_chat_trace(kind, machine, 2).requests
        held: dict[int, int] = {}
        for m, c, prompt, keep in zip(trace.requests, trace.convs, trace.prompts, trace.keeps):
            assert prompt > held.get(c, 0), "a turn adds tokens to what its conversation kept"
            held[c] = keep
        assert conversation_slots(trace.convs)[2] <= 5
        assert len(trace.models) <= 3
