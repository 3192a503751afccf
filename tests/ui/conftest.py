"""Fixtures of the app's tests: the app over a real runtime with tiny real MLX models.

``tests/conftest.py`` gives ``model_factory`` (tiny real models) and ``runtime_factory``; here
they become ``tiny_models``, ``make_runtime`` (still memory by default, and a loader seam) and
``make_app`` (the app without its HTTP API).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from mlx_tui.core.chat import GenerationParams
from mlx_tui.core.runtime import Runtime, build_runtime
from mlx_tui.devtools.settings_files import write_isolated_settings
from mlx_tui.ui.app import MlxTuiApp

from .helpers import QUICK, SlowTypist, StillProbe

AppFactory = Callable[..., MlxTuiApp]


@pytest.fixture
def tiny_models(model_factory: Callable[..., Path]) -> dict[str, str]:
    return {"tiny-a": str(model_factory("tiny-a", seed=1)), "tiny-b": str(model_factory("tiny-b", seed=2))}


@pytest.fixture
def make_runtime(runtime_factory: Callable[..., Runtime], tmp_path: Path) -> Iterator[Callable[..., Runtime]]:
    """``make_runtime(models, probe=..., loader=..., memory={...})``: ``runtime_factory`` with
    still memory by default, plus a loader seam it lacks."""
    own: list[Runtime] = []

    def make(models: dict[str, str], probe: Any = None, loader: Any = None,
             **sections: dict[str, Any]) -> Runtime:
        if loader is None:
            return runtime_factory(models, probe or StillProbe(), **sections)
        write_isolated_settings(tmp_path / "settings.toml", models, **sections)
        own.append(build_runtime(tmp_path / "settings.toml", db_path=tmp_path / "data.db",
                                 probe=probe or StillProbe(), loader=loader))
        return own[-1]

    yield make
    for runtime in own:
        runtime.close()


@pytest.fixture
def make_app(make_runtime: Callable[..., Runtime], tiny_models: dict[str, str]) -> AppFactory:
    """``make_app(model="tiny-a", models=..., **runtime_kw)``: the app without its HTTP API,
    short reproducible replies (``params=None``: each model's own defaults) and keys pressed
    one at a time (``key_clock``: see :class:`SlowTypist`)."""

    def make(model: str | None = "tiny-a", models: dict[str, str] | None = None,
             params: GenerationParams | None = QUICK, key_clock: Callable[[], float] | None = None,
             **kw: Any) -> MlxTuiApp:
        runtime = make_runtime(models if models is not None else tiny_models, **kw)
        return MlxTuiApp(runtime, model=model, api=False, params=params,
                         key_clock=key_clock or SlowTypist())

    return make
