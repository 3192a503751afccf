"""Memory figures: one :class:`MemorySnapshot` of the memory model weights live in.

Where MLX keeps weights decides which memory the thresholds must watch (``MemorySnapshot.kind``):

* ``"unified"``: a Mac. CPU and GPU share system memory, so the budget is system memory in use
  (``(total - available) / total``, which psutil reports as ``percent`` on macOS), as before. Beside
  it the wired figures: memory wired down now (psutil's ``wired``, from ``host_statistics64``),
  the ``iogpu.wired_limit_mb`` sysctl (0 means macOS's default) and MLX's
  ``max_recommended_working_set_size``: the most Metal may keep wired (see
  :mod:`mlx_tui.core.wired`), and the kernel's memory pressure level.
* ``"device"``: MLX's CUDA backend. Weights live in the GPU's own memory, which system memory does
  not show (a 38.5 GB model moved the system figure by under 2%). The budget is the GPU's total and
  used memory: NVIDIA's driver (NVML, through ``nvidia-ml-py`` imported on first use, optional)
  where readable, else MLX's ``device_info()`` (``total_memory`` / ``free_memory``). System memory
  stays beside it in ``system_total_bytes`` / ``system_used_bytes``.
* ``"host"``: MLX on the CPU (Linux without a GPU build): system memory, as on a Mac.

Each snapshot says where its budget came from (``source``: ``"unified memory (psutil)"``,
``"GPU 0 device memory (NVML)"``, ``"GPU device memory (MLX)"``, ``"system memory (psutil)"``).
MLX's own figures (``mlx_active_bytes``: arrays alive; ``mlx_cache_bytes``: its buffer pool, freed
memory kept for reuse) are in every snapshot, so "memory not freed" shows as a pool that stays full.

Every figure is read through a seam :class:`SystemMemoryProbe` takes, so the three cases are tested
with recorded or injected figures; :class:`FixedMemoryProbe` drives the thresholds in tests.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Literal, Protocol

import mlx.core as mx
import psutil

__all__ = [
    "MemoryKind",
    "MemorySnapshot",
    "MemoryProbe",
    "DeviceMemory",
    "WiredFigures",
    "SystemMemoryProbe",
    "FixedMemoryProbe",
    "NvmlReader",
    "PRESSURE_NAMES",
    "mlx_backend",
    "mlx_device_memory",
    "parse_pressure_level",
    "parse_wired_limit_mb",
    "read_macos_pressure_level",
    "read_macos_wired",
    "read_sysctl_int",
]

log = logging.getLogger(__name__)

MemoryKind = Literal["unified", "device", "host"]
"""Where MLX keeps weights: a Mac's unified memory, a GPU's own memory, or system memory."""

PRESSURE_NAMES = {1: "normal", 2: "warn", 4: "critical"}
MIB = 1024**2


@dataclass(frozen=True, slots=True)
class MemorySnapshot:
    """The memory weights occupy, at one moment (bytes), and where each figure came from.

    ``total_bytes`` / ``used_bytes`` / ``available_bytes`` are the budget the planner and the
    thresholds use: system memory on a Mac and on the CPU, the GPU's memory on CUDA (``kind``
    and ``source`` say which). ``system_*`` is system memory in every case (the same figures as
    the budget unless ``kind == "device"``). The ``wired_*`` and ``recommended_working_set_bytes``
    figures are read on a Mac only (None elsewhere or when unreadable).
    """

    total_bytes: int
    used_bytes: int
    available_bytes: int
    swap_total_bytes: int = 0
    swap_used_bytes: int = 0
    mlx_active_bytes: int = 0
    mlx_cache_bytes: int = 0
    mlx_peak_bytes: int = 0
    pressure_level: int | None = None
    taken_at: float = 0.0
    kind: MemoryKind = "host"
    source: str = "system memory (psutil)"
    device_name: str | None = None
    system_total_bytes: int = 0
    system_used_bytes: int = 0
    wired_bytes: int | None = None
    wired_limit_bytes: int | None = None
    recommended_working_set_bytes: int | None = None

    @property
    def used_fraction(self) -> float:
        """Fraction of the budget in use: the figure thresholds are compared with."""
        return self.used_bytes / self.total_bytes if self.total_bytes else 0.0

    @property
    def system_used_fraction(self) -> float:
        """Fraction of system memory in use (the budget's own figure unless on a GPU)."""
        return self.system_used_bytes / self.system_total_bytes if self.system_total_bytes else 0.0

    @property
    def pressure_name(self) -> str | None:
        if self.pressure_level is None:
            return None
        return PRESSURE_NAMES.get(self.pressure_level, str(self.pressure_level))

    @property
    def wired_ceiling_bytes(self) -> int | None:
        """The most the GPU may keep wired on a Mac: ``iogpu.wired_limit_mb`` when the user set
        it (non-zero), else MLX's recommended working set (macOS's default). None elsewhere."""
        if self.wired_limit_bytes:
            return self.wired_limit_bytes
        return self.recommended_working_set_bytes


class MemoryProbe(Protocol):
    """Anything that can take a :class:`MemorySnapshot`; called about once a second."""

    def snapshot(self) -> MemorySnapshot: ...


@dataclass(frozen=True, slots=True)
class DeviceMemory:
    """A GPU's memory as one reader saw it (the whole device, every process counted)."""

    total_bytes: int
    used_bytes: int
    source: str
    name: str | None = None


@dataclass(frozen=True, slots=True)
class WiredFigures:
    """A Mac's wired memory: wired now, the sysctl limit (0 = default) and MLX's recommendation."""

    wired_bytes: int | None = None
    wired_limit_bytes: int | None = None
    recommended_working_set_bytes: int | None = None


# --------------------------------------------------------------------------- macOS sysctl


def _sysctl_value(raw: bytes | int | str) -> int | None:
    """The integer in ``sysctl`` output: ``b"1\\n"`` (``-n``), ``name: 2``, ``name: 0 -> 8``
    (what ``sudo sysctl name=8`` prints: the new value counts), or a bare int."""
    if isinstance(raw, bytes):
        raw = raw.decode("ascii", "replace")
    if isinstance(raw, str):
        raw = raw.rsplit(":", 1)[-1].rsplit("->", 1)[-1].strip()
    try:
        return int(raw)
    except ValueError:
        return None


def parse_pressure_level(raw: bytes | int | str) -> int | None:
    """Turn ``kern.memorystatus_vm_pressure_level`` output into 1, 2 or 4 (None if unknown).

    Accepts what ``sysctl -n`` prints (``b"1\\n"``), what ``sysctl`` prints
    (``kern.memorystatus_vm_pressure_level: 2``), or the integer ``sysctlbyname`` fills.
    """
    value = _sysctl_value(raw)
    return value if value in PRESSURE_NAMES else None


def parse_wired_limit_mb(raw: bytes | int | str) -> int | None:
    """Turn ``iogpu.wired_limit_mb`` output into megabytes (0: macOS's default limit).

    Accepts ``sysctl -n iogpu.wired_limit_mb`` (``b"0\\n"``), ``sysctl iogpu.wired_limit_mb``
    (``iogpu.wired_limit_mb: 57344``), what setting it prints (``iogpu.wired_limit_mb: 0 ->
    57344``) or the integer ``sysctlbyname`` fills; None for an error
    such as ``sysctl: unknown oid 'iogpu.wired_limit_mb'`` (macOS before 14, Intel Macs).
    """
    value = _sysctl_value(raw)
    return value if value is not None and value >= 0 else None


_libc: ctypes.CDLL | None = None


def read_sysctl_int(name: str) -> int | None:
    """An integer sysctl by name on macOS (4- or 8-byte); None elsewhere or when unreadable."""
    global _libc
    if sys.platform != "darwin":
        return None
    try:
        if _libc is None:
            _libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        value = ctypes.c_int64(0)  # a 4-byte sysctl fills the low half (little-endian)
        size = ctypes.c_size_t(ctypes.sizeof(value))
        rc = _libc.sysctlbyname(name.encode(), ctypes.byref(value), ctypes.byref(size), None, 0)
    except (OSError, AttributeError):
        return None
    if rc != 0:
        return None
    return value.value if size.value == 8 else ctypes.c_int32(value.value & 0xFFFFFFFF).value


def read_macos_pressure_level() -> int | None:
    """The kernel's memory pressure level on macOS; None elsewhere or when unreadable."""
    value = read_sysctl_int("kern.memorystatus_vm_pressure_level")
    return None if value is None else parse_pressure_level(value)


def _metal_info() -> dict[str, Any]:
    """Metal's device info (also when MLX's default device is the CPU); {} without Metal."""
    return mx.device_info(mx.gpu) if mx.metal.is_available() else {}


def read_macos_wired(
    vm: Any,
    sysctl: Callable[[str], int | None] = read_sysctl_int,
    device_info: Callable[[], dict[str, Any]] = _metal_info,
) -> WiredFigures:
    """A Mac's wired figures: psutil's ``wired`` (``host_statistics64``'s wired pages), the
    ``iogpu.wired_limit_mb`` sysctl, and Metal's ``max_recommended_working_set_size``.

    MLX reads ``device_info`` once per process, so a sysctl raised while the app runs shows in
    ``wired_limit_bytes`` (read every time) before MLX's recommendation follows at a restart.
    """
    limit_mb = sysctl("iogpu.wired_limit_mb")
    limit_mb = None if limit_mb is None else parse_wired_limit_mb(limit_mb)
    try:
        recommended = device_info().get("max_recommended_working_set_size")
    except (RuntimeError, ValueError):
        recommended = None
    wired = getattr(vm, "wired", None)
    return WiredFigures(
        wired_bytes=int(wired) if wired is not None else None,
        wired_limit_bytes=None if limit_mb is None else limit_mb * MIB,
        recommended_working_set_bytes=int(recommended) if recommended else None,
    )


# --------------------------------------------------------------------------- MLX and the GPU


def _mlx_figures() -> tuple[int, int, int]:
    """MLX active, cache and peak bytes (``mlx.core`` imports in milliseconds, unlike mlx_lm)."""
    return mx.get_active_memory(), mx.get_cache_memory(), mx.get_peak_memory()


def mlx_backend() -> Literal["metal", "cuda", "cpu"]:
    """Which of MLX's backends runs arrays by default: ``metal``, ``cuda`` or ``cpu``."""
    if mx.default_device().type == mx.DeviceType.gpu:
        if mx.metal.is_available():
            return "metal"
        if mx.cuda.is_available():
            return "cuda"
    return "cpu"


def _kind_of(backend: str) -> MemoryKind:
    if backend == "cuda":
        return "device"
    return "unified" if backend == "metal" or sys.platform == "darwin" else "host"


def mlx_device_memory(
        device_info: Callable[[], dict[str, Any]] = mx.device_info) -> DeviceMemory | None:
    """The GPU's memory from MLX's ``device_info()`` on CUDA (``total_memory`` and
    ``free_memory``, which MLX itself reads from NVML or ``cudaMemGetInfo``); None if absent."""
    try:
        info = device_info()
    except (RuntimeError, ValueError):
        return None
    total, free = info.get("total_memory"), info.get("free_memory")
    if not total or free is None:
        return None
    return DeviceMemory(int(total), int(total) - int(free), "GPU device memory (MLX)",
                        info.get("device_name"))


class NvmlReader:
    """GPU memory from NVIDIA's driver through NVML (``pynvml``, from ``nvidia-ml-py``).

    Imported and initialised on the first call, never at import; a machine without the package
    or the driver library gets None from every call (tried once, then remembered). Picks the GPU
    MLX uses by its UUID (from ``mx.device_info()``), else by ``index``. Called by the probe only.
    """

    def __init__(self, index: int = 0, uuid: Callable[[], str | None] | None = None) -> None:
        self._index = index
        self._uuid = uuid or (lambda: mx.device_info().get("uuid"))
        self._handle: Any = None
        self._nvml: Any = None
        self._failed = False

    def _open(self) -> bool:
        if self._failed:
            return False
        if self._handle is not None:
            return True
        try:
            import pynvml  # optional: pip install nvidia-ml-py

            pynvml.nvmlInit()
            uuid = self._uuid()
            self._handle = (pynvml.nvmlDeviceGetHandleByUUID(uuid) if uuid
                            else pynvml.nvmlDeviceGetHandleByIndex(self._index))
            self._nvml = pynvml
        except Exception as exc:  # noqa: BLE001 - ImportError, NVMLError_*, a missing library
            log.info("NVML not readable (%s); device memory comes from MLX", exc)
            self._failed = True
            return False
        return True

    def __call__(self) -> DeviceMemory | None:
        if not self._open():
            return None
        try:
            info = self._nvml.nvmlDeviceGetMemoryInfo(self._handle)
            name = self._nvml.nvmlDeviceGetName(self._handle)
        except Exception as exc:  # noqa: BLE001 - a GPU that went away: fall back to MLX
            log.warning("NVML read failed: %s", exc)
            return None
        name = name.decode() if isinstance(name, bytes) else name
        return DeviceMemory(int(info.total), int(info.total) - int(info.free),
                            f"GPU {self._index} device memory (NVML)", name)


class SystemMemoryProbe:
    """The real probe: reads the memory weights live in (see the module's docstring).

    Which memory is decided once, at the first snapshot, from ``backend()`` (MLX's default
    device). Every figure comes through a seam so tests inject recorded ones: ``virtual_memory``
    and ``swap_memory`` (psutil), ``pressure_reader`` (macOS), ``wired_reader`` (a Mac's wired
    figures, given psutil's reading), ``device_readers`` (tried in order on CUDA: NVML, then
    MLX) and ``mlx_figures`` (MLX's active, cache and peak bytes). Called by the cache's monitor.
    """

    def __init__(
        self,
        pressure_reader: Callable[[], int | None] = read_macos_pressure_level,
        virtual_memory: Callable[[], Any] = psutil.virtual_memory,
        swap_memory: Callable[[], Any] = psutil.swap_memory,
        *,
        backend: Callable[[], str] = mlx_backend,
        wired_reader: Callable[[Any], WiredFigures] = read_macos_wired,
        device_readers: tuple[Callable[[], DeviceMemory | None], ...] | None = None,
        mlx_figures: Callable[[], tuple[int, int, int]] = _mlx_figures,
    ) -> None:
        self._pressure_reader = pressure_reader
        self._virtual_memory = virtual_memory
        self._swap_memory = swap_memory
        self._backend = backend
        self._wired_reader = wired_reader
        self._device_readers = device_readers
        self._mlx_figures = mlx_figures
        self._kind: MemoryKind | None = None

    @property
    def kind(self) -> MemoryKind:
        """Where weights live on this machine (decided on first use)."""
        if self._kind is None:
            self._kind = _kind_of(self._backend())
        return self._kind

    def _device(self) -> DeviceMemory | None:
        if self._device_readers is None:
            self._device_readers = (NvmlReader(), mlx_device_memory)
        for reader in self._device_readers:
            figures = reader()
            if figures is not None:
                return figures
        return None

    def snapshot(self) -> MemorySnapshot:
        kind = self.kind
        vm = self._virtual_memory()
        swap = self._swap_memory()
        active, cache, peak = self._mlx_figures()
        system_used = vm.total - vm.available
        total, used, source = vm.total, system_used, "system memory (psutil)"
        device_name = None
        wired = WiredFigures()
        if kind == "unified":
            source = "unified memory (psutil)"
            wired = self._wired_reader(vm)
        elif kind == "device":
            device = self._device()
            if device is None:  # no driver figure at all: say so rather than guess
                source = "system memory (psutil; GPU memory unreadable)"
            else:
                total, used, source, device_name = (device.total_bytes, device.used_bytes,
                                                    device.source, device.name)
        return MemorySnapshot(
            total_bytes=total,
            used_bytes=used,
            available_bytes=total - used,
            swap_total_bytes=swap.total,
            swap_used_bytes=swap.used,
            mlx_active_bytes=active,
            mlx_cache_bytes=cache,
            mlx_peak_bytes=peak,
            pressure_level=self._pressure_reader(),
            taken_at=time.time(),
            kind=kind,
            source=source,
            device_name=device_name,
            system_total_bytes=vm.total,
            system_used_bytes=system_used,
            wired_bytes=wired.wired_bytes,
            wired_limit_bytes=wired.wired_limit_bytes,
            recommended_working_set_bytes=wired.recommended_working_set_bytes,
        )


class FixedMemoryProbe:
    """A probe whose figures a test sets: ``probe.set_fraction(0.9)``.

    With ``track_mlx=True`` the bytes MLX holds are added to the used figure, so real loads and
    evictions move the simulated gauge as they would move the real one.
    """

    def __init__(self, total_bytes: int = 16 * 1024**3, used_fraction: float = 0.5,
                 track_mlx: bool = False) -> None:
        self.total_bytes = total_bytes
        self.base_used = int(total_bytes * used_fraction)
        self.track_mlx = track_mlx

    def set_fraction(self, fraction: float) -> None:
        self.base_used = int(self.total_bytes * fraction)

    def snapshot(self) -> MemorySnapshot:
        active, cache, peak = _mlx_figures()
        used = self.base_used + (active if self.track_mlx else 0)
        used = min(used, self.total_bytes)
        return MemorySnapshot(
            total_bytes=self.total_bytes,
            used_bytes=used,
            available_bytes=self.total_bytes - used,
            mlx_active_bytes=active,
            mlx_cache_bytes=cache,
            mlx_peak_bytes=peak,
            taken_at=time.time(),
            source="fixed figures (test probe)",
            system_total_bytes=self.total_bytes,
            system_used_bytes=used,
        )
