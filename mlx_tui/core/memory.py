"""Memory figures: one :class:`MemorySnapshot` from the system (psutil), MLX and macOS.

The decision figure is the system's ``used_fraction`` (``(total - available) / total``, which
is what psutil reports as ``percent`` on macOS); MLX's own active and cache memory are shown
beside it. On macOS the kernel's memory pressure level is read with ``sysctlbyname`` through a
small seam (:func:`parse_pressure_level`) that is tested here with recorded output.

Probes are injectable: :class:`SystemMemoryProbe` is the real one; tests and benchmarks use
:class:`FixedMemoryProbe` to drive the thresholds deterministically.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Protocol

import mlx.core as mx
import psutil

__all__ = [
    "MemorySnapshot",
    "MemoryProbe",
    "SystemMemoryProbe",
    "FixedMemoryProbe",
    "PRESSURE_NAMES",
    "parse_pressure_level",
    "read_macos_pressure_level",
]

PRESSURE_NAMES = {1: "normal", 2: "warn", 4: "critical"}


@dataclass(frozen=True, slots=True)
class MemorySnapshot:
    """System and MLX memory at one moment (bytes)."""

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

    @property
    def used_fraction(self) -> float:
        """Fraction of system memory in use: the figure thresholds are compared with."""
        return self.used_bytes / self.total_bytes if self.total_bytes else 0.0

    @property
    def pressure_name(self) -> str | None:
        if self.pressure_level is None:
            return None
        return PRESSURE_NAMES.get(self.pressure_level, str(self.pressure_level))


class MemoryProbe(Protocol):
    """Anything that can take a :class:`MemorySnapshot`; called about once a second."""

    def snapshot(self) -> MemorySnapshot: ...


def parse_pressure_level(raw: bytes | int | str) -> int | None:
    """Turn ``kern.memorystatus_vm_pressure_level`` output into 1, 2 or 4 (None if unknown).

    Accepts what ``sysctl -n`` prints (``b"1\\n"``), what ``sysctl`` prints
    (``kern.memorystatus_vm_pressure_level: 2``), or the integer ``sysctlbyname`` fills.
    """
    if isinstance(raw, bytes):
        raw = raw.decode("ascii", "replace")
    if isinstance(raw, str):
        raw = raw.rsplit(":", 1)[-1].strip()
    try:
        value = int(raw)
    except ValueError:
        return None
    return value if value in PRESSURE_NAMES else None


_libc: ctypes.CDLL | None = None


def read_macos_pressure_level() -> int | None:
    """The kernel's memory pressure level on macOS; None elsewhere or when unreadable."""
    global _libc
    if sys.platform != "darwin":
        return None
    try:
        if _libc is None:
            _libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        value = ctypes.c_int(0)
        size = ctypes.c_size_t(ctypes.sizeof(value))
        rc = _libc.sysctlbyname(
            b"kern.memorystatus_vm_pressure_level", ctypes.byref(value), ctypes.byref(size), None, 0
        )
    except (OSError, AttributeError):
        return None
    return parse_pressure_level(value.value) if rc == 0 else None


def _mlx_figures() -> tuple[int, int, int]:
    """MLX active, cache and peak bytes (``mlx.core`` imports in milliseconds, unlike mlx_lm)."""
    return mx.get_active_memory(), mx.get_cache_memory(), mx.get_peak_memory()


class SystemMemoryProbe:
    """The real probe: psutil for the system, MLX for its own figures, sysctl on macOS."""

    def __init__(
        self,
        pressure_reader: Callable[[], int | None] = read_macos_pressure_level,
        virtual_memory: Callable[[], Any] = psutil.virtual_memory,
        swap_memory: Callable[[], Any] = psutil.swap_memory,
    ) -> None:
        self._pressure_reader = pressure_reader
        self._virtual_memory = virtual_memory
        self._swap_memory = swap_memory

    def snapshot(self) -> MemorySnapshot:
        vm = self._virtual_memory()
        swap = self._swap_memory()
        active, cache, peak = _mlx_figures()
        return MemorySnapshot(
            total_bytes=vm.total,
            used_bytes=vm.total - vm.available,
            available_bytes=vm.available,
            swap_total_bytes=swap.total,
            swap_used_bytes=swap.used,
            mlx_active_bytes=active,
            mlx_cache_bytes=cache,
            mlx_peak_bytes=peak,
            pressure_level=self._pressure_reader(),
            taken_at=time.time(),
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
        )
