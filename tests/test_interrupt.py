"""Ctrl-C in the middle of a load: the process ends at once and leaves the user's files whole."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from mlx_tui.core.settings import read_settings, write_settings
from mlx_tui.core.store import Store
from mlx_tui.devtools.modelgen import write_random_model

from .conftest import make_settings

SCRIPT = """
import sys
from pathlib import Path
from mlx_tui.core.runtime import build_runtime
from mlx_tui.core.events import EventKind

runtime = build_runtime(Path(sys.argv[1]), db_path=Path(sys.argv[2]))
runtime.cache.subscribe(lambda e: e.kind in (EventKind.LOAD_STARTED, EventKind.LOADED)
                        and print(e.kind.value, flush=True))
try:
    runtime.cache.acquire("big")
    print("finished", flush=True)
except KeyboardInterrupt:
    print("interrupted", flush=True)
    sys.exit(130)
"""

EXIT_BOUND_SECONDS = 10.0
"""A hang, not a speed, check: exiting takes well under a second; a Ctrl-C that waited for the
load (or never ended the process) runs past this."""


def test_ctrl_c_mid_load_exits_at_once_and_keeps_files_intact(tmp_path: Path) -> None:
    big = write_random_model(tmp_path / "big", target_bytes=1_500_000_000)
    settings_path = tmp_path / "settings.toml"
    write_settings(make_settings({"big": str(big)}), settings_path)
    settings_before = settings_path.read_bytes()
    db = tmp_path / "db.sqlite"

    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(settings_path), str(db)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "load_started"
    proc.send_signal(signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=EXIT_BOUND_SECONDS)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"still running {EXIT_BOUND_SECONDS:g} s after Ctrl-C: {out!r} {err[-2000:]!r}")

    # "At once": it ended while the load was still running (the listener would have printed
    # "loaded" had the load finished first), not merely within the bound.
    assert out.split() == ["interrupted"], (out, err)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "Exception in thread" not in err, err
    assert settings_path.read_bytes() == settings_before
    assert read_settings(settings_path) == make_settings({"big": str(big)})
    # The database is whole and readable; the request never got its model, so it is no use.
    assert "big" not in Store(db).usage()
