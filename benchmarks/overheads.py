"""Benchmarks §3: what ModelCache, ChatEngine and the TUI cost on top of bare mlx-lm, side by side.

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
* **Chat**: tokens per second of ``ChatEngine.stream`` and of the app's chat pane against bare
  ``mlx_lm.stream_generate`` on the same small model, same prompt (the model's chat template),
  greedy (temperature 0), same ``max_tokens``; the replies must be identical, which shows they
  did the same work. The app (:class:`~mlx_tui.ui.app.MlxTuiApp`) runs headless in this
  process (``App.run_test``) for the whole chat phase, on the runtime the engine contender
  uses: its reply is typed into the chat input and sent with enter, and timed from the enter
  key to the first frame painted after the pane has the finished reply. Its ``ReplyView``
  methods and the runtime's ``ChatEngine.stream`` are wrapped (timestamps only) to say where
  the time goes: when each piece was generated, when it reached the pane, when it was painted.

Besides wall time every call's CPU time (user + system, all threads of the process) is
recorded: on a machine shared with other work, CPU time moves much less than wall time, so its
ratio is the cross-check of the wall-time verdict.

Run ``python -m benchmarks.overheads [--quick]``; it prints a Markdown section.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import threading
import time
from bisect import bisect_right
from contextlib import redirect_stderr
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from mlx_tui.core.loader import MlxLoader

from . import common

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
                   chat_repeats=9, chat_budget_seconds=120, max_tokens=128)


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
        return common.spread(self.values[name], digits)

    def ratios(self, name: str, base: str) -> list[float]:
        """``name / base`` within each repeat (both measured in that repeat, close in time)."""
        return _paired(self.values[name], self.values[base])


def _paired(values: Sequence[float], bases: Sequence[float]) -> list[float]:
    return [a / b for a, b in zip(values, bases, strict=True)]


def _free() -> None:
    """Return MLX memory to the system between measurements, exactly as an eviction does
    (``gc.collect()``, ``mx.clear_cache()``, ``malloc_trim(0)`` on Linux), so every contender
    starts from the same state: fresh pages to fault in, none kept in the allocator's arenas."""
    MlxLoader().free()


_log = common.logger("overheads")


def _rotations(names: Sequence[str], repeats: int) -> list[list[str]]:
    """One order per repeat: rotated by one each time, reversed every other round, so no
    contender always runs first, last or right after the same neighbour."""
    orders = []
    for i in range(repeats):
        k = i % len(names)
        order = list(names[k:]) + list(names[:k])
        orders.append(order[::-1] if (i // len(names)) % 2 else order)
    return orders


def _orders(names: Sequence[str], repeats: int, budget: float,
            log: Callable[[str], None] = _log) -> Iterator[list[str]]:
    """Each repeat's order (:func:`_rotations`), until ``repeats`` are done or, after at least
    :data:`MIN_REPEATS`, the time ``budget`` is spent."""
    started = time.perf_counter()
    for done, order in enumerate(_rotations(names, repeats)):
        if done >= MIN_REPEATS and time.perf_counter() - started > budget:
            log(f"time budget of {budget:.0f} s spent after {done} repeats")
            return
        yield order


def _repeat(contenders: dict[str, Callable[[], Any]], repeats: int, budget: float,
            each: Callable[[str, Any], None], after_repeat: Callable[[int], None]) -> int:
    """Run every contender once per repeat in rotated order; returns the repeats done."""
    done = 0
    for order in _orders(list(contenders), repeats, budget):
        for name in order:
            each(name, contenders[name]())
        done += 1
        after_repeat(done)
    return done


def _rss_bytes() -> int:
    import psutil

    return psutil.Process().memory_info().rss


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
    common.write_settings(settings_path, {"big": str(folder)})
    files = common.weight_files(folder)
    facts: dict[str, Any] = {"weight_bytes": sum(p.stat().st_size for p in files),
                             "files": len(files)}
    internals = Samples()
    build_seconds: list[float] = []

    def read_files() -> Meter:
        with Meter() as m:
            common.read_files(files)
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
        common.warm_page_cache(folder)
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


BARE, ENGINE, TUI = "bare stream_generate", "ChatEngine.stream", "TUI chat pane"
TUI_SIZE = (120, 40)
TUI_TIMEOUT = 300.0  # seconds for one reply through the app before the run fails


@dataclass
class ChatResult:
    tok_s: Samples  # tokens / wall seconds of the whole call
    cpu_per_token: Samples  # CPU seconds / token
    decode: Samples  # each side's own decode tokens/s
    tui: Samples  # the TUI's other figures, one per repeat (see _TuiReply.figures)
    facts: dict[str, Any]
    repeats: int


@dataclass
class _TuiReply:
    """One reply sent through the app, on the benchmark's clock (``perf_counter``)."""

    painted: "asyncio.Future[float]"
    enter: float = 0.0  # the enter key sent
    generated: list[tuple[float, int]] = field(default_factory=list)  # worker: (t, chars so far) per text delta
    generated_end: float = 0.0  # worker: the final delta (with ChatStats) yielded
    received: list[tuple[float, int]] = field(default_factory=list)  # loop: (t, chars so far) per piece
    text: str = ""
    stats: Any = None  # the ChatStats the pane was given
    stats_line: str = ""  # what the pane shows under the reply
    painted_at: float = 0.0

    def tokens_at(self, chars: int) -> int:
        """Text deltas (tokens) the worker had yielded once ``chars`` characters were out."""
        return bisect_right([c for _, c in self.generated], chars)

    def figures(self) -> dict[str, float]:
        tokens = self.stats.tokens
        first_t, first_chars = self.received[0]
        last_t, last_chars = self.received[-1]
        shown = self.tokens_at(last_chars) - self.tokens_at(first_chars)
        lags = []  # each piece: how long after its last character was generated it reached the pane
        for t, chars in self.received:
            i = self.tokens_at(chars) - 1
            if 0 <= i < len(self.generated) and self.generated[i][1] == chars:
                lags.append(t - self.generated[i][0])
        return {
            "ui ttft": first_t - self.enter,
            "core ttft": self.stats.time_to_first_token,
            "core whole tok/s": tokens / self.stats.total_seconds,
            "ui stream tok/s": shown / (last_t - first_t) if last_t > first_t else 0.0,
            "pieces": len(self.received),
            "piece lag median": statistics.median(lags) if lags else 0.0,
            "piece lag max": max(lags, default=0.0),
            "end lag": self.painted_at - self.generated_end,
            "before worker": (self.generated[0][0] - self.enter) - self.stats.time_to_first_token,
        }


class _TuiWatch:
    """Timestamps one reply at a time through the app: the chat pane's ``ReplyView`` methods
    (class attributes, put back by :meth:`close`) and, while a reply runs, the runtime's
    ``ChatEngine.stream`` (an instance attribute). Each wrapper only appends a timestamp."""

    METHODS = ("append", "finish", "fail")

    def __init__(self, runtime: Any) -> None:
        from mlx_tui.ui.widgets.chat import ReplyView

        self.runtime = runtime
        self.current: _TuiReply | None = None
        self._view_class = ReplyView
        self._saved = {name: ReplyView.__dict__[name] for name in self.METHODS}
        self._engine_stream = runtime.chat.stream
        append, finish, fail = (self._saved[name] for name in self.METHODS)
        watch = self

        async def timed_append(view: Any, fragment: str) -> None:
            reply = watch.current
            if reply is not None:
                reply.received.append((time.perf_counter(), len(view.text) + len(fragment)))
            await append(view, fragment)

        async def timed_finish(view: Any, text: str, stats: Any) -> None:
            await finish(view, text, stats)
            reply = watch.current
            if reply is not None:
                reply.text, reply.stats = text, stats
                reply.stats_line = str(view.query_one(".stats").render())
                view.app.call_after_refresh(watch._painted, reply)  # after the next frame

        async def timed_fail(view: Any, error: str, stopped: bool = False) -> None:
            await fail(view, error, stopped)
            reply = watch.current
            if reply is not None and not reply.painted.done():
                reply.painted.set_exception(RuntimeError(f"the reply failed in the app: {error}"))

        ReplyView.append = timed_append  # type: ignore[method-assign]
        ReplyView.finish = timed_finish  # type: ignore[method-assign]
        ReplyView.fail = timed_fail  # type: ignore[method-assign]

    @staticmethod
    def _painted(reply: _TuiReply) -> None:
        reply.painted_at = time.perf_counter()
        if not reply.painted.done():
            reply.painted.set_result(reply.painted_at)

    def _stream(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
        """``ChatEngine.stream`` as the pane's worker calls it, noting when each delta came."""
        reply = self.current
        chars = 0
        for delta in self._engine_stream(*args, **kwargs):
            if reply is not None:
                if delta.text:
                    chars += len(delta.text)
                    reply.generated.append((time.perf_counter(), chars))
                if delta.stats is not None:
                    reply.generated_end = time.perf_counter()
            yield delta

    def start(self, reply: _TuiReply) -> None:
        self.current = reply
        self.runtime.chat.stream = self._stream

    def stop(self) -> None:
        self.current = None
        self.runtime.chat.__dict__.pop("stream", None)

    def close(self) -> None:
        self.stop()
        for name, method in self._saved.items():
            setattr(self._view_class, name, method)


async def _type(pilot: Any, chat_input: Any, text: str) -> None:
    """Type ``text`` into the focused chat input: one key event per character through the
    app's driver, as a terminal delivers a line typed faster than the app draws (``Pilot.press``
    waits for the screen after every key: 4-5 s for the prompt on a busy 2-core machine)."""
    from textual import events
    from textual.keys import _character_to_key

    app = pilot.app
    if chat_input.text:
        chat_input.clear()
    for char in text:
        app._driver.send_message(events.Key(char if char.isalnum() else _character_to_key(char), char))
    deadline = time.monotonic() + 30
    while chat_input.text != text:
        if time.monotonic() > deadline:
            raise RuntimeError(f"typing into the chat input gave {chat_input.text!r}")
        await pilot.pause(0.01)
    await pilot.pause()


def measure_chat(folder: Path, work: Path, plan: Plan) -> ChatResult:
    """tokens/s of bare stream_generate, ChatEngine.stream and the app's chat pane, alternating.

    The app runs headless in this process (``App.run_test``) for the whole phase, on the same
    runtime as the ChatEngine contender; the bare and engine calls run on the main thread (the
    app's loop waits meanwhile), the TUI reply is typed and sent with enter as a user would.
    """
    import mlx.core as mx
    import mlx_lm
    from mlx_lm import stream_generate
    from mlx_lm.sample_utils import make_sampler

    from mlx_tui.core.chat import ChatMessage, GenerationParams
    from mlx_tui.core.runtime import build_runtime
    from mlx_tui.ui.app import MlxTuiApp
    from mlx_tui.ui.widgets.chat import ChatInput

    settings_path = work / "chat-settings.toml"
    common.write_settings(settings_path, {"chat": str(folder)})
    runtime = build_runtime(settings_path, db_path=work / "chat.db")
    messages = [ChatMessage("user", PROMPT)]
    model, tokenizer = mlx_lm.load(str(folder))
    mx.eval(model)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": PROMPT}],
                                           add_generation_prompt=True, tokenize=False)
    facts: dict[str, Any] = {"texts": {}, "tokens": {}}
    params = GenerationParams(temperature=0.0, max_tokens=plan.max_tokens)
    app = MlxTuiApp(runtime, model="chat", api=False, params=params, preload=False)
    stderr = sys.stderr  # the app captures sys.stderr while it runs; the log goes here

    def log(message: str) -> None:
        with redirect_stderr(stderr):
            _log(message)

    def engine(max_tokens: int = plan.max_tokens) -> tuple[Meter, int, float]:
        """(meter, tokens, the engine's own decode tokens/s)."""
        parts: list[str] = []
        stats = None
        call_params = replace(params, max_tokens=max_tokens)
        with Meter() as m:
            for delta in runtime.chat.stream("chat", messages, call_params):
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
            # the model is freed by a `del` below, which ruff reads as the name never bound
            for response in stream_generate(model, tokenizer, prompt, max_tokens=max_tokens,  # noqa: F821
                                            sampler=make_sampler(temp=0.0)):
                parts.append(response.text)
                last = response
        assert last is not None
        facts["texts"][BARE] = "".join(parts)
        facts["tokens"][BARE] = last.generation_tokens
        return m, last.generation_tokens, last.generation_tps

    tok_s, cpu_per_token, decode, tui_figures = Samples(), Samples(), Samples(), Samples()

    def each(name: str, result: tuple[Meter, int, float]) -> None:
        m, tokens, decode_tps = result
        tok_s.add(name, tokens / m.wall)
        cpu_per_token.add(name, m.cpu / tokens)
        decode.add(name, decode_tps)

    async def drive() -> int:
        watch = _TuiWatch(runtime)
        try:
            async with app.run_test(size=TUI_SIZE) as pilot:
                chat_input = app.query_one(ChatInput)

                async def tui(max_tokens: int = plan.max_tokens) -> tuple[Meter, int, float]:
                    """Type the prompt in a new chat, press enter, wait until the finished reply
                    is painted. Wall time: enter until the frame after the pane's ``finish``."""
                    await pilot.press("ctrl+n")  # a new chat: the prompt is this message alone
                    if app.chat.params.max_tokens != max_tokens:
                        app.chat.set_options("", replace(params, max_tokens=max_tokens))
                    await _type(pilot, chat_input, PROMPT)
                    reply = _TuiReply(painted=asyncio.get_running_loop().create_future())
                    watch.start(reply)
                    try:
                        with Meter() as m:
                            reply.enter = time.perf_counter()
                            await pilot.press("enter")
                            await asyncio.wait_for(asyncio.shield(reply.painted), TUI_TIMEOUT)
                    finally:
                        watch.stop()
                    await app.workers.wait_for_complete()
                    await pilot.pause()
                    m.wall = reply.painted_at - reply.enter
                    stats = reply.stats
                    assert stats.tokens > 0 and not stats.loaded_first, stats
                    facts["texts"][TUI] = reply.text
                    facts["tokens"][TUI] = stats.tokens
                    facts["tui_stats_line"] = reply.stats_line
                    facts["tui_line_ok"] = reply.stats_line.startswith(
                        f"{stats.tokens} tokens · {stats.tokens_per_second:.1f} tok/s")
                    if max_tokens == plan.max_tokens:
                        for key, value in reply.figures().items():
                            tui_figures.add(key, value)
                    return m, stats.tokens, stats.tokens_per_second

                contenders: dict[str, Callable[..., Any]] = {BARE: bare, ENGINE: engine, TUI: tui}
                while any(t.name == "import-mlx-lm" for t in threading.enumerate()):
                    await pilot.pause(0.05)  # the app's start-up work, before any timing
                for name, fn in contenders.items():  # untimed warm-up: first-call costs, not length
                    result = fn(WARMUP_TOKENS)
                    if asyncio.iscoroutine(result):
                        await result
                    await pilot.pause()
                done = 0
                for order in _orders(list(contenders), plan.chat_repeats, plan.chat_budget_seconds, log):
                    for name in order:
                        result = contenders[name]()
                        each(name, await result if asyncio.iscoroutine(result) else result)
                        await pilot.pause()  # the app catches up with what came while it waited
                    done += 1
                    log(f"chat repeat {done}: " + ", ".join(
                        f"{n} {tok_s.values[n][-1]:.1f} tok/s" for n in contenders))
                return done
        finally:
            watch.close()

    try:
        runtime.cache.load("chat").result()
        repeats = asyncio.run(drive())
    finally:
        runtime.cache.evict("chat", reason="benchmark")
        runtime.close()
        del model, tokenizer
        _free()
    facts["same_text"] = {name: facts["texts"].get(name) == facts["texts"].get(BARE)
                          for name in (ENGINE, TUI)}
    return ChatResult(tok_s, cpu_per_token, decode, tui_figures, facts, repeats)


# --------------------------------------------------------------------------- report


def _gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB"


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
        "first; MLX memory freed as an eviction frees it (`gc.collect()`, `mx.clear_cache()`, `malloc_trim(0)`) after every load, so every contender starts with no memory held back. Ratios "
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
        f"* **ModelCache cold load vs bare `mlx_lm.load`, wall time: {common.ratio_summary(cold_wall)}; "
        f"target within {LOAD_TARGET - 1:.0%}: {common.verdict(wall_ok)}.** CPU time: "
        f"{common.ratio_summary(cold_cpu)}, {common.verdict(cpu_ok)}."
        + (" The per-repeat wall ratios straddle the target, so at this machine's noise the "
           "wall verdict rests on the median alone." if noisy else ""),
        f"* Reload of an evicted model (tokenizer kept) vs a cold load (new loader): "
        f"{wall.median('ModelCache reload'):.3f} s vs {wall.median('ModelCache cold'):.3f} s, "
        f"**{common.ratio_summary(wall.ratios('ModelCache reload', 'ModelCache cold'))}** (CPU "
        f"{statistics.median(cpu.ratios('ModelCache reload', 'ModelCache cold')):.3f}x); reload "
        f"vs bare `load_model` (weights only, no tokenizer either): "
        f"{common.ratio_summary(wall.ratios('ModelCache reload', 'bare load_model'))}.",
        f"* Against the floor of reading the files ({size / read / 1e9:.2f} GB/s): bare "
        f"`mlx_lm.load` {common.ratio_summary(wall.ratios(bare, 'read files'))}, ModelCache reload "
        f"{common.ratio_summary(wall.ratios('ModelCache reload', 'read files'))}.",
        f"* ModelCache's own split (median): cold weights {internals.median('cold weights'):.3f} s "
        f"+ tokenizer {internals.median('cold tokenizer') * 1000:.0f} ms; reload weights "
        f"{internals.median('reload weights'):.3f} s + tokenizer "
        f"{internals.median('reload tokenizer') * 1000:.2f} ms (reused). Weights alone, paired "
        f"with bare `load_model` (eager, main thread): "
        f"{common.ratio_summary(_paired(internals.values['cold weights'], wall.values['bare load_model']))}.",
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


CHAT_WHAT = {
    BARE: "bare `mlx_lm.stream_generate`",
    ENGINE: "`ChatEngine.stream`",
    TUI: "TUI chat pane (typed, enter, until painted)",
}


def _chat_section(r: ChatResult, plan: Plan, folder_desc: str) -> list[str]:
    tokens = r.facts["tokens"]
    same = r.facts["same_text"]
    rows = [
        f"### Chat: {folder_desc}", "",
        f"Greedy (temperature 0), `max_tokens` {plan.max_tokens}, prompt of "
        f"{r.facts.get('prompt_tokens', '?')} tokens (the model's chat template), model already "
        f"loaded; {r.repeats} repeats rotating which side goes first, after one untimed "
        f"{WARMUP_TOKENS}-token run each. *tok/s* = tokens / wall time of the whole call (prompt "
        "processing included); *CPU ms/token* = CPU time of the process during the call / "
        "tokens; *decode* = each side's own figure (mlx-lm's `generation_tps`; "
        "`ChatStats.tokens_per_second`, (tokens-1) / time after the first token). Ratios are "
        "medians over repeats of the ratio within a repeat, as speed (higher = faster).", "",
        f"The TUI side is the app itself (`MlxTuiApp`, headless `App.run_test(size="
        f"{TUI_SIZE})`, no API, no preload) on the same runtime as `ChatEngine.stream`, running "
        "for the whole phase in this process: each repeat a new chat (`ctrl+n`), the prompt "
        "typed (one key event per character through the app's driver, untimed), then **enter** "
        "starts the clock and it stops at the first "
        "frame painted after the pane has the finished reply (the Markdown re-rendered whole and "
        "the figures line set under it). So its *tok/s* is end to end as a user sees it: the "
        "pane's bookkeeping (store writes, new widgets), the worker thread, generation while the "
        "loop renders every piece (one per frame at most) as Markdown, and the final render; its "
        "*CPU* counts all of that; its *decode* is the `ChatStats` figure the pane shows under "
        "the reply. The bare and engine calls run on the main thread while the app's loop "
        "waits.", "",
        "| what | tok/s | min-max | vs bare | CPU ms/token | CPU speed vs bare | decode tok/s | tokens |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        f"| {CHAT_WHAT[BARE]} | {r.tok_s.median(BARE):.1f} | "
        f"{r.tok_s.spread(BARE, 1)} | 1.000x | {r.cpu_per_token.median(BARE) * 1000:.1f} | "
        f"1.000x | {r.decode.median(BARE):.1f} | {tokens.get(BARE)} |",
    ]
    verdicts = []
    for name in (ENGINE, TUI):
        ratios = r.tok_s.ratios(name, BARE)
        ratio = statistics.median(ratios)
        # CPU per token: lower is better, so the relative speed is bare / this
        cpu_speed = [1 / x for x in r.cpu_per_token.ratios(name, BARE)]
        decode = statistics.median(r.decode.ratios(name, BARE))
        rows.append(
            f"| {CHAT_WHAT[name]} | {r.tok_s.median(name):.1f} | {r.tok_s.spread(name, 1)} | "
            f"{ratio:.3f}x | {r.cpu_per_token.median(name) * 1000:.1f} | "
            f"{statistics.median(cpu_speed):.3f}x | {r.decode.median(name):.1f} ({decode:.3f}x) | "
            f"{tokens.get(name)} |")
        label = "ChatEngine.stream" if name == ENGINE else "The TUI chat pane, end to end,"
        verdicts.append(
            f"* **{label} vs bare `stream_generate`, tok/s: {common.ratio_summary(ratios)}; "
            f"target at least {CHAT_TARGET:.0%}: {common.verdict(ratio >= CHAT_TARGET)}.** CPU time "
            f"per token: {common.ratio_summary(cpu_speed)}, "
            f"{common.verdict(statistics.median(cpu_speed) >= CHAT_TARGET)}. Reply identical to "
            f"bare's: {'yes' if same[name] else '**no** (not the same work)'}.")
    f = r.tui
    ui_vs_core = _paired(r.tok_s.values[TUI], f.values["core whole tok/s"])
    share = {name: statistics.median(c * t for c, t in zip(r.cpu_per_token.values[name],
                                                           r.tok_s.values[name]))
             for name in (BARE, ENGINE, TUI)}
    rows += [""] + verdicts + [
        f"* CPU time of the process per second of each call (median): bare {share[BARE]:.0%}, "
        f"engine {share[ENGINE]:.0%}, TUI {share[TUI]:.0%}. Uncontended, a call runs at a "
        "little over 100% (MLX computes in its own thread next to the Python one; the TUI adds "
        "its rendering on the loop's thread). A share well under that means other jobs on the "
        "machine took the CPUs from those calls: then the wall ratios say more about the "
        "scheduler than about the code, and the CPU time per token (the TUI's counts its "
        "rendering) is the fairer comparison.",
        f"* Inside the TUI (medians): the core's own figures for the same replies, "
        f"`ChatStats` as the pane shows them, decode {r.decode.median(TUI):.1f} tok/s and whole "
        f"call {f.median('core whole tok/s'):.1f} tok/s (`tokens / total_seconds`, the engine's "
        f"call in the worker thread); as seen by the UI, end to end "
        f"{r.tok_s.median(TUI):.1f} tok/s ({statistics.median(ui_vs_core):.3f}x the core's "
        f"whole call), and while streaming {f.median('ui stream tok/s'):.1f} tok/s (tokens "
        f"reaching the pane from its first piece to its last / that time; decode vs engine "
        f"outside the app: {statistics.median(_paired(r.decode.values[TUI], r.decode.values[ENGINE])):.3f}x).",
        f"* Where the TUI's extra time goes (medians): enter to the worker starting to generate "
        f"{f.median('before worker') * 1000:.0f} ms; first piece in the pane "
        f"{f.median('ui ttft') * 1000:.0f} ms after enter (the core's TTFT "
        f"{f.median('core ttft') * 1000:.0f} ms); {f.median('pieces'):.0f} pieces, each reaching "
        f"the pane {f.median('piece lag median') * 1000:.1f} ms after its last token was "
        f"generated (worst piece of a reply, median over repeats: "
        f"{f.median('piece lag max') * 1000:.1f} ms); the last token to the finished reply "
        f"painted {f.median('end lag') * 1000:.0f} ms. The line under the reply read "
        f"`{r.facts.get('tui_stats_line', '')}` in the last repeat ("
        f"{'it matches' if r.facts.get('tui_line_ok') else '**does not match**'} that reply's "
        "`ChatStats`).",
    ]
    return rows


def run(quick: bool = False) -> str:
    """The Markdown section: load and chat overheads against bare mlx-lm, in one run."""
    import mlx.core as mx  # noqa: F401 - imported before any timing

    from mlx_tui.devtools.modelgen import write_random_model

    common.go_offline()
    plan = Plan.for_mode(quick)
    started = time.perf_counter()
    load_avg_before = common.machine_load()
    with common.work_folder("mlx-tui-overheads-") as work:
        with Meter() as built:
            big = write_random_model(work / "big", target_bytes=plan.load_bytes, dtype=DTYPE)
            chat = write_random_model(work / "chat", **CHAT_SHAPE, dtype=DTYPE, seed=1)
        _free()
        _log(f"models built in {built.wall:.1f} s")
        loads = measure_loads(big, work, plan)
        chats = measure_chat(chat, work, plan)
        big_desc, chat_desc = common.model_desc(big, DTYPE), common.model_desc(chat, DTYPE)
    total = time.perf_counter() - started
    out = [
        "## Overheads against bare mlx-lm", "",
        f"{'Quick' if quick else 'Full'} run: {total:.0f} s in all, of which {built.wall:.0f} s "
        f"building the models ({DTYPE}: the fastest dtype on MLX's CPU build; bfloat16 is slow "
        f"there). Machine load average before: {load_avg_before}, after: {common.machine_load()}. "
        "Other processes may share the machine: the min-max columns show how noisy each figure "
        "is, and CPU-time ratios, which contention moves much less, cross-check the wall-time "
        "ones.", "",
    ]
    out += _load_section(loads, big_desc) + [""]
    out += _chat_section(chats, plan, chat_desc) + [""]
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> None:
    common.main(__doc__, run, "100 MB model, fewer repeats", argv)


if __name__ == "__main__":
    main()
