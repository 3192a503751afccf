"""What the app's tests share besides fixtures: two test seams and ways to wait and type.

:class:`StillProbe` stands in for the machine's memory (figures that never move, for
snapshots); :class:`GatedLoader` is the real MLX loader held at a gate, so a test can look at
the app while a model is "still loading". Everything else is real.
"""

from __future__ import annotations

import io
import threading
import time
from typing import Any, Callable

from rich.console import Console
from textual.pilot import Pilot

from mlx_tui.core.catalog import ModelInfo
from mlx_tui.core.chat import GenerationParams
from mlx_tui.core.loader import LoadedModel, MlxLoader
from mlx_tui.core.memory import MemorySnapshot
from mlx_tui.ui.app import MlxTuiApp
from mlx_tui.ui.widgets.models_table import ModelsTable

GIB = 1024**3
QUICK = GenerationParams(temperature=0.0, max_tokens=12, seed=0)
"""Short, reproducible replies."""


class StillProbe:
    """Memory that never changes: 16 GiB, 9.6 GiB used, some MLX, swap and a pressure level."""

    def __init__(self, used_fraction: float = 0.6) -> None:
        self.used_fraction = used_fraction

    def snapshot(self) -> MemorySnapshot:
        total = 16 * GIB
        used = int(total * self.used_fraction)
        return MemorySnapshot(total_bytes=total, used_bytes=used, available_bytes=total - used,
                              swap_total_bytes=2 * GIB, swap_used_bytes=GIB // 4,
                              mlx_active_bytes=GIB + GIB // 5, mlx_cache_bytes=300 * 1024**2,
                              mlx_peak_bytes=2 * GIB, pressure_level=1, taken_at=0.0)


class GatedLoader(MlxLoader):
    """The real loader; loads of the names in ``held`` wait until :meth:`release`."""

    def __init__(self, *held: str) -> None:
        super().__init__()
        self.held = set(held)
        self.gate = threading.Event()
        self.waiting = threading.Event()

    def load(self, info: ModelInfo) -> LoadedModel:
        if info.name in self.held:
            self.waiting.set()
            self.gate.wait(timeout=60)
        return super().load(info)

    def release(self) -> None:
        self.gate.set()


class SlowTypist:
    """A clock for the models table's keys: every key comes a second after the one before, as
    from a person pressing keys one at a time (never a burst of typing)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


async def until(pilot: Pilot, condition: Callable[[], Any], timeout: float = 15.0,
                what: str = "condition") -> None:
    """Let the app run until ``condition()`` holds (cache threads are not Textual workers,
    so there is nothing to await; this polls between frames)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.02)


async def reply_done(pilot: Pilot, app: MlxTuiApp) -> None:
    """Wait until no reply is being generated and the screen has caught up."""
    await until(pilot, lambda: app.chat.running == 0, what="the reply")
    await app.workers.wait_for_complete()
    await pilot.pause()


async def type_text(pilot: Pilot, text: str) -> None:
    for ch in text:
        await pilot.press("space" if ch == " " else ch)


def notes(app: MlxTuiApp) -> list[str]:
    """The app's notifications as ``title: message``."""
    return [f"{n.title}: {n.message}" for n in app._notifications]


async def focus_table(pilot: Pilot, app: MlxTuiApp) -> None:
    for _ in range(4):
        if isinstance(app.focused, ModelsTable):
            return
        await pilot.press("shift+tab")
    assert isinstance(app.focused, ModelsTable)


async def select_row(pilot: Pilot, app: MlxTuiApp, name: str) -> None:
    await focus_table(pilot, app)
    await pilot.press(*["up"] * len(app.table.order()))
    for _ in range(len(app.table.order())):
        if app.table.selected == name:
            return
        await pilot.press("down")
    assert app.table.selected == name


async def press_in_table(pilot: Pilot, app: MlxTuiApp, *keys: str) -> None:
    """Press keys in the models table one at a time, as a person does: each acts a moment
    after it is pressed (a burst of keys would be taken for typing)."""
    for key in keys:
        await pilot.press(key)
        await until(pilot, lambda: not app.table.key_pending, what=f"{key!r} to act")
        await pilot.pause()


def screen_lines(app: MlxTuiApp) -> list[str]:
    """The screen as the terminal shows it, one string per row."""
    width, height = app.size
    console = Console(width=width, height=height, file=io.StringIO(), force_terminal=True,
                      color_system="truecolor", record=True, legacy_windows=False, safe_box=False)
    console.print(app.screen._compositor.render_update(full=True))
    return console.export_text().splitlines()
