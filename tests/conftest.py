"""Shared fixtures: tiny real MLX models, isolated settings/data folders, a runtime to drive.

Every model here is a real ``mlx_lm`` llama with a real tokenizer (random float32 weights, a few
hundred KB) written by :mod:`mlx_tui.devtools.modelgen`, loaded and run by real MLX.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from mlx_tui.core.loader import LoadedModel, MlxLoader, ModelLoader  # noqa: E402
from mlx_tui.core.memory import FixedMemoryProbe, MemoryProbe  # noqa: E402
from mlx_tui.core.runtime import Runtime, build_runtime  # noqa: E402
from mlx_tui.core.settings import write_settings  # noqa: E402
from mlx_tui.devtools.modelgen import write_random_model  # noqa: E402
from mlx_tui.devtools.settings_files import isolated_settings  # noqa: E402


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never read or write the real user's config, data or Hugging Face cache."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))


@pytest.fixture(scope="session")
def model_factory(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """``model_factory("a", seed=1)`` -> folder of a tiny real model (built once per session)."""
    root = tmp_path_factory.mktemp("models")
    built: dict[tuple[str, tuple[tuple[str, Any], ...]], Path] = {}

    def make(name: str, **kwargs: Any) -> Path:
        key = (name, tuple(sorted(kwargs.items())))
        if key not in built:
            built[key] = write_random_model(root / name, **kwargs)
        return built[key]

    return make


@pytest.fixture
def fresh_model(tmp_path: Path, model_factory: Callable[..., Path]) -> Callable[[str], Path]:
    """A private copy of a tiny model that a test may damage."""

    def make(name: str) -> Path:
        dest = tmp_path / "own-models" / name
        shutil.copytree(model_factory("pristine"), dest)
        return dest

    return make


MLX_THREAD_SLACK = 64
"""Bytes MLX may still hold after every model is gone: each long-lived MLX thread (a loader,
a model's worker) keeps its own random key, 8 bytes, for the life of the process."""


make_settings = isolated_settings
"""Settings with only ``models`` known (no folder or Hugging Face scans, no preload)."""


@pytest.fixture
def runtime_factory(tmp_path: Path) -> Iterator[Callable[..., Runtime]]:
    """Build a Runtime from a settings file written in ``tmp_path``; closed after the test."""
    made: list[Runtime] = []

    def make(models: dict[str, str], probe: MemoryProbe | None = None,
             loader: ModelLoader | None = None, clock: Callable[[], float] | None = None,
             **sections: dict[str, Any]) -> Runtime:
        settings_path = tmp_path / "settings.toml"
        write_settings(make_settings(models, **sections), settings_path)
        runtime = build_runtime(settings_path, db_path=tmp_path / "data.db", probe=probe,
                                loader=loader, clock=clock)
        made.append(runtime)
        return runtime

    yield make
    for runtime in made:
        runtime.close()


@pytest.fixture
def fixed_probe() -> FixedMemoryProbe:
    """A memory probe a test sets by hand: 16 GiB, half used, MLX bytes counted in."""
    return FixedMemoryProbe(total_bytes=16 * 1024**3, used_fraction=0.5, track_mlx=True)


class SteadyLoader(MlxLoader):
    """The real loader, reporting the same load seconds for every model: policies that price a
    reload by its measured seconds then decide the same way on every run."""

    def __init__(self, weights_seconds: float = 1.0) -> None:
        super().__init__()
        self.weights_seconds = weights_seconds

    def load(self, info: Any) -> LoadedModel:
        loaded = super().load(info)
        loaded.weights_seconds, loaded.tokenizer_seconds = self.weights_seconds, 0.0
        return loaded


class ManualClock:
    """A clock a test moves by hand (``clock.advance(60)``)."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def server(runtime: Runtime) -> Iterator[Any]:
    """The test file's ``runtime`` served on a free loopback port (an ``ApiServer``)."""
    from tests.protocol_server import serving

    with serving(runtime) as server:
        yield server


@pytest.fixture
def serve() -> Iterator[Callable[..., tuple[Any, Any]]]:
    """``serve(runtime, api_key="", host="127.0.0.1", before_start=None)`` -> a started
    ``ApiServer`` on a free port and an httpx client for it; ``before_start(server)`` may add
    routes to its app. Every server started is stopped when the test ends."""
    import httpx

    from mlx_tui.server.serve import ApiServer

    started: list[tuple[ApiServer, httpx.Client]] = []

    def start(runtime: Runtime, api_key: str = "", host: str = "127.0.0.1",
              before_start: Callable[[ApiServer], None] | None = None) -> tuple[ApiServer, httpx.Client]:
        server = ApiServer(runtime, host, 0, api_key=api_key)
        if before_start is not None:
            before_start(server)
        server.start()
        client = httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=60)
        started.append((server, client))
        return server, client

    yield start
    for server, client in started:
        client.close()
        server.stop()
