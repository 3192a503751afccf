"""The model cache, told as a user's day: real tiny MLX models, loaded, used, evicted.

A fake memory probe drives the thresholds where a test needs an exact figure; MLX's own bytes
are added to it, so loads and evictions move it as they move the real gauge. One test crosses a
threshold with the real probe.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Callable

import mlx.core as mx
import psutil
import pytest

from mlx_tui.core.cache import ModelCache, ModelState, ModelTooLarge
from mlx_tui.core.catalog import UnknownModel
from mlx_tui.core.chat import ChatMessage, GenerationParams
from mlx_tui.core.events import CacheEvent, EventKind
from mlx_tui.core.loader import ModelLoadError
from mlx_tui.core.memory import FixedMemoryProbe, SystemMemoryProbe
from mlx_tui.core.runtime import Runtime
from mlx_tui.devtools.modelgen import corrupt_model

from .conftest import MLX_THREAD_SLACK, ManualClock, SteadyLoader, make_settings

SEED_MODELS = ("qwen2.5-coder-32b", "phi3.5-mini-4k", "deepseek-r1-70b")
HI = [ChatMessage("user", "Hello there")]
FEW = GenerationParams(max_tokens=4, temperature=0.0)


def record(cache: ModelCache) -> list[CacheEvent]:
    events: list[CacheEvent] = []
    cache.subscribe(lambda e: events.append(e) if e.kind is not EventKind.MEMORY else None)
    return events


def use(cache: ModelCache, name: str, times: int = 1) -> None:
    for _ in range(times):
        cache.acquire(name).release()


@pytest.fixture
def seed_runtime(runtime_factory: Callable[..., Runtime], model_factory: Callable[..., Path],
                 fixed_probe: FixedMemoryProbe) -> Runtime:
    """The seed's three models under the seed's rules: ``frequency``, keep the best one."""
    models = {name: str(model_factory(name, seed=i)) for i, name in enumerate(SEED_MODELS)}
    return runtime_factory(models, probe=fixed_probe, cache={"policy": "frequency"},
                           memory={"cleanup": "keep_best"})


def test_a_model_loads_on_first_use_and_tracks_the_seed_fields(seed_runtime: Runtime) -> None:
    cache = seed_runtime.cache
    assert cache.get("phi3.5-mini-4k").state is ModelState.NOT_LOADED
    before = time.time()
    text, stats = seed_runtime.chat.complete("phi3.5-mini-4k", HI, FEW)
    assert stats.loaded_first and stats.load_seconds > 0
    assert stats.tokens > 0 and isinstance(text, str)

    view = cache.get("phi3.5-mini-4k")
    assert view.state is ModelState.LOADED
    assert view.use_count == 1
    assert view.last_used >= before and view.loaded_at >= before
    assert view.load_time_seconds == pytest.approx(view.weights_seconds + view.tokenizer_seconds)
    assert view.resident_bytes == view.estimated_bytes, "the safetensors estimate is exact"
    seed = view.to_dict()
    assert {"name", "use_count", "last_used", "loaded_at", "load_time_seconds"} <= seed.keys()
    assert seed["last_used"].count(":") == 2 and "." not in seed["last_used"], "ISO to the second"

    _, again = seed_runtime.chat.complete("phi3.5-mini-4k", HI, FEW)
    assert not again.loaded_first
    assert cache.get("phi3.5-mini-4k").use_count == 2


def test_seed_scenario_1_a_normal_cleanup_keeps_the_most_used_model(
        seed_runtime: Runtime, fixed_probe: FixedMemoryProbe) -> None:
    cache = seed_runtime.cache
    events = record(cache)
    for name, uses in zip(SEED_MODELS, (50, 5, 2)):
        use(cache, name, uses)
    assert sorted(cache.loaded_names()) == sorted(SEED_MODELS)

    fixed_probe.set_fraction(0.90)  # between the warning (85%) and the emergency (98%)
    cache.check_memory()

    assert cache.loaded_names() == ["qwen2.5-coder-32b"]
    assert cache.get("qwen2.5-coder-32b").use_count == 50
    evicted = {e.model for e in events if e.kind is EventKind.EVICTED}
    assert evicted == {"phi3.5-mini-4k", "deepseek-r1-70b"}
    cleanup = next(e for e in events if e.kind is EventKind.CLEANUP)
    assert cleanup.data["cleanup"] == "normal" and "warning threshold 85%" in cleanup.message

    # The next request: qwen is instant (no load), phi needs a load again.
    mark = len(events)
    use(cache, "qwen2.5-coder-32b")
    assert not any(e.kind is EventKind.LOAD_STARTED for e in events[mark:])
    fixed_probe.set_fraction(0.5)
    use(cache, "phi3.5-mini-4k")
    assert cache.get("phi3.5-mini-4k").state is ModelState.LOADED
    assert cache.get("phi3.5-mini-4k").use_count == 6, "use_count survives the eviction"


def test_seed_scenario_2_an_emergency_unloads_everything(
        seed_runtime: Runtime, fixed_probe: FixedMemoryProbe) -> None:
    cache = seed_runtime.cache
    for name, uses in zip(SEED_MODELS, (50, 5, 2)):
        use(cache, name, uses)
    cache.pin("qwen2.5-coder-32b")
    fixed_probe.set_fraction(0.99)
    cache.check_memory()
    assert cache.loaded_names() == []
    assert all(cache.get(n).state is ModelState.NOT_LOADED for n in SEED_MODELS)


def test_evicting_really_returns_mlx_memory(seed_runtime: Runtime) -> None:
    cache = seed_runtime.cache
    assert cache.loaded_names() == [], "nothing loaded yet"
    base = mx.get_active_memory()
    use(cache, "qwen2.5-coder-32b")
    size = cache.get("qwen2.5-coder-32b").resident_bytes
    assert mx.get_active_memory() >= base + size
    assert cache.evict("qwen2.5-coder-32b")
    assert mx.get_active_memory() <= base + MLX_THREAD_SLACK, "gc.collect() + mx.clear_cache() gave it back"
    assert mx.get_cache_memory() == 0


def test_concurrent_requests_for_one_model_share_one_load(seed_runtime: Runtime) -> None:
    cache = seed_runtime.cache
    events = record(cache)
    errors: list[BaseException] = []

    def request() -> None:
        try:
            use(cache, "deepseek-r1-70b")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=request) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    assert [e.kind for e in events].count(EventKind.LOADED) == 1
    assert cache.get("deepseek-r1-70b").use_count == 6


def test_a_model_in_use_is_not_unloaded_until_its_request_ends(
        seed_runtime: Runtime, fixed_probe: FixedMemoryProbe) -> None:
    cache = seed_runtime.cache
    events = record(cache)
    lease = cache.acquire("phi3.5-mini-4k")
    fixed_probe.set_fraction(0.99)
    cache.check_memory()
    view = cache.get("phi3.5-mini-4k")
    assert view.state is ModelState.LOADED and view.evict_when_idle
    assert any(e.kind is EventKind.EVICTION_DEFERRED for e in events)
    lease.release()
    assert cache.get("phi3.5-mini-4k").state is ModelState.NOT_LOADED
    released = [e for e in events if e.kind is EventKind.RELEASED]
    assert [e.data["in_use"] for e in released] == [0], "the table hears the request end"


def test_load_in_one_thread_generate_in_another_while_a_second_load_runs(
        runtime_factory: Callable[..., Runtime], model_factory: Callable[..., Path]) -> None:
    """MLX keeps streams per thread: the loader evaluates the whole model where it loads it."""
    runtime = runtime_factory({
        "small": str(model_factory("small")),
        "wide": str(model_factory("wide", hidden_size=256, num_hidden_layers=4, intermediate_size=512)),
    })
    cache = runtime.cache
    loaded = cache.load("small").result(timeout=60)  # on a loader thread
    assert loaded.state is ModelState.LOADED

    second = cache.load("wide")  # a second load on another thread, running while we generate
    replies: list[tuple[str, int]] = []

    def generate() -> None:
        text, stats = runtime.chat.complete("small", HI, GenerationParams(max_tokens=16, temperature=0))
        replies.append((text, stats.tokens))  # checked below: an assert here could not fail the test

    worker = threading.Thread(target=generate)
    worker.start()
    worker.join(timeout=120)
    assert second.result(timeout=120).state is ModelState.LOADED
    assert len(replies) == 1 and replies[0][1] > 0
    text, _ = runtime.chat.complete("wide", HI, GenerationParams(max_tokens=4, temperature=0))
    assert isinstance(text, str)


def test_before_a_load_the_cache_evicts_by_policy_to_stay_under_the_warning(
        runtime_factory: Callable[..., Runtime], model_factory: Callable[..., Path]) -> None:
    models = {name: str(model_factory(name, seed=i)) for i, name in enumerate(SEED_MODELS)}
    size = 558_336
    # 100 MB machine, 80% used by others: room under the warning (85%) for exactly 2 models.
    probe = FixedMemoryProbe(total_bytes=100 * 10**6, used_fraction=0.0, track_mlx=True)
    probe.base_used = int(0.85 * probe.total_bytes) - 2 * size - size // 2 - mx.get_active_memory()
    # The default policy prices a reload by its measured seconds and a use by when it came:
    # both are fixed here, so the choice is the same on every run.
    clock = ManualClock()
    runtime = runtime_factory(models, probe=probe, loader=SteadyLoader(), clock=clock)
    cache = runtime.cache
    events = record(cache)
    for name in ("qwen2.5-coder-32b", "phi3.5-mini-4k", "qwen2.5-coder-32b", "phi3.5-mini-4k",
                 "qwen2.5-coder-32b", "deepseek-r1-70b"):  # qwen 3 uses, phi 2, then deepseek
        clock.advance(10)
        use(cache, name)
    assert sorted(cache.loaded_names()) == ["deepseek-r1-70b", "qwen2.5-coder-32b"]
    evicted = next(e for e in events if e.kind is EventKind.EVICTED)
    assert evicted.model == "phi3.5-mini-4k" and "making room for deepseek-r1-70b" in evicted.message
    assert [e.kind for e in events].index(EventKind.EVICTED) < [
        i for i, e in enumerate(events) if e.kind is EventKind.LOAD_STARTED][-1] + 1


def test_a_model_that_cannot_fit_even_alone_is_refused_with_figures(
        runtime_factory: Callable[..., Runtime], model_factory: Callable[..., Path]) -> None:
    probe = FixedMemoryProbe(total_bytes=2_000_000, used_fraction=0.8, track_mlx=False)
    runtime = runtime_factory({"big": str(model_factory("qwen2.5-coder-32b"))}, probe=probe)
    cache = runtime.cache
    events = record(cache)
    with pytest.raises(ModelTooLarge) as caught:
        cache.acquire("big")
    message = str(caught.value)
    assert "needs 545.2 KB" in message and "emergency threshold of 98%" in message
    assert cache.get("big").state is ModelState.FAILED
    assert any(e.kind is EventKind.REFUSED for e in events)

    probe.total_bytes = 10**12  # a bigger machine: the next request may retry
    use(cache, "big")
    assert cache.get("big").state is ModelState.LOADED


@pytest.mark.parametrize("how", ["no_config", "bad_safetensors", "bad_arch", "missing_weights"])
def test_a_broken_model_fails_clearly_and_the_others_stay_loaded(
        runtime_factory: Callable[..., Runtime], model_factory: Callable[..., Path],
        fresh_model: Callable[[str], Path], how: str) -> None:
    broken = fresh_model("broken")
    corrupt_model(broken, how)  # type: ignore[arg-type]
    runtime = runtime_factory({"good": str(model_factory("good")), "broken": str(broken)})
    cache = runtime.cache
    use(cache, "good")
    active = mx.get_active_memory()
    with pytest.raises(ModelLoadError) as caught:
        use(cache, "broken")
    view = cache.get("broken")
    assert view.state is ModelState.FAILED
    assert view.error and "broken" in view.error and str(caught.value) == view.error
    assert cache.get("good").state is ModelState.LOADED
    assert mx.get_active_memory() <= active + MLX_THREAD_SLACK, "the partial load's memory was freed"


def test_a_fixed_folder_loads_on_the_next_request(
        runtime_factory: Callable[..., Runtime], fresh_model: Callable[[str], Path]) -> None:
    folder = fresh_model("flaky")
    config = (folder / "config.json").read_bytes()
    (folder / "config.json").unlink()
    cache = runtime_factory({"flaky": str(folder)}).cache
    with pytest.raises(ModelLoadError, match="no config.json"):
        use(cache, "flaky")
    (folder / "config.json").write_bytes(config)
    use(cache, "flaky")
    assert cache.get("flaky").state is ModelState.LOADED


def test_unknown_and_missing_models_are_named(runtime_factory: Callable[..., Runtime],
                                              tmp_path: Path) -> None:
    cache = runtime_factory({"gone": str(tmp_path / "nowhere")}).cache
    with pytest.raises(UnknownModel, match="unknown model 'nope'"):
        cache.acquire("nope")
    with pytest.raises(ModelLoadError, match="does not exist"):
        use(cache, "gone")


def test_a_reload_reuses_the_tokenizer_and_times_it_separately(seed_runtime: Runtime) -> None:
    cache = seed_runtime.cache
    events = record(cache)
    use(cache, "phi3.5-mini-4k")
    first = cache.get("phi3.5-mini-4k")
    assert first.tokenizer_seconds > 0 and first.weights_seconds > 0
    cache.evict("phi3.5-mini-4k")
    use(cache, "phi3.5-mini-4k")
    loads = [e.message for e in events if e.kind is EventKind.LOADED]
    assert "tokenizer reused" not in loads[0] and "tokenizer reused" in loads[1]


def test_pinned_models_survive_a_normal_cleanup(seed_runtime: Runtime,
                                                fixed_probe: FixedMemoryProbe) -> None:
    cache = seed_runtime.cache
    use(cache, "qwen2.5-coder-32b", 5)
    use(cache, "deepseek-r1-70b")
    cache.pin("deepseek-r1-70b")
    fixed_probe.set_fraction(0.9)
    cache.check_memory()
    assert sorted(cache.loaded_names()) == ["deepseek-r1-70b", "qwen2.5-coder-32b"]


def test_idle_models_unload_after_the_configured_time(
        runtime_factory: Callable[..., Runtime], model_factory: Callable[..., Path]) -> None:
    clock = ManualClock()
    runtime = runtime_factory({"a": str(model_factory("a")), "b": str(model_factory("b", seed=1))},
                              cache={"idle_unload_seconds": 60}, clock=clock)
    cache = runtime.cache
    use(cache, "a")
    use(cache, "b")
    cache.set_idle_unload("b", 0)  # this one never unloads by idleness (Ollama's keep_alive -1)
    clock.advance(59)
    runtime.monitor.step()
    assert sorted(cache.loaded_names()) == ["a", "b"]
    with cache.acquire("a"):
        clock.advance(2)
        runtime.monitor.step()
        assert "a" in cache.loaded_names(), "a model in use is never idle"
    clock.advance(61)
    runtime.monitor.step()
    assert cache.loaded_names() == ["b"]


def test_max_loaded_bounds_the_number_of_models(
        runtime_factory: Callable[..., Runtime], model_factory: Callable[..., Path]) -> None:
    models = {n: str(model_factory(n, seed=i)) for i, n in enumerate("abc")}
    clock = ManualClock()  # the default policy reads rates off the clock: fixed, not timing
    cache = runtime_factory(models, cache={"max_loaded": 2}, loader=SteadyLoader(), clock=clock).cache
    for name in ("a", "b", "a", "a", "c"):
        clock.advance(10)
        use(cache, name)
    assert sorted(cache.loaded_names()) == ["a", "c"]


def test_preload_loads_in_the_background_and_logs_it(
        runtime_factory: Callable[..., Runtime], model_factory: Callable[..., Path],
        caplog: pytest.LogCaptureFixture) -> None:
    runtime = runtime_factory({"default": str(model_factory("a")), "coding": str(model_factory("b", seed=1))},
                              cache={"preload": ["default", "coding", "fast"]})
    with caplog.at_level("INFO", logger="mlx_tui.cache"):
        runtime.monitor.preload()
    assert sorted(runtime.cache.loaded_names()) == ["coding", "default"]
    assert any("preloaded default in" in r.message for r in caplog.records)
    assert any("could not preload fast: unknown model" in r.message for r in caplog.records)


def test_preload_waits_for_headroom_below_background_load_below(
        runtime_factory: Callable[..., Runtime], model_factory: Callable[..., Path],
        fixed_probe: FixedMemoryProbe, caplog: pytest.LogCaptureFixture) -> None:
    fixed_probe.set_fraction(0.75)
    runtime = runtime_factory({"default": str(model_factory("a"))}, probe=fixed_probe,
                              cache={"preload": ["default"]})
    with caplog.at_level("WARNING", logger="mlx_tui.cache"):
        runtime.monitor.preload()
    assert runtime.cache.loaded_names() == []
    assert any("could not preload default: memory 75% >= background_load_below 70%" in r.message
               for r in caplog.records)


def test_usage_statistics_survive_a_restart_and_drive_preload_popular(
        tmp_path: Path, model_factory: Callable[..., Path]) -> None:
    from mlx_tui.core.runtime import build_runtime
    from mlx_tui.core.settings import write_settings

    settings_path = tmp_path / "s.toml"
    write_settings(make_settings({"a": str(model_factory("a")), "b": str(model_factory("b", seed=1))},
                                 cache={"preload_popular": 1}), settings_path)
    first = build_runtime(settings_path, db_path=tmp_path / "db.sqlite")
    use(first.cache, "a")
    use(first.cache, "b", 3)
    first.close()

    second = build_runtime(settings_path, db_path=tmp_path / "db.sqlite")
    try:
        assert second.cache.get("b").lifetime_use_count == 3
        assert second.cache.get("b").use_count == 0, "use_count counts this run, as the seed does"
        use(second.cache, "b")
        assert second.cache.get("b").lifetime_use_count == 4
        assert second.monitor.preload_names() == ["b"]
        second.monitor.preload()
        assert second.cache.loaded_names() == ["b"]
    finally:
        second.close()


def test_lowering_the_warning_below_current_use_cleans_up_at_once(
        runtime_factory: Callable[..., Runtime], model_factory: Callable[..., Path]) -> None:
    """Real probe, real loads: the warning is set under what the real gauge reads now.

    The memory really comes back: MLX's figure and this process's resident set drop by the
    model's size. (The system-wide figure drops too, but on the VMs that run CI the kernel
    reports freed pages late and unevenly, so the test does not time it.)
    """
    big = model_factory("big", hidden_size=1024, num_hidden_layers=12, intermediate_size=2816)
    runtime = runtime_factory({"big": str(big), "small": str(model_factory("small"))},
                              probe=SystemMemoryProbe(),
                              memory={"warning_threshold": 0.99, "emergency_threshold": 0.995})
    cache = runtime.cache
    use(cache, "small", 3)
    use(cache, "big")
    size = cache.get("big").resident_bytes
    assert size > 500 * 1024**2
    snap = cache.memory(fresh=True)
    assert snap.mlx_active_bytes >= size
    rss = psutil.Process().memory_info().rss
    warning = round(snap.used_fraction - 0.01, 4)  # just under what the real gauge reads

    runtime.settings_store.update({"memory": {"warning_threshold": warning}})

    assert cache.loaded_names() == ["small"], "keep_on_cleanup = 1 keeps the most used"
    after = cache.memory()
    assert after.mlx_active_bytes <= snap.mlx_active_bytes - size
    assert psutil.Process().memory_info().rss <= rss - size * 0.9


def test_a_reload_announces_an_eta_from_the_last_load(seed_runtime: Runtime) -> None:
    cache = seed_runtime.cache
    events = record(cache)
    assert cache.get("phi3.5-mini-4k").expected_load_seconds is None, "nothing measured yet"
    use(cache, "phi3.5-mini-4k")
    first = cache.get("phi3.5-mini-4k").load_time_seconds
    cache.evict("phi3.5-mini-4k")
    assert cache.get("qwen2.5-coder-32b").expected_load_seconds is not None, "from past load speed"
    use(cache, "phi3.5-mini-4k")
    started = [e for e in events if e.kind is EventKind.LOAD_STARTED]
    assert started[0].data["expected_seconds"] is None
    assert started[1].data["expected_seconds"] == first
    assert "about" in started[1].message
