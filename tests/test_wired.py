"""Wired memory on a Mac: the sysctl advice before a load, MLX's wired limit for the loaded set,
and memory another process wires. Snapshots come from the real probe fed recorded macOS output;
MLX's setter is replaced by a recorder, so the decisions are checked without Metal."""

from __future__ import annotations

import math
from collections import namedtuple
from dataclasses import replace

import pytest

from mlx_tui.core.memory import (
    MemorySnapshot,
    SystemMemoryProbe,
    parse_wired_limit_mb,
    read_macos_wired,
)
from mlx_tui.core.wired import (
    WiredLimit,
    WiredNeighbours,
    plan_wired_limit,
    suggested_wired_limit_mb,
    wired_advice,
)

GIB = 1024**3
MIB = 1024**2
RECOMMENDED_32GB = 22906503168  # max_recommended_working_set_size of a 32 GB M2 Max (21.3 GB)

svmem_macos = namedtuple("svmem", "total available percent used free active inactive wired")
sswap = namedtuple("sswap", "total used free percent sin sout")


def mac_snapshot(sysctl_line: str = "iogpu.wired_limit_mb: 0", *, wired: int = 3 * GIB,
                 mlx_active: int = 0, mlx_cache: int = 0) -> MemorySnapshot:
    """What the probe reads on a 32 GB Mac whose ``sysctl iogpu.wired_limit_mb`` printed
    ``sysctl_line``."""
    vm = svmem_macos(32 * GIB, 20 * GIB, 37.5, 10 * GIB, 4 * GIB, 8 * GIB, 8 * GIB, wired)
    limit = parse_wired_limit_mb(sysctl_line)
    probe = SystemMemoryProbe(
        pressure_reader=lambda: 1, virtual_memory=lambda: vm,
        swap_memory=lambda: sswap(0, 0, 0, 0.0, 0, 0), backend=lambda: "metal",
        wired_reader=lambda v: read_macos_wired(
            v, sysctl=lambda name: limit,
            device_info=lambda: {"max_recommended_working_set_size": RECOMMENDED_32GB}),
        mlx_figures=lambda: (mlx_active, mlx_cache, mlx_active),
    )
    return probe.snapshot()


def cuda_snapshot() -> MemorySnapshot:
    return MemorySnapshot(total_bytes=141 * GIB, used_bytes=10 * GIB, available_bytes=131 * GIB,
                          kind="device", source="GPU 0 device memory (NVML)")


# --------------------------------------------------------------------------- advice


def test_a_model_that_fits_the_wired_limit_needs_no_advice() -> None:
    assert wired_advice(16 * GIB, mac_snapshot(), "qwen-14b") is None


def test_a_model_over_the_default_limit_gets_the_exact_sysctl_that_fits_it() -> None:
    advice = wired_advice(24 * GIB, mac_snapshot("iogpu.wired_limit_mb: 0"), "qwen2.5-coder-32b")
    # 24 GiB plus 10% headroom, rounded up to whole GiB: 27 GiB = 27648 MB, under 32 - 4 GiB.
    assert advice is not None
    assert "sudo sysctl iogpu.wired_limit_mb=27648" in advice
    assert advice.startswith("qwen2.5-coder-32b needs 24.0 GB wired, more than the 21.3 GB")
    assert "iogpu.wired_limit_mb=0, macOS's default" in advice


def test_a_raised_limit_is_the_ceiling_the_advice_compares_with() -> None:
    raised = mac_snapshot("iogpu.wired_limit_mb: 0 -> 24576")
    assert wired_advice(23 * GIB, raised) is None, "fits under the raised 24 GiB"
    advice = wired_advice(25 * GIB, raised)
    assert advice is not None
    assert "(iogpu.wired_limit_mb=24576)" in advice
    assert "sudo sysctl iogpu.wired_limit_mb=28672" in advice


def test_a_model_this_mac_cannot_wire_at_any_setting_is_told_so() -> None:
    advice = wired_advice(30 * GIB, mac_snapshot(), "llama-70b")
    assert advice is not None
    assert "sudo" not in advice
    assert "smaller model or quantization" in advice
    assert suggested_wired_limit_mb(30 * GIB, 32 * GIB) is None
    assert suggested_wired_limit_mb(25 * GIB, 32 * GIB) == 28 * 1024


def test_no_advice_where_there_is_no_wired_limit() -> None:
    assert wired_advice(200 * GIB, cuda_snapshot()) is None
    unknown = replace(mac_snapshot(), recommended_working_set_bytes=None, wired_limit_bytes=None)
    assert wired_advice(200 * GIB, unknown) is None


# --------------------------------------------------------------------------- MLX's wired limit


class RecordingSetter:
    """Stands in for ``mx.set_wired_limit``: records the limits and returns the previous one."""

    def __init__(self, current: int = 0) -> None:
        self.current = current
        self.calls: list[int] = []

    def __call__(self, limit: int) -> int:
        self.calls.append(limit)
        previous, self.current = self.current, limit
        return previous


def test_the_plan_wires_the_set_with_headroom_up_to_the_ceiling() -> None:
    assert plan_wired_limit(0, RECOMMENDED_32GB) is None
    assert plan_wired_limit(10 * GIB, RECOMMENDED_32GB) == 11 * GIB
    assert plan_wired_limit(30 * GIB, RECOMMENDED_32GB) == RECOMMENDED_32GB
    assert plan_wired_limit(10 * GIB, None) is None


def test_the_loaded_set_is_wired_and_the_original_limit_comes_back_when_it_empties() -> None:
    setter = RecordingSetter(current=0)
    wired = WiredLimit(setter)
    snap = mac_snapshot()
    assert wired.apply(8 * GIB, snap) == math.ceil(8 * GIB * 1.1)
    assert wired.apply(8 * GIB, snap) == math.ceil(8 * GIB * 1.1), "unchanged: MLX is not called"
    assert wired.apply(12 * GIB, snap) == math.ceil(12 * GIB * 1.1)  # a second model loaded
    assert wired.apply(40 * GIB, snap) == RECOMMENDED_32GB, "never above what MLX accepts"
    assert wired.apply(0, snap) is None  # the last model left
    assert setter.calls == [math.ceil(8 * GIB * 1.1), math.ceil(12 * GIB * 1.1), RECOMMENDED_32GB, 0]
    assert setter.current == 0 and wired.applied is None


def test_someone_elses_limit_is_what_comes_back() -> None:
    setter = RecordingSetter(current=4 * GIB)  # mlx-lm or the user set one before
    wired = WiredLimit(setter)
    wired.apply(6 * GIB, mac_snapshot())
    wired.apply(0, mac_snapshot())
    assert setter.current == 4 * GIB


def test_the_wired_limit_is_left_alone_off_a_mac_or_when_disabled() -> None:
    setter = RecordingSetter()
    assert WiredLimit(setter).apply(8 * GIB, cuda_snapshot()) is None
    assert WiredLimit(setter, enabled=False).apply(8 * GIB, mac_snapshot()) is None
    assert setter.calls == []


def test_a_refused_limit_is_logged_and_changes_nothing(caplog: pytest.LogCaptureFixture) -> None:
    def refuse(limit: int) -> int:
        raise ValueError("[metal::set_wired_limit] Setting a wired limit larger than the maximum "
                         "working set size is not allowed.")

    wired = WiredLimit(refuse)
    assert wired.apply(8 * GIB, mac_snapshot()) is None
    assert wired.applied is None
    assert "could not set MLX's wired limit" in caplog.text


# --------------------------------------------------------------------------- other processes


def test_another_process_that_starts_wiring_is_noticed_once() -> None:
    watch = WiredNeighbours(margin_bytes=2 * GIB)
    assert watch.observe(mac_snapshot(wired=3 * GIB)) is None  # the kernel's own share
    # This app loads an 8 GiB model: wired memory grows by what MLX holds, not a neighbour.
    assert watch.observe(mac_snapshot(wired=11 * GIB, mlx_active=8 * GIB)) is None
    # Another MLX app wires a 6 GiB model.
    warning = watch.observe(mac_snapshot(wired=17 * GIB, mlx_active=8 * GIB))
    assert warning is not None
    assert warning.startswith("another process is wiring memory too: 6.0 GB is wired")
    assert "of the 21.3 GB the GPU may wire" in warning
    assert watch.observe(mac_snapshot(wired=17 * GIB, mlx_active=8 * GIB)) is None, "once"
    assert watch.observe(mac_snapshot(wired=11 * GIB, mlx_active=8 * GIB)) is None  # it left
    assert watch.observe(mac_snapshot(wired=17 * GIB, mlx_active=8 * GIB)) is not None, "back"


def test_a_process_wiring_before_the_app_started_is_noticed_too() -> None:
    watch = WiredNeighbours()
    warning = watch.observe(mac_snapshot(wired=12 * GIB))  # over a quarter of 32 GiB at once
    assert warning is not None and "12.0 GB is wired beyond" in warning


def test_the_pool_counts_as_this_apps_own_wired_memory() -> None:
    watch = WiredNeighbours()
    watch.observe(mac_snapshot(wired=3 * GIB))
    assert watch.observe(mac_snapshot(wired=9 * GIB, mlx_active=2 * GIB, mlx_cache=4 * GIB)) is None
    assert watch.observe(cuda_snapshot()) is None and WiredNeighbours.foreign_bytes(
        cuda_snapshot()) is None


class MacProbe:
    """A Mac's unified memory as the probe reads it there (recorded shape): 64 GB, a 48 GB
    recommended working set, macOS's default wired limit; MLX's own bytes counted in."""

    def __init__(self, recommended: int = 48 * GIB) -> None:
        self.recommended = recommended

    def snapshot(self) -> MemorySnapshot:
        import mlx.core as mx

        used = 20 * GIB + mx.get_active_memory()
        return MemorySnapshot(total_bytes=64 * GIB, used_bytes=used, available_bytes=64 * GIB - used,
                              kind="unified", source="unified memory (psutil)",
                              system_total_bytes=64 * GIB, system_used_bytes=used, wired_bytes=0,
                              wired_limit_bytes=0, recommended_working_set_bytes=self.recommended)


def test_the_cache_wires_the_loaded_set_and_gives_the_limit_back_when_it_empties(
        model_factory) -> None:
    from mlx_tui.core.cache import ModelCache
    from mlx_tui.core.loader import MlxLoader

    from .conftest import make_settings

    calls: list[int] = []
    wired = WiredLimit(setter=lambda limit: calls.append(limit) or 0)
    cache = ModelCache(make_settings({"a": str(model_factory("a"))}), MlxLoader(), MacProbe(),
                       wired=wired)
    try:
        cache.acquire("a").release()
        size = cache.get("a").resident_bytes
        assert calls and size < calls[-1] <= 1.2 * size, "the loaded set plus headroom is wired"
        cache.evict("a")
        assert calls[-1] == 0, "nothing loaded: the original limit (0) is back"
    finally:
        cache.close()


def test_a_load_past_the_wired_ceiling_says_the_sysctl_that_would_fit_it(model_factory) -> None:
    from mlx_tui.core.cache import ModelCache
    from mlx_tui.core.events import EventKind
    from mlx_tui.core.loader import MlxLoader

    from .conftest import make_settings

    events = []
    cache = ModelCache(make_settings({"a": str(model_factory("a"))}), MlxLoader(),
                       MacProbe(recommended=100_000), wired=WiredLimit(setter=lambda limit: 0))
    cache.subscribe(lambda e: events.append(e) if e.kind is EventKind.MEMORY_ADVICE else None)
    try:
        cache.acquire("a").release()
        [advice] = events
        assert "sudo sysctl iogpu.wired_limit_mb=1024" in advice.message and advice.model == "a"
        assert cache.get("a").is_loaded, "advice, not a refusal"
    finally:
        cache.close()
