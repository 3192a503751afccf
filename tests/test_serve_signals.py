"""An operator stops `mlx-tui serve` with SIGTERM or Ctrl-C while a large model loads: it exits
with the documented 0, never an abort from MLX's threads, and leaves the database whole."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest

from mlx_tui.core.settings import write_settings
from mlx_tui.core.store import Store
from mlx_tui.devtools.ports import free_port

from .conftest import make_settings

EXIT_BOUND_SECONDS = 20.0
"""A hang check, not a speed one: the server stops in well under a second."""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_a_load_exits_zero_without_an_abort(
        tmp_path: Path, model_factory: Callable[..., Path], sig: signal.Signals) -> None:
    big = model_factory("serve-big", target_bytes=400_000_000)
    settings_path = tmp_path / "settings.toml"
    write_settings(make_settings({"big": str(big)}, cache={"preload": ["big"]},
                                 api={"port": free_port()}), settings_path)
    db = tmp_path / "db.sqlite"
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlx_tui.cli", "--settings", str(settings_path), "--db", str(db), "serve"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    lines = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        lines.append(line)
        if "big: loading" in line or not line:
            break
    assert any("big: loading" in line for line in lines), "".join(lines)
    proc.send_signal(sig)
    try:
        _, err = proc.communicate(timeout=EXIT_BOUND_SECONDS)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"still running {EXIT_BOUND_SECONDS:g} s after {sig.name}")
    assert proc.returncode == 0, err[-2000:]
    assert "terminate called" not in err and "Traceback" not in err, err[-2000:]
    assert f"{sig.name} received, shutting down" in err
    Store(db).usage()  # the database opens and reads
