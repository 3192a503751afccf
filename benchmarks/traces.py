"""Model catalogue, machines and request traces for the cache-policy replay (no MLX needed).

Everything here is a fixed, seeded description of a workload; :mod:`benchmarks.policy_replay`
replays it through the real policies and planner, :mod:`benchmarks.optimum` prices it offline.

* **Models**: real MLX 4-bit checkpoints by parameter count at 4.5 bits a weight (4-bit weights
  plus the group scales and biases), loaded at ``bytes / disk bandwidth + 1.5 s``.
* **Machines**: total memory, the memory macOS and the usual apps hold (``base``), and the
  episodes when other apps take more (a browser, Xcode, a VM). A machine's catalogue keeps only
  the models that can load alone at the busiest moment, so no request is ever refused.
* **Traces**: which model each request wants, the think time before it, and how much of the
  machine's memory other apps hold extra at that moment. Seeded with :class:`random.Random`, so
  the same seed gives the same trace on every machine and Python version.
* **Chat traces** (:class:`ChatTrace`): the same, plus the conversation each request continues
  and its prompt, so prompt caches are items too: a conversation's KV cache holds
  ``kv_bytes_per_token`` per token (the model's real layers x KV heads x head size, fp16), and
  reading a prompt again costs ``tokens / prefill speed`` (a machine's speed per billion
  parameters over the model's billions).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable, Sequence

from mlx_tui.core.planner import Thresholds
from mlx_tui.core.units import GB

__all__ = [
    "BITS_PER_WEIGHT",
    "LOAD_OVERHEAD_SECONDS",
    "MODELS",
    "MACHINES",
    "EXTRA_LEVELS",
    "ModelSpec",
    "Machine",
    "Trace",
    "TRACE_KINDS",
    "make_trace",
    "trace_length",
    "ChatTrace",
    "CHAT_TRACE_KINDS",
    "make_chat_trace",
    "chat_trace_length",
]

BITS_PER_WEIGHT = 4.5
LOAD_OVERHEAD_SECONDS = 1.5
EXTRA_LEVELS = (0.0, 0.0, 0.04, 0.08, 0.12)
"""Fractions of memory other apps take on top of ``base`` (0 is drawn twice as often). At most
12%: a jump from just under the 85% warning stays under the 98% emergency, so an app starting never
forces the unload-everything path, which no policy could do anything about."""


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A checkpoint: its parameters and the shape of its KV cache (layers, KV heads, head size)."""

    name: str
    params_b: float
    layers: int = 32
    kv_heads: int = 8
    head_dim: int = 128

    @property
    def size_bytes(self) -> int:
        return int(self.params_b * 1e9 * BITS_PER_WEIGHT / 8)

    def load_seconds(self, disk_gb_per_s: float) -> float:
        return self.size_bytes / (disk_gb_per_s * 1e9) + LOAD_OVERHEAD_SECONDS

    @property
    def kv_bytes_per_token(self) -> int:
        """Keys and values of every layer for one token, fp16 (mlx-lm's KVCache)."""
        return 2 * self.layers * self.kv_heads * self.head_dim * 2

    def prefill_tokens_per_s(self, machine: Machine) -> float:
        return machine.prefill_tokens_per_s_1b / self.params_b


MODELS: tuple[ModelSpec, ...] = (
    ModelSpec("qwen2.5-coder-1.5b", 1.54, 28, 2),
    ModelSpec("llama-3.2-3b", 3.21, 28, 8),
    ModelSpec("phi3.5-mini-4k", 3.82, 32, 32, 96),  # no grouped-query attention: a large KV cache
    ModelSpec("qwen2.5-7b", 7.62, 28, 4),
    ModelSpec("qwen2.5-14b", 14.77, 48, 8),
    ModelSpec("qwen2.5-coder-32b", 32.76, 64, 8),
    ModelSpec("deepseek-r1-70b", 70.55, 80, 8),
    ModelSpec("mistral-large-123b", 122.6, 88, 8),
)


@dataclass(frozen=True, slots=True)
class Machine:
    """A Mac: ``total_gb`` of unified memory, ``base`` held by macOS and the usual apps."""

    total_gb: int
    thresholds: Thresholds = Thresholds()

    @property
    def total_bytes(self) -> int:
        return self.total_gb * GB

    @property
    def base_bytes(self) -> int:
        return max(4 * GB, self.total_bytes // 10)

    def background_bytes(self, extra_fraction: float) -> int:
        """Memory not held by the cache when other apps take ``extra_fraction`` more."""
        return self.base_bytes + int(extra_fraction * self.total_bytes)

    @property
    def prefill_tokens_per_s_1b(self) -> float:
        """Prompt tokens a second for a 1B model (a model of P billions reads 1/P of it): a base
        chip for 16 GB, a Pro/Max for 36 GB, a Max/Ultra above; a 32B model then reads a few
        hundred tokens a second, as the issue measured on a Mac."""
        return 3000.0 if self.total_gb <= 16 else 6000.0 if self.total_gb <= 36 else 9000.0

    def catalogue(self) -> tuple[ModelSpec, ...]:
        """The models that can load alone (under the emergency threshold) at the busiest moment."""
        worst = self.background_bytes(max(EXTRA_LEVELS))
        limit = self.thresholds.emergency * self.total_bytes
        return tuple(m for m in MODELS if worst + m.size_bytes < limit)


MACHINES: tuple[Machine, ...] = (Machine(16), Machine(36), Machine(64), Machine(128))


@dataclass(frozen=True, slots=True)
class Trace:
    """One workload on one catalogue: request ``i`` wants ``models[requests[i]]``."""

    kind: str
    seed: int
    models: tuple[ModelSpec, ...]
    requests: tuple[int, ...]
    think_seconds: tuple[float, ...]  # idle time before each request arrives
    extra: tuple[float, ...]  # fraction of memory other apps hold on top of base, per request

    def __len__(self) -> int:
        return len(self.requests)


_Requests = tuple[list[int], list[float]]  # model index and think seconds, per request
_Maker = Callable[[Sequence[ModelSpec], random.Random, int], _Requests]


# -- building blocks -----------------------------------------------------------------------------
def _zipf_weights(n: int, skew: float) -> list[float]:
    return [1.0 / (rank + 1) ** skew for rank in range(n)]


def _thinks(rng: random.Random, n: int, mean_seconds: float) -> list[float]:
    return [rng.expovariate(1.0 / mean_seconds) for _ in range(n)]


def _other_apps(rng: random.Random, n: int, mean_episode: float = 120.0) -> list[float]:
    """Piecewise-constant extra memory of other apps; an episode lasts ~``mean_episode`` requests."""
    level, out = 0.0, []
    for _ in range(n):
        if rng.random() < 1.0 / mean_episode:
            level = rng.choice(EXTRA_LEVELS)
        out.append(level)
    return out


def _pick(models: Sequence[ModelSpec], wanted: str, avoid: set[int]) -> int:
    """Index of ``wanted`` if the machine can load it, else of the largest model no larger."""
    names = [m.name for m in models]
    if wanted in names and names.index(wanted) not in avoid:
        return names.index(wanted)
    limit = next((m.size_bytes for m in MODELS if m.name == wanted), 0)
    options = [i for i, m in enumerate(models) if m.size_bytes <= limit and i not in avoid]
    return max(options, key=lambda i: models[i].size_bytes)


# -- the workloads -------------------------------------------------------------------------------
def _seed_scenario(models: Sequence[ModelSpec], rng: random.Random, n: int) -> _Requests:
    """The seed document's history: qwen2.5-coder-32b 50 uses, phi3.5-mini 5, deepseek-r1-70b 2,
    in a shuffled order, then the same mix continues. Machines too small for a model use the
    largest one they can load instead."""
    main = _pick(models, "qwen2.5-coder-32b", set())
    small = _pick(models, "phi3.5-mini-4k", {main})
    big = _pick(models, "deepseek-r1-70b", {main, small})
    head = [main] * 50 + [small] * 5 + [big] * 2
    rng.shuffle(head)
    tail = rng.choices([main, small, big], weights=[50, 5, 2], k=max(n - len(head), 0))
    return head + tail, _thinks(rng, n, 30.0)


def _zipf(skew: float) -> _Maker:
    def make(models: Sequence[ModelSpec], rng: random.Random, n: int) -> _Requests:
        order = list(range(len(models)))
        rng.shuffle(order)  # popularity is not tied to size
        weights = [0.0] * len(models)
        for rank, w in zip(order, _zipf_weights(len(models), skew)):
            weights[rank] = w
        return rng.choices(range(len(models)), weights=weights, k=n), _thinks(rng, n, 20.0)

    make.__doc__ = f"Independent requests, popularity Zipf with skew {skew}."
    return make


def _phases(models: Sequence[ModelSpec], rng: random.Random, n: int) -> _Requests:
    """A working set of 2-3 models that changes every ~250 requests; 10% of requests stray."""
    out: list[int] = []
    everyone = range(len(models))
    while len(out) < n:
        working = rng.sample(everyone, rng.choice((2, 3)))
        weights = _zipf_weights(len(working), 1.0)
        for _ in range(min(rng.randint(150, 350), n - len(out))):
            if rng.random() < 0.1:
                out.append(rng.randrange(len(models)))
            else:
                out.append(rng.choices(working, weights=weights)[0])
    return out, _thinks(rng, n, 20.0)


def _day(models: Sequence[ModelSpec], rng: random.Random, n: int) -> _Requests:
    """A day of work: one main model, bursts on others (a quick question to a small model, a
    long reasoning session), short think times inside a burst, a few long breaks."""
    main = _pick(models, "qwen2.5-coder-32b", set())
    others = [i for i in range(len(models)) if i != main]
    out: list[int] = []
    thinks: list[float] = []
    while len(out) < n:
        if rng.random() < 0.35:
            other = rng.choice(others)
            for _ in range(min(1 + int(rng.expovariate(1 / 8)), n - len(out))):
                out.append(other if rng.random() < 0.8 else main)
                thinks.append(rng.expovariate(1 / 15))
        else:
            for _ in range(min(1 + int(rng.expovariate(1 / 10)), n - len(out))):
                out.append(main)
                thinks.append(rng.expovariate(1 / 45))
        if rng.random() < 0.05 and thinks:
            thinks[-1] += rng.choice((900.0, 1800.0, 3600.0))  # a meeting, lunch
    return out, thinks


def _scan(models: Sequence[ModelSpec], rng: random.Random, n: int) -> _Requests:
    """Every model once, in turns, again and again (an evaluation script): LRU's worst case."""
    order = list(range(len(models)))
    rng.shuffle(order)
    return [order[i % len(order)] for i in range(n)], _thinks(rng, n, 10.0)


def _scan_mix(models: Sequence[ModelSpec], rng: random.Random, n: int) -> _Requests:
    """Two models in daily use and, every ~120 requests, a pass over every model in turn."""
    main, second = rng.sample(range(len(models)), 2)
    out: list[int] = []
    while len(out) < n:
        out += rng.choices([main, second], weights=[0.7, 0.3], k=rng.randint(80, 160))
        scan = list(range(len(models)))
        rng.shuffle(scan)
        out += scan
    return out[:n], _thinks(rng, n, 20.0)


TRACE_KINDS: dict[str, tuple[_Maker, int]] = {
    # kind: (generator, requests)
    "seed": (_seed_scenario, 500),
    "zipf-0.7": (_zipf(0.7), 1500),
    "zipf-1.0": (_zipf(1.0), 1500),
    "zipf-1.3": (_zipf(1.3), 1500),
    "phases": (_phases, 1500),
    "day": (_day, 800),
    "scan": (_scan, 600),
    "scan-mix": (_scan_mix, 1200),
}


def trace_length(kind: str, scale: float = 1.0) -> int:
    """Requests in a ``kind`` trace shortened by ``scale`` (quick runs), never under 60."""
    return max(int(TRACE_KINDS[kind][1] * scale), 60)


def make_trace(kind: str, machine: Machine, seed: int, scale: float = 1.0) -> Trace:
    """The ``kind`` workload on ``machine``'s catalogue; ``scale`` shortens it (quick runs)."""
    maker, _ = TRACE_KINDS[kind]
    models = machine.catalogue()
    n = trace_length(kind, scale)
    # One stream per (kind, seed, machine): traces do not shift when another kind is added.
    rng = random.Random(f"{kind}/{seed}/{machine.total_gb}")
    requests, thinks = maker(models, rng, n)
    extra = _other_apps(rng, n)
    return Trace(kind, seed, models, tuple(requests[:n]), tuple(thinks[:n]), tuple(extra))


# -- conversations: prompt caches as items -------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ChatTrace:
    """A workload with conversations: request ``i`` wants ``models[requests[i]]`` and continues
    conversation ``convs[i]`` with a prompt of ``prompts[i]`` tokens; after it, the conversation's
    KV cache holds ``keeps[i]`` tokens (prompt and reply, or only the document every question of
    a document conversation starts with). A conversation's next prompt starts with what it kept,
    so a request whose conversation cache is resident reads only its new tokens."""

    kind: str
    seed: int
    models: tuple[ModelSpec, ...]
    requests: tuple[int, ...]
    convs: tuple[int, ...]
    prompts: tuple[int, ...]
    keeps: tuple[int, ...]
    think_seconds: tuple[float, ...]
    extra: tuple[float, ...]

    def __len__(self) -> int:
        return len(self.requests)


@dataclass(slots=True)
class _Conv:
    id: int
    model: int
    turns_left: int
    first: int  # tokens of the first prompt (a document conversation: the document)
    user: tuple[int, int]  # new tokens a turn adds (a question, a tool's output), uniform range
    reply: tuple[int, int]  # tokens of a reply, kept in the cache; (0, 0) for a document
    think: float  # mean seconds before its next request
    tokens: int = 0  # what its cache holds after its last request

    @property
    def document(self) -> bool:
        return self.reply == (0, 0)


_Rows = tuple[list[int], list[int], list[int], list[int], list[float]]  # model, conv, prompt, keep, think


def _talk(rng: random.Random, n: int, start: Callable[[int, list[_Conv]], _Conv], open_max: int,
          new_prob: float, stay: float, breaks: float = 0.0, zipf: bool = False) -> _Rows:
    """Requests from up to ``open_max`` open conversations: a new one starts with ``new_prob``
    (or when none is open), else the last one continues with ``stay`` (``zipf``: the older ones
    are asked more, like documents kept at hand), else another open one; a conversation closes
    after its turns. ``breaks``: the chance of a long pause (a meeting, lunch) after a request."""
    rows: _Rows = ([], [], [], [], [])
    open_: list[_Conv] = []
    current: _Conv | None = None
    next_id = 0
    while len(rows[0]) < n:
        if not open_ or (len(open_) < open_max and rng.random() < new_prob):
            current = start(next_id, open_)
            next_id += 1
            open_.append(current)
        elif zipf:
            current = rng.choices(open_, weights=_zipf_weights(len(open_), 1.0))[0]
        elif current not in open_ or rng.random() >= stay:
            current = rng.choice(open_)
        assert current is not None
        c = current
        new = c.first if c.tokens == 0 else rng.randint(*c.user)
        if c.document:
            prompt, keep = c.first + (rng.randint(*c.user) if c.tokens else 0), c.first
        else:
            prompt = c.tokens + new
            keep = prompt + rng.randint(*c.reply)
        c.tokens = keep
        think = rng.expovariate(1.0 / c.think)
        if breaks and rng.random() < breaks:
            think += rng.choice((900.0, 1800.0, 3600.0))
        for column, value in zip(rows, (c.model, c.id, prompt, keep, think)):
            column.append(value)  # type: ignore[arg-type]
        c.turns_left -= 1
        if c.turns_left <= 0:
            open_.remove(c)
    return rows


def _by_share(models: Sequence[ModelSpec], machine: Machine, share: float, avoid: Sequence[int] = ()) -> int:
    """The model whose size is nearest ``share`` of the machine's room, not one of ``avoid``."""
    room = machine.thresholds.warning * machine.total_bytes - machine.base_bytes
    options = [i for i in range(len(models)) if i not in avoid]
    return min(options, key=lambda i: (abs(models[i].size_bytes / room - share), i))


def _chat_conv(model: int, rng: random.Random, cid: int) -> _Conv:
    return _Conv(cid, model, 1 + int(rng.expovariate(1 / 6)), rng.randint(300, 2500), (20, 400),
                 (100, 800), 40.0)


def _chats(models: Sequence[ModelSpec], machine: Machine, rng: random.Random, n: int) -> _Rows:
    """A person chatting: up to 3 conversations open (a pasted file, then questions), mostly on
    one model, sometimes a quick one on a small model; ~7 turns each, ~40 s apart."""
    main = _by_share(models, machine, 0.3)
    small = _by_share(models, machine, 0.08, (main,))
    return _talk(rng, n, lambda cid, _: _chat_conv(main if rng.random() < 0.85 else small, rng, cid),
                 open_max=3, new_prob=0.12, stay=0.75)


def _agent(models: Sequence[ModelSpec], machine: Machine, rng: random.Random, n: int) -> _Rows:
    """A coding agent on a large model: tasks that start with a 6-9k-token system prompt and
    repository map and grow by tool outputs every few seconds, beside chats on a small model."""
    big = _by_share(models, machine, 0.6)
    small = _by_share(models, machine, 0.12, (big,))

    def start(cid: int, open_: list[_Conv]) -> _Conv:
        if rng.random() < 0.5 and not any(c.model == big for c in open_):
            return _Conv(cid, big, rng.randint(5, 20), rng.randint(6000, 9000), (200, 2000),
                         (50, 400), 4.0)
        return _Conv(cid, small, rng.randint(2, 6), rng.randint(200, 1500), (20, 300), (100, 600), 30.0)

    return _talk(rng, n, start, open_max=3, new_prob=0.15, stay=0.85)


def _documents(models: Sequence[ModelSpec], machine: Machine, rng: random.Random, n: int) -> _Rows:
    """Questions about documents kept at hand (2-12k tokens each, up to 5 open, the older ones
    asked more): every question reads its document again unless its cache is resident."""
    main = _by_share(models, machine, 0.35)
    second = _by_share(models, machine, 0.12, (main,))

    def start(cid: int, _: list[_Conv]) -> _Conv:
        model = main if rng.random() < 0.7 else second
        return _Conv(cid, model, rng.randint(10, 60), rng.randint(2000, 12000), (20, 200), (0, 0), 30.0)

    return _talk(rng, n, start, open_max=5, new_prob=0.04, stay=0.0, zipf=True)


def _switching(models: Sequence[ModelSpec], machine: Machine, rng: random.Random, n: int) -> _Rows:
    """A day of work on three models: conversations mostly on the main one, others on two more,
    up to 4 open; now and then a long break."""
    main = _by_share(models, machine, 0.35)
    second = _by_share(models, machine, 0.2, (main,))
    third = _by_share(models, machine, 0.1, (main, second))

    def start(cid: int, _: list[_Conv]) -> _Conv:
        model = rng.choices((main, second, third), weights=(0.6, 0.25, 0.15))[0]
        return _chat_conv(model, rng, cid)

    return _talk(rng, n, start, open_max=4, new_prob=0.15, stay=0.7, breaks=0.03)


_ChatMaker = Callable[[Sequence[ModelSpec], Machine, random.Random, int], _Rows]

CHAT_TRACE_KINDS: dict[str, tuple[_ChatMaker, int]] = {
    # kind: (generator, requests)
    "chats": (_chats, 600),
    "agent": (_agent, 600),
    "documents": (_documents, 600),
    "switching": (_switching, 600),
}


def chat_trace_length(kind: str, scale: float = 1.0) -> int:
    """Requests in a ``kind`` chat trace shortened by ``scale`` (quick runs), never under 60."""
    return max(int(CHAT_TRACE_KINDS[kind][1] * scale), 60)


def make_chat_trace(kind: str, machine: Machine, seed: int, scale: float = 1.0) -> ChatTrace:
    """The ``kind`` conversation workload on ``machine``; only the models it uses are listed."""
    maker, _ = CHAT_TRACE_KINDS[kind]
    catalogue = machine.catalogue()
    n = chat_trace_length(kind, scale)
    rng = random.Random(f"chat/{kind}/{seed}/{machine.total_gb}")
    wanted, convs, prompts, keeps, thinks = maker(catalogue, machine, rng, n)
    used = sorted(set(wanted))
    index = {m: i for i, m in enumerate(used)}
    extra = _other_apps(rng, n)
    return ChatTrace(kind, seed, tuple(catalogue[m] for m in used), tuple(index[m] for m in wanted),
                     tuple(convs), tuple(prompts), tuple(keeps), tuple(thinks), tuple(extra))
