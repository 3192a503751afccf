"""Benchmarks §1: cache policies replayed on request traces, in seconds against the optimum.

Each case is one trace (:mod:`benchmarks.traces`) on one machine at one disk bandwidth. The
replay drives the real :func:`~mlx_tui.core.planner.plan_cleanup` and
:func:`~mlx_tui.core.planner.plan_admission` with the real policies, the way
:class:`~mlx_tui.core.cache.ModelCache` does, on a virtual clock and simulated memory:

* when a request arrives, its use is counted (``use_count``, ``last_used``, ``recent_uses``, as
  ``ModelCache.acquire`` does), then the memory monitor runs a clean-up if other apps pushed
  memory past the warning threshold, then a model that is not resident is admitted (its
  victims unloaded) and loaded, which moves the clock on by its load time;
* memory in use = what other apps hold at that request + the resident items.

Two sets of traces:

* **models only**: what each request costs is the model's reload when it is not resident;
* **models and prompt caches**: requests continue conversations; a request whose conversation
  cache is resident reads only its new tokens, else its whole prompt (prefill seconds = tokens /
  the model's prefill speed), and afterwards the conversation's cache is offered to the planner
  as a new item (``plan_admission(..., incoming=...)``): kept if it is worth its room, beside
  and against the models, in one budget.

The offline optimum (:mod:`benchmarks.optimum`) prices the same trace under the same capacity
rule; every policy is reported as its total seconds over the optimum's.

Run ``python -m benchmarks.policy_replay [--quick]``; it prints a Markdown section. Everything
is simulated, so the figures are the same on every machine.
"""

from __future__ import annotations

import math
import os
from collections import deque
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from mlx_tui.core.cache import RECENT_USES
from mlx_tui.core.planner import (
    CLEANUP_MODES,
    DEFAULT_SEARCH,
    SEARCHES,
    Search,
    plan_admission,
    plan_cleanup,
)
from mlx_tui.core.policy import (
    DEFAULT_POLICY,
    POLICIES,
    PROMPT_CACHE,
    EntryStats,
    Policy,
    prompt_cache_name,
    rank_lru,
    rank_value,
    worth_for,
)
from mlx_tui.core.settings import Settings
from mlx_tui.core.units import format_bytes

from . import common
from .optimum import (
    conversation_slots,
    feasible,
    optimal_load_seconds,
    optimal_total_seconds,
)
from .traces import (
    BITS_PER_WEIGHT,
    CHAT_TRACE_KINDS,
    EXTRA_LEVELS,
    LOAD_OVERHEAD_SECONDS,
    MACHINES,
    TRACE_KINDS,
    ChatTrace,
    Machine,
    Trace,
    chat_trace_length,
    make_chat_trace,
    make_trace,
    trace_length,
)

__all__ = ["Case", "ChatCase", "Strategy", "STRATEGIES", "CHAT_STRATEGIES", "replay", "replay_chat",
           "optimum", "chat_optimum", "run", "main"]

BANDWIDTHS_GB_S = (3.0, 6.0)
MAIN_SEED = 1  # the traces the policies were designed on
HELD_OUT_SEED = 7  # never looked at while designing them
SEED_RULE = ("frequency", "keep_best", "greedy")  # the seed document's policy and rule


def caches_first(entries: Sequence[EntryStats], now: float) -> list[EntryStats]:
    """A baseline, not a policy of the app: models by ``value``, every prompt cache below every
    model, least recently used last (a separate LRU tier for prompt caches, as mlx_lm.server
    keeps, under the models' budget)."""
    caches = [e for e in entries if e.kind == PROMPT_CACHE]
    return rank_value([e for e in entries if e.kind != PROMPT_CACHE], now) + rank_lru(caches, now)


@dataclass(frozen=True, slots=True)
class Strategy:
    """One way to run the cache: a policy, a clean-up rule, a search; ``prompt_caches=False``
    keeps none (every request reads its whole prompt)."""

    policy: str
    mode: str
    search: str = "greedy"
    prompt_caches: bool = True

    @property
    def rank(self) -> Policy:
        return caches_first if self.policy == "caches-first" else POLICIES[self.policy]

    @property
    def label(self) -> str:
        if not self.prompt_caches:
            return f"{self.policy} (no prompt cache)"
        return self.policy

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.label, self.mode, self.search)


STRATEGIES: tuple[Strategy, ...] = tuple(
    [Strategy(p, m) for p in POLICIES for m in CLEANUP_MODES]
    + [Strategy(p, "just_enough", "knapsack") for p in POLICIES if worth_for(POLICIES[p]) is not None])
"""Every policy x clean-up rule with the greedy walk, and the knapsack where the policy has a value."""

CHAT_STRATEGIES: tuple[Strategy, ...] = (
    Strategy("value", "just_enough"),
    Strategy("value", "keep_best"),
    Strategy("value", "just_enough", "knapsack"),
    Strategy("lru", "just_enough"),
    Strategy("cost", "just_enough"),
    Strategy(*SEED_RULE),
    Strategy("caches-first", "just_enough"),
    Strategy("value", "just_enough", "greedy", prompt_caches=False),
)
"""With prompt caches: the default and its variants, the other policies, and two baselines."""


@dataclass(frozen=True, slots=True)
class Case:
    trace: Trace | ChatTrace
    machine: Machine
    disk_gb_per_s: float

    @property
    def label(self) -> str:
        return f"{self.trace.kind} {self.machine.total_gb} GB {self.disk_gb_per_s:g} GB/s"

    def load_seconds(self) -> list[float]:
        return [m.load_seconds(self.disk_gb_per_s) for m in self.trace.models]

    def rooms(self, t: int) -> tuple[float, float]:
        """(warning room, emergency room) for the cache's items at request ``t``."""
        m = self.machine
        background = m.background_bytes(self.trace.extra[t])
        return (m.thresholds.warning * m.total_bytes - background,
                m.thresholds.emergency * m.total_bytes - background)


@dataclass(frozen=True, slots=True)
class ChatCase(Case):
    """A case whose trace has conversations (:class:`~benchmarks.traces.ChatTrace`)."""

    def prefill_speeds(self) -> list[float]:
        return [m.prefill_tokens_per_s(self.machine) for m in self.trace.models]


@dataclass(slots=True)
class _Item:
    """What the simulated cache knows of one item (the fields of ``ModelCache``'s entries)."""

    name: str
    size_bytes: int
    cost_seconds: float  # a model: its load time; a prompt cache: the prefill it saves
    kind: str = "model"
    owner: str | None = None
    use_count: int = 0
    last_used: float = 0.0
    loaded_at: float = 0.0
    load_time_seconds: float = 0.0
    resident: bool = False
    recent_uses: deque[float] = field(default_factory=lambda: deque(maxlen=RECENT_USES))

    def use(self, now: float) -> None:
        self.use_count += 1
        self.last_used = now
        self.recent_uses.append(now)

    def stats(self) -> EntryStats:
        return EntryStats(
            name=self.name, use_count=self.use_count, last_used=self.last_used,
            loaded_at=self.loaded_at, load_time_seconds=self.load_time_seconds,
            size_bytes=self.size_bytes, recent_uses=tuple(self.recent_uses), kind=self.kind,
            owner=self.owner,
        )


@dataclass(frozen=True, slots=True)
class Replay:
    load_seconds: float
    loads: int
    prefill_seconds: float = 0.0
    hits: int = 0

    @property
    def seconds(self) -> float:
        return self.load_seconds + self.prefill_seconds


class _Memory:
    """The simulated cache's resident items, and the plans carried out on them."""

    def __init__(self, case: Case, strategy: Strategy, items: Iterable[_Item]) -> None:
        self.case, self.strategy = case, strategy
        self.by_name = {i.name: i for i in items}
        self._resident: dict[str, _Item] = {}
        self._background = [case.machine.background_bytes(x) for x in case.trace.extra]
        self._total = case.machine.total_bytes
        warning = case.machine.thresholds.warning * self._total
        self._warning_room = [warning - b for b in self._background]

    def resident(self) -> list[_Item]:
        return list(self._resident.values())

    def held(self) -> int:
        return sum(i.size_bytes for i in self._resident.values())

    def used(self, t: int) -> int:
        return self._background[t] + self.held()

    def load(self, item: _Item, now: float) -> None:
        item.resident = True
        item.loaded_at = now
        self._resident[item.name] = item

    def unload(self, names: Iterable[str]) -> None:
        names = set(names)
        for name in names:
            self.by_name[name].resident = False
            self._resident.pop(name, None)
        for item in self._resident.values():  # the planner's promise: no cache outlives its model
            assert item.owner not in names, f"{item.name} outlived {item.owner}"

    def cleanup(self, t: int, now: float) -> None:
        m = self.case.machine
        if self.used(t) / self._total < m.thresholds.warning:
            return  # under the warning: plan_cleanup plans nothing (the harness skips the call)
        plan = plan_cleanup([i.stats() for i in self.resident()], self.used(t), m.total_bytes,
                            m.thresholds, self.strategy.rank, now, keep=1,
                            mode=self.strategy.mode, search=self._search)  # type: ignore[arg-type]
        assert not plan.deferred, "nothing is in use between requests"
        self.unload(plan.evict)

    def admit(self, t: int, now: float, item: _Item, optional: bool = False) -> bool:
        if self.held() + item.size_bytes < self._warning_room[t]:
            self.load(item, now)  # it fits: plan_admission evicts nothing (the harness skips the call)
            return True
        m = self.case.machine
        plan = plan_admission(item.size_bytes, [i.stats() for i in self.resident()], self.used(t),
                              m.total_bytes, m.thresholds, self.strategy.rank, now, name=item.name,
                              incoming=item.stats() if optional else None, search=self._search)
        if not plan.allowed:
            assert optional, f"{self.case.label}: request {t} refused: {plan.refused}"
            return False
        self.unload(plan.evict)
        self.load(item, now)
        return True

    @property
    def _search(self) -> Search:
        return self.strategy.search  # type: ignore[return-value]

    def check(self, t: int, model: _Item) -> None:
        holding = self.resident()
        room, alone_room = self.case.rooms(t)
        assert feasible(sum(i.size_bytes for i in holding), holding == [model], room, alone_room), (
            f"{self.case.label}: request {t}: the cache holds a set the optimum may not")


def replay(case: Case, policy: Policy | Strategy, mode: str = "just_enough") -> Replay:
    """Serve ``case``'s models-only trace with a strategy (or a policy and clean-up ``mode``);
    total seconds spent loading."""
    strategy = policy if isinstance(policy, Strategy) else _adhoc(policy, mode)
    trace = case.trace
    models = [_Item(m.name, m.size_bytes, s) for m, s in zip(trace.models, case.load_seconds())]
    memory = _Memory(case, strategy, models)
    now, spent, loads = 0.0, 0.0, 0
    for t, wanted in enumerate(trace.requests):
        now += trace.think_seconds[t]
        model = models[wanted]
        model.use(now)
        memory.cleanup(t, now)
        if not model.resident:
            memory.admit(t, now, model)
            model.load_time_seconds = model.cost_seconds
            now += model.cost_seconds
            spent += model.cost_seconds
            loads += 1
        memory.check(t, model)
    return Replay(spent, loads)


def replay_chat(case: ChatCase, strategy: Strategy) -> Replay:
    """Serve ``case``'s conversations with ``strategy``: reload and prefill seconds.

    A conversation's cache is one item whose statistics live as long as the conversation
    (its uses are the requests of the conversation, the one that built the cache included);
    ``load_time_seconds`` is what it saves, its tokens at the model's prefill speed."""
    trace = case.trace
    speeds = case.prefill_speeds()
    models = [_Item(m.name, m.size_bytes, s) for m, s in zip(trace.models, case.load_seconds())]
    convs: dict[int, _Item] = {}
    for m, c in zip(trace.requests, trace.convs):
        if c not in convs:
            name = models[m].name
            convs[c] = _Item(prompt_cache_name(name, str(c)), 0, 0.0, kind=PROMPT_CACHE, owner=name)
    memory = _Memory(case, strategy, [*models, *convs.values()])
    held = {c: 0 for c in convs}  # tokens in each conversation's cache
    now, load_s, prefill_s, loads, hits = 0.0, 0.0, 0.0, 0, 0
    for t, (wanted, c) in enumerate(zip(trace.requests, trace.convs)):
        now += trace.think_seconds[t]
        model, conv = models[wanted], convs[c]
        model.use(now)
        conv.use(now)
        memory.cleanup(t, now)
        if not model.resident:
            memory.admit(t, now, model)
            model.load_time_seconds = model.cost_seconds
            now += model.cost_seconds
            load_s += model.cost_seconds
            loads += 1
        tokens = trace.prompts[t] - (held[c] if conv.resident else 0)
        hits += conv.resident
        now += tokens / speeds[wanted]
        prefill_s += tokens / speeds[wanted]
        memory.unload([conv.name])  # the request extends it: offered again below, at its new size
        held[c] = trace.keeps[t]
        if strategy.prompt_caches:
            conv.size_bytes = held[c] * trace.models[wanted].kv_bytes_per_token
            conv.load_time_seconds = held[c] / speeds[wanted]
            memory.admit(t, now, conv, optional=True)
        memory.check(t, model)
    return Replay(load_s, loads, prefill_s, hits)


def _adhoc(policy: Policy, mode: str) -> Strategy:
    name = next(n for n, p in POLICIES.items() if p is policy)
    return Strategy(name, mode)


def optimum(case: Case) -> float:
    rooms = [case.rooms(t) for t in range(len(case.trace))]
    return optimal_load_seconds(
        case.trace.requests, [m.size_bytes for m in case.trace.models], case.load_seconds(),
        [r for r, _ in rooms], [a for _, a in rooms],
    )


def chat_optimum(case: ChatCase) -> float:
    trace = case.trace
    rooms = [case.rooms(t) for t in range(len(trace))]
    return optimal_total_seconds(
        trace.requests, trace.convs, trace.prompts, trace.keeps,
        [m.size_bytes for m in trace.models], case.load_seconds(),
        [m.kv_bytes_per_token for m in trace.models], case.prefill_speeds(),
        [r for r, _ in rooms], [a for _, a in rooms],
    )


def unavoidable_seconds(case: ChatCase) -> float:
    """What any cache pays: every model's first load and every request's new tokens (the whole
    prompt of a conversation's first request)."""
    trace, speeds = case.trace, case.prefill_speeds()
    loads = case.load_seconds()
    held: dict[int, int] = {}
    total = sum(loads[m] for m in set(trace.requests))
    for t, (m, c) in enumerate(zip(trace.requests, trace.convs)):
        total += (trace.prompts[t] - held.get(c, 0)) / speeds[m]
        held[c] = trace.keeps[t]
    return total


def cases(seed: int, scale: float = 1.0, kinds: Iterable[str] = TRACE_KINDS,
          machines: Sequence[Machine] = MACHINES,
          bandwidths: Sequence[float] = BANDWIDTHS_GB_S) -> list[Case]:
    out = []
    for kind in kinds:
        for machine in machines:
            trace = make_trace(kind, machine, seed, scale)
            out.extend(Case(trace, machine, bw) for bw in bandwidths)
    return out


def chat_cases(seed: int, scale: float = 1.0, kinds: Iterable[str] = CHAT_TRACE_KINDS,
               machines: Sequence[Machine] = MACHINES,
               bandwidths: Sequence[float] = BANDWIDTHS_GB_S) -> list[ChatCase]:
    out = []
    for kind in kinds:
        for machine in machines:
            trace = make_chat_trace(kind, machine, seed, scale)
            out.extend(ChatCase(trace, machine, bw) for bw in bandwidths)
    return out


@dataclass
class _Tally:
    ratios: list[tuple[float, str]] = field(default_factory=list)
    avoidable: float = 0.0  # seconds over what no cache could avoid (chat cases)
    best_avoidable: float = 0.0  # the optimum's
    seconds: float = 0.0
    load_seconds: float = 0.0
    prefill_seconds: float = 0.0
    loads: int = 0
    hits: int = 0

    @property
    def geo_mean(self) -> float:
        return _geo(r for r, _ in self.ratios)

    @property
    def worst(self) -> tuple[float, str]:
        return max(self.ratios)


def _geo(values: Iterable[float]) -> float:
    values = list(values)
    return math.exp(sum(math.log(v) for v in values) / len(values))


Tallies = dict[tuple[str, str, str], _Tally]


def evaluate(case_list: Sequence[Case], strategies: Sequence[Strategy] = STRATEGIES
             ) -> tuple[Tallies, float, dict[str, Tallies]]:
    """Every strategy on every case: tallies overall and per trace kind, and the optimum's
    total. Chat cases (:class:`ChatCase`) count reload + prefill seconds, others reload seconds."""
    overall: Tallies = {s.key: _Tally() for s in strategies}
    by_kind: dict[str, Tallies] = {}
    best_total = 0.0
    for case in case_list:
        chat = isinstance(case, ChatCase)
        best = chat_optimum(case) if chat else optimum(case)  # type: ignore[arg-type]
        floor = unavoidable_seconds(case) if chat else 0.0  # type: ignore[arg-type]
        best_total += best
        kind_tally = by_kind.setdefault(case.trace.kind, {s.key: _Tally() for s in strategies})
        for strategy in strategies:
            got = replay_chat(case, strategy) if chat else replay(case, strategy)  # type: ignore[arg-type]
            assert got.seconds >= best - 1e-6, (
                f"{case.label}: {strategy.key} spent {got.seconds:.3f} s < optimum {best:.3f} s")
            ratio = got.seconds / best if best > 0 else 1.0
            for tally in (overall[strategy.key], kind_tally[strategy.key]):
                tally.ratios.append((ratio, case.label))
                tally.avoidable += got.seconds - floor
                tally.best_avoidable += best - floor
                tally.seconds += got.seconds
                tally.load_seconds += got.load_seconds
                tally.prefill_seconds += got.prefill_seconds
                tally.loads += got.loads
                tally.hits += got.hits
    return overall, best_total, by_kind


def _name(key: tuple[str, str, str]) -> str:
    return f"{key[0]} {key[1]}" + (" knapsack" if key[2] == "knapsack" else "")


def _table(overall: Tallies, best_total: float, chat: bool = False) -> list[str]:
    base = overall[SEED_RULE].seconds if SEED_RULE in overall else None
    if chat:
        rows = ["| policy | clean-up | search | geo mean | worst | worst case | avoidable s | "
                "reload s | prefill s | loads | cache hits | vs seed's |",
                "|---|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
    else:
        rows = ["| policy | clean-up | search | geo mean | worst | worst case | load-seconds | loads | vs seed's |",
                "|---|---|---|---:|---:|---|---:|---:|---:|"]
    for key, tally in sorted(overall.items(), key=lambda kv: kv[1].geo_mean):
        worst, where = tally.worst
        versus = f"{tally.seconds / base - 1:+.1%}" if base else ""
        head = f"| {key[0]} | {key[1]} | {key[2]} | {tally.geo_mean:.3f}x | {worst:.2f}x | {where} | "
        if chat:
            rows.append(head + f"{tally.avoidable / tally.best_avoidable:.2f}x | "
                        f"{tally.load_seconds:,.0f} | {tally.prefill_seconds:,.0f} | {tally.loads:,} | "
                        f"{tally.hits:,} | {versus} |")
        else:
            rows.append(head + f"{tally.seconds:,.0f} | {tally.loads:,} | {versus} |")
    if chat:
        rows.append(f"| optimum | | | 1.000x | 1.00x | | 1.00x | {best_total:,.0f} in all | | | | |")
    else:
        rows.append(f"| optimum | | | 1.000x | 1.00x | | {best_total:,.0f} | | |")
    return rows


def _by_kind_table(by_kind: dict[str, Tallies], keys: Sequence[tuple[str, str, str]]) -> list[str]:
    rows = ["| trace | " + " | ".join(_name(k) for k in keys) + " |",
            "|---|" + "---:|" * len(keys)]
    for kind, tallies in by_kind.items():
        rows.append(f"| {kind} | " + " | ".join(f"{tallies[k].geo_mean:.3f}" for k in keys) + " |")
    return rows


def _setup(scale: float, machines: Sequence[Machine], bandwidths: Sequence[float]) -> list[str]:
    thresholds = machines[0].thresholds
    extra = "/".join(f"{x:.0%}" for x in sorted(set(EXTRA_LEVELS)))
    disks = " and ".join(f"{bw:g}" for bw in bandwidths)
    rows = [
        f"Simulated: no MLX, a virtual clock; the figures are the same on every machine. Memory "
        f"thresholds {thresholds.warning:.0%} (clean-up, admission target) and "
        f"{thresholds.emergency:.0%} (unload all); clean-up `keep` = 1. Other apps hold `base` "
        f"plus, in episodes of ~120 requests, {extra} more of the memory; a clean-up runs when that "
        f"pushes memory past the warning. Loads take `bytes / disk + {LOAD_OVERHEAD_SECONDS:g} s` at "
        f"{disks} GB/s. Models are {BITS_PER_WEIGHT:g} bits a weight (MLX 4-bit with its scales). A "
        "machine's catalogue drops the models that could not load even alone at the busiest "
        "moment; traces that name such a model use the largest one that fits.",
        "",
        "| machine | base | room under the warning | prefill, tokens/s per 1B params | models |",
        "|---|---:|---:|---:|---|",
    ]
    for m in machines:
        room = thresholds.warning * m.total_bytes - m.base_bytes
        names = ", ".join(f"{x.name} {format_bytes(x.size_bytes)}" for x in m.catalogue())
        rows.append(f"| {m.total_gb} GB | {format_bytes(m.base_bytes)} | {format_bytes(room)} | "
                    f"{m.prefill_tokens_per_s_1b:,.0f} | {names} |")
    rows += [
        "",
        "*Search*: `greedy` walks the policy's order from the least valuable (and gives back what a "
        "later, larger victim made unnecessary); `knapsack` keeps the set of the most value "
        "(the policy's additive worth: seconds saved per second) under the room, exactly. "
        "*geo mean* and *worst* are over the cases of the ratio to the offline optimum (exact "
        "dynamic programming over resident sets, same capacity rule; the harness asserts every "
        "ratio >= 1); *vs seed's* compares total seconds with `frequency` + `keep_best`.",
        "",
    ]
    return rows


def _models_only(scale: float, machines: Sequence[Machine], bandwidths: Sequence[float]
                 ) -> tuple[list[str], dict[str, Tallies]]:
    out = ["### Models only: reload seconds", "",
           "| trace | requests | what |", "|---|---:|---|"]
    for kind, (maker, _) in TRACE_KINDS.items():
        what = " ".join((maker.__doc__ or "").split())
        out.append(f"| {kind} | {trace_length(kind, scale)} | {what} |")
    out.append("")
    results = {}
    for title, seed, why in _SETS:
        case_list = cases(seed, scale, machines=machines, bandwidths=bandwidths)
        overall, best_total, by_kind = evaluate(case_list)
        results[title] = overall
        out += [f"#### {title} (seed {seed}, {len(case_list)} cases; {why})", ""]
        out += _table(overall, best_total) + [""]
        keys = [s.key for s in STRATEGIES if s.mode == "just_enough"]
        out += ["Geometric mean of the ratio per trace kind (`just_enough`):", ""]
        out += _by_kind_table(by_kind, keys) + [""]
    return out, results


def _with_prompt_caches(scale: float, machines: Sequence[Machine], bandwidths: Sequence[float]
                        ) -> tuple[list[str], dict[str, Tallies]]:
    out = [
        "### Models and prompt caches: reload + prefill seconds", "",
        "Requests continue conversations. A prompt cache is one conversation's KV cache (fp16, the "
        "model's own layers x KV heads x head size per token; e.g. qwen2.5-coder-32b 256 KB a token, "
        "phi3.5-mini 384 KB); a request whose conversation cache is resident reads only its new "
        "tokens, else its whole prompt, at the machine's prefill speed over the model's billions of "
        "parameters. After each request the conversation's cache is offered to the planner as a new "
        "item (`plan_admission(..., incoming=...)`), kept only under the warning threshold and only "
        "by unloading what is worth less. The optimum's state is the resident models and one bit per "
        "conversation open at once (few models, at most 5 conversations open). *avoidable s* = the "
        "seconds over what no cache could avoid (every model's first load, every request's new "
        "tokens), summed over the cases, against the optimum's: the stricter reading. Baselines: "
        "`caches-first` ranks every prompt cache below every model (a separate LRU tier under the same budget); `value (no "
        "prompt cache)` keeps none.",
        "",
        "| trace | requests | what |", "|---|---:|---|",
    ]
    for kind, (maker, _) in CHAT_TRACE_KINDS.items():
        what = " ".join((maker.__doc__ or "").split())
        out.append(f"| {kind} | {chat_trace_length(kind, scale)} | {what} |")
    out.append("")
    results = {}
    for title, seed, why in _SETS:
        case_list = chat_cases(seed, scale, machines=machines, bandwidths=bandwidths)
        slots = max(conversation_slots(c.trace.convs)[2] for c in case_list)
        overall, best_total, by_kind = evaluate(case_list, CHAT_STRATEGIES)
        results[title] = overall
        out += [f"#### {title} with prompt caches (seed {seed}, {len(case_list)} cases, at most "
                f"{slots} conversations open; {why})", ""]
        out += _table(overall, best_total, chat=True) + [""]
        keys = [s.key for s in CHAT_STRATEGIES if s.mode == "just_enough"]
        out += ["Geometric mean of the ratio per trace kind (`just_enough`):", ""]
        out += _by_kind_table(by_kind, keys) + [""]
    return out, results


_SETS = (("Main traces", MAIN_SEED, "the policies were designed on these"),
         ("Held-out traces", HELD_OUT_SEED, "never looked at while designing them"))


def _cell(tallies: Tallies, key: tuple[str, str, str]) -> str:
    t = tallies[key]
    return f"{t.geo_mean:.3f}x / {t.worst[0]:.2f}x"


def _met(tallies: Tallies, key: tuple[str, str, str]) -> bool:
    return tallies[key].geo_mean <= 1.05 and tallies[key].worst[0] <= 1.30


def _summary(models: dict[str, Tallies], chats: dict[str, Tallies]) -> list[str]:
    """Geo mean / worst of the default and its rivals on the four trace sets."""
    cleanup = Settings().memory.cleanup
    default = (DEFAULT_POLICY, cleanup, DEFAULT_SEARCH)
    rows = ["| strategy | models only, main | models only, held-out | prompt caches, main | "
            "prompt caches, held-out |", "|---|---:|---:|---:|---:|"]
    keys = [(DEFAULT_POLICY, cleanup, s) for s in SEARCHES] + [("lru", cleanup, "greedy"), SEED_RULE,
                                                                ("caches-first", cleanup, "greedy")]
    for key in keys:
        cells = [_cell(part[title], key) if key in part[title] else "" for part in (models, chats)
                 for title in ("Main traces", "Held-out traces")]
        mark = " (shipped)" if key == default else ""
        rows.append(f"| `{_name(key)}`{mark} | " + " | ".join(cells) + " |")
    verdicts = [f"{what} {'met' if all(_met(part[t], default) for t in part) else 'missed'}"
                for what, part in (("models only", models), ("with prompt caches", chats))]
    greedy, knapsack = (DEFAULT_POLICY, cleanup, "greedy"), (DEFAULT_POLICY, cleanup, "knapsack")
    sets = [part[t] for part in (models, chats) for t in part]
    wins = sum(s[knapsack].geo_mean < s[greedy].geo_mean and s[knapsack].worst[0] <= s[greedy].worst[0]
               for s in sets)
    losses = sum(s[knapsack].geo_mean > s[greedy].geo_mean or s[knapsack].worst[0] > s[greedy].worst[0]
                 for s in sets)
    return rows + [
        "",
        f"Target for the shipped default (<= 1.05x geo mean, <= 1.30x worst, on both trace sets): "
        f"{'; '.join(verdicts)}.",
        "",
        f"The knapsack beats the greedy walk on geo mean and worst together on {wins} of the "
        f"{len(sets)} trace sets and loses one of the two on {losses}, so it is "
        f"{'the default' if DEFAULT_SEARCH == 'knapsack' else 'not the default'} "
        "(`plan_admission(..., search=\"knapsack\")` and `plan_cleanup` take it).",
        "",
    ]


def _plan_times(repeats: int) -> list[str]:
    """Microseconds per plan on this machine: 4 models and 12 prompt caches, memory past the
    warning, greedy against knapsack (the knapsack's frontier is bounded; above
    ``KNAPSACK_MAX_ITEMS`` candidates it is the walk)."""
    import random
    import statistics
    import time

    from mlx_tui.core.planner import KNAPSACK_MAX_ITEMS, Thresholds

    rng = random.Random(0)
    now, gb = 100_000.0, 1024**3
    items = [EntryStats(name=f"m{i}", use_count=10, last_used=now - rng.uniform(0, 600),
                        load_time_seconds=rng.uniform(2, 20), size_bytes=int(rng.uniform(2, 20) * gb),
                        recent_uses=tuple(sorted(now - rng.uniform(0, 3000) for _ in range(10))))
             for i in range(4)]
    for j in range(12):
        owner = f"m{rng.randrange(4)}"
        items.append(EntryStats(name=prompt_cache_name(owner, str(j)), use_count=3,
                                last_used=now - rng.uniform(1, 2000), load_time_seconds=rng.uniform(1, 60),
                                size_bytes=int(rng.uniform(0.1, 4) * gb), kind=PROMPT_CACHE, owner=owner))
    total = int(sum(e.size_bytes for e in items) / 0.9)
    rows = ["| plan (4 models, 12 prompt caches) | greedy | knapsack | ratio |", "|---|---:|---:|---:|"]
    for what, call in (
        ("clean-up, just_enough", lambda s: plan_cleanup(items, int(0.95 * total), total, Thresholds(),
                                                         rank_value, now, mode="just_enough", search=s)),
        ("admission of a 10 GB model", lambda s: plan_admission(10 * gb, items, int(0.8 * total), total,
                                                               Thresholds(), rank_value, now, search=s)),
    ):
        micro = {}
        for search in SEARCHES:
            samples = []
            for _ in range(repeats):
                started = time.perf_counter()
                call(search)
                samples.append((time.perf_counter() - started) * 1e6)
            micro[search] = statistics.median(samples)
        rows.append(f"| {what} | {micro['greedy']:,.0f} µs | {micro['knapsack']:,.0f} µs | "
                    f"{micro['knapsack'] / micro['greedy']:.1f}x |")
    rows += ["", f"Median of {repeats} calls on the machine above (the only figures here that depend "
             f"on it); the knapsack searches at most {KNAPSACK_MAX_ITEMS} candidates.", ""]
    return rows


def run(quick: bool = False) -> str:
    """The Markdown section: strategies against the optimum, models only and with prompt
    caches, main and held-out traces."""
    import datetime
    import platform
    import time

    started = time.perf_counter()
    scale = 0.2 if quick else 1.0
    machines, bandwidths = MACHINES, BANDWIDTHS_GB_S
    out = ["## Cache policy: reload and prefill seconds against the offline optimum", ""]
    out += _setup(scale, machines, bandwidths)
    models_part, models = _models_only(scale, machines, bandwidths)
    chat_part, chats = _with_prompt_caches(scale, machines, bandwidths)
    out += models_part + chat_part
    out += ["### Planning time", ""] + _plan_times(50 if quick else 300)
    out += ["### Summary", ""] + _summary(models, chats)
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    out += [f"This section: {when}, {'quick' if quick else 'full'} run, {platform.machine()} with "
            f"{os.cpu_count()} CPUs, Python {platform.python_version()}, "
            f"{time.perf_counter() - started:.0f} s, load average {common.machine_load()}.", ""]
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> None:
    common.main(__doc__, run, "shorter traces (a smoke run)", argv)


if __name__ == "__main__":
    main()
