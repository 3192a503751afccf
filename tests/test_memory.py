"""The memory gauge's figures: which memory weights live in, and each figure's source.

The three machines are driven through the probe's seams with recorded or injected figures: a
Mac (unified memory, wired figures), MLX's CUDA backend (the GPU's own memory) and the CPU (system
memory). The real probe is also read on this machine, with real MLX arrays.
"""

from __future__ import annotations

import gc
import sys
from collections import namedtuple
from pathlib import Path

import mlx.core as mx
from mlx_lm import load

from mlx_tui.core.memory import (
    DeviceMemory,
    FixedMemoryProbe,
    NvmlReader,
    SystemMemoryProbe,
    mlx_backend,
    mlx_device_memory,
    parse_pressure_level,
    parse_wired_limit_mb,
    read_macos_pressure_level,
    read_macos_wired,
)
from mlx_tui.core.planner import Thresholds
from mlx_tui.devtools.modelgen import write_random_model

DATA = Path(__file__).parent / "data"
GIB = 1024**3

# psutil's macOS result type (psutil/_psosx.py): percent is (total - available) / total, and
# wired is host_statistics64's wired page count times the page size.
svmem_macos = namedtuple("svmem", "total available percent used free active inactive wired")
svmem_linux = namedtuple("svmem", "total available percent used free")
sswap = namedtuple("sswap", "total used free percent sin sout")

# The keys MLX's Metal backend returns from mx.device_info() (mlx/backend/metal/device_info.cpp),
# with a 32 GB M2 Max's figures.
METAL_INFO = {"device_name": "Apple M2 Max", "architecture": "applegpu_g14s",
              "max_buffer_length": 17179869184, "max_recommended_working_set_size": 22906503168,
              "memory_size": 34359738368, "resource_limit": 499000}
# mx.device_info() on an H200 with MLX 0.32.4's CUDA build (read by benchmarks/gpu_memory.py).
H200_INFO = {"total_memory": 150754820096, "free_memory": 149557477376,
             "compute_capability_minor": 0, "compute_capability_major": 9,
             "pci_bus_id": "0000:00:06.0", "uuid": "GPU-aaaa8a08-769e-fec6-004a-c6a67ee83402",
             "architecture": "sm_90", "device_name": "NVIDIA H200"}


def recorded_lines(name: str) -> list[str]:
    return [ln for ln in (DATA / name).read_text().splitlines() if ln and not ln.startswith("#")]


def mac_vm() -> svmem_macos:
    return svmem_macos(total=32 * GIB, available=12 * GIB, percent=62.5, used=14 * GIB,
                       free=1 * GIB, active=11 * GIB, inactive=10 * GIB, wired=9 * GIB)


def test_recorded_sysctl_output_gives_the_pressure_levels() -> None:
    assert [parse_pressure_level(ln) for ln in recorded_lines("macos_memory.txt")] == [1, 2, 4, 1]
    assert parse_pressure_level(b"4\n") == 4
    assert parse_pressure_level(2) == 2
    assert parse_pressure_level("garbage") is None
    assert parse_pressure_level(3) is None, "only 1, 2 and 4 are levels"


def test_recorded_wired_limit_output_gives_megabytes() -> None:
    assert [parse_wired_limit_mb(ln) for ln in recorded_lines("macos_wired.txt")] == [
        0, 0, 57344, 57344, None]
    assert parse_wired_limit_mb(b"24576\n") == 24576
    assert parse_wired_limit_mb(-1) is None


def test_on_a_mac_the_budget_is_unified_memory_with_the_wired_figures() -> None:
    vm = mac_vm()
    sysctl = {"iogpu.wired_limit_mb": parse_wired_limit_mb("iogpu.wired_limit_mb: 0")}
    probe = SystemMemoryProbe(
        pressure_reader=lambda: parse_pressure_level("kern.memorystatus_vm_pressure_level: 2"),
        virtual_memory=lambda: vm,
        swap_memory=lambda: sswap(4 * GIB, 1 * GIB, 3 * GIB, 25.0, 0, 0),
        backend=lambda: "metal",
        wired_reader=lambda v: read_macos_wired(v, sysctl=sysctl.get, device_info=lambda: METAL_INFO),
    )
    snap = probe.snapshot()
    assert (snap.kind, snap.source) == ("unified", "unified memory (psutil)")
    assert snap.used_fraction * 100 == vm.percent
    assert snap.used_bytes == 20 * GIB, "total - available, not psutil's 'used'"
    assert (snap.system_total_bytes, snap.system_used_bytes) == (snap.total_bytes, snap.used_bytes)
    assert snap.swap_used_bytes == GIB and snap.swap_total_bytes == 4 * GIB
    assert snap.pressure_name == "warn"
    assert snap.wired_bytes == 9 * GIB
    assert snap.wired_limit_bytes == 0, "the sysctl at its default"
    assert snap.recommended_working_set_bytes == METAL_INFO["max_recommended_working_set_size"]
    assert snap.wired_ceiling_bytes == METAL_INFO["max_recommended_working_set_size"]

    sysctl["iogpu.wired_limit_mb"] = parse_wired_limit_mb("iogpu.wired_limit_mb: 0 -> 28672")
    raised = probe.snapshot()
    assert raised.wired_limit_bytes == raised.wired_ceiling_bytes == 28 * GIB, \
        "a raised sysctl is read at once, before MLX's own figure follows at a restart"


def test_on_cuda_the_budget_is_the_gpus_memory_not_the_systems() -> None:
    """Weights on a GPU barely move system memory: the thresholds must watch the device."""
    gpu = DeviceMemory(total_bytes=141 * GIB, used_bytes=40 * GIB,
                       source="GPU 0 device memory (NVML)", name="NVIDIA H200")
    probe = SystemMemoryProbe(
        pressure_reader=lambda: None,
        virtual_memory=lambda: svmem_linux(125 * GIB, 122 * GIB, 2.4, 3 * GIB, 120 * GIB),
        swap_memory=lambda: sswap(0, 0, 0, 0.0, 0, 0),
        backend=lambda: "cuda",
        device_readers=(lambda: gpu,),
        mlx_figures=lambda: (38 * GIB, 1 * GIB, 39 * GIB),
    )
    snap = probe.snapshot()
    assert (snap.kind, snap.source, snap.device_name) == (
        "device", "GPU 0 device memory (NVML)", "NVIDIA H200")
    assert (snap.total_bytes, snap.used_bytes, snap.available_bytes) == (
        141 * GIB, 40 * GIB, 101 * GIB)
    assert (snap.system_total_bytes, snap.system_used_bytes) == (125 * GIB, 3 * GIB)
    assert (snap.mlx_active_bytes, snap.mlx_cache_bytes) == (38 * GIB, GIB)
    assert snap.wired_bytes is None and snap.wired_ceiling_bytes is None, "no wiring on CUDA"
    thresholds = Thresholds(0.25, 0.98)
    assert thresholds.zone(snap.used_fraction) == "warning"
    assert thresholds.zone(snap.system_used_fraction) == "normal", "what the old probe saw"


def test_without_nvml_the_gpus_figures_come_from_mlx() -> None:
    """This machine has no NVIDIA driver (nor, usually, nvidia-ml-py): the real NVML reader
    gives up, and MLX's recorded device info of an H200 answers instead."""
    nvml = NvmlReader(uuid=lambda: H200_INFO["uuid"])
    probe = SystemMemoryProbe(
        pressure_reader=lambda: None, backend=lambda: "cuda",
        device_readers=(nvml, lambda: mlx_device_memory(lambda: H200_INFO)),
    )
    snap = probe.snapshot()
    assert (snap.source, snap.device_name) == ("GPU device memory (MLX)", "NVIDIA H200")
    assert snap.total_bytes == H200_INFO["total_memory"]
    assert snap.used_bytes == H200_INFO["total_memory"] - H200_INFO["free_memory"]
    assert nvml() is None, "a failed NVML is remembered, not retried every second"


def test_a_gpu_with_no_readable_figure_says_so() -> None:
    vm = svmem_linux(64 * GIB, 60 * GIB, 6.25, 4 * GIB, 58 * GIB)
    assert mlx_device_memory(lambda: {"device_name": "cpu"}) is None
    probe = SystemMemoryProbe(pressure_reader=lambda: None, virtual_memory=lambda: vm,
                              backend=lambda: "cuda", device_readers=(lambda: None,))
    snap = probe.snapshot()
    assert snap.kind == "device"
    assert snap.source == "system memory (psutil; GPU memory unreadable)"
    assert snap.used_bytes == 4 * GIB


def test_on_the_cpu_the_budget_is_system_memory() -> None:
    vm = svmem_linux(64 * GIB, 48 * GIB, 25.0, 16 * GIB, 40 * GIB)
    probe = SystemMemoryProbe(pressure_reader=lambda: None, virtual_memory=lambda: vm,
                              backend=lambda: "cpu")
    snap = probe.snapshot()
    expected = "unified" if sys.platform == "darwin" else "host"  # a Mac's CPU shares it too
    assert snap.kind == expected
    assert snap.used_fraction == 0.25
    if expected == "host":
        assert snap.source == "system memory (psutil)"
        assert snap.wired_bytes is None


def test_the_real_probe_reads_this_machine_and_mlx() -> None:
    keep = mx.ones((1024, 1024))
    mx.eval(keep)
    probe = SystemMemoryProbe()
    snap = probe.snapshot()
    assert probe.kind == {"metal": "unified", "cuda": "device"}.get(
        mlx_backend(), "unified" if sys.platform == "darwin" else "host")
    assert 0 < snap.used_bytes < snap.total_bytes
    assert snap.used_bytes + snap.available_bytes == snap.total_bytes
    assert snap.mlx_active_bytes >= keep.nbytes
    if sys.platform != "darwin":
        assert snap.pressure_level is None and read_macos_pressure_level() is None


def test_a_dropped_model_stays_in_mlxs_pool_until_it_is_cleared(tmp_path: Path) -> None:
    """"Memory not freed" at a glance: a model's weights leave ``mlx_active_bytes`` when it is
    dropped but sit in ``mlx_cache_bytes`` (MLX's buffer pool) until ``mx.clear_cache()``."""
    folder = write_random_model(tmp_path / "q4", hidden_size=256, num_hidden_layers=2,
                                intermediate_size=512, dtype="bfloat16", quantize_bits=4)
    on_disk = sum(p.stat().st_size for p in folder.glob("model*.safetensors"))
    probe = SystemMemoryProbe()
    mx.clear_cache()
    before = probe.snapshot()
    model, _ = load(str(folder))
    mx.eval(model.parameters())
    loaded = probe.snapshot()
    assert loaded.mlx_active_bytes - before.mlx_active_bytes >= 0.9 * on_disk, \
        "a 4-bit model holds its quantized size"
    del model
    gc.collect()
    dropped = probe.snapshot()
    assert dropped.mlx_active_bytes - before.mlx_active_bytes < 0.1 * on_disk
    assert dropped.mlx_cache_bytes >= 0.9 * on_disk, "freed, but still MLX's"
    mx.clear_cache()
    assert probe.snapshot().mlx_cache_bytes == 0


def test_a_fixed_probe_adds_what_mlx_holds_when_asked() -> None:
    probe = FixedMemoryProbe(total_bytes=10**9, used_fraction=0.25, track_mlx=True)
    before = probe.snapshot().used_bytes
    block = mx.ones((256, 1024))
    mx.eval(block)
    # Exactly the block on the CPU; not exactly on MLX's CUDA backend (seen on an H200), which
    # may keep small allocations of its own beside it.
    assert block.nbytes <= probe.snapshot().used_bytes - before < block.nbytes + 64 * 1024
    probe.set_fraction(0.9)
    assert probe.snapshot().used_fraction >= 0.9


def test_health_says_which_memory_it_measures() -> None:
    """``/health``'s memory document names the memory and the source of its figures."""
    from mlx_tui.server.documents import memory_document

    gpu = DeviceMemory(141 * GIB, 40 * GIB, "GPU 0 device memory (NVML)", "NVIDIA H200")
    cuda = SystemMemoryProbe(pressure_reader=lambda: None, backend=lambda: "cuda",
                             device_readers=(lambda: gpu,)).snapshot()
    doc = memory_document(cuda, Thresholds(0.25, 0.98))
    assert (doc["kind"], doc["source"], doc["device_name"]) == (
        "device", "GPU 0 device memory (NVML)", "NVIDIA H200")
    assert (doc["used_bytes"], doc["zone"]) == (40 * GIB, "warning")
    assert doc["system_total_bytes"] > 0 and doc["wired_bytes"] is None

    mac = SystemMemoryProbe(
        pressure_reader=lambda: 1, virtual_memory=mac_vm, backend=lambda: "metal",
        wired_reader=lambda v: read_macos_wired(v, sysctl=lambda name: 0,
                                                device_info=lambda: METAL_INFO),
    ).snapshot()
    doc = memory_document(mac, Thresholds())
    assert (doc["kind"], doc["source"]) == ("unified", "unified memory (psutil)")
    assert (doc["wired_bytes"], doc["wired_limit_bytes"]) == (9 * GIB, 0)
    assert doc["wired_ceiling_bytes"] == doc["recommended_working_set_bytes"] == \
        METAL_INFO["max_recommended_working_set_size"]
