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
]

BITS_PER_WEIGHT = 4.5
LOAD_OVERHEAD_SECONDS = 1.5
EXTRA_LEVELS = (0.0, 0.0, 0.04, 0.08, 0.12)
"""Fractions of memory other apps take on top of ``base`` (0 is drawn twice as often). At most
12%: a jump from just under the 85% warning stays under the 98% emergency, so an app starting never
forces the unload-everything path, which no policy could do anything about."""


@dataclass(frozen=True, slots=True)
class ModelSpec:
    name: str
    params_b: float

    @property
    def size_bytes(self) -> int:
        return int(self.params_b * 1e9 * BITS_PER_WEIGHT / 8)

    def load_seconds(self, disk_gb_per_s: float) -> float:
        return self.size_bytes / (disk_gb_per_s * 1e9) + LOAD_OVERHEAD_SECONDS


MODELS: tuple[ModelSpec, ...] = (
    ModelSpec("qwen2.5-coder-1.5b", 1.54),
    ModelSpec("llama-3.2-3b", 3.21),
    ModelSpec("phi3.5-mini-4k", 3.82),
    ModelSpec("qwen2.5-7b", 7.62),
    ModelSpec("qwen2.5-14b", 14.77),
    ModelSpec("qwen2.5-coder-32b", 32.76),
    ModelSpec("deepseek-r1-70b", 70.55),
    ModelSpec("mistral-large-123b", 122.6),
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
