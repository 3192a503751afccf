"""Benchmarks §2, "the UI never blocks": event-loop lateness and ``/health`` latency of the app
while a model loads in the background, against the same app idle, in the same run.

The parent builds a real ``mlx_lm`` llama folder with random float32 weights (1 GB; ``--quick``
150 MB) and starts a *child* process, so the app runs as it does for a user: a fresh
interpreter where ``mlx_lm`` is first imported by the app's own warm-up thread, with nothing
of the benchmark's model building in its heap. The child:

* builds the runtime with :func:`~mlx_tui.core.runtime.build_runtime` (settings aliasing the
  model, no folder scans, no preloads, memory polled every second) and starts an
  :class:`~mlx_tui.server.serve.ApiServer` on a free loopback port in its own process, as the
  app does (in its own thread);
* runs :class:`~mlx_tui.ui.app.MlxTuiApp` headless (``App.run_test(size=(120, 40))``: the
  compositor renders every frame, only the terminal write is skipped);
* measures, on the app's event loop, a **loop probe** (an asyncio task that sleeps 10 ms and
  records how late it wakes: anything that holds the loop or the GIL shows here) and a
  **message-queue probe** (every 10 ms a callback posted with ``app.call_later`` and the time
  until the app runs it: the path a key press takes);
* a **watchdog** thread looks at the loop's heartbeat every 5 ms; when the loop is more than
  20 ms late it records the main thread's stack and the top of every other thread's, and its
  own lateness (a watchdog as late as the loop means the GIL was held in C code, not Python
  code on the loop), so a stall says where it was;
* marks windows on ``time.monotonic()`` (system-wide, so the parent's figures line up):
  *start-up* (from the app being ready until its background ``mlx_lm`` import ends), then per
  repeat *load* (``runtime.cache.load(name)`` called from a worker thread, as the models table
  does, until the load's future resolves + 0.25 s for the app to handle the news), *idle*
  (the same duration, nothing happening but the 1 s memory poll) and *evict*
  (``cache.evict``: ``gc.collect()``, ``mx.clear_cache()``, ``malloc_trim``).

Meanwhile the parent polls ``GET /health`` every 20 ms with ``httpx`` on a kept-alive
connection (a separate process, so the poller does not compete for the app's GIL) and the
samples are sorted into the child's windows afterwards.

Run ``python -m benchmarks.responsiveness [--quick]``; it prints a Markdown section.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from . import common

__all__ = ["Plan", "run", "main"]

DTYPE = "float32"
MODEL = "big"
PROBE_SECONDS = 0.010  # the loop and queue probes' period
WATCH_SECONDS = 0.005  # the watchdog's period
STALL_RECORD = 0.020  # the watchdog records stacks once the loop is this late
STALL_TARGET_MS = 50.0  # §2: no stall of 50 ms or more
HEALTH_PERIOD = 0.020
LOAD_TAIL = 0.25  # after a load resolves: the app handles LOADED, the table syncs
SETTLE = 0.4


@dataclass(frozen=True)
class Plan:
    model_bytes: int
    loads: int

    @classmethod
    def for_mode(cls, quick: bool) -> "Plan":
        if quick:
            return cls(model_bytes=150_000_000, loads=3)
        return cls(model_bytes=1_000_000_000, loads=5)


_log = common.logger("responsiveness")


# --------------------------------------------------------------------------- child


class _Recorder:
    """What the child measures; plain lists, appended from the loop and the watchdog."""

    def __init__(self) -> None:
        self.loop: list[tuple[float, float]] = []  # (monotonic, lateness s)
        self.queue: list[tuple[float, float]] = []  # (monotonic, posted-to-run s)
        self.stalls: list[dict[str, Any]] = []
        self.windows: list[dict[str, Any]] = []
        self.heartbeat = time.perf_counter()
        self.stop = threading.Event()

    def window(self, kind: str, index: int, start: float, end: float, **extra: Any) -> None:
        self.windows.append({"kind": kind, "index": index, "start": start, "end": end, **extra})


def _short(filename: str) -> str:
    """A frame's file: relative to site-packages or to the repository, else its name."""
    path = Path(filename)
    parts = path.parts
    if "site-packages" in parts:
        return "/".join(parts[parts.index("site-packages") + 1:])
    try:
        return str(path.relative_to(common.ROOT))
    except ValueError:
        return path.name


def _frames(frame: Any, keep: int) -> list[str]:
    """``file:line function · source`` of the innermost ``keep`` frames, outermost first."""
    return [f"{_short(f.filename)}:{f.lineno or '?'} {f.name}" + (f" · {f.line.strip()[:90]}" if f.line else "")
            for f in traceback.extract_stack(frame)[-keep:]]


def _watchdog(rec: _Recorder) -> None:
    """Every 5 ms: is the loop late? Then record where every thread is (once per 5 ms look)."""
    main_id = threading.main_thread().ident
    me = threading.get_ident()
    prev = time.perf_counter()
    current_beat: float | None = None
    while not rec.stop.is_set():
        time.sleep(WATCH_SECONDS)
        now = time.perf_counter()
        own_late = now - prev - WATCH_SECONDS
        prev = now
        beat = rec.heartbeat
        late = now - beat - PROBE_SECONDS
        if late < STALL_RECORD:
            continue
        frames = sys._current_frames()
        names = {t.ident: t.name for t in threading.enumerate()}
        sample = {
            "t": time.monotonic(), "late": late, "watchdog_late": own_late,
            "main": _frames(frames[main_id], 40) if main_id in frames else [],
            "others": {names.get(ident, str(ident)): _frames(f, 6)
                       for ident, f in frames.items() if ident not in (main_id, me)},
        }
        if beat != current_beat:  # a new stall
            current_beat = beat
            rec.stalls.append({"samples": [sample]})
        elif len(rec.stalls[-1]["samples"]) < 40:
            rec.stalls[-1]["samples"].append(sample)


async def _probe(app: Any, rec: _Recorder) -> None:
    """The loop probe and, every tick, one message-queue probe."""
    loop = asyncio.get_running_loop()

    def ran(posted: float) -> None:
        rec.queue.append((time.monotonic(), time.perf_counter() - posted))

    while not rec.stop.is_set():
        started = loop.time()
        await asyncio.sleep(PROBE_SECONDS)
        rec.heartbeat = time.perf_counter()
        rec.loop.append((time.monotonic(), loop.time() - started - PROBE_SECONDS))
        app.call_later(ran, time.perf_counter())


async def _drive(app: Any, runtime: Any, plan: Plan, rec: _Recorder) -> None:
    loop = asyncio.get_running_loop()
    cache = runtime.cache
    async with app.run_test(size=(120, 40)) as pilot:
        rec.heartbeat = time.perf_counter()
        probe = asyncio.create_task(_probe(app, rec))
        watchdog = threading.Thread(target=_watchdog, args=(rec,), name="bench-watchdog", daemon=True)
        watchdog.start()
        # start-up: the app's background start (screens import, monitor, mlx_lm warm-up import)
        start = time.monotonic()
        await asyncio.sleep(0.3)
        while (any(t.name == "import-mlx-lm" for t in threading.enumerate())
               and time.monotonic() - start < 20):
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)
        rec.window("start-up", 0, start, time.monotonic(),
                   mlx_lm_imported="mlx_lm" in sys.modules)
        await asyncio.sleep(SETTLE)
        for i in range(plan.loads):
            start = time.monotonic()
            future = await loop.run_in_executor(None, cache.load, MODEL)
            view = await asyncio.wrap_future(future)
            resolved = time.monotonic()
            await asyncio.sleep(LOAD_TAIL)
            end = time.monotonic()
            rec.window("load", i, start, end, load_seconds=view.load_time_seconds,
                       weights_seconds=view.weights_seconds,
                       tokenizer_seconds=view.tokenizer_seconds, until_resolved=resolved - start)
            await asyncio.sleep(SETTLE)
            idle_start = time.monotonic()
            await asyncio.sleep(end - start)
            rec.window("idle", i, idle_start, time.monotonic())
            start = time.monotonic()
            await loop.run_in_executor(None, cache.evict, MODEL, "benchmark")
            await asyncio.sleep(LOAD_TAIL)
            rec.window("evict", i, start, time.monotonic())
            await asyncio.sleep(SETTLE)
            _log(f"repeat {i + 1}/{plan.loads}: load {view.load_time_seconds:.2f} s")
        rec.stop.set()
        await probe
        watchdog.join(1)
        await pilot.pause()


def child_main(config: dict[str, Any]) -> None:
    """In the child process: run the app, print ``{"port"}`` first and the figures last."""
    from mlx_tui.core.runtime import build_runtime
    from mlx_tui.server.serve import ApiServer
    from mlx_tui.ui.app import MlxTuiApp

    plan = Plan(**config["plan"])
    runtime = build_runtime(Path(config["settings"]), db_path=Path(config["db"]))
    server = ApiServer(runtime, "127.0.0.1", 0)
    rec = _Recorder()
    try:
        server.start()
        print(json.dumps({"port": server.port}), flush=True)
        app = MlxTuiApp(runtime, api=False, preload=False)
        asyncio.run(_drive(app, runtime, plan, rec))
    finally:
        rec.stop.set()
        server.stop()
        runtime.close()
    print(json.dumps({"loop": rec.loop, "queue": rec.queue, "stalls": rec.stalls,
                      "windows": rec.windows}), flush=True)


# --------------------------------------------------------------------------- parent


class _HealthPoller(threading.Thread):
    """``GET /health`` every 20 ms on one kept-alive connection; (monotonic start, seconds, ok)."""

    def __init__(self, port: int) -> None:
        super().__init__(name="health-poller", daemon=True)
        self.url = f"http://127.0.0.1:{port}/health"
        self.samples: list[tuple[float, float, bool]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        import httpx

        with httpx.Client(timeout=10.0) as client:
            while not self.stop.is_set():
                started = time.monotonic()
                try:
                    ok = client.get(self.url).status_code == 200
                except httpx.HTTPError:
                    ok = False
                self.samples.append((started, time.monotonic() - started, ok))
                self.stop.wait(max(0.0, started + HEALTH_PERIOD - time.monotonic()))


class _MachineProbe(threading.Thread):
    """In the parent process (no GIL shared with the app): how late a 10 ms sleep wakes. When
    this is late too, the machine (other jobs, MLX's own threads) kept the CPUs, not the app."""

    def __init__(self) -> None:
        super().__init__(name="machine-probe", daemon=True)
        self.samples: list[tuple[float, float]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            started = time.perf_counter()
            time.sleep(PROBE_SECONDS)
            self.samples.append((time.monotonic(), time.perf_counter() - started - PROBE_SECONDS))


def _run_child(work: Path, plan: Plan, settings: Path) -> tuple[dict[str, Any], list[tuple[float, float, bool]]]:
    """Run the child; returns its figures (with the parent's machine probe as ``machine``) and
    the ``/health`` samples."""
    config = {"plan": {"model_bytes": plan.model_bytes, "loads": plan.loads},
              "settings": str(settings), "db": str(work / "app.db")}
    env = common.offline_env()
    stderr_path = work / "child.stderr"
    with open(stderr_path, "w", encoding="utf-8") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.responsiveness", "--child", json.dumps(config)],
            stdout=subprocess.PIPE, stderr=stderr, text=True, cwd=common.ROOT, env=env)
        poller: _HealthPoller | None = None
        machine = _MachineProbe()
        machine.start()
        try:
            assert proc.stdout is not None
            first = proc.stdout.readline()
            if not first:
                proc.wait(30)
                raise RuntimeError(f"the child exited ({proc.returncode}) before its API started:\n"
                                   + stderr_path.read_text(encoding="utf-8")[-3000:])
            poller = _HealthPoller(json.loads(first)["port"])
            poller.start()
            rest = proc.stdout.read()
            code = proc.wait(60)
        finally:
            machine.stop.set()
            if poller is not None:
                poller.stop.set()
                poller.join(15)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    lines = [line for line in rest.splitlines() if line.startswith("{")]
    if code != 0 or not lines:
        raise RuntimeError(f"the child failed (exit {code}):\n"
                           + stderr_path.read_text(encoding="utf-8")[-3000:])
    data = json.loads(lines[-1])
    data["machine"] = machine.samples
    return data, poller.samples if poller else []


# --------------------------------------------------------------------------- figures


def _pct(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, int(round(q / 100 * len(ordered) + 0.5)) - 1))
    return ordered[rank]


def _in(samples: Sequence[Sequence[Any]], windows: Sequence[dict[str, Any]]) -> list[Sequence[Any]]:
    return [s for s in samples if any(w["start"] <= s[0] < w["end"] for w in windows)]


@dataclass
class _Row:
    label: str
    seconds: float
    loop: list[float]
    queue: list[float]
    health: list[float]
    health_failed: int
    machine: list[float]

    def loop_max(self) -> float:
        return max(self.loop, default=0.0)

    def health_max(self) -> float:
        return max(self.health, default=0.0)


def _row(label: str, data: dict[str, Any], health: list[tuple[float, float, bool]],
         windows: list[dict[str, Any]]) -> _Row:
    hs = _in(health, windows)
    return _Row(
        label=label,
        seconds=sum(w["end"] - w["start"] for w in windows),
        loop=[s[1] * 1000 for s in _in(data["loop"], windows)],
        queue=[s[1] * 1000 for s in _in(data["queue"], windows)],
        health=[s[1] * 1000 for s in hs if s[2]],
        health_failed=sum(1 for s in hs if not s[2]),
        machine=[s[1] * 1000 for s in _in(data.get("machine", []), windows)],
    )


def _ms(values: Sequence[float]) -> str:
    if not values:
        return "-"
    return f"{_pct(values, 50):.1f} / {_pct(values, 99):.1f} / {max(values):.1f}"


def _ratio(a: float, b: float) -> str:
    return common.ratio(a, b, digits=1)


_WAITING = frozenset({"wait", "select", "poll", "sleep", "_wait_for_tstate_lock", "get", "accept",
                      "_worker", "readline", "recv", "recv_into", "run_forever", "_run_once"})


def _func(frame: str) -> str:
    return frame.split(" ", 2)[1] if " " in frame else frame


def _window_of(t: float, windows: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    return next((w for w in windows if w["start"] <= t < w["end"]), None)


def _stall_lines(data: dict[str, Any], windows: list[dict[str, Any]]) -> list[str]:
    """Per kind of window, the worst stall the watchdog saw: how late, where every thread was."""
    worst: dict[str, tuple[float, dict[str, Any], dict[str, Any]]] = {}
    for stall in data["stalls"]:
        sample = max(stall["samples"], key=lambda s: s["late"])
        window = _window_of(stall["samples"][0]["t"], windows) or _window_of(sample["t"], windows)
        kind = window["kind"] if window else "between windows"
        if kind not in worst or sample["late"] > worst[kind][0]:
            worst[kind] = (sample["late"], stall, window or {})
    lines: list[str] = []
    for kind in ("load", "idle", "evict", "start-up", "between windows"):
        if kind not in worst:
            continue
        late, stall, window = worst[kind]
        samples = stall["samples"]
        sample = max(samples, key=lambda s: s["late"])
        dog = max(s["watchdog_late"] for s in samples)
        held = dog >= 0.5 * late
        main = sample["main"]
        waiting = bool(main) and _func(main[-1]) in ("select", "poll")
        if held:
            how = (f"the watchdog thread was up to {dog * 1000:.0f} ms late too: the GIL was held "
                   "by C code (or the process got no CPU)")
        else:
            how = f"the watchdog ran (at most {dog * 1000:.0f} ms late)"
        how += ("; the loop's thread sat at `select`, i.e. ready but waiting for the GIL"
                if waiting else "; the loop's thread was running the code below")
        where = f"{kind} {window['index'] + 1}" if window else kind
        ours = [f for f in main if f.startswith(("mlx_tui/", "benchmarks/"))
                and "responsiveness.py" not in f]
        shown = ours[-4:] + [f for f in main[-5:] if f not in ours[-4:]]
        lines += [f"* worst during **{where}**: the loop **{late * 1000:.0f} ms** late "
                  f"({len(samples)} watchdog looks); {how}. Main thread at the worst look "
                  "(app frames, then the innermost; outermost first):", "", "  ```text"]
        lines += [f"  {f}" for f in shown] + ["  ```", ""]
        busy: dict[str, int] = {}
        for s in samples:
            for name, frames in s["others"].items():
                if frames and _func(frames[-1]) not in _WAITING and name != "MainThread":
                    key = f"`{name}` at `{frames[-1]}`"
                    busy[key] = busy.get(key, 0) + 1
        if busy:
            top = sorted(busy.items(), key=lambda kv: -kv[1])[:3]
            lines += ["  Other threads running at those looks: " + "; ".join(
                f"{k} ({n}/{len(samples)})" for k, n in top), ""]
    return lines


def render(data: dict[str, Any], health: list[tuple[float, float, bool]], *, quick: bool,
           model_desc: str, total: float, build_seconds: float, load_before: str) -> str:
    windows = data["windows"]
    by_kind = {k: [w for w in windows if w["kind"] == k] for k in ("start-up", "load", "idle", "evict")}
    loads = by_kind["load"]
    rows = {
        "idle": _row("idle (same durations as the loads)", data, health, by_kind["idle"]),
        "load": _row(f"**loading** (all {len(loads)} loads)", data, health, loads),
        "cold": _row("  load 1 (cold: tokenizer too)", data, health, loads[:1]),
        "reload": _row(f"  loads 2-{len(loads)} (tokenizer kept)", data, health, loads[1:]),
        "evict": _row("evicting (gc, clear_cache, malloc_trim)", data, health, by_kind["evict"]),
        "start-up": _row("start-up (mlx_lm imported in the background)", data, health, by_kind["start-up"]),
    }
    idle, load = rows["idle"], rows["load"]
    load_secs = [w["load_seconds"] for w in loads]
    out = [
        "## Responsiveness", "",
        f"{'Quick' if quick else 'Full'} run: {total:.0f} s in all, of which {build_seconds:.0f} s "
        f"building the model ({model_desc}). Machine load average before: {load_before}, after: "
        f"{common.machine_load()} (other jobs share this 2-core machine; idle and load windows "
        "alternate, so both see the same neighbours).", "",
        "### The UI while a model loads", "",
        "The app runs headless (`App.run_test(size=(120, 40))`, every frame composed, nothing "
        "written to a terminal) in a child process with an `ApiServer` on a loopback port; "
        f"{len(loads)} times: `runtime.cache.load(name)` from a worker thread (as the models "
        "table does), the window lasting until the load's future resolves + "
        f"{LOAD_TAIL:g} s; then the app idle for the same duration; then an eviction. Load times "
        f"(the cache's own): {', '.join(f'{s:.2f}' for s in load_secs)} s. *Loop*: lateness of a "
        "10 ms `asyncio.sleep` on the app's loop (what a stall is); *queue*: time from "
        "`app.call_later` to the callback running (the path of a key press); */health*: "
        "`GET /health` every 20 ms from the parent process; *other process*: the lateness of a "
        "10 ms sleep in the parent process (shares no GIL with the app: when it is late too, the "
        "machine's CPUs were taken, by other jobs or by MLX's own threads). Figures are p50 / p99 "
        "/ max in ms.", "",
        "| window | s | loop samples | loop late ms | queue ms | /health n | /health ms | loop max vs idle | /health p99 vs idle | other process ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key, r in rows.items():
        if not r.loop:
            continue
        failed = f" ({r.health_failed} failed)" if r.health_failed else ""
        out.append(
            f"| {r.label} | {r.seconds:.1f} | {len(r.loop)} | {_ms(r.loop)} | {_ms(r.queue)} | "
            f"{len(r.health)}{failed} | {_ms(r.health)} | "
            f"{'1.0x' if key == 'idle' else _ratio(r.loop_max(), idle.loop_max())} | "
            f"{'1.0x' if key == 'idle' else _ratio(_pct(r.health, 99), _pct(idle.health, 99))} | "
            f"{_ms(r.machine)} |")
    expected = load.seconds / PROBE_SECONDS
    ok = load.loop_max() < STALL_TARGET_MS and max(load.queue, default=0) < STALL_TARGET_MS
    others = [r for k, r in rows.items() if k in ("evict", "start-up") and r.loop]
    worst_other = max(others, key=lambda r: r.loop_max(), default=None)
    out += [
        "",
        f"* **Longest stall while loading: loop {load.loop_max():.1f} ms, queue "
        f"{max(load.queue, default=0):.1f} ms (idle, same run: {idle.loop_max():.1f} ms / "
        f"{max(idle.queue, default=0):.1f} ms); target under {STALL_TARGET_MS:.0f} ms: "
        f"{common.verdict(ok)}.** p99 of the loop lateness {_pct(load.loop, 99):.1f} ms loading vs "
        f"{_pct(idle.loop, 99):.1f} ms idle; the probe woke {len(load.loop)} times of about "
        f"{expected:.0f} possible ({len(load.loop) / expected:.0%}). In the same windows the "
        f"parent process's own 10 ms sleep was up to {max(load.machine, default=0):.1f} ms late "
        f"(p99 {_pct(load.machine, 99):.1f} ms; idle: max {max(idle.machine, default=0):.1f} ms): "
        "that share of a stall is the machine (MLX's load threads and other jobs on the cores), "
        "not the app.",
        f"* `/health` while loading: p50 {_pct(load.health, 50):.1f} ms, p99 "
        f"{_pct(load.health, 99):.1f} ms, max {load.health_max():.1f} ms against idle p50 "
        f"{_pct(idle.health, 50):.1f}, p99 {_pct(idle.health, 99):.1f}, max "
        f"{idle.health_max():.1f} ms (p99 {_ratio(_pct(load.health, 99), _pct(idle.health, 99))}"
        f"); failed requests: {load.health_failed} loading, {idle.health_failed} idle.",
    ]
    if worst_other is not None:
        out.append(f"* Outside the loads, the longest stall: {worst_other.loop_max():.1f} ms during "
                   f"{worst_other.label.strip('* ')}"
                   + (f" ({common.verdict(worst_other.loop_max() < STALL_TARGET_MS)} against the same "
                      f"{STALL_TARGET_MS:.0f} ms)."))
    stall_lines = _stall_lines(data, windows)
    if stall_lines:
        out += ["", f"Where the loop was when it was more than {STALL_RECORD * 1000:.0f} ms late "
                "(a watchdog thread looks every 5 ms and takes every thread's stack while the "
                "loop is late):", ""] + stall_lines
    else:
        out += ["", f"The watchdog never saw the loop more than {STALL_RECORD * 1000:.0f} ms late."]
    return "\n".join(out).rstrip() + "\n"


def run(quick: bool = False) -> str:
    """The Markdown section: UI and API responsiveness while a model loads vs idle."""
    from mlx_tui.devtools.modelgen import write_random_model

    plan = Plan.for_mode(quick)
    started = time.perf_counter()
    load_before = common.machine_load()
    with common.work_folder("mlx-tui-responsiveness-") as work:
        folder = write_random_model(work / MODEL, target_bytes=plan.model_bytes, dtype=DTYPE)
        common.warm_page_cache(folder)
        build_seconds = time.perf_counter() - started
        _log(f"model built in {build_seconds:.1f} s")
        settings = work / "settings.toml"
        common.write_settings(settings, {MODEL: str(folder)}, memory={"poll_seconds": 1.0},
                              api={"enabled": False})
        data, health = _run_child(work, plan, settings)
        dump = os.environ.get("MLX_TUI_BENCH_DUMP")
        if dump:  # the raw figures, for a closer look
            Path(dump).write_text(json.dumps({"child": data, "health": health}), encoding="utf-8")
        desc = common.model_desc(folder, DTYPE, vocab=False)
    return render(data, health, quick=quick, model_desc=desc, total=time.perf_counter() - started,
                  build_seconds=build_seconds, load_before=load_before)


def main(argv: Sequence[str] | None = None) -> None:
    common.main(__doc__, run, "150 MB model, fewer loads", argv, child=child_main)


if __name__ == "__main__":
    main()
