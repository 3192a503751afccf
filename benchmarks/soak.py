"""Benchmarks (issue 9): a server that runs for weeks. The leak run and the soak, against real
servers on loopback, in blocks of requests: the server's OS threads, RSS and p99 latency per
block, the last block against the first.

* **Leak run**: ``mlx-tui --settings S --db D serve`` started as a user starts it (the real
  memory probe), one tiny model preloaded, 1,000 chat requests (``--quick``: 100) one after
  the other through ``/v1/chat/completions``, every other one streamed. Each request is a
  different short question (under ``[prompt_cache].min_tokens``, so no prompt cache is kept:
  this run is about what a request leaves behind, not about caches).
* **Soak**: 2,000 chat requests (``--quick``: 200), 8 at a time, spread at random (seeded) over
  three tiny models, through an :class:`~mlx_tui.server.serve.ApiServer` over
  :func:`~mlx_tui.core.runtime.build_runtime` in a child process whose memory probe is a
  :class:`~mlx_tui.core.memory.FixedMemoryProbe` with a small fake total that counts what MLX
  holds (``track_mlx``): two models fit under the warning threshold, the third takes memory
  past it (not past the emergency), so the cache manager keeps evicting and reloading models
  (and dropping prompt caches) under the requests. Evictions come from the memory thresholds,
  never from ``[cache].max_loaded``, which refuses a third model while the other two are in
  use. Every request shares a system prompt and asks its own question, so the prompt caches
  are used, dropped, spilled on unload and read back.

Per block: requests, errors (by kind), latency p50 / p99 / max, requests per second, the
server's threads (``/proc/PID/task``) and RSS after the block (and the most seen during it,
sampled 5 times a second), and the loads, evictions and refusals of the block
(``GET /metrics``). Targets: last block within 1.1x of the first for threads, RSS and p99
latency, and 0 errors.

Run ``python -m benchmarks.soak [--quick]``; it prints a Markdown section.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from . import common

__all__ = ["Plan", "Block", "run", "main"]

DTYPE = "float32"
FLAT_TARGET = 1.10  # last block at most 1.1x the first
MAX_TOKENS = 8
MODELS = ("alpha", "beta", "gamma")
SAMPLE_SECONDS = 0.2
# The fake memory budget of the soak, in model sizes M: a total of TOTAL_MODELS x M, of which
# other programs take all but ROOM_MODELS x M under the 85% warning. So one or two models and
# the KV and prompt caches of a burst of requests sit at the warning line and three models pass
# it (the cache evicts idle models to get back under), while the 98% emergency, where loads
# are refused, stays (0.98 - 0.85) x TOTAL_MODELS - ROOM_MODELS models' worth above it.
TOTAL_MODELS = 160
ROOM_MODELS = 4.5
SYSTEM_PROMPT = ("You are the help desk of a lighthouse museum. Answer in one short sentence, "
                 "kindly, and never make up opening hours, ticket prices or the names of the "
                 "keepers. If a visitor asks about the lamp, say it still turns every night.")
WORDS = ("lamp", "keeper", "tide", "ticket", "storm", "stairs", "lens", "fog", "harbour", "bell",
         "map", "ship", "night", "rock", "gull", "light", "wave", "door", "key", "tower")
log = common.logger("soak")


@dataclass(frozen=True)
class Plan:
    leak_requests: int
    soak_requests: int
    block: int  # requests per block
    concurrency: int

    @classmethod
    def for_mode(cls, quick: bool) -> "Plan":
        return cls(100, 200, 25, 8) if quick else cls(1000, 2000, 250, 8)


@dataclass
class Block:
    """The figures of one block of requests."""

    requests: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    seconds: float = 0.0
    threads: int = 0
    rss: int = 0
    peak_threads: int = 0
    peak_rss: int = 0
    counters: dict[str, float] = field(default_factory=dict)
    models: Counter[str] = field(default_factory=Counter)
    prompt_tokens: int = 0
    cached_tokens: int = 0
    examples: dict[str, str] = field(default_factory=dict)  # an error message of each kind
    cpu_seconds: float = 0.0  # the server's CPU time over the block
    gauges: dict[str, float] = field(default_factory=dict)  # after the block
    disk_files: int = 0  # prompt-cache files on disk after the block
    disk_bytes: int = 0

    @property
    def p99(self) -> float:
        return common.percentile(self.latencies, 99)


class _Sampler(threading.Thread):
    """The server's threads and RSS, 5 times a second, the most of each since the last reset."""

    def __init__(self, server: common.ServerProcess) -> None:
        super().__init__(name="soak-sampler", daemon=True)
        self.server = server
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self.peak_threads = 0
        self.peak_rss = 0

    def take(self) -> tuple[int, int]:
        with self._lock:
            peaks = self.peak_threads, self.peak_rss
            self.peak_threads = self.peak_rss = 0
        return peaks

    def run(self) -> None:
        while not self.stop.wait(SAMPLE_SECONDS):
            try:
                threads, rss = self.server.threads(), self.server.rss_bytes()
            except Exception:  # noqa: BLE001 - the process may be going away
                continue
            with self._lock:
                self.peak_threads = max(self.peak_threads, threads)
                self.peak_rss = max(self.peak_rss, rss)


COUNTERS = ("mlx_tui_model_loads", "mlx_tui_model_evictions", "mlx_tui_model_refusals",
            "mlx_tui_model_load_failures", "mlx_tui_request_errors")
GAUGES = ("mlx_tui_model_prompt_cache_bytes", "mlx_tui_mlx_active_bytes", "mlx_tui_memory_used_fraction")


def _question(rng: random.Random, i: int) -> str:
    return f"Question {i}: what about the " + " and the ".join(rng.sample(WORDS, 3)) + "?"


def _disk_tier(folder: Path | None) -> tuple[int, int]:
    files = list(folder.rglob("*.safetensors")) if folder is not None and folder.exists() else []
    return len(files), sum(f.stat().st_size for f in files)


def _drive(server: common.ServerProcess, plan_blocks: Sequence[list[tuple[str, list[dict[str, str]], bool]]],
           concurrency: int, disk: Path | None = None) -> list[Block]:
    """Send each block's requests (``concurrency`` at a time) and measure it."""
    import httpx

    sampler = _Sampler(server)
    sampler.start()
    blocks: list[Block] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    try:
        with httpx.Client(limits=limits) as client:
            before = common.metric_totals(server, COUNTERS)
            sampler.take()
            for requests in plan_blocks:
                block = Block(requests=len(requests))

                def one(item: tuple[str, list[dict[str, str]], bool]) -> common.StreamResult:
                    model, messages, stream = item
                    target = common.ServerProcess(server.name, server.proc, server.url, model,
                                                  server.log_path)
                    return common.chat_request(client, target, messages, max_tokens=MAX_TOKENS,
                                               stream=stream, timeout=300)

                started, cpu = time.perf_counter(), server.cpu_seconds()
                with ThreadPoolExecutor(concurrency, thread_name_prefix="soak-client") as pool:
                    results = list(pool.map(one, requests))
                block.seconds = time.perf_counter() - started
                block.cpu_seconds = server.cpu_seconds() - cpu
                for (model, _, _), r in zip(requests, results):
                    block.models[model] += 1
                    block.latencies.append(r.seconds)
                    block.prompt_tokens += r.prompt_tokens
                    block.cached_tokens += r.cached_tokens
                    if not r.ok:
                        kind = r.error.split(":")[0] if r.error else f"HTTP {r.status}"
                        block.errors[kind] += 1
                        block.examples.setdefault(kind, r.error)
                    elif r.completion_tokens <= 0 and not r.text:
                        block.errors["empty reply"] += 1
                block.threads, block.rss = server.threads(), server.rss_bytes()
                block.peak_threads, block.peak_rss = sampler.take()
                block.peak_threads = max(block.peak_threads, block.threads)
                block.peak_rss = max(block.peak_rss, block.rss)
                after = common.metric_totals(server, COUNTERS + GAUGES)
                block.counters = {k: after[k] - before[k] for k in COUNTERS}
                block.gauges = {k: after[k] for k in GAUGES}
                block.disk_files, block.disk_bytes = _disk_tier(disk)
                before = after
                blocks.append(block)
                log(f"{server.name}: block {len(blocks)}/{len(plan_blocks)}: {block.requests} requests in "
                    f"{block.seconds:.1f} s, p99 {block.p99 * 1000:.0f} ms, threads {block.threads}, "
                    f"RSS {block.rss / 1e6:.0f} MB, errors {sum(block.errors.values())}")
    finally:
        sampler.stop.set()
        sampler.join(5)
    return blocks


def _blocks_of(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def _warm_up(server: common.ServerProcess, models: Sequence[str], messages: Callable[[int], list[dict[str, str]]]) -> None:
    """Untimed: every model loaded once, the first allocations and imports done."""
    import httpx

    with httpx.Client() as client:
        for i, model in enumerate(list(models) * 2):
            target = common.ServerProcess(server.name, server.proc, server.url, model, server.log_path)
            r = common.chat_request(client, target, messages(i), max_tokens=MAX_TOKENS, stream=bool(i % 2),
                                    timeout=300)
            if not r.ok:
                raise RuntimeError(f"warm-up request to {model} failed: {r.error}\n{server.log_tail()}")


def leak_run(work: Path, plan: Plan, model: Path) -> tuple[list[Block], Block, dict[str, Any]]:
    """The blocks on one long-lived ``mlx-tui serve``, then the last block's requests again on a
    fresh one (the control: what the machine gives right now to a server with no history)."""
    rng = random.Random(1)
    items = [("tiny", [{"role": "user", "content": _question(rng, i)}], bool(i % 2))
             for i in range(plan.leak_requests)]
    blocks: list[Block] = []
    facts: dict[str, Any] = {}
    for run in ("long", "fresh"):
        settings = common.write_settings(work / f"leak-{run}.toml", {"tiny": str(model)},
                                         cache={"preload": ["tiny"]},
                                         prompt_cache={"dir": str(work / f"leak-{run}-prompt-cache")})
        with common.mlx_tui_serve(settings, work / f"leak-{run}.db", "tiny", work / f"leak-{run}.log") as server:
            if run == "long":
                facts.update(threads=server.threads(), rss=server.rss_bytes())
            _warm_up(server, ["tiny"], lambda i: [{"role": "user", "content": f"warm up {i}"}])
            if run == "long":
                facts.update(threads_warm=server.threads(), rss_warm=server.rss_bytes())
                blocks = _drive(server, _blocks_of(items, plan.block), 1)
            else:
                (control,) = _drive(server, [items[-plan.block:]], 1)
            facts[f"tracebacks_{run}"] = server.log_path.read_text(errors="replace").count("Traceback")
    return blocks, control, facts


def soak_run(work: Path, plan: Plan, models: dict[str, Path]) -> tuple[list[Block], Block, dict[str, Any]]:
    """The blocks on one long-lived server, then the last block's requests on a fresh one."""
    rng = random.Random(2)
    model_bytes = max(sum(p.stat().st_size for p in common.weight_files(m)) for m in models.values())
    total = int(model_bytes * TOTAL_MODELS)
    base = (0.85 * total - ROOM_MODELS * model_bytes) / total

    def messages(i: int) -> list[dict[str, str]]:
        return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": _question(rng, i)}]

    items = [(rng.choice(MODELS), messages(i), bool(i % 2)) for i in range(plan.soak_requests)]
    facts: dict[str, Any] = {"total": total, "model_bytes": model_bytes, "base": base}
    blocks: list[Block] = []
    for run in ("long", "fresh"):
        disk = work / f"soak-{run}-prompt-cache"
        settings = common.write_settings(
            work / f"soak-{run}.toml", {k: str(v) for k, v in models.items()},
            memory={"poll_seconds": 0.5}, prompt_cache={"dir": str(disk)})
        config = {"settings": str(settings), "db": str(work / f"soak-{run}.db"),
                  "probe": {"total_bytes": total, "used_fraction": base, "track_mlx": True}}
        with common.api_child("soak", config, MODELS[0], work / f"soak-{run}.log") as server:
            if run == "long":
                facts.update(threads=server.threads(), rss=server.rss_bytes())
            _warm_up(server, MODELS, messages)
            if run == "long":
                facts.update(threads_warm=server.threads(), rss_warm=server.rss_bytes())
                blocks = _drive(server, _blocks_of(items, plan.block), plan.concurrency, disk)
            else:
                (control,) = _drive(server, [items[-plan.block:]], plan.concurrency, disk)
            facts[f"tracebacks_{run}"] = server.log_path.read_text(errors="replace").count("Traceback")
    return blocks, control, facts


# --------------------------------------------------------------------------- report


def _mb(n: float) -> str:
    return f"{n / 1e6:.0f} MB"


def _row(label: str, b: Block, disk: bool) -> str:
    c = b.counters
    row = (f"| {label} | {b.requests} | {sum(b.errors.values())} | "
           f"{common.percentile(b.latencies, 50) * 1000:.0f} | {b.p99 * 1000:.0f} | "
           f"{max(b.latencies) * 1000:.0f} | {b.requests / b.seconds:.1f} | "
           f"{b.cpu_seconds / b.requests * 1000:.1f} | {b.threads} ({b.peak_threads}) | "
           f"{_mb(b.rss)} ({_mb(b.peak_rss)}) | {c.get('mlx_tui_model_loads', 0):.0f} | "
           f"{c.get('mlx_tui_model_evictions', 0):.0f} | {c.get('mlx_tui_model_refusals', 0):.0f} |")
    if disk:
        row += (f" {b.gauges.get('mlx_tui_model_prompt_cache_bytes', 0) / 1e6:.2f} / "
                f"{b.gauges.get('mlx_tui_mlx_active_bytes', 0) / 1e6:.2f} MB | "
                f"{b.disk_files:,} ({b.disk_bytes / 1e6:.0f} MB) |")
    return row


def _table(blocks: list[Block], control: Block, size: int, disk: bool) -> list[str]:
    head = ("| block | requests | errors | p50 ms | p99 ms | max ms | req/s | server CPU ms/request | "
            "threads after (peak) | RSS after (peak) | loads | evictions | refusals |")
    rule = "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    if disk:
        head += " prompt caches / MLX in memory after | prompt-cache files on disk after |"
        rule += "---:|---:|"
    rows = [head, rule]
    rows += [_row(f"{i * size + 1}-{i * size + b.requests}", b, disk) for i, b in enumerate(blocks)]
    rows.append(_row(f"control: requests {len(blocks) * size - control.requests + 1}-{len(blocks) * size} "
                     "again on a fresh server", control, disk))
    return rows


def _prompts(blocks: list[Block]) -> str:
    requests = sum(b.requests for b in blocks)
    prompt = sum(b.prompt_tokens for b in blocks)
    cached = sum(b.cached_tokens for b in blocks)
    return (f"{prompt / requests:.0f} prompt tokens per request on average, "
            f"{cached / prompt if prompt else 0:.0%} of them read from a prompt cache")


def _cpu(b: Block) -> float:
    return b.cpu_seconds / b.requests if b.requests else 0.0


def _verdicts(blocks: list[Block], control: Block) -> tuple[list[str], bool]:
    first, last = blocks[0], blocks[-1]
    errors = sum(sum(b.errors.values()) for b in blocks)
    kinds = Counter[str]()
    for b in blocks:
        kinds.update(b.errors)
    checks = [("threads", last.threads / first.threads), ("RSS", last.rss / first.rss),
              ("p99 latency", last.p99 / first.p99 if first.p99 else 0.0)]
    lines = []
    ok = errors == 0
    for what, value in checks:
        met = value <= FLAT_TARGET
        ok = ok and met
        lines.append(f"{what} {value:.3f}x ({common.verdict(met)})")
    err = f"errors {errors} ({common.verdict(errors == 0)}" + (
        f": {', '.join(f'{k} x{v}' for k, v in kinds.most_common())})" if errors else ")")
    out = [f"* **Last block against the first: {'; '.join(lines)}; {err}.** Target: each at most "
           f"{FLAT_TARGET:.1f}x, 0 errors.",
           f"* Cross-checks. Server CPU time per request, last block against the first: "
           f"{_cpu(last) / _cpu(first):.3f}x (other jobs on the machine move it much less than "
           f"latency). The last block against the control (the same requests on a fresh server "
           f"right after, so the machine is as busy): p99 latency {last.p99 / control.p99:.3f}x, CPU "
           f"time per request {_cpu(last) / _cpu(control):.3f}x, RSS {last.rss / control.rss:.3f}x, "
           f"threads {last.threads / control.threads:.3f}x: what the server's history costs, "
           "without the machine's drift."]
    examples: dict[str, str] = {}
    for b in [*blocks, control]:
        for kind, message in b.examples.items():
            examples.setdefault(kind, message)
    out += [f"* First `{kind}` answer: `{message[:300]}`" for kind, message in examples.items()]
    if control.errors:
        out.append(f"* The control block had {sum(control.errors.values())} error(s).")
    return out, ok


def run(quick: bool = False) -> str:
    """The Markdown section: the leak run and the soak."""
    from mlx_tui.devtools.modelgen import write_random_model

    common.go_offline()
    plan = Plan.for_mode(quick)
    started = time.perf_counter()
    load_before = common.machine_load()
    with common.work_folder("mlx-tui-soak-") as work:
        models = {name: write_random_model(work / name, dtype=DTYPE, seed=i) for i, name in enumerate(MODELS)}
        log(f"leak run: {plan.leak_requests} requests")
        t = time.perf_counter()
        leak, leak_control, leak_facts = leak_run(work, plan, models["alpha"])
        leak_seconds = time.perf_counter() - t
        log(f"soak: {plan.soak_requests} requests, {plan.concurrency} at a time, over {len(MODELS)} models")
        t = time.perf_counter()
        soak, soak_control, soak_facts = soak_run(work, plan, models)
        soak_seconds = time.perf_counter() - t
        desc = common.model_desc(models["alpha"], DTYPE)
    leak_lines, _ = _verdicts(leak, leak_control)
    soak_lines, _ = _verdicts(soak, soak_control)
    loads = sum(b.counters.get("mlx_tui_model_loads", 0) for b in soak)
    evictions = sum(b.counters.get("mlx_tui_model_evictions", 0) for b in soak)
    f = soak_facts
    out = [
        "## Soak and leak run", "",
        f"{'Quick' if quick else 'Full'} run: {time.perf_counter() - started:.0f} s in all (leak run "
        f"{leak_seconds:.0f} s, soak {soak_seconds:.0f} s, server start-ups and control blocks "
        f"included). Machine load average before: {load_before}, after: {common.machine_load()}. "
        f"Models: {desc} (three of them, seeds 0-2); greedy, `max_tokens` {MAX_TOKENS}; every "
        "other request streamed (SSE). Threads and RSS are the server process's, read right after "
        f"each block (peak: the most seen while the block ran, sampled every {SAMPLE_SECONDS:g} s); "
        "latency is each request's, from sending it to its last byte, as the client saw it; CPU "
        "time is the server process's (user + system, every thread) over the block; loads, "
        "evictions and refusals are the server's own counters (`GET /metrics`) over the block. "
        "After the blocks, the last block's requests are sent again to a fresh server of the same "
        "settings (the control row).", "",
        f"### Leak run: {plan.leak_requests:,} requests, one at a time, `mlx-tui serve`", "",
        f"`mlx-tui --settings S --db D serve` (real memory probe), the model preloaded; before the "
        f"blocks: {leak_facts['threads']} threads and {_mb(leak_facts['rss'])} once serving, "
        f"{leak_facts['threads_warm']} threads and {_mb(leak_facts['rss_warm'])} after "
        f"2 untimed warm-up requests. Each request a different question ({_prompts(leak)}; below "
        "`[prompt_cache].min_tokens`, so nothing is kept between requests).", "",
        *_table(leak, leak_control, plan.block, False), "",
        *leak_lines,
        f"* Tracebacks in the servers' logs: {leak_facts['tracebacks_long']} (long-lived), "
        f"{leak_facts['tracebacks_fresh']} (control).", "",
        f"### Soak: {plan.soak_requests:,} requests, {plan.concurrency} at a time, 3 models, evictions", "",
        "An `ApiServer` over `build_runtime` in a child process (what `mlx-tui serve` runs), with a "
        f"`FixedMemoryProbe`: a fake total of {_mb(f['total'])} ({TOTAL_MODELS} models' "
        f"worth) of which {f['base']:.1%} is taken by other programs, plus what MLX holds "
        f"(`track_mlx`). That leaves {ROOM_MODELS:g} models' worth ({_mb(ROOM_MODELS * f['model_bytes'])}; "
        f"a model is {_mb(f['model_bytes'])}) under the 85% warning for the models, their KV "
        "caches and their prompt caches: one or two models and a burst of requests fit, three models "
        "with requests under way pass it, and the cache evicts idle models or prompt caches at the "
        "next admission or memory poll (`[memory].poll_seconds = 0.5`); the 98% emergency, where "
        f"loads are refused, is {_mb(0.98 * f['total'] - f['base'] * f['total'])} above what other "
        "programs take. No `[cache].max_loaded` (it refuses a third model while two are in use). "
        "Each request picks one of the three models at random (seeded) and sends the same system "
        f"prompt with its own question ({_prompts(soak)}), so prompt caches are kept, reused, "
        "dropped under the budget, written to disk and read back. Before the blocks: "
        f"{f['threads']} threads, {_mb(f['rss'])}; after 6 untimed warm-up requests: "
        f"{f['threads_warm']} threads, {_mb(f['rss_warm'])}. Over the run: {loads:.0f} loads and "
        f"{evictions:.0f} evictions.", "",
        *_table(soak, soak_control, plan.block, True), "",
        *soak_lines,
        f"* Tracebacks in the servers' logs: {f['tracebacks_long']} (long-lived), "
        f"{f['tracebacks_fresh']} (control).", "",
    ]
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> None:
    common.main(__doc__, run, "10x fewer requests", argv, child=common.serve_child)


if __name__ == "__main__":
    main()
