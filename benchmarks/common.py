"""What the benchmark modules share: logging, the offline environment, work folders and the
model folders built in them, settings files, the machine's load, ratio and verdict formatting,
and the ``main()`` that runs one module on its own (``python -m benchmarks.NAME [--quick]``).

Nothing here measures anything; each module keeps its own method and its own report.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from mlx_tui.devtools.settings_files import write_isolated_settings as write_settings

__all__ = [
    "OFFLINE", "go_offline", "offline_env", "logger", "machine_load", "verdict", "ratio",
    "ratio_summary", "spread", "work_folder", "weight_files", "read_files", "warm_page_cache",
    "model_desc", "write_settings", "main",
]

ROOT = Path(__file__).resolve().parent.parent
"""The repository (the working directory of the child processes a benchmark starts)."""

OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
"""Benchmarks never touch the network."""


def go_offline() -> None:
    """Make this process (and what it starts) offline, unless told otherwise already."""
    for key, value in OFFLINE.items():
        os.environ.setdefault(key, value)


def offline_env(**extra: str) -> dict[str, str]:
    """This process's environment for a child process, forced offline."""
    return dict(os.environ, **OFFLINE, **extra)


def logger(name: str) -> Callable[[str], None]:
    """``log(message)`` writing ``[name] message`` to stderr (stdout is the report's)."""

    def log(message: str) -> None:
        print(f"[{name}] {message}", file=sys.stderr, flush=True)

    return log


def machine_load() -> str:
    """The load average, for the report next to figures that other jobs can move."""
    try:
        one, five, _ = os.getloadavg()
    except OSError:
        return "n/a"
    return f"{one:.2f} (1 min) / {five:.2f} (5 min)"


# --------------------------------------------------------------------------- formatting


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def ratio(value: float, base: float, digits: int = 2) -> str:
    """``value / base`` as ``1.23x``; ``-`` when there is no base."""
    return f"{value / base:.{digits}f}x" if base > 0 else "-"


def ratio_summary(ratios: Sequence[float]) -> str:
    """Median of per-repeat ratios and their range (not the ratio of the two medians)."""
    return (f"{statistics.median(ratios):.3f}x (median of per-repeat ratios, range "
            f"{min(ratios):.3f}-{max(ratios):.3f})")


def spread(values: Sequence[float], digits: int = 3) -> str:
    """``min-max``."""
    return f"{min(values):.{digits}f}-{max(values):.{digits}f}"


# --------------------------------------------------------------------------- folders and models


@contextmanager
def work_folder(prefix: str) -> Iterator[Path]:
    """A temporary folder for a run's models, settings and databases, removed at the end."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def weight_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("model*.safetensors"))


def read_files(files: Sequence[Path]) -> int:
    """Read every file into a fresh buffer (as a load must allocate); returns bytes read."""
    total = 0
    for path in files:
        data = path.read_bytes()
        total += len(data)
        del data
    return total


def warm_page_cache(folder: Path) -> None:
    """Read every file of ``folder`` once: the software is measured, not the disk."""
    read_files([p for p in folder.iterdir() if p.is_file()])


def model_desc(folder: Path, dtype: str, *, vocab: bool = True) -> str:
    """``0.07 GB float32 llama (hidden 512, 4 layers, vocab 1024), random weights``."""
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    size = sum(p.stat().st_size for p in weight_files(folder))
    shape = f"hidden {config['hidden_size']}, {config['num_hidden_layers']} layers"
    if vocab:
        shape += f", vocab {config['vocab_size']}"
    return f"{size / 1e9:.2f} GB {dtype} llama ({shape}), random weights"


# --------------------------------------------------------------------------- standalone


def main(doc: str | None, run: Callable[..., str], quick_help: str,
         argv: Sequence[str] | None = None,
         child: Callable[[dict[str, Any]], None] | None = None) -> None:
    """Run one benchmark module on its own and print its section.

    ``doc`` is the module's docstring (its first line is the help's description); a module
    that runs part of itself in a child process passes ``child``, which ``--child JSON`` calls.
    """
    parser = argparse.ArgumentParser(description=(doc or "").splitlines()[0] if doc else None)
    parser.add_argument("--quick", action="store_true", help=quick_help)
    if child is not None:
        parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if child is not None and args.child:
        child(json.loads(args.child))
        return
    go_offline()
    print(run(quick=args.quick))
