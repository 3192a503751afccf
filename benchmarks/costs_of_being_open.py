"""Benchmarks §4, the costs of being open: time to the first frame, and what the app costs
while it sits idle in a real terminal, next to baselines measured in the same run.

Everything runs in real terminals: a private tmux server (its own socket, removed at the end)
with sessions of 120x40, ``LANG=C.UTF-8`` and ``COLORTERM=truecolor`` (what a modern terminal
advertises; it decides how long Textual's colour codes are), ``HOME`` and the XDG folders in a
temporary folder (htop and btop write their settings there, not in the user's).

* **First frame**: from ``tmux new-session`` until ``tmux capture-pane`` (polled every 10 ms)
  shows the app's first frame (the memory gauge's title and the footer), for ``mlx-tui
  --no-api`` with settings naming one tiny model and no preloads. Baselines, in the same
  rounds (the order rotated each round): the interpreter alone (``python -c "print(...)"``),
  ``python -c "import textual; print(...)"`` and a minimal Textual app (a ``Static`` and a
  ``Footer``), each until its marker is on screen. Median of 5 rounds (``--quick``: 3).
* **Where start-up goes**: ``python -X importtime`` of what ``mlx-tui`` imports before its
  first frame, summed by top-level package; the wall time of the bare imports; and one more
  start of the app under tmux with an import hook that stamps when each top-level package is
  first imported (and in which thread), to show that ``mlx_lm`` (and ``transformers``) come
  after the first frame, in the app's warm-up thread.
* **Idle**: the app (``mlx-tui --no-api``, memory polled every second so the gauge refreshes
  every second; and the same with the HTTP API on), ``htop`` (refreshing every second),
  ``btop`` (``update_ms = 1000``) and ``top -d 1``, all open at once at 120x40; after they
  settle, a window of 30 s (``--quick``: 10 s) with the machine as it is and then one of 20 s
  (``--quick``: 5 s)
  while another process takes and frees 256 MiB every other second (the gauge's figures then
  change every second): CPU time of each program's processes (psutil, user + system, children
  included) as % of one core, the bytes each writes to its terminal (``tmux pipe-pane``) and
  the rows its output redraws (cursor moves), to show what repaints.

Run ``python -m benchmarks.costs_of_being_open [--quick]``; it prints a Markdown section.
"""

from __future__ import annotations

import re
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from mlx_tui.devtools.ports import free_port
from mlx_tui.devtools.tmux import TmuxServer

from . import common

__all__ = ["Plan", "run", "main"]

SIZE = (120, 40)
POLL = 0.010
FIRST_FRAME_TARGET = 1.0  # seconds
CPU_TARGET = 2.0  # % of one core
BYTES_TARGET = 400.0  # bytes per second
MOVER_BYTES = 256 * 1024**2  # the memory mover holds this much every other second
VENV_BIN = Path(sys.executable).parent
ROOT = common.ROOT
WATCHED = ("mlx_lm", "transformers", "mlx", "textual", "uvicorn", "starlette", "httpx", "tokenizers",
           "huggingface_hub", "numpy", "jinja2", "psutil", "safetensors")


@dataclass(frozen=True)
class Plan:
    rounds: int
    warm_round: bool  # one untimed round of starts first (page cache, .pyc files)
    idle_seconds: float  # the window with the machine as it is
    moving_seconds: float  # the window with memory moving
    settle_seconds: float

    @classmethod
    def for_mode(cls, quick: bool) -> "Plan":
        if quick:
            return cls(rounds=3, warm_round=False, idle_seconds=10.0, moving_seconds=5.0,
                       settle_seconds=2.0)
        return cls(rounds=5, warm_round=True, idle_seconds=30.0, moving_seconds=20.0,
                   settle_seconds=5.0)


_log = common.logger("costs_of_being_open")


# --------------------------------------------------------------------------- tmux


def _wait_for(tmux: TmuxServer, name: str, ready: Callable[[str], bool], timeout: float) -> tuple[float, str]:
    """Poll the pane every 10 ms; (monotonic time the screen first satisfied ``ready``, screen)."""
    times, screen = _wait_stages(tmux, name, [ready], timeout)
    return times[0], screen


def _wait_stages(tmux: TmuxServer, name: str, stages: Sequence[Callable[[str], bool]],
                 timeout: float) -> tuple[list[float], str]:
    """Poll the pane every 10 ms until every stage's test has passed; the monotonic time at
    which each first passed, and the last screen."""
    deadline = time.monotonic() + timeout
    times: list[float | None] = [None] * len(stages)
    while True:
        screen = tmux.screen(name)
        now = time.monotonic()
        for i, ready in enumerate(stages):
            if times[i] is None and ready(screen):
                times[i] = now
        if all(t is not None for t in times):
            return [t for t in times if t is not None], screen
        if now > deadline:
            raise RuntimeError(f"{name}: the expected screen never appeared in {timeout:g} s; "
                               f"the screen:\n{screen}")
        time.sleep(POLL)


def _app_painted(screen: str) -> bool:
    """The app's first frame: the memory gauge's title, drawn at the full width."""
    lines = screen.splitlines()
    return bool(lines) and "Memory" in lines[0] and len(lines[0]) >= SIZE[0] - 1


def _footer(screen: str) -> bool:
    """The footer's keys are on screen (the last line)."""
    lines = screen.rstrip("\n").splitlines()
    return bool(lines) and "Quit" in lines[-1]


def _app_ready(screen: str) -> bool:
    """The app's complete first screen: gauge and footer keys."""
    return _app_painted(screen) and _footer(screen)


def _marker(text: str) -> Callable[[str], bool]:
    return lambda screen: text in screen


# --------------------------------------------------------------------------- set-up


HELLO_APP = '''
from textual.app import App
from textual.widgets import Footer, Static


class Hello(App):
    BINDINGS = [("ctrl+q", "quit", "Quit")]

    def compose(self):
        yield Static("hello-ready")
        yield Footer()


Hello().run()
'''

TRACE_WRAPPER = '''
import sys, threading, time

_log = open(sys.argv.pop(1), "w", encoding="utf-8", buffering=1)
_seen = set()


class _Stamp:
    """Stamps the first import of each top-level package (monotonic, thread)."""

    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top not in _seen:
            _seen.add(top)
            _log.write(f"{time.monotonic()} {top} {threading.current_thread().name}\\n")
        return None


_log.write(f"{time.monotonic()} __start__ MainThread\\n")
sys.meta_path.insert(0, _Stamp())
from mlx_tui.cli import main

sys.exit(main())
'''


def _write_settings(path: Path, model: Path, api_port: int | None) -> None:
    common.write_settings(path, {"tiny": str(model)}, memory={"poll_seconds": 1.0},
                          api={"enabled": api_port is not None, "port": api_port or 11435})


@dataclass
class Setup:
    work: Path
    settings: Path
    settings_api: Path
    env: dict[str, str]

    def app_command(self, settings: Path | None = None, api: bool = False, db: str = "app") -> str:
        args = [str(VENV_BIN / "mlx-tui"), *([] if api else ["--no-api"]),
                "--settings", str(settings or self.settings), "--db", str(self.work / f"{db}.db")]
        return "exec " + " ".join(map(shlex.quote, args))


def _setup(work: Path) -> Setup:
    from mlx_tui.devtools.modelgen import write_random_model

    model = write_random_model(work / "tiny", target_bytes=2_000_000, dtype="float32")
    settings = work / "settings.toml"
    settings_api = work / "settings-api.toml"
    _write_settings(settings, model, None)
    _write_settings(settings_api, model, free_port())
    home = work / "home"
    (home / ".config" / "btop").mkdir(parents=True)
    (home / ".config" / "btop" / "btop.conf").write_text("update_ms = 1000\n", encoding="utf-8")
    (work / "hello.py").write_text(HELLO_APP, encoding="utf-8")
    (work / "trace.py").write_text(TRACE_WRAPPER, encoding="utf-8")
    env = {
        "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "COLORTERM": "truecolor",
        "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_DATA_HOME": str(home / ".local" / "share"), "XDG_CACHE_HOME": str(home / ".cache"),
        "HF_HOME": str(work / "hf"), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
    }
    return Setup(work, settings, settings_api, env)


# --------------------------------------------------------------------------- first frame


@dataclass
class FirstFrame:
    seconds: dict[str, list[float]] = field(default_factory=dict)  # the first frame
    complete: dict[str, list[float]] = field(default_factory=dict)  # footer keys there too

    def median(self, name: str) -> float:
        return statistics.median(self.seconds[name])


APP = "mlx-tui --no-api"
HELLO = "minimal Textual app"
FIRST_FRAME_WHAT = {
    APP: "`mlx-tui --no-api --settings S --db D`: the memory gauge's title on the top line",
    HELLO: "a `Static` and a `Footer` (`Hello().run()`): the `Static`'s text",
    "import textual": '`python -c "import textual; print(MARK)"`: MARK',
    "python": '`python -c "print(MARK)"`: MARK; the interpreter and tmux alone',
}


def measure_first_frames(tmux: TmuxServer, setup: Setup, rounds: int, warm_round: bool) -> FirstFrame:
    py = shlex.quote(sys.executable)
    contenders: dict[str, tuple[str, list[Callable[[str], bool]]]] = {
        APP: (setup.app_command(), [_app_painted, _footer]),
        HELLO: (f"exec {py} {shlex.quote(str(setup.work / 'hello.py'))}",
                [_marker("hello-ready"), _footer]),
        "import textual": (f"{py} -c \"import textual; print('import-' + 'ready')\"; sleep 60",
                           [_marker("import-ready")]),
        "python": (f"{py} -c \"print('python-' + 'ready')\"; sleep 60", [_marker("python-ready")]),
    }
    names = list(contenders)
    result = FirstFrame()
    first = 0 if warm_round else 1
    for i in range(first, rounds + 1):  # round 0, when run, is untimed: page cache, .pyc files
        order = names[i % len(names):] + names[:i % len(names)]
        for contender in order:
            command, stages = contenders[contender]
            session = tmux.unique("ff")
            started = time.monotonic()
            tmux.start(session, command)
            try:
                seen, _ = _wait_stages(tmux, session, stages, timeout=60)
            finally:
                tmux.kill(session)
            if i:
                result.seconds.setdefault(contender, []).append(seen[0] - started)
                if len(seen) > 1:
                    result.complete.setdefault(contender, []).append(seen[-1] - started)
            time.sleep(0.2)  # let the killed program exit before the next start
        if i:
            _log(f"first frame round {i}: " + ", ".join(
                f"{n} {result.seconds[n][-1]:.3f} s" for n in names))
    return result


@dataclass
class ImportFacts:
    by_package: list[tuple[str, float]]  # (top-level package, self seconds)
    total: float
    modules: set[str]
    walls: dict[str, list[float]]


IMPORTS = "import mlx_tui.cli, mlx_tui.ui.app, mlx_tui.core.runtime"


def measure_imports(rounds: int) -> ImportFacts:
    """``-X importtime`` of what ``mlx-tui`` imports before its first frame, and wall times."""
    env = common.offline_env()
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", IMPORTS], capture_output=True,
                          text=True, timeout=60, env=env, cwd=ROOT)
    by_package: Counter[str] = Counter()
    modules: set[str] = set()
    for line in done.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \| (\s*)(\S+)", line)
        if not m:
            continue
        name = m.group(4)
        modules.add(name)
        by_package[name.partition(".")[0]] += int(m.group(1)) / 1e6
    walls: dict[str, list[float]] = {}
    snippets = {"python -c pass": "pass", "import textual": "import textual",
                "import textual.app": "import textual.app", IMPORTS: IMPORTS}
    for _ in range(rounds):
        for label, code in snippets.items():
            started = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=ROOT,
                           capture_output=True, timeout=60)
            walls.setdefault(label, []).append(time.perf_counter() - started)
    return ImportFacts(by_package.most_common(), sum(by_package.values()), modules, walls)


@dataclass
class TraceFacts:
    frame_at: float  # seconds after the interpreter started (its own first stamp)
    footer_at: float
    stamps: list[tuple[float, str, str]]  # (seconds after start, package, thread)


def trace_start(tmux: TmuxServer, setup: Setup) -> TraceFacts:
    """One more start of the app, with first-import stamps; which packages came after the frame."""
    log = setup.work / "imports.log"
    command = "exec " + " ".join(map(shlex.quote, [
        sys.executable, str(setup.work / "trace.py"), str(log), "--no-api",
        "--settings", str(setup.settings), "--db", str(setup.work / "trace.db")]))
    session = tmux.unique("trace")
    tmux.start(session, command)
    try:
        (frame, footer), _ = _wait_stages(tmux, session, [_app_painted, _footer], timeout=60)
        deadline = time.monotonic() + 6.0  # until the warm-up thread has imported mlx_lm's stack
        while time.monotonic() < deadline and " tokenizers " not in log.read_text(encoding="utf-8"):
            time.sleep(0.1)
    finally:
        tmux.kill(session)
    stamps = []
    for line in log.read_text(encoding="utf-8").splitlines():
        t, name, thread = line.split(" ", 2)
        stamps.append((float(t), name, thread))
    start = stamps[0][0]
    return TraceFacts(frame - start, footer - start, [(t - start, n, th) for t, n, th in stamps[1:]])


# --------------------------------------------------------------------------- idle


@dataclass
class Idle:
    name: str
    what: str
    cpu_seconds: float
    wall: float
    out_bytes: int
    rows: Counter[int] = field(default_factory=Counter)  # cursor moves to each row
    screen: list[str] = field(default_factory=list)

    @property
    def cpu_percent(self) -> float:
        return self.cpu_seconds / self.wall * 100

    @property
    def bytes_per_second(self) -> float:
        return self.out_bytes / self.wall


@dataclass
class IdleWindow:
    label: str
    programs: list[Idle]
    server_cpu: float  # the tmux server, % of a core
    wall: float

    def get(self, name: str) -> Idle | None:
        return next((p for p in self.programs if p.name == name), None)


def _tree_cpu(pid: int) -> float:
    """User + system CPU seconds of a process and its descendants (alive now)."""
    import psutil

    total = 0.0
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
        except psutil.Error:
            pass
    return total


_CURSOR_TO = re.compile(rb"\x1b\[(\d+);(\d+)[Hf](?=[^\x1b\r\n]|\x1b\[[0-9;]*m)")


def _rows(data: bytes) -> Counter[int]:
    """How often the output moves the cursor to a row (1-based) and draws there (a cursor
    move followed by text or a colour, not one that only parks the cursor): each is a
    stretch of a line redrawn, so this says which rows repaint."""
    return Counter(int(m.group(1)) for m in _CURSOR_TO.finditer(data))


MOVER = """
import ctypes, mmap, sys, time
size = int(sys.argv[1])
while True:
    held = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE)  # private: counted as used
    ctypes.memset(ctypes.addressof(ctypes.c_char.from_buffer(held)), 1, size)  # every page
    time.sleep(1.0)
    held.close()  # munmap: the memory is back at once
    time.sleep(1.0)
"""


def _window(tmux: TmuxServer, setup: Setup, label: str, programs: Sequence[tuple[str, str]],
            sessions: dict[str, str], seconds: float) -> IdleWindow:
    pids = {name: tmux.pane_pid(sessions[name]) for name, _ in programs}
    server = tmux.server_pid()
    stem = label.replace(" ", "-")
    files = {name: setup.work / f"out-{stem}-{i}.bin" for i, (name, _) in enumerate(programs)}
    for name, _ in programs:
        tmux.pipe(sessions[name], files[name])
    time.sleep(0.2)  # pipe-pane starts its `cat` asynchronously
    cpu0 = {name: _tree_cpu(pid) for name, pid in pids.items()}
    server0 = _tree_cpu(server)
    started = time.monotonic()
    time.sleep(seconds)
    wall = time.monotonic() - started
    cpu1 = {name: _tree_cpu(pid) for name, pid in pids.items()}
    server1 = _tree_cpu(server)
    sizes = {name: (path.stat().st_size if path.exists() else 0) for name, path in files.items()}
    for name, _ in programs:
        tmux.unpipe(sessions[name])
    out = []
    for name, what in programs:
        data = files[name].read_bytes()[: sizes[name]] if files[name].exists() else b""
        out.append(Idle(name, what, cpu1[name] - cpu0[name], wall, sizes[name], _rows(data),
                        tmux.screen(sessions[name]).splitlines()))
    return IdleWindow(label, out, (server1 - server0) / wall * 100, wall)


def measure_idle(tmux: TmuxServer, setup: Setup, plan: Plan) -> list[IdleWindow]:
    """Every program open at once: a window with the machine as it is, then one with memory moving."""
    programs: list[tuple[str, str, str, Callable[[str], bool]]] = [
        (APP, "memory polled every 1 s (`poll_seconds = 1`), the chat input focused",
         setup.app_command(db="idle"), _app_ready),
        ("mlx-tui (API on)", "the same with the HTTP API serving on a loopback port (uvicorn "
         "in a thread)", setup.app_command(setup.settings_api, api=True, db="idle-api"),
         _app_ready),
        ("htop -d 10", "refresh every 1 s", "exec htop -d 10", _marker("Load average")),
        ("btop", "`update_ms = 1000` in its config", "exec btop", _marker("cpu")),
        ("top -d 1", "refresh every 1 s", "exec top -d 1", _marker("load average")),
    ]
    if shutil.which("btop") is None:
        programs = [p for p in programs if p[0] != "btop"]
    if shutil.which("htop") is None:
        programs = [p for p in programs if not p[0].startswith("htop")]
    named = [(name, what) for name, what, _, _ in programs]
    sessions: dict[str, str] = {}
    mover: subprocess.Popen[bytes] | None = None
    try:
        for name, _, command, _ in programs:
            sessions[name] = tmux.unique("idle")
            tmux.start(sessions[name], command)
        for name, _, _, ready in programs:
            _wait_for(tmux, sessions[name], ready, timeout=60)
        time.sleep(plan.settle_seconds)
        windows = [_window(tmux, setup, "as it is", named, sessions, plan.idle_seconds)]
        mover = subprocess.Popen([sys.executable, "-c", MOVER, str(MOVER_BYTES)])
        time.sleep(1.0)
        windows.append(_window(tmux, setup, "memory moving", named, sessions, plan.moving_seconds))
        return windows
    finally:
        if mover is not None:
            mover.kill()
            mover.wait()
        for session in sessions.values():
            tmux.kill(session)


# --------------------------------------------------------------------------- report


def _first_frame_lines(ff: FirstFrame, plan: Plan) -> list[str]:
    app = ff.median(APP)
    base, hello = ff.median("import textual"), ff.median(HELLO)
    lines = [
        "### Start to first frame", "",
        f"{plan.rounds} rounds{' (after one untimed round)' if plan.warm_round else ''}, the order "
        "rotated each round; time from "
        "`tmux new-session` to the first `capture-pane` (every 10 ms) that shows it, so each "
        "figure includes starting the pane (tmux; a shell for the two `python -c` lines). For "
        "the two Textual apps, *footer* is when the footer's keys are on screen as well.", "",
        "| what | first frame: median s | min-max s | vs `import textual` | vs minimal Textual app | footer: median s | min-max s | shows |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name in ff.seconds:
        med = ff.median(name)
        done = ff.complete.get(name)
        lines.append(
            f"| {name} | {med:.3f} | {common.spread(ff.seconds[name])} | {med / base:.2f}x | "
            f"{med / hello:.2f}x | {f'{statistics.median(done):.3f}' if done else ''} | "
            f"{common.spread(done) if done else ''} | {FIRST_FRAME_WHAT[name]} |")
    complete = statistics.median(ff.complete[APP])
    hello_complete = statistics.median(ff.complete[HELLO])
    lines += [
        "",
        f"* **`mlx-tui` start to first frame: {app:.3f} s (median; {app / base:.2f}x `python -c "
        f"\"import textual\"` at {base:.3f} s, {app / hello:.2f}x a minimal Textual app at "
        f"{hello:.3f} s); target under {FIRST_FRAME_TARGET:g} s: "
        f"{common.verdict(app < FIRST_FRAME_TARGET)}.** The footer's keys follow "
        f"{(complete - app) * 1000:.0f} ms later (median {complete:.3f} s, "
        f"{common.verdict(complete < FIRST_FRAME_TARGET)} against the same target; the minimal app's "
        f"footer comes {(hello_complete - hello) * 1000:.0f} ms after its first frame).",
    ]
    return lines


def _import_lines(facts: ImportFacts, trace: TraceFacts) -> list[str]:
    walls = {k: statistics.median(v) for k, v in facts.walls.items()}
    top = facts.by_package[:8]
    rest = facts.total - sum(s for _, s in top)
    heavy = [m for m in ("mlx_lm", "transformers", "tokenizers", "uvicorn", "starlette", "httpx")
             if m in facts.modules]
    lines = [
        "", "### Where start-up goes", "",
        f"`python -X importtime -c \"{IMPORTS}\"` (what `mlx-tui` imports before building its "
        f"runtime and app): {facts.total * 1000:.0f} ms of imports in all, by top-level package "
        "(self time, summed):", "",
        "| package | ms | share |", "|---|---:|---:|",
    ]
    lines += [f"| `{name}` | {s * 1000:.0f} | {s / facts.total:.0%} |" for name, s in top]
    lines += [f"| everything else | {rest * 1000:.0f} | {rest / facts.total:.0%} |", ""]
    lines.append(
        f"* Wall time of the bare imports (median of the same rounds): `python -c pass` "
        f"{walls['python -c pass']:.3f} s, `import textual` {walls['import textual']:.3f} s, "
        f"`import textual.app` {walls['import textual.app']:.3f} s, the app's imports "
        f"{walls[IMPORTS]:.3f} s ({walls[IMPORTS] / walls['import textual']:.2f}x `import textual`).")
    lines.append("* Imported before the app starts: "
                 + (", ".join(f"`{m}`" for m in heavy) if heavy else
                    "none of `mlx_lm`, `transformers`, `tokenizers`, `uvicorn`, `starlette`, "
                    "`httpx`") + ".")
    before = [(t, n, th) for t, n, th in trace.stamps if t <= trace.frame_at]
    watched_before = [n for _, n, _ in before if n in WATCHED]
    watched_after = [f"`{n}` +{(t - trace.frame_at) * 1000:.0f} ms ({th})"
                     for t, n, th in trace.stamps if t > trace.frame_at and n in WATCHED]
    mlx_lm = next(((t, th) for t, n, th in trace.stamps if n == "mlx_lm"), None)
    if mlx_lm is None:
        verdict = "`mlx_lm` was not imported in the seconds after the frame"
    elif mlx_lm[0] > trace.frame_at:
        verdict = (f"**`mlx_lm` is not imported before the first frame**: its import began "
                   f"{(mlx_lm[0] - trace.frame_at) * 1000:.0f} ms after the frame was on screen, "
                   f"in thread `{mlx_lm[1]}`")
    else:
        verdict = (f"**`mlx_lm` was imported before the first frame** ("
                   f"{(trace.frame_at - mlx_lm[0]) * 1000:.0f} ms before it, thread `{mlx_lm[1]}`)")
    if mlx_lm is not None and mlx_lm[0] < trace.footer_at:
        verdict += (f", but {(trace.footer_at - mlx_lm[0]) * 1000:.0f} ms *before* the footer's "
                    "keys were: the background import runs while the app finishes its first "
                    "screen (see the responsiveness section's start-up row)")
    lines += [
        f"* One more start under tmux with first-import stamps (an import hook; first frame seen "
        f"{trace.frame_at:.3f} s and the footer {trace.footer_at:.3f} s after the interpreter "
        f"started): {verdict}. Imported before the frame ({len(before)} top-level packages): "
        + ", ".join(f"`{n}`" for n in watched_before) + "; after it: "
        + (", ".join(watched_after) if watched_after else "none of note") + ".",
    ]
    return lines


def _row_text(screen: list[str], row: int) -> str:
    text = screen[row - 1].strip() if 0 < row <= len(screen) else ""
    return text[:60].replace("|", "\\|").replace("`", "'")


def _idle_lines(windows: list[IdleWindow], plan: Plan) -> list[str]:
    anchor = "htop -d 10" if windows[0].get("htop -d 10") else "top -d 1"
    lines = [
        "", "### Idle", "",
        "All programs open at once in 120x40 panes, after they settle "
        f"({plan.settle_seconds:g} s): a window of {windows[0].wall:.0f} s with the machine *as it "
        "is* (other jobs may move its memory), then a "
        f"window of {windows[-1].wall:.0f} s with *memory moving* (another process takes and "
        f"frees {MOVER_BYTES / 1024**3:.2f} GiB every other second, so the gauge's figures "
        "change every second, as on a busy machine). CPU is user + system time of the "
        "program's processes as % of one core; bytes are what it wrote to its terminal (`tmux "
        "pipe-pane`); *redraws* are the stretches of lines it redrew (a cursor move, `ESC[row;colH`, "
        "followed by text; programs that rewrite whole screens with other sequences show few).", "",
        f"| window | program | CPU % of a core | bytes/s | redraws/s | CPU vs {anchor} | bytes vs {anchor} | settings |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for w in windows:
        base = w.get(anchor)
        for i in w.programs:
            lines.append(
                f"| {w.label} | {i.name} | {i.cpu_percent:.2f} | {i.bytes_per_second:.0f} | "
                f"{sum(i.rows.values()) / i.wall:.1f} | {common.ratio(i.cpu_percent, base.cpu_percent) if base else '-'} | "
                f"{common.ratio(i.bytes_per_second, base.bytes_per_second) if base else '-'} | {i.what} |")
    quiet, moving = windows[0], windows[-1]
    app, app_moving = quiet.get(APP), moving.get(APP)
    assert app is not None and app_moving is not None
    anchors = [i for i in quiet.programs if not i.name.startswith("mlx-tui")]
    anchor_text = ", ".join(f"{a.name} {a.cpu_percent:.2f}% / {a.bytes_per_second:.0f} B/s"
                            for a in anchors)
    worst_cpu = max(app.cpu_percent, app_moving.cpu_percent)
    worst_bytes = max(app.bytes_per_second, app_moving.bytes_per_second)
    lines += [
        "",
        f"* **Idle CPU: {app.cpu_percent:.2f}% of a core as it is, {app_moving.cpu_percent:.2f}% "
        f"with memory moving; target under {CPU_TARGET:g}%: {common.verdict(worst_cpu < CPU_TARGET)}. "
        f"Terminal output: {app.bytes_per_second:.0f} B/s as it is, "
        f"{app_moving.bytes_per_second:.0f} B/s with memory moving; target at most "
        f"{BYTES_TARGET:g} B/s: {common.verdict(worst_bytes <= BYTES_TARGET)}.** Anchors in the first "
        f"window: {anchor_text}. The tmux server (parsing every pane's output) used "
        f"{quiet.server_cpu:.2f}% / {moving.server_cpu:.2f}% of a core.",
    ]
    for w in windows:
        a = w.get(APP)
        if a is None:
            continue
        if not a.rows:
            lines.append(f"* {w.label}: the app wrote nothing in {a.wall:.0f} s (the gauge "
                         "repaints only when its rounded figures change).")
            continue
        total = sum(a.rows.values())
        top = a.rows.most_common(5)
        lines.append(
            f"* What the app redraws, {w.label}: {total} stretches of lines in {a.wall:.0f} s "
            f"({a.out_bytes / total:.0f} bytes each); the rows redrawn most (row: times, what "
            "is on it at the end): "
            + "; ".join(f"{row}: {n} (`{_row_text(a.screen, row)}`)" for row, n in top) + ".")
    api = quiet.get("mlx-tui (API on)")
    if api is not None:
        lines.append(f"* With the HTTP API on (uvicorn's loop wakes every 0.1 s), first window: "
                     f"{api.cpu_percent:.2f}% of a core ({common.ratio(api.cpu_percent, app.cpu_percent)} "
                     f"`--no-api`), {api.bytes_per_second:.0f} B/s.")
    if shutil.which("btop") is None:
        lines.append("* btop is not installed here (`apt-get install btop`), so it is not listed.")
    return lines


def run(quick: bool = False) -> str:
    """The Markdown section: first frame, start-up imports and idle costs, with anchors."""
    if shutil.which("tmux") is None:
        raise RuntimeError("tmux is not installed (make system-deps, or apt-get install tmux)")
    plan = Plan.for_mode(quick)
    started = time.perf_counter()
    load_before = common.machine_load()
    with common.work_folder("mlx-tui-costs-") as work:
        tmux: TmuxServer | None = None
        try:
            setup = _setup(work)
            tmux = TmuxServer(setup.env, SIZE, keeper=True, stem="mlx-tui-bench")
            ff = measure_first_frames(tmux, setup, plan.rounds, plan.warm_round)
            facts = measure_imports(plan.rounds)
            trace = trace_start(tmux, setup)
            _log("first frames and imports done; idle window")
            idle = measure_idle(tmux, setup, plan)
        finally:
            if tmux is not None:
                tmux.close()
    tmux_version = subprocess.run(["tmux", "-V"], capture_output=True, text=True).stdout.strip()
    out = [
        "## Costs of being open", "",
        f"{'Quick' if quick else 'Full'} run: {time.perf_counter() - started:.0f} s. Real "
        f"terminals: {tmux_version} panes of {SIZE[0]}x{SIZE[1]}, `TERM=tmux-256color`, "
        "`COLORTERM=truecolor`. Machine load average before: "
        f"{load_before}, after: {common.machine_load()} (other jobs share this 2-core machine: they "
        "slow starts and add CPU time to every program alike).", "",
    ]
    out += _first_frame_lines(ff, plan)
    out += _import_lines(facts, trace)
    out += _idle_lines(idle, plan)
    return "\n".join(out).rstrip() + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    common.main(__doc__, run, "3 rounds, a 10 s idle window", argv)


if __name__ == "__main__":
    main()
