"""Helpers the app's tests share, and tests of the small pieces they rest on.

The helpers build the app over a real runtime with tiny real MLX models (``model_factory``);
two test seams stand in for the machine: :class:`StillProbe` (memory figures that never move,
for snapshots) and :class:`GatedLoader` (the real MLX loader, held at a gate so a test can look
at the app while a model is "still loading").
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterator

import pytest
from .conftest import make_settings
from textual.pilot import Pilot

from mlx_tui.core.catalog import ModelInfo
from mlx_tui.core.chat import GenerationParams
from mlx_tui.core.loader import LoadedModel, MlxLoader
from mlx_tui.core.memory import MemorySnapshot
from mlx_tui.core.runtime import Runtime, build_runtime
from mlx_tui.core.settings import write_settings
from mlx_tui.ui.app import MlxTuiApp, binding_groups
from mlx_tui.ui.format import clock_time, duration, seconds
from mlx_tui.ui.keys import key_rows, keys_markdown
from mlx_tui.ui.screens.settings import parse_fraction
from mlx_tui.ui.themes import ThemeError, load_theme_file, scan_themes, theme_dirs

GIB = 1024**3
REPO = Path(__file__).resolve().parent.parent
QUICK = GenerationParams(temperature=0.0, max_tokens=12, seed=0)


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


AppFactory = Callable[..., MlxTuiApp]


@pytest.fixture
def tiny_models(model_factory: Callable[..., Path]) -> dict[str, str]:
    return {"tiny-a": str(model_factory("tiny-a", seed=1)), "tiny-b": str(model_factory("tiny-b", seed=2))}


@pytest.fixture
def make_runtime(runtime_factory: Callable[..., Runtime], tmp_path: Path) -> Iterator[Callable[..., Runtime]]:
    """``make_runtime(models, probe=..., loader=..., memory={...})``: conftest's
    ``runtime_factory`` with still memory by default, plus a loader seam it lacks."""
    own: list[Runtime] = []

    def make(models: dict[str, str], probe: Any = None, loader: Any = None,
             **sections: dict[str, Any]) -> Runtime:
        if loader is None:
            return runtime_factory(models, probe or StillProbe(), **sections)
        write_settings(make_settings(models, **sections), tmp_path / "settings.toml")
        own.append(build_runtime(tmp_path / "settings.toml", db_path=tmp_path / "data.db",
                                 probe=probe or StillProbe(), loader=loader))
        return own[-1]

    yield make
    for runtime in own:
        runtime.close()


@pytest.fixture
def make_app(make_runtime: Callable[..., Runtime], tiny_models: dict[str, str]) -> AppFactory:
    """``make_app(model="tiny-a", models=..., **runtime_kw)``: the app without its HTTP API."""

    def make(model: str | None = "tiny-a", models: dict[str, str] | None = None,
             params: GenerationParams = QUICK, **kw: Any) -> MlxTuiApp:
        runtime = make_runtime(models if models is not None else tiny_models, **kw)
        return MlxTuiApp(runtime, model=model, api=False, params=params)

    return make


# -- the small pieces --------------------------------------------------------------------------------

def test_shipped_themes_load_and_a_broken_file_is_named(tmp_path: Path) -> None:
    scan = scan_themes(theme_dirs(REPO / "settings.toml", cwd=REPO))
    assert {"mlx-dark", "mlx-light", "mlx-amber"} <= set(scan.themes)
    assert scan.themes["mlx-light"].dark is False
    broken = tmp_path / "bad.toml"
    broken.write_text('name = "bad"\nprimary = "not-a-colour"\n', encoding="utf-8")
    with pytest.raises(ThemeError, match=r"bad\.toml: primary: 'not-a-colour' is not a colour"):
        load_theme_file(broken)
    assert scan_themes([tmp_path]).errors and not scan_themes([tmp_path]).themes


def test_docs_list_every_key_as_the_help_screen_does() -> None:
    table = keys_markdown(key_rows(binding_groups()))
    docs = (REPO / "README.md").read_text(encoding="utf-8")
    assert table in docs, "README.md is out of date: paste keys_markdown(key_rows(binding_groups()))"
    ids = [row.id for row in key_rows(binding_groups())]
    assert len(ids) == len(set(ids)), "binding ids must be unique for [ui.keys]"


def test_formats_are_short_and_do_not_change_while_idle() -> None:
    assert clock_time(0) == "-"
    noon = time.mktime((2026, 1, 26, 12, 0, 0, 0, 0, -1))
    assert clock_time(noon, now=noon + 60) == "12:00:00"
    assert clock_time(noon, now=noon + 3 * 86400) == "Jan 26"
    assert (seconds(0), seconds(0.123), seconds(25.34)) == ("-", "0.12", "25.3")
    assert (duration(3.2), duration(125), duration(3720)) == ("3s", "2m05s", "1h02m")
    assert (parse_fraction("k", "85"), parse_fraction("k", "85%"), parse_fraction("k", "0.9")) == (
        0.85, 0.85, 0.9)
    with pytest.raises(ValueError, match="k: must be a percentage"):
        parse_fraction("k", "lots")


Runner = Callable[[Pilot], Awaitable[None]]
