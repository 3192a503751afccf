"""Run the benchmarks and write ``BENCHMARKS.md``: ``python -m benchmarks [--quick] [--only NAME ...]``.

Each benchmark is a module of this package with ``run(quick: bool) -> str`` returning a Markdown
section. They run in the order of :data:`MODULES`, one after the other in this process; the
report (machine, date, command, a summary, then every section) is rewritten after each one, so
an interrupted run still leaves what it measured. A module that raises gets a section saying
so and why, the others still run, and the exit code is 1. A module that does not exist yet is
reported as not yet available (not a failure). A module with ``skip_reason()`` that returns a
reason (``gpu_memory`` where there is no CUDA device) is not run: it is reported as skipped,
with the section it last recorded (``recorded_section()``), so a CPU run keeps the GPU figures.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib
import os
import platform
import shlex
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Sequence

from .common import go_offline

go_offline()  # benchmarks never touch the network

MODULES: tuple[str, ...] = (
    "policy_replay", "overheads", "responsiveness", "costs_of_being_open", "gpu_memory",
    "distributed",  # issue 17: two ranks over loopback against one process
    "agent_tools",  # issue 12: an agent's trace with tools, TTFT against mlx_lm.server
    "soak",  # issue 9: the 1,000-request leak run and the 2,000-request soak, per block of 250
    "batching",  # issue 9: 8 and 32 concurrent streams against mlx_lm.server and one at a time
    "prompt_reuse",  # issue 11: multi-turn, restart-resume and agent-trace TTFT against mlx_lm.server
)
"""Benchmark modules of this package, in the order they run and appear in the report."""

TITLES = {
    "policy_replay": "Cache policy replay",
    "overheads": "Overheads against bare mlx-lm",
    "responsiveness": "Responsiveness",
    "costs_of_being_open": "Costs of being open",
    "gpu_memory": "GPU device memory",
    "distributed": "Distributed",
    "agent_tools": "Agent trace with tools",
    "soak": "Soak and leak run",
    "batching": "Continuous batching",
    "prompt_reuse": "Prompt reuse",
}
"""Section titles for a module that failed or has nothing recorded (each writes its own otherwise)."""

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "BENCHMARKS.md"


@dataclass
class Outcome:
    name: str
    status: str  # "ok", "failed", "not yet available"
    section: str
    seconds: float


def _log(message: str) -> None:
    print(f"[benchmarks] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- machine


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                return value.strip()
    except OSError:
        pass
    if sys.platform == "darwin":
        try:
            out = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True,
                                 text=True, timeout=5, check=False).stdout.strip()
            if out:
                return out
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or platform.machine() or "unknown"


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine_rows() -> list[tuple[str, str]]:
    """(label, value) rows describing this machine and software."""
    try:
        import psutil

        ram = f"{psutil.virtual_memory().total / 1024**3:.1f} GiB"
        physical = psutil.cpu_count(logical=False)
    except Exception:  # noqa: BLE001 - the report must not fail on a missing figure
        ram, physical = "unknown", None
    logical = os.cpu_count()
    cores = f"{logical} logical" + (f", {physical} physical" if physical else "")
    try:
        one, five, fifteen = os.getloadavg()
        load = f"{one:.2f} / {five:.2f} / {fifteen:.2f} (1 / 5 / 15 min, at start)"
    except OSError:
        load = "n/a"
    mlx = _version("mlx")
    if mlx == "not installed":
        mlx = _version("mlx-cpu")
    return [
        ("CPU", _cpu_model()),
        ("Cores", cores),
        ("RAM", ram),
        ("OS", platform.platform()),
        ("Python", platform.python_version()),
        ("mlx", mlx),
        ("mlx-lm", _version("mlx-lm")),
        ("Load average", load),
    ]


# --------------------------------------------------------------------------- running


def _failed_section(name: str, exc: BaseException) -> str:
    trace = "".join(traceback.format_exception(exc)).rstrip()
    return "\n".join([
        f"## {TITLES.get(name, name)}: FAILED", "",
        f"`benchmarks.{name}` raised `{type(exc).__name__}: {exc}`; the other benchmarks still ran.",
        "", "<details><summary>Traceback</summary>", "", "```text", trace, "```", "", "</details>",
        "",
    ])


def run_module(name: str, quick: bool) -> Outcome:
    """Import ``benchmarks.NAME`` and run it; never raises (except KeyboardInterrupt)."""
    started = time.perf_counter()
    qualified = f"{__package__ or 'benchmarks'}.{name}"
    try:
        module = importlib.import_module(qualified)
    except ModuleNotFoundError as exc:
        if exc.name == qualified:
            section = (f"## {TITLES.get(name, name)}: not yet available\n\n"
                       f"`{qualified}` does not exist yet in this checkout.\n")
            return Outcome(name, "not yet available", section, time.perf_counter() - started)
        return Outcome(name, "failed", _failed_section(name, exc), time.perf_counter() - started)
    except Exception as exc:  # noqa: BLE001 - a broken module is reported, the run goes on
        return Outcome(name, "failed", _failed_section(name, exc), time.perf_counter() - started)
    skip = getattr(module, "skip_reason", None)
    reason = skip() if skip else None
    if reason:
        recorded = getattr(module, "recorded_section", lambda: f"## {TITLES.get(name, name)}\n")
        return Outcome(name, f"skipped: {reason}", recorded().rstrip() + "\n",
                       time.perf_counter() - started)
    try:
        runner = getattr(module, "run")
        section = runner(quick=quick)
        if not isinstance(section, str):
            raise TypeError(f"run() returned {type(section).__name__}, not a Markdown str")
    except Exception as exc:  # noqa: BLE001
        return Outcome(name, "failed", _failed_section(name, exc), time.perf_counter() - started)
    return Outcome(name, "ok", section.rstrip() + "\n", time.perf_counter() - started)


def render(outcomes: Sequence[Outcome], pending: Sequence[str], *, command: str, quick: bool,
           started_at: _dt.datetime, machine: Sequence[tuple[str, str]], total: float | None) -> str:
    lines = ["# mlx-tui benchmarks", ""]
    lines += ["| | |", "|---|---|"]
    lines += [f"| {label} | {value} |" for label, value in machine]
    lines += [
        f"| Date (UTC) | {started_at.strftime('%Y-%m-%d %H:%M:%S')} |",
        f"| Command | `{command}` |",
        f"| Mode | {'quick (smaller models, fewer repeats)' if quick else 'full'} |",
        f"| Run time | {f'{total:.0f} s' if total is not None else 'still running'} |",
        "",
        "Speed figures are measured in this run and reported next to a baseline measured in the "
        "same run (as ratios); see `benchmarks/README.md` for what each benchmark does.",
        "",
        "| benchmark | status | seconds |",
        "|---|---|---:|",
    ]
    lines += [f"| `{o.name}` | {o.status} | {o.seconds:.1f} |" for o in outcomes]
    lines += [f"| `{name}` | pending | |" for name in pending]
    lines.append("")
    for outcome in outcomes:
        lines += [outcome.section, ""]
    return "\n".join(lines).rstrip() + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: smaller models, shorter traces, fewer repeats")
    parser.add_argument("--only", nargs="+", action="extend", choices=MODULES, metavar="NAME",
                        help=f"run only these benchmarks (of: {', '.join(MODULES)})")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"where to write the report (default: {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    names = [n for n in MODULES if not args.only or n in args.only]
    command = " ".join(["python -m benchmarks", *map(shlex.quote, argv)])
    started_at = _dt.datetime.now(_dt.timezone.utc)
    started = time.perf_counter()
    machine = machine_rows()
    out: Path = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    outcomes: list[Outcome] = []

    def write(total: float | None) -> None:
        pending = names[len(outcomes):]
        out.write_text(render(outcomes, pending, command=command, quick=args.quick,
                              started_at=started_at, machine=machine, total=total),
                       encoding="utf-8")

    write(None)
    try:
        for name in names:
            _log(f"{name}: running{' (quick)' if args.quick else ''}")
            outcome = run_module(name, args.quick)
            outcomes.append(outcome)
            _log(f"{name}: {outcome.status} in {outcome.seconds:.1f} s")
            if outcome.status == "failed":
                _log(outcome.section.splitlines()[2])
            write(None)
    except KeyboardInterrupt:
        write(None)
        _log(f"interrupted; partial report in {out}")
        return 130
    total = time.perf_counter() - started
    write(total)
    failed = [o.name for o in outcomes if o.status == "failed"]
    _log(f"wrote {out} in {total:.0f} s" + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
