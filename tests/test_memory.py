"""The memory gauge's figures: the system's (psutil), MLX's, and macOS's pressure level."""

from __future__ import annotations

import sys
from collections import namedtuple
from pathlib import Path

import mlx.core as mx

from mlx_tui.core.memory import (
    FixedMemoryProbe,
    SystemMemoryProbe,
    parse_pressure_level,
    read_macos_pressure_level,
)

RECORDED = Path(__file__).parent / "data" / "macos_memory.txt"

# psutil's macOS result type (psutil/_psosx.py): percent is (total - available) / total.
svmem_macos = namedtuple("svmem", "total available percent used free active inactive wired")
sswap = namedtuple("sswap", "total used free percent sin sout")


def test_recorded_sysctl_output_gives_the_pressure_levels() -> None:
    lines = [ln for ln in RECORDED.read_text().splitlines() if ln and not ln.startswith("#")]
    assert [parse_pressure_level(ln) for ln in lines] == [1, 2, 4, 1]
    assert parse_pressure_level(b"4\n") == 4
    assert parse_pressure_level(2) == 2
    assert parse_pressure_level("garbage") is None
    assert parse_pressure_level(3) is None, "only 1, 2 and 4 are levels"


def test_the_decision_figure_matches_psutil_percent_on_macos() -> None:
    gib = 1024**3
    vm = svmem_macos(total=32 * gib, available=12 * gib, percent=62.5, used=14 * gib,
                     free=1 * gib, active=11 * gib, inactive=10 * gib, wired=3 * gib)
    probe = SystemMemoryProbe(pressure_reader=lambda: parse_pressure_level("kern.x: 2"),
                              virtual_memory=lambda: vm,
                              swap_memory=lambda: sswap(4 * gib, 1 * gib, 3 * gib, 25.0, 0, 0))
    snap = probe.snapshot()
    assert snap.used_fraction * 100 == vm.percent
    assert snap.used_bytes == 20 * gib, "total - available, not psutil's 'used'"
    assert snap.swap_used_bytes == gib and snap.swap_total_bytes == 4 * gib
    assert snap.pressure_name == "warn"


def test_the_real_probe_reads_this_machine_and_mlx() -> None:
    keep = mx.ones((1024, 1024))
    mx.eval(keep)
    snap = SystemMemoryProbe().snapshot()
    assert 0 < snap.used_bytes < snap.total_bytes
    assert snap.used_bytes + snap.available_bytes == snap.total_bytes
    assert snap.mlx_active_bytes >= keep.nbytes
    if sys.platform != "darwin":
        assert snap.pressure_level is None and read_macos_pressure_level() is None


def test_a_fixed_probe_adds_what_mlx_holds_when_asked() -> None:
    probe = FixedMemoryProbe(total_bytes=10**9, used_fraction=0.25, track_mlx=True)
    before = probe.snapshot().used_bytes
    block = mx.ones((256, 1024))
    mx.eval(block)
    assert probe.snapshot().used_bytes - before == block.nbytes
    probe.set_fraction(0.9)
    assert probe.snapshot().used_fraction >= 0.9
