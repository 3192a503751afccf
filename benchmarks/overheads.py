"""Benchmarks §3: what ModelCache and ChatEngine cost on top of bare mlx-lm, measured side by side.

Everything runs in one process, on models built for the run with
:func:`mlx_tui.devtools.modelgen.write_random_model` (real ``mlx_lm`` llama folders, random
float32 weights: float32 because the CPU build of MLX computes it fastest; bfloat16 is slow
there). Every figure is a median over repeats whose order rotates each time, next to the
baseline measured in the same repeats; ratios are what we report, never absolute claims.

* **Load**: reading the safetensors files into memory (the floor), bare ``mlx_lm.load(path)``
  (+ ``mx.eval(model)``, a no-op after its own eager ``mx.eval(model.parameters())``: it makes
  the baseline do what the cache does, which evaluates the whole module), bare
  ``mlx_lm.utils.load_model`` (weights only), a cold ``ModelCache`` load (a new runtime built
  with :func:`~mlx_tui.core.runtime.build_runtime`, hence a new loader with no tokenizer, the
  real :class:`~mlx_tui.core.memory.SystemMemoryProbe`) and a reload of an evicted model whose
  tokenizer the loader kept. The page cache is warmed by reading every file once before any
  timing, and each contender runs once untimed (imports, first allocations), so all timings
  are warm-cache timings.
* **Chat**: tokens per second of ``ChatEngine.stream`` against bare ``mlx_lm.stream_generate``
  on the same small model, same prompt (the model's chat template), greedy (temperature 0),
  same ``max_tokens``; the replies must be identical, which shows the two did the same work.

Besides wall time every call's CPU time (user + system, all threads of the process) is
recorded: on a machine shared with other work, CPU time moves much less than wall time, so its
ratio is the cross-check of the wall-time verdict.

Run ``python -m benchmarks.overheads [--quick]``; it prints a Markdown section.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

__all__ = ["Plan", "Meter", "Samples", "measure_loads", "measure_chat", "run", "main"]

DTYPE = "float32"
LOAD_TARGET = 1.05  # ModelCache load at most 5% slower than bare mlx_lm.load
CHAT_TARGET = 0.95  # ChatEngine tokens/s at least 95% of bare stream_generate
MIN_REPEATS = 3
WARMUP_TOKENS = 16
PROMPT = "Tell me about the lighthouse keeper who counted the waves every night."
CHAT_SHAPE: dict[str, int] = {  # 65 MB in few wide layers, so CPU decoding is not glacial
    "hidden_size": 512, "num_hidden_layers": 4, "intermediate_size": 2048,
    "num_attention_heads": 8, "num_key_value_heads": 4,
}


@dataclass(frozen=True)
class Plan:
    """Sizes, repeats and time budgets of one run (a phase stops starting repeats once past
    its budget, after at least :data:`MIN_REPEATS`)."""

    load_bytes: int
    load_repeats: int
    load_budget_seconds: float
    chat_repeats: int
    chat_budget_seconds: float
    max_tokens: int

    @classmethod
    def for_mode(cls, quick: bool) -> "Plan":
        if quick:
            return cls(load_bytes=100_000_000, load_repeats=5, load_budget_seconds=8,
                       chat_repeats=3, chat_budget_seconds=8, max_tokens=32)
        return cls(load_bytes=1_000_000_000, load_repeats=9, load_budget_seconds=90,
                   chat_repeats=9, chat_budget_seconds=70, max_tokens=128)


class Meter:
    """Wall seconds, CPU seconds (user + system, every thread) and minor page faults of a block."""

    wall = cpu = 0.0
    faults = 0

    @staticmethod
    def _usage() -> tuple[float, int]:
        import resource

        u = resource.getrusage(resource.RUSAGE_SELF)
        return u.ru_utime + u.ru_stime, u.ru_minflt

    def __enter__(self) -> "Meter":
        self._cpu, self._faults = self._usage()
        self._wall = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self._wall
        cpu, faults = self._usage()
        self.cpu, self.faults = cpu - self._cpu, faults - self._faults


@dataclass
class Samples:
    """Figures per contender, one per repeat, in the order measured."""

    values: dict[str, list[float]] = field(default_factory=dict)

    def add(self, name: str, value: float) -> None:
        self.values.setdefault(name, []).append(value)

    def median(self, name: str) -> float:
        return statistics.median(self.values[name])

    def spread(self, name: str, digits: int = 3) -> str:
        v = self.values[name]
        return f"{min(v):.{digits}f}-{max(v):.{digits}f}"

    def ratios(self, name: str, base: str) -> list[float]:
        """``name / base`` within each repeat (both measured in that repeat, close in time)."""
        return _paired(self.values[name], self.values[base])


def _paired(values: Sequence[float], bases: Sequence[float]) -> list[float]:
    return [a / b for a, b in zip(values, bases, strict=True)]


def _free() -> None:
    """Return MLX memory to the system between measurements."""
    import mlx.core as mx

    gc.collect()
    mx.clear_cache()


def _log(message: str) -> None:
    print(f"[overheads] {message}", file=sys.stderr, flush=True)


def _rotations(names: Sequence[str], repeats: int) -> list[list[str]]:
    """One order per repeat: rotated by one each time, reversed every other round, so no
    contender always runs first, last or right after the same neighbour."""
    orders = []
    for i in range(repeats):
        k = i % len(names)
        order = list(names[k:]) + list(names[:k])
        orders.append(order[::-1] if (i // len(names)) % 2 else order)
    return orders


def _repeat(contenders: dict[str, Callable[[], Any]], repeats: int, budget: float,
            each: Callable[[str, Any], None], after_repeat: Callable[[int], None]) -> int:
    """Run every contender once per repeat in rotated order; returns the repeats done."""
    started = time.perf_counter()
    done = 0
    for order in _rotations(list(contenders), repeats):
        if done >= MIN_REPEATS and time.perf_counter() - started > budget:
            _log(f"time budget of {budget:.0f} s spent after {done} repeats")
            break
        for name in order:
            each(name, contenders[name]())
        done += 1
        after_repeat(done)
    return done


def _weight_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("model*.safetensors"))


def _read_all(files: Sequence[Path]) -> int:
    """Read every file into a fresh buffer (as a load must allocate); returns bytes read."""
    total = 0
    for path in files:
        data = path.read_bytes()
        total += len(data)
        del data
    return total


def _write_settings(path: Path, models: dict[str, str]) -> None:
    """A settings file with only ``models`` (no folder or Hugging Face scans, no preload)."""
    from mlx_tui.core.settings import parse_settings, write_settings

    write_settings(parse_settings({
        "models": models,
        "catalog": {"dirs": [], "huggingface_cache": False},
        "cache": {"preload": []},
    }), path)


def _rss_bytes() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def _machine_load() -> str:
    try:
        one, five, _ = os.getloadavg()
    except OSError:
        return "n/a"
    return f"{one:.2f} (1 min) / {five:.2f} (5 min)"


# --------------------------------------------------------------------------- load


LOAD_CONTENDERS = ("read files", "bare mlx_lm.load", "bare load_model", "ModelCache cold",
                   "ModelCache reload")


@dataclass
class LoadResult:
    wall: Samples
    cpu: Samples
    faults: Samples
    internals: Samples  # the cache's own figures (ModelView), per cache contender
    facts: dict[str, Any]
    repeats: int


def measure_loads(folder: Path, work: Path, plan: Plan) -> LoadResult:
    """Time every load contender, interleaved, ``plan.load_repeats`` times (or its budget)."""
    import mlx.core as mx
    import mlx_lm
    from mlx_lm.utils import load_model

    from mlx_tui.core.runtime import build_runtime

    settings_path = work / "settings.toml"
    _write_settings(settings_path, {"big": str(folder)})
    files = _weight_files(folder)
    facts: dict[str, Any] = {"weight_bytes": sum(p.stat().st_size for p in files),
                             "files": len(files)}
    internals = Samples()
    build_seconds: list[float] = []

    def read_files() -> Meter:
        with Meter() as m:
            _read_all(files)
        return m

    def bare_load() -> Meter:
        with Meter() as m:
            model, tokenizer = mlx_lm.load(str(folder))
            mx.eval(model)
        del model, tokenizer
        return m

    def bare_weights() -> Meter:
        with Meter() as m:
            model, _ = load_model(folder)
        del model
        return m

    def cache_load(runtime: Any, label: str) -> Meter:
        with Meter() as m:
            runtime.cache.load("big").result()
        view = runtime.cache.get("big")
        internals.add(f"{label} weights", view.weights_seconds)
        internals.add(f"{label} tokenizer", view.tokenizer_seconds)
        internals.add(f"{label} outside loader", m.wall - view.load_time_seconds)
        facts["resident_bytes"] = view.resident_bytes
        runtime.cache.evict("big", reason="benchmark")
        return m

    def cache_cold() -> Meter:
        started = time.perf_counter()
        runtime = build_runtime(settings_path, db_path=work / "cold.db")
        build_seconds.append(time.perf_counter() - started)
        try:
            return cache_load(runtime, "cold")
        finally:
            runtime.close()

    warm = build_runtime(settings_path, db_path=work / "warm.db")
    contenders: dict[str, Callable[[], Meter]] = dict(zip(LOAD_CONTENDERS, (
        read_files, bare_load, bare_weights, cache_cold, lambda: cache_load(warm, "reload"))))
    wall, cpu, faults = Samples(), Samples(), Samples()
    rss_after_free: list[int] = []

    def each(name: str, m: Meter) -> None:
        wall.add(name, m.wall)
        cpu.add(name, m.cpu)
        faults.add(name, m.faults)
        _free()
        rss_after_free.append(_rss_bytes())

    def after_repeat(i: int) -> None:
        _log(f"load repeat {i}: " + ", ".join(f"{n} {wall.values[n][-1]:.3f} s" for n in contenders))

    try:
        _read_all([p for p in folder.iterdir() if p.is_file()])  # warm the page cache
        for fn in contenders.values():  # untimed: imports, the warm runtime's tokenizer
            fn()
            _free()
        internals.values.clear()
        build_seconds.clear()
        repeats = _repeat(contenders, plan.load_repeats, plan.load_budget_seconds, each, after_repeat)
    finally:
        warm.close()
        _free()
    facts["record_load_seconds"] = _time_record_load(work / "probe.db")
    facts["rss_after_free"] = max(rss_after_free, default=0)
    facts["runtime_build_seconds"] = statistics.median(build_seconds) if build_seconds else 0.0
    return LoadResult(wall, cpu, faults, internals, facts, repeats)


def _time_record_load(db_path: Path, times: int = 20) -> float:
    """Median seconds of one ``Store.record_load`` (an autocommitted SQLite write), which
    ModelCache does before a load's future resolves."""
    from mlx_tui.core.store import Store

    store = Store(db_path)
    try:
        seconds = []
        for _ in range(times):
            started = time.perf_counter()
            store.record_load("probe", 1.0)
            seconds.append(time.perf_counter() - started)
    finally:
        store.close()
    return statistics.median(seconds)


# --------------------------------------------------------------------------- chat


BARE, ENGINE = "bare stream_generate", "ChatEngine.stream"


@dataclass
class ChatResult:
    tok_s: Samples  # tokens / wall seconds of the whole call
    cpu_per_token: Samples  # CPU seconds / token
    decode: Samples  # each side's own decode tokens/s
    facts: dict[str, Any]
    repeats: int


def measure_chat(folder: Path, work: Path, plan: Plan) -> ChatResult:
    """tokens/s of ChatEngine.stream and of bare stream_generate, alternating."""
    import mlx.core as mx
    import mlx_lm
    from mlx_lm import stream_generate
    from mlx_lm.sample_utils import make_sampler

    from mlx_tui.core.chat import ChatMessage, GenerationParams
    from mlx_tui.core.runtime import build_runtime

    settings_path = work / "chat-settings.toml"
    _write_settings(settings_path, {"chat": str(folder)})
    runtime = build_runtime(settings_path, db_path=work / "chat.db")
    messages = [ChatMessage("user", PROMPT)]
    model, tokenizer = mlx_lm.load(str(folder))
    mx.eval(model)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": PROMPT}],
                                           add_generation_prompt=True, tokenize=False)
    facts: dict[str, Any] = {"texts": {}, "tokens": {}}

    def engine(max_tokens: int = plan.max_tokens) -> tuple[Meter, int, float]:
        """(meter, tokens, the engine's own decode tokens/s)."""
        parts: list[str] = []
        stats = None
        params = GenerationParams(temperature=0.0, max_tokens=max_tokens)
        with Meter() as m:
            for delta in runtime.chat.stream("chat", messages, params):
                parts.append(delta.text)
                stats = delta.stats or stats
        assert stats is not None
        facts["texts"][ENGINE] = "".join(parts)
        facts["tokens"][ENGINE] = stats.tokens
        facts["prompt_tokens"] = stats.prompt_tokens
        return m, stats.tokens, stats.tokens_per_second

    def bare(max_tokens: int = plan.max_tokens) -> tuple[Meter, int, float]:
        parts: list[str] = []
        last = None
        with Meter() as m:
            for response in stream_generate(model, tokenizer, prompt, max_tokens=max_tokens,
                                            sampler=make_sampler(temp=0.0)):
                parts.append(response.text)
                last = response
        assert last is not None
        facts["texts"][BARE] = "".join(parts)
        facts["tokens"][BARE] = last.generation_tokens
        return m, last.generation_tokens, last.generation_tps

    contenders = {BARE: bare, ENGINE: engine}
    tok_s, cpu_per_token, decode = Samples(), Samples(), Samples()

    def each(name: str, result: tuple[Meter, int, float]) -> None:
        m, tokens, decode_tps = result
        tok_s.add(name, tokens / m.wall)
        cpu_per_token.add(name, m.cpu / tokens)
        decode.add(name, decode_tps)

    def after_repeat(i: int) -> None:
        _log(f"chat repeat {i}: " + ", ".join(f"{n} {tok_s.values[n][-1]:.1f} tok/s" for n in contenders))

    try:
        runtime.cache.load("chat").result()
        for fn in contenders.values():  # untimed warm-up: first-call costs, not length
            fn(WARMUP_TOKENS)
        repeats = _repeat(contenders, plan.chat_repeats, plan.chat_budget_seconds, each, after_repeat)
    finally:
        runtime.cache.evict("chat", reason="benchmark")
        runtime.close()
        del model, tokenizer
        _free()
    facts["same_text"] = facts["texts"].get(ENGINE) == facts["texts"].get(BARE)
    return ChatResult(tok_s, cpu_per_token, decode, facts, repeats)


# --------------------------------------------------------------------------- report


def _gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB"


def _verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def _ratio_summary(ratios: list[float]) -> str:
    """Median of per-repeat ratios and their range (not the ratio of the two medians)."""
    return (f"{statistics.median(ratios):.3f}x (median of per-repeat ratios, range "
            f"{min(ratios):.3f}-{max(ratios):.3f})")


LOAD_WHAT = {
    "read files": "`Path.read_bytes()` of every safetensors file into a fresh buffer",
    "bare mlx_lm.load": "`mlx_lm.load(path)` (`load_model(lazy=False)` evaluates "
                        "`model.parameters()`, then `load_tokenizer`) + `mx.eval(model)`",
    "bare load_model": "`mlx_lm.utils.load_model(path)`: weights only, no tokenizer",
    "ModelCache cold": "`cache.load(name).result()` on a new runtime (new `MlxLoader`, "
                       "tokenizer loaded): admission with `SystemMemoryProbe`, a load "
                       "thread, `load_model(lazy=True)` + `mx.eval(model)`, store, events",
    "ModelCache reload": "the same after `cache.evict(name)` on a runtime whose loader "
                         "kept the tokenizer: weights only",
}


def _load_section(r: LoadResult, folder_desc: str) -> list[str]:
    size = r.facts["weight_bytes"]
    bare = "bare mlx_lm.load"
    wall, cpu, internals = r.wall, r.cpu, r.internals
    rows = [
        f"### Load: {folder_desc}", "",
        f"{r.repeats} repeats, the order of the contenders rotated each repeat; warm page "
        "cache (every file read once before any timing); each contender run once untimed "
        "first; MLX memory freed (`gc.collect()`, `mx.clear_cache()`) after every load. Ratios "
        f"are medians over repeats of (this / bare `mlx_lm.load` in the same repeat). *CPU s* "
        "is user + system time of the whole process during the call; *page faults* are its "
        "minor faults, about one per 4 KB page of fresh memory (the kernel's share of a load).",
        "",
        "| what | median s | min-max s | GB/s | wall vs bare | CPU s | CPU vs bare | page faults | what it does |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name in wall.values:
        med = wall.median(name)
        rows.append(
            f"| {name} | {med:.3f} | {wall.spread(name)} | {size / med / 1e9:.2f} | "
            f"{statistics.median(wall.ratios(name, bare)):.3f}x | {cpu.median(name):.3f} | "
            f"{statistics.median(cpu.ratios(name, bare)):.3f}x | "
            f"{statistics.median(r.faults.values[name]):,.0f} | {LOAD_WHAT[name]} |")
    cold_wall = wall.ratios("ModelCache cold", bare)
    cold_cpu = cpu.ratios("ModelCache cold", bare)
    wall_ok = statistics.median(cold_wall) <= LOAD_TARGET
    cpu_ok = statistics.median(cold_cpu) <= LOAD_TARGET
    noisy = min(cold_wall) <= LOAD_TARGET < max(cold_wall)
    read = wall.median("read files")
    rows += [
        "",
        f"* **ModelCache cold load vs bare `mlx_lm.load`, wall time: {_ratio_summary(cold_wall)}; "
        f"target within {LOAD_TARGET - 1:.0%}: {_verdict(wall_ok)}.** CPU time: "
        f"{_ratio_summary(cold_cpu)}, {_verdict(cpu_ok)}."
        + (" The per-repeat wall ratios straddle the target, so at this machine's noise the "
           "wall verdict rests on the median alone." if noisy else ""),
        f"* Reload of an evicted model (tokenizer kept) vs a cold load (new loader): "
        f"{wall.median('ModelCache reload'):.3f} s vs {wall.median('ModelCache cold'):.3f} s, "
        f"**{_ratio_summary(wall.ratios('ModelCache reload', 'ModelCache cold'))}** (CPU "
        f"{statistics.median(cpu.ratios('ModelCache reload', 'ModelCache cold')):.3f}x); reload "
        f"vs bare `load_model` (weights only, no tokenizer either): "
        f"{_ratio_summary(wall.ratios('ModelCache reload', 'bare load_model'))}.",
        f"* Against the floor of reading the files ({size / read / 1e9:.2f} GB/s): bare "
        f"`mlx_lm.load` {_ratio_summary(wall.ratios(bare, 'read files'))}, ModelCache reload "
        f"{_ratio_summary(wall.ratios('ModelCache reload', 'read files'))}.",
        f"* ModelCache's own split (median): cold weights {internals.median('cold weights'):.3f} s "
        f"+ tokenizer {internals.median('cold tokenizer') * 1000:.0f} ms; reload weights "
        f"{internals.median('reload weights'):.3f} s + tokenizer "
        f"{internals.median('reload tokenizer') * 1000:.2f} ms (reused). Weights alone, paired "
        f"with bare `load_model` (eager, main thread): "
        f"{_ratio_summary(_paired(internals.values['cold weights'], wall.values['bare load_model']))}.",
        f"* Outside the loader (admission with a memory snapshot, the load thread, the store "
        f"write, events, until the future resolves): "
        f"{internals.median('cold outside loader') * 1000:.1f} ms cold, "
        f"{internals.median('reload outside loader') * 1000:.1f} ms reload; of which one "
        f"`Store.record_load` (SQLite autocommit, measured alone in the temp folder): "
        f"{r.facts['record_load_seconds'] * 1000:.1f} ms. Building the runtime (settings, "
        f"store, catalog scan) before a cold load: "
        f"{r.facts['runtime_build_seconds'] * 1000:.0f} ms, not counted in the load.",
        f"* Resident after load: {_gb(r.facts.get('resident_bytes', 0))} (weights on disk "
        f"{_gb(size)} in {r.facts['files']} file(s)); process RSS after every eviction and "
        f"free: at most {_gb(r.facts['rss_after_free'])}, so each load gave its memory back.",
    ]
    return rows


def _chat_section(r: ChatResult, plan: Plan, folder_desc: str) -> list[str]:
    tokens = r.facts["tokens"]
    ratios = r.tok_s.ratios(ENGINE, BARE)
    ratio = statistics.median(ratios)
    # CPU per token: lower is better, so the engine's relative speed is bare / engine
    cpu_speed = [1 / x for x in r.cpu_per_token.ratios(ENGINE, BARE)]
    decode = statistics.median(r.decode.ratios(ENGINE, BARE))
    rows = [
        f"### Chat: {folder_desc}", "",
        f"Greedy (temperature 0), `max_tokens` {plan.max_tokens}, prompt of "
        f"{r.facts.get('prompt_tokens', '?')} tokens (the model's chat template), model already "
        f"loaded; {r.repeats} repeats alternating which side goes first, after one untimed "
        f"{WARMUP_TOKENS}-token run each. *tok/s* = tokens / wall time of the whole call (prompt processing included), "
        "timed the same way for both; *CPU ms/token* = CPU time of the process during the call "
        "/ tokens; *decode* = each side's own figure (mlx-lm's `generation_tps`; "
        "`ChatStats.tokens_per_second`, (tokens-1) / time after the first token). Ratios are "
        "medians over repeats of the ratio within a repeat, as speed (higher = faster).", "",
        "| what | tok/s | min-max | vs bare | CPU ms/token | CPU speed vs bare | decode tok/s | tokens |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        f"| bare `mlx_lm.stream_generate` | {r.tok_s.median(BARE):.1f} | "
        f"{r.tok_s.spread(BARE, 1)} | 1.000x | {r.cpu_per_token.median(BARE) * 1000:.1f} | "
        f"1.000x | {r.decode.median(BARE):.1f} | {tokens.get(BARE)} |",
        f"| `ChatEngine.stream` | {r.tok_s.median(ENGINE):.1f} | {r.tok_s.spread(ENGINE, 1)} | "
        f"{ratio:.3f}x | {r.cpu_per_token.median(ENGINE) * 1000:.1f} | "
        f"{statistics.median(cpu_speed):.3f}x | {r.decode.median(ENGINE):.1f} ({decode:.3f}x) | "
        f"{tokens.get(ENGINE)} |",
        "| TUI chat pane | not measured here (placeholder, see below) | | | | | | |",
        "",
        f"* **ChatEngine.stream vs bare `stream_generate`, tok/s: {_ratio_summary(ratios)}; "
        f"target at least {CHAT_TARGET:.0%}: {_verdict(ratio >= CHAT_TARGET)}.** CPU time per "
        f"token: {_ratio_summary(cpu_speed)}, "
        f"{_verdict(statistics.median(cpu_speed) >= CHAT_TARGET)}. Replies identical: "
        f"{'yes' if r.facts['same_text'] else '**no** (the two did not do the same work)'}.",
        "* The TUI row is a placeholder: tokens/s as seen through the app is the responsiveness "
        "benchmark's (another engineer's); nothing is measured for it here.",
    ]
    return rows


def _model_desc(folder: Path) -> str:
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    size = sum(p.stat().st_size for p in _weight_files(folder))
    return (f"{_gb(size)} {DTYPE} llama (hidden {config['hidden_size']}, "
            f"{config['num_hidden_layers']} layers, vocab {config['vocab_size']}), random weights")


def run(quick: bool = False) -> str:
    """The Markdown section: load and chat overheads against bare mlx-lm, in one run."""
    import mlx.core as mx  # noqa: F401 - imported before any timing

    from mlx_tui.devtools.modelgen import write_random_model

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    plan = Plan.for_mode(quick)
    started = time.perf_counter()
    load_avg_before = _machine_load()
    work = Path(tempfile.mkdtemp(prefix="mlx-tui-overheads-"))
    try:
        with Meter() as built:
            big = write_random_model(work / "big", target_bytes=plan.load_bytes, dtype=DTYPE)
            chat = write_random_model(work / "chat", **CHAT_SHAPE, dtype=DTYPE, seed=1)
        _free()
        _log(f"models built in {built.wall:.1f} s")
        loads = measure_loads(big, work, plan)
        chats = measure_chat(chat, work, plan)
        big_desc, chat_desc = _model_desc(big), _model_desc(chat)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    total = time.perf_counter() - started
    out = [
        "## Overheads against bare mlx-lm", "",
        f"{'Quick' if quick else 'Full'} run: {total:.0f} s in all, of which {built.wall:.0f} s "
        f"building the models ({DTYPE}: the fastest dtype on MLX's CPU build; bfloat16 is slow "
        f"there). Machine load average before: {load_avg_before}, after: {_machine_load()}. "
        "Other processes may share the machine: the min-max columns show how noisy each figure "
        "is, and CPU-time ratios, which contention moves much less, cross-check the wall-time "
        "ones.", "",
    ]
    out += _load_section(loads, big_desc) + [""]
    out += _chat_section(chats, plan, chat_desc) + [""]
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100 MB model, fewer repeats")
    args = parser.parse_args(argv)
    print(run(quick=args.quick))


if __name__ == "__main__":
    main()
