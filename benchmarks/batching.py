"""Benchmarks (issue 9): continuous batching. Concurrent streaming requests on one model,
total generated tokens per second, mlx-tui against ``mlx_lm.server`` on the same model folder
and against its own one-at-a-time figure; one request alone against bare ``stream_generate``.

One float32 llama folder with random weights (few wide layers, so decoding is mostly matrix
work rather than per-step overhead) serves every contender:

* **bare** ``mlx_lm.stream_generate`` in this process, one request at a time (no server);
* **mlx-lm batch_generate** in this process: mlx-lm's own batched generation of the same
  requests at once, no server: what batching can gain on this machine at best;
* **mlx-tui**: ``mlx-tui --settings S --db D serve`` (default ``[engine]``: ``max_batch`` 32,
  ``prefill_step`` 2048), requests one at a time, then 8 and 32 at once; a second one with
  ``max_batch`` 8 takes 32 at once too (the rest wait in its queue: first tokens later);
* **mlx_lm.server** (``python -m mlx_lm.server --model PATH``, its defaults: decode
  concurrency 32, prompt concurrency 8, prefill step 2048), 8 and 32 at once.

Every request is a different short question (chat template, greedy, the same ``max_tokens``),
streamed (SSE, ``stream_options.include_usage``) from threads of this process with ``httpx``.
*Total tokens/s* = completion tokens of every request (the servers' own usage figures) / the
wall time from the first request sent to the last reply's end. Rounds rotate the order of the
contenders; ratios are medians of per-round ratios. Targets: mlx-tui at 8 and 32 concurrent at
least 1.0x ``mlx_lm.server``; mlx-tui at 8 concurrent at least 4x its own one-at-a-time
figure; one request alone at least 0.95x bare ``stream_generate`` (tokens / wall time of the
whole request, prompt included).

Run ``python -m benchmarks.batching [--quick]``; it prints a Markdown section.
"""

from __future__ import annotations

import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from mlx_tui.core.settings import EngineSettings

from . import common

ENGINE = EngineSettings()  # mlx-tui's defaults, as the servers below run them

__all__ = ["Plan", "run", "main"]

DTYPE = "float32"
SERVER_TARGET = 1.0
BATCH_TARGET = 4.0
ALONE_TARGET = 0.95
NARROW_BATCH = 8  # a second mlx-tui with [engine].max_batch = 8 (the default before 2026-12-01)
MANY = 32  # the concurrency the narrow one is run at
SHAPE: dict[str, int] = {  # about 34 MB in two wide layers
    "hidden_size": 512, "num_hidden_layers": 2, "intermediate_size": 2048,
    "num_attention_heads": 8, "num_key_value_heads": 4,
}
QUICK_SHAPE: dict[str, int] = {  # about 9 MB
    "hidden_size": 256, "num_hidden_layers": 2, "intermediate_size": 1024,
    "num_attention_heads": 4, "num_key_value_heads": 2,
}
TOPICS = ("lighthouse", "harbour", "glacier", "orchard", "volcano", "library", "bakery", "comet",
          "desert", "river", "castle", "market", "forest", "island", "bridge", "mine")
log = common.logger("batching")


@dataclass(frozen=True)
class Plan:
    shape: dict[str, int]
    max_tokens: int
    rounds: int
    alone: int  # requests one at a time (mlx-tui) and bare calls, per round
    concurrency: tuple[int, ...]

    @classmethod
    def for_mode(cls, quick: bool) -> "Plan":
        if quick:
            return cls(QUICK_SHAPE, 16, 1, 4, (8, 32))
        return cls(SHAPE, 32, 3, 4, (8, 32))


@dataclass
class Run:
    """One contender's run of a set of requests."""

    tokens: int
    seconds: float
    ttfts: list[float] = field(default_factory=list)
    per_request: list[float] = field(default_factory=list)  # tokens / whole request's seconds
    texts: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    cpu_seconds: float = 0.0  # the server's (or, in process, this process's) CPU time
    prompt_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens the server read from its prompt cache

    @property
    def tok_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0

    def add_alone(self, prompt: list[int], tokens: int, text: str, started: float,
                  first_at: float | None) -> None:
        """Count one in-process request of ``prompt`` that ended now."""
        seconds = time.perf_counter() - started
        self.tokens += tokens
        self.prompt_tokens += len(prompt)
        self.seconds += seconds
        self.ttfts.append((first_at or started) - started)
        self.per_request.append(tokens / seconds)
        self.texts.append(text)


def _messages(i: int) -> list[dict[str, str]]:
    """A short question whose first words differ from the last request's, so that neither
    server's prompt cache saves more than the chat template's first few tokens."""
    topic = TOPICS[i % len(TOPICS)]
    return [{"role": "user", "content": f"{topic.capitalize()} number {i}: tell me a story about it."}]


def _serve_many(server: common.ServerProcess, first: int, count: int, concurrency: int,
                max_tokens: int) -> Run:
    """``count`` requests, ``concurrency`` at a time, all started together."""
    import httpx

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    with httpx.Client(limits=limits) as client:
        def one(i: int) -> common.StreamResult:
            return common.chat_request(client, server, _messages(i), max_tokens=max_tokens, timeout=900)

        started, cpu = time.perf_counter(), server.cpu_seconds()
        with ThreadPoolExecutor(concurrency, thread_name_prefix="batching-client") as pool:
            results = list(pool.map(one, range(first, first + count)))
        seconds = time.perf_counter() - started
        cpu = server.cpu_seconds() - cpu
    run = Run(sum(r.completion_tokens for r in results), seconds, cpu_seconds=cpu)
    for r in results:
        run.prompt_tokens += r.prompt_tokens
        run.cached_tokens += r.cached_tokens
        if not r.ok:
            run.errors.append(r.error)
            continue
        run.ttfts.append(r.ttft)
        run.per_request.append(r.completion_tokens / r.seconds if r.seconds > 0 else 0.0)
        run.texts.append(r.text)
    return run


class _Bare:
    """mlx-lm in this process: the model loaded once, then ``stream_generate`` or
    ``batch_generate`` on the chat template's tokens, greedy."""

    def __init__(self, folder: Path) -> None:
        import mlx_lm

        self.model, self.tokenizer = mlx_lm.load(str(folder))

    def prompt(self, i: int) -> list[int]:
        return self.tokenizer.apply_chat_template(_messages(i), add_generation_prompt=True)

    def alone(self, first: int, count: int, max_tokens: int) -> Run:
        from mlx_lm import stream_generate
        from mlx_lm.sample_utils import make_sampler

        run = Run(0, 0.0)
        cpu = time.process_time()
        for i in range(first, first + count):
            started = time.perf_counter()
            text, tokens, first_at = [], 0, None
            for r in stream_generate(self.model, self.tokenizer, self.prompt(i), max_tokens=max_tokens,
                                     sampler=make_sampler(0.0)):
                if first_at is None:
                    first_at = time.perf_counter()
                text.append(r.text)
                tokens = r.generation_tokens
            run.add_alone(self.prompt(i), tokens, "".join(text), started, first_at)
        run.cpu_seconds = time.process_time() - cpu
        return run

    def engine_alone(self, first: int, count: int, max_tokens: int) -> Run:
        """One request at a time through mlx-lm's ``BatchGenerator`` (the engine's building
        block) with mlx-tui's default sizes, on this thread's stream: no server, no queue."""
        from mlx_lm.generate import BatchGenerator
        from mlx_lm.sample_utils import make_sampler

        eos = sorted(getattr(self.tokenizer, "eos_token_ids", ()) or ())
        run = Run(0, 0.0)
        cpu = time.process_time()
        for i in range(first, first + count):
            generator = BatchGenerator(self.model, max_tokens=max_tokens, stop_tokens=[[t] for t in eos],
                                       completion_batch_size=ENGINE.max_batch, prefill_batch_size=8,
                                       prefill_step_size=ENGINE.prefill_step)
            started, first_at, tokens, detok = time.perf_counter(), None, 0, self.tokenizer.detokenizer
            generator.insert([self.prompt(i)], max_tokens=[max_tokens], samplers=[make_sampler(0.0)])
            done = False
            while not done:
                for r in generator.next()[1]:
                    if first_at is None:
                        first_at = time.perf_counter()
                    if r.finish_reason != "stop":
                        tokens += 1
                        detok.add_token(r.token)
                    done = done or r.finish_reason is not None
            generator.close()
            detok.finalize()
            run.add_alone(self.prompt(i), tokens, detok.text, started, first_at)
        run.cpu_seconds = time.process_time() - cpu
        return run

    def batch(self, first: int, count: int, max_tokens: int) -> Run:
        from mlx_lm import batch_generate

        prompts = [self.prompt(i) for i in range(first, first + count)]
        started, cpu = time.perf_counter(), time.process_time()
        result = batch_generate(self.model, self.tokenizer, prompts, max_tokens=max_tokens, verbose=False)
        seconds = time.perf_counter() - started
        return Run(int(result.stats.generation_tokens), seconds, texts=list(result.texts),
                   cpu_seconds=time.process_time() - cpu, prompt_tokens=sum(len(p) for p in prompts))


def _matmul_ceiling(hidden: int, batch: int = 8, repeats: int = 20) -> tuple[float, float]:
    """GFLOP/s of ``x @ W`` for one row and for ``batch`` rows (W: hidden x 4*hidden): how much
    a batch can gain from the CPU's matrix routine alone."""
    import mlx.core as mx

    w = mx.random.normal((hidden, 4 * hidden))
    speeds = []
    for rows in (1, batch):
        x = mx.random.normal((rows, hidden))
        mx.eval(w, x, x @ w)
        started = time.perf_counter()
        for _ in range(repeats):
            mx.eval(x @ w)
        seconds = (time.perf_counter() - started) / repeats
        speeds.append(2 * rows * hidden * 4 * hidden / seconds / 1e9)
    return speeds[0], speeds[1]


def _rotate(names: list[str], k: int) -> list[str]:
    k %= len(names)
    return names[k:] + names[:k]


def run(quick: bool = False) -> str:
    """The Markdown section: batching against mlx_lm.server, one at a time and bare mlx-lm."""
    from mlx_tui.devtools.modelgen import write_random_model

    common.go_offline()
    plan = Plan.for_mode(quick)
    started = time.perf_counter()
    load_before = common.machine_load()
    runs: dict[str, list[Run]] = {}
    with common.work_folder("mlx-tui-batching-") as work:
        folder = write_random_model(work / "model", **plan.shape, dtype=DTYPE)
        desc = common.model_desc(folder, DTYPE)
        settings = common.write_settings(work / "settings.toml", {"model": str(folder)},
                                         cache={"preload": ["model"]},
                                         prompt_cache={"dir": str(work / "prompt-cache")})
        bare = _Bare(folder)
        gemv, gemm = _matmul_ceiling(plan.shape["hidden_size"])
        narrow = common.write_settings(work / "settings-8.toml", {"model": str(folder)},
                                     cache={"preload": ["model"]}, engine={"max_batch": NARROW_BATCH},
                                     prompt_cache={"dir": str(work / "prompt-cache-8")})
        with common.mlx_tui_serve(settings, work / "mlx-tui.db", "model", work / "mlx-tui.log") as tui, \
                common.mlx_tui_serve(narrow, work / "mlx-tui-8.db", "model", work / "mlx-tui-8.log") as tui8, \
                common.mlx_lm_server(folder, work / "mlx-lm.log") as lm:
            for server in (tui, tui8, lm):  # untimed: load, first allocations
                _serve_many(server, 1000, 2, 2, 4)
            bare.alone(1000, 1, 4)
            contenders: dict[str, Callable[[int], Run]] = {
                "bare": lambda base: bare.alone(base, plan.alone, plan.max_tokens),
                "tui alone": lambda base: _serve_many(tui, base, plan.alone, 1, plan.max_tokens),
                "bare engine": lambda base: bare.engine_alone(base, plan.alone, plan.max_tokens),
                "bare batch 8": lambda base: bare.batch(base + 800, 8, plan.max_tokens),
            }
            for n in plan.concurrency:
                contenders[f"tui {n}"] = lambda base, n=n: _serve_many(tui, base + 100 * n, n, n, plan.max_tokens)
                contenders[f"lm {n}"] = lambda base, n=n: _serve_many(lm, base + 100 * n, n, n, plan.max_tokens)
            contenders[f"tui {MANY} narrow"] = lambda base: _serve_many(tui8, base + 100 * MANY, MANY, MANY,
                                                                       plan.max_tokens)
            names = list(contenders)
            for r in range(plan.rounds):
                for name in _rotate(names, r * 3):  # who goes first changes
                    t = time.perf_counter()
                    # Requests of a round: the same ones for contenders that compare (one at a time:
                    # bare, engine, mlx-tui; n at once: each server and batch_generate), new ones for
                    # each contender of one server (so no server reads a prompt it has seen).
                    result = contenders[name](r * 10_000)
                    runs.setdefault(name, []).append(result)
                    log(f"round {r + 1}/{plan.rounds}: {name}: {result.tokens} tokens, "
                        f"{result.tok_s:.1f} tok/s ({time.perf_counter() - t:.1f} s)")
            tui_threads = tui.threads()
            tui_log = tui.log_path.read_text(errors="replace")
    total = time.perf_counter() - started
    return _report(quick, plan, runs, desc, total, load_before, (gemv, gemm), tui_threads,
                   tui_log.count("Traceback"))


def _prompt_cell(r: Run) -> str:
    """Prompt tokens of the round and how many the server read from its prompt cache."""
    return f"{r.prompt_tokens:,} ({r.cached_tokens:,})" if r.prompt_tokens else "-"


def _ratios(runs: dict[str, list[Run]], a: str, b: str, what: Callable[[Run], float]) -> list[float]:
    return [what(x) / what(y) for x, y in zip(runs[a], runs[b]) if what(y) > 0]


def _report(quick: bool, plan: Plan, runs: dict[str, list[Run]], desc: str, total: float,
            load_before: str, ceiling: tuple[float, float], threads: int, tracebacks: int) -> str:
    def med(name: str, what: Callable[[Run], float]) -> float:
        return statistics.median(what(r) for r in runs[name])

    tok_s: Callable[[Run], float] = lambda r: r.tok_s
    labels = {
        "bare": f"bare `stream_generate`, {plan.alone} requests one at a time",
        "tui alone": f"mlx-tui, {plan.alone} requests one at a time",
        "bare engine": f"bare `BatchGenerator` in process, {plan.alone} requests one at a time",
        "bare batch 8": "mlx-lm `batch_generate` in process, 8 at once (no server)",
    }
    for n in plan.concurrency:
        labels[f"tui {n}"] = f"mlx-tui, {n} at once"
        labels[f"lm {n}"] = f"`mlx_lm.server`, {n} at once"
    labels[f"tui {MANY} narrow"] = f"mlx-tui with `[engine].max_batch = {NARROW_BATCH}`, {MANY} at once"
    rows = ["| contender | total tok/s | vs mlx-tui one at a time | TTFT median s | tok/s per request (median) "
            "| CPU ms per token | tokens | prompt tokens (cached) | errors |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, label in labels.items():
        ratio = statistics.median(_ratios(runs, name, "tui alone", tok_s))
        ttft = [t for r in runs[name] for t in r.ttfts]
        per = [t for r in runs[name] for t in r.per_request]
        rows.append(f"| {label} | {med(name, tok_s):.1f} | {ratio:.2f}x | "
                    f"{statistics.median(ttft) if ttft else 0:.2f} | "
                    f"{statistics.median(per) if per else 0:.1f} | "
                    f"{med(name, lambda r: r.cpu_seconds / r.tokens if r.tokens else 0.0) * 1000:.0f} | "
                    f"{runs[name][0].tokens} | "
                    f"{_prompt_cell(runs[name][0])} | "
                    f"{sum(len(r.errors) for r in runs[name])} |")
    verdicts = []
    for n in plan.concurrency:
        ratios = _ratios(runs, f"tui {n}", f"lm {n}", tok_s)
        cpu = _ratios(runs, f"lm {n}", f"tui {n}", lambda r: r.cpu_seconds / r.tokens if r.tokens else 0.0)
        verdicts.append(f"* **mlx-tui vs `mlx_lm.server`, {n} concurrent, total tok/s: "
                        f"{common.ratio_summary(ratios)}; target at least {SERVER_TARGET:.1f}x: "
                        f"{common.verdict(statistics.median(ratios) >= SERVER_TARGET)}.** Server CPU "
                        f"time per token, as speed (mlx_lm.server's / mlx-tui's): "
                        f"{common.ratio_summary(cpu)}.")
    narrow = _ratios(runs, f"tui {MANY} narrow", f"lm {MANY}", tok_s)
    narrow_ttft = statistics.median(t for r in runs[f"tui {MANY} narrow"] for t in r.ttfts)
    default_ttft = statistics.median(t for r in runs[f"tui {MANY}"] for t in r.ttfts)
    lm_ttft = statistics.median(t for r in runs[f"lm {MANY}"] for t in r.ttfts)
    verdicts.append(f"* mlx-tui with `[engine].max_batch = {NARROW_BATCH}` vs `mlx_lm.server`, {MANY} "
                    f"concurrent, total tok/s: {common.ratio_summary(narrow)}. Median TTFT at "
                    f"{MANY} concurrent: mlx-tui {default_ttft:.2f} s with its default `max_batch` "
                    f"({ENGINE.max_batch}), {narrow_ttft:.2f} s with `max_batch = {NARROW_BATCH}` (the "
                    f"requests past the {NARROW_BATCH}th wait for a slot), `mlx_lm.server` {lm_ttft:.2f} s.")
    for n in plan.concurrency:
        ratios = _ratios(runs, f"tui {n}", "tui alone", tok_s)
        target = f"; target at least {BATCH_TARGET:.0f}x: " \
                 f"{common.verdict(statistics.median(ratios) >= BATCH_TARGET)}" if n == 8 else ""
        verdicts.append(f"* **mlx-tui {n} concurrent vs one at a time, total tok/s: "
                        f"{common.ratio_summary(ratios)}{target}.**")
    ceiling_ratios = _ratios(runs, "bare batch 8", "bare", tok_s)
    verdicts.append(f"* mlx-lm's own `batch_generate` of 8 vs bare `stream_generate` one at a time, in "
                    f"process: {common.ratio_summary(ceiling_ratios)}: what batching gains on this "
                    f"machine without any server. The CPU's matrix routine: `x @ W` "
                    f"({plan.shape['hidden_size']} x {4 * plan.shape['hidden_size']}) at "
                    f"{ceiling[0]:.2f} GFLOP/s for one row and {ceiling[1]:.2f} GFLOP/s for 8 rows "
                    f"({ceiling[1] / ceiling[0]:.2f}x).")
    alone = _ratios(runs, "tui alone", "bare",
                    lambda r: statistics.median(r.per_request) if r.per_request else 0.0)
    verdicts.append(f"* **One request alone, mlx-tui (over HTTP, streamed) vs bare `stream_generate` "
                    f"(in process), tokens / wall time of the whole request: "
                    f"{common.ratio_summary(alone)}; target at least {ALONE_TARGET:.2f}x: "
                    f"{common.verdict(statistics.median(alone) >= ALONE_TARGET)}.**")
    def per(r: Run) -> float:
        return statistics.median(r.per_request) if r.per_request else 0.0

    engine = _ratios(runs, "tui alone", "bare engine", per)
    bare_vs = _ratios(runs, "bare engine", "bare", per)
    verdicts.append(f"* One request alone, mlx-tui vs bare `BatchGenerator` in process (what the server, "
                    f"its queue and HTTP add to the engine's own building block): "
                    f"{common.ratio_summary(engine)}; bare `BatchGenerator` vs bare `stream_generate`: "
                    f"{common.ratio_summary(bare_vs)} (`stream_generate` runs on a stream of its own "
                    "and pipelines with `async_eval`; `BatchGenerator` on the thread's default stream).")
    for name, label in labels.items():
        errors = [e for r in runs[name] for e in r.errors]
        if errors:
            verdicts.append(f"* {label}: {len(errors)} request(s) failed; the first: `{errors[0][:300]}`")
    same = []
    for n in plan.concurrency:
        a, b = runs[f"tui {n}"][0].texts, runs[f"lm {n}"][0].texts
        same.append(f"{sum(x == y for x, y in zip(a, b))} of {len(a)} at {n}")
    alone_same = sum(x == y for x, y in zip(runs["tui alone"][0].texts, runs["bare"][0].texts))
    out = [
        "## Continuous batching", "",
        f"{'Quick' if quick else 'Full'} run: {total:.0f} s in all. Machine load average before: "
        f"{load_before}, after: {common.machine_load()}. Model: {desc}. Each request a different "
        f"short question through the chat template, greedy, `max_tokens` {plan.max_tokens}, "
        f"streamed; {plan.rounds} round(s) rotating the order of the contenders, the same requests "
        "for every contender of a round. *Total tok/s* = completion tokens of all the requests "
        "(each server's own usage figures) / wall time from the first request sent to the last "
        "reply's end; *TTFT* = request sent to the first text received; *CPU ms per token* = the "
        "server process's CPU time (user + system, every thread) over the run / tokens (in process: "
        f"this process's). mlx-tui runs its defaults "
        f"(`[engine].max_batch` {ENGINE.max_batch}, `prefill_step` {ENGINE.prefill_step}); "
        "`mlx_lm.server` its own (decode concurrency 32, prompt concurrency 8, "
        "prefill step 2048). Both servers stay up for the whole run, idle while the other works.", "",
        *rows, "", *verdicts,
        f"* Replies identical between mlx-tui and `mlx_lm.server` (greedy, same requests, first "
        f"round): {', '.join(same)}; mlx-tui one at a time vs bare: {alone_same} of "
        f"{len(runs['bare'][0].texts)}. mlx-tui's server had {threads} OS threads at the end; "
        f"tracebacks in its log: {tracebacks}.", "",
    ]
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> None:
    common.main(__doc__, run, "a 9 MB model, 16 tokens, one round", argv)


if __name__ == "__main__":
    main()
