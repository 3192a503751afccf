"""What an operator meets in weeks of running: bad folders, full disks, lying configs, storms.

Each case is one that once broke the server: a load that never resolved, a listing that
answered 500 until restart, a start-up that crashed, a config that grew without bound, a disk
that failed every chat. Real tiny MLX models; a fake probe only where a figure must be exact.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import threading
from pathlib import Path
from typing import Any, Callable

import pytest

from mlx_tui.core.cache import ModelState
from mlx_tui.core.catalog import Catalog, UnknownModel
from mlx_tui.core.chat import ChatMessage, GenerationParams
from mlx_tui.core.events import CacheEvent, EventKind
from mlx_tui.core.loader import LoadedModel, ModelLoadError
from mlx_tui.core.memory import FixedMemoryProbe
from mlx_tui.core.runtime import Runtime, build_runtime
from mlx_tui.core.settings import write_settings
from mlx_tui.core.store import Store

from .conftest import MLX_THREAD_SLACK, make_settings

HI = [ChatMessage("user", "hello")]
FEW = GenerationParams(max_tokens=3, temperature=0)


def copy_model(model_factory: Callable[..., Path], dest: Path) -> Path:
    shutil.copytree(model_factory("pristine"), dest)
    return dest


def test_a_folder_that_turns_invalid_before_a_retry_fails_the_retry_instead_of_hanging(
        runtime_factory: Callable[..., Runtime], model_factory: Callable[..., Path], tmp_path: Path) -> None:
    folder = copy_model(model_factory, tmp_path / "flaky")
    good_config = (folder / "config.json").read_text()
    (folder / "config.json").unlink()
    cache = runtime_factory({"flaky": str(folder)}).cache
    with pytest.raises(ModelLoadError, match="no config.json"):
        cache.acquire("flaky")
    (folder / "config.json").write_text("[]")  # valid JSON, not an object
    future = cache.load("flaky")
    with pytest.raises(ModelLoadError, match="config.json must be a JSON object"):
        future.result(timeout=30)
    assert cache.get("flaky").state is ModelState.FAILED
    (folder / "config.json").write_text(good_config)
    assert cache.load("flaky").result(timeout=30).state is ModelState.LOADED


class ExplodingLoader:
    """A loader whose load raises something no handler expects (a bug, an OS fault)."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.explode = True

    def load(self, info: Any) -> LoadedModel:
        if self.explode:
            raise OSError(28, "No space left on device")
        return self.real.load(info)

    def free(self) -> None:
        self.real.free()


def test_any_failure_inside_a_load_resolves_its_future(
        runtime_factory: Callable[..., Runtime], model_factory: Callable[..., Path]) -> None:
    from mlx_tui.core.loader import MlxLoader

    loader = ExplodingLoader(MlxLoader())
    cache = runtime_factory({"a": str(model_factory("a"))}, loader=loader).cache
    with pytest.raises(ModelLoadError, match="No space left on device"):
        cache.load("a").result(timeout=30)
    loader.explode = False
    assert cache.load("a").result(timeout=30).state is ModelState.LOADED


class FullDiskStore(Store):
    """A database on a disk that has just filled up: every write fails."""

    full = True

    def record_use(self, name: str, at: float) -> None:
        if self.full:
            raise sqlite3.OperationalError("database or disk is full")
        super().record_use(name, at)

    def record_load(self, name: str, seconds: float) -> None:
        if self.full:
            raise sqlite3.OperationalError("database or disk is full")
        super().record_load(name, seconds)


def test_a_full_disk_under_the_database_fails_no_chat_and_the_statistics_catch_up(
        tmp_path: Path, model_factory: Callable[..., Path], caplog: pytest.LogCaptureFixture) -> None:
    from mlx_tui.core.cache import ModelCache
    from mlx_tui.core.chat import ChatEngine
    from mlx_tui.core.loader import MlxLoader

    settings = make_settings({"a": str(model_factory("a"))})
    store = FullDiskStore(tmp_path / "db.sqlite")
    cache = ModelCache(settings, MlxLoader(), FixedMemoryProbe(), store=store)
    chat = ChatEngine(cache)
    try:
        with caplog.at_level("WARNING", logger="mlx_tui.store"):
            for _ in range(3):
                _, stats = chat.complete("a", HI, FEW)
                assert stats.tokens > 0
            recorder = cache.usage_recorder
            assert recorder is not None and not recorder.flush(timeout=0.5)
            assert "database or disk is full" in (recorder.failing or "")
        assert sum("usage statistics not written" in r.message for r in caplog.records) == 1, \
            "said once, not once per request"
        store.full = False  # the operator freed some space
        recorder._retry = 0.01  # noqa: SLF001 - do not wait the production retry period
        with recorder._cond:  # noqa: SLF001
            recorder._cond.notify_all()  # noqa: SLF001
        assert recorder.flush(timeout=10)
        assert store.usage()["a"].use_count == 3 and store.usage()["a"].loads == 1
    finally:
        cache.close()
        store.close()


def test_an_unwritable_database_at_start_is_a_message_and_the_app_runs(
        tmp_path: Path, model_factory: Callable[..., Path]) -> None:
    settings_path = tmp_path / "s.toml"
    write_settings(make_settings({"a": str(model_factory("a"))}), settings_path)
    not_a_folder = tmp_path / "a-file"
    not_a_folder.write_text("the user's own file")  # even root cannot make a folder inside it
    runtime = build_runtime(settings_path, db_path=not_a_folder / "db.sqlite")
    try:
        assert any("cannot be opened" in p and "--db" in p for p in runtime.problems)
        _, stats = runtime.chat.complete("a", HI, FEW)
        assert stats.tokens > 0
    finally:
        runtime.close()
    assert not_a_folder.read_text() == "the user's own file"


def test_folders_that_cannot_be_parsed_are_listed_with_why_and_never_stop_start_up(
        tmp_path: Path, model_factory: Callable[..., Path]) -> None:
    shelf = tmp_path / "shelf"
    cases = {"list-config": "[]", "string-config": '"x"', "number-config": "1",
             "deep-config": "[" * 100_000 + "]" * 100_000}
    for name, text in cases.items():
        (copy_model(model_factory, shelf / name) / "config.json").write_text(text)
    header = copy_model(model_factory, shelf / "list-header")
    weights = header / "model.safetensors"
    weights.write_bytes((2).to_bytes(8, "little") + b"[]")
    odd = copy_model(model_factory, shelf / os.fsdecode(b"caf\xe9-model"))
    assert odd.exists()
    settings_path = tmp_path / "s.toml"
    write_settings(make_settings({}, catalog={"dirs": [str(shelf)]}), settings_path)

    runtime = build_runtime(settings_path, db_path=tmp_path / "db")  # must not raise
    try:
        views = {v.name: v for v in runtime.cache.models()}
        for name in cases:
            assert views[name].error and "config.json" in views[name].error, name
        assert "header is not a JSON object" in (views["list-header"].error or "")
        odd_name = next(n for n in views if n.startswith("caf"))
        assert odd_name == "caf\\xe9-model", "undecodable bytes are escaped, the name is text"
        json.dumps([v.to_dict() for v in views.values()], ensure_ascii=False).encode("utf-8")
        with pytest.raises(ModelLoadError, match="not valid UTF-8.*rename the folder"):
            runtime.cache.load(odd_name).result(timeout=30)
    finally:
        runtime.close()


def test_a_config_that_lies_about_its_size_is_refused_before_loading(
        runtime_factory: Callable[..., Runtime], model_factory: Callable[..., Path], tmp_path: Path) -> None:
    liar = copy_model(model_factory, tmp_path / "liar")
    config = json.loads((liar / "config.json").read_text())
    config["num_hidden_layers"] = 10_000_000
    (liar / "config.json").write_text(json.dumps(config))
    cache = runtime_factory({"liar": str(liar)}).cache
    view = cache.get("liar")
    assert "10,000,000 layers" in (view.error or "") and "weights hold 2" in (view.error or "")
    with pytest.raises(ModelLoadError, match="10,000,000 layers"):
        cache.acquire("liar")
    assert cache.get("liar").resident_bytes == 0


class SlowLoader:
    """The real loader, held at the start of each load until the test lets it go."""

    def __init__(self) -> None:
        from mlx_tui.core.loader import MlxLoader

        self.real = MlxLoader()
        self.started = threading.Event()
        self.go = threading.Event()

    def load(self, info: Any) -> LoadedModel:
        self.started.set()
        assert self.go.wait(30)
        return self.real.load(info)

    def free(self) -> None:
        self.real.free()


def test_an_emergency_abandons_a_load_under_way_and_frees_it_when_it_returns(
        runtime_factory: Callable[..., Runtime], model_factory: Callable[..., Path]) -> None:
    import mlx.core as mx

    probe = FixedMemoryProbe(used_fraction=0.5)
    loader = SlowLoader()
    cache = runtime_factory({"a": str(model_factory("a")), "b": str(model_factory("b", seed=1))},
                            probe=probe, loader=loader).cache
    events: list[CacheEvent] = []
    cache.subscribe(events.append)
    base = mx.get_active_memory()
    future = cache.load("a")
    assert loader.started.wait(30)
    # Admission does not wait for the load under way: another load is planned meanwhile.
    assert cache.get("a").state is ModelState.LOADING
    probe.set_fraction(0.99)
    cache.check_memory()
    loader.go.set()
    with pytest.raises(ModelLoadError, match="load abandoned .*emergency"):
        future.result(timeout=30)
    assert cache.get("a").state is ModelState.FAILED
    assert mx.get_active_memory() <= base + MLX_THREAD_SLACK, "the abandoned model's memory went back"
    probe.set_fraction(0.5)
    assert cache.load("a").result(timeout=30).state is ModelState.LOADED, "a later request loads it"


def test_a_request_that_never_gets_its_model_is_not_a_use(
        runtime_factory: Callable[..., Runtime], model_factory: Callable[..., Path]) -> None:
    probe = FixedMemoryProbe(total_bytes=2_000_000, used_fraction=0.8)
    cache = runtime_factory({"big": str(model_factory("big-one"))}, probe=probe).cache
    with pytest.raises(ModelLoadError):
        cache.acquire("big")
    assert cache.get("big").use_count == 0 and cache.get("big").lifetime_use_count == 0


def test_a_listener_may_call_back_into_the_cache_from_another_thread(
        runtime_factory: Callable[..., Runtime], model_factory: Callable[..., Path]) -> None:
    cache = runtime_factory({"a": str(model_factory("a"))}).cache
    answers: list[str] = []

    def listener(event: CacheEvent) -> None:
        if event.kind is EventKind.LOADED:
            helper = threading.Thread(target=lambda: (cache.pin("a"), answers.append(cache.get("a").state.value)))
            helper.start()
            helper.join(10)  # would deadlock if this ran under the cache's lock
            answers.append("joined" if not helper.is_alive() else "stuck")

    cache.subscribe(listener)
    cache.acquire("a").release()
    assert answers == ["loaded", "joined"]
    assert cache.get("a").pinned


def test_events_reach_listeners_in_the_order_they_happened(
        runtime_factory: Callable[..., Runtime], model_factory: Callable[..., Path]) -> None:
    cache = runtime_factory({"a": str(model_factory("a"))}).cache
    kinds: list[EventKind] = []
    cache.subscribe(lambda e: kinds.append(e.kind) if e.kind is not EventKind.MEMORY else None)
    cache.acquire("a").release()
    cache.evict("a")
    assert kinds == [EventKind.LOAD_QUEUED, EventKind.LOAD_STARTED, EventKind.LOADED, EventKind.USED,
                     EventKind.RELEASED, EventKind.EVICTED]


def test_a_request_can_never_re_point_an_alias(
        runtime_factory: Callable[..., Runtime], model_factory: Callable[..., Path], tmp_path: Path) -> None:
    elsewhere = copy_model(model_factory, tmp_path / "some" / "where" / "default")
    runtime = runtime_factory({"default": str(model_factory("a"))})
    cache = runtime.cache
    configured = cache.get("default").path
    other = cache.get(str(elsewhere))  # a path, as the app's --model may name one
    assert other.name == "where/default" and other.path == str(elsewhere)
    cache.acquire(str(elsewhere)).release()
    cache.evict("where/default")
    assert cache.get("default").path == configured, "the alias points where settings.toml says"
    cache.acquire("default").release()
    assert cache.get("default").path == configured


def test_paths_are_not_in_the_catalogue_unless_allowed_whether_or_not_they_exist(
        runtime_factory: Callable[..., Runtime], model_factory: Callable[..., Path]) -> None:
    cache = runtime_factory({"a": str(model_factory("a"))}).cache
    existing = str(model_factory("b", seed=1))
    messages = []
    for name in (existing, "/etc", "../../etc/passwd", "/no/such/folder"):
        with pytest.raises(UnknownModel) as caught:
            cache.acquire(name, allow_paths=False)
        messages.append(str(caught.value).replace(repr(name), "NAME"))
    assert len(set(messages)) == 1, "the same answer whether or not the path exists"
    assert "not in the catalogue" in messages[0]
    assert [v.name for v in cache.models()] == ["a", "demo"] or \
        sorted(v.name for v in cache.models()) == ["a", "demo"], "refused names are never listed"


def test_two_folders_with_one_name_are_two_models(
        tmp_path: Path, model_factory: Callable[..., Path]) -> None:
    one = copy_model(model_factory, tmp_path / "shelf-a" / "llama")
    two = copy_model(model_factory, tmp_path / "shelf-b" / "llama")
    settings = make_settings({}, catalog={"dirs": [str(one.parent), str(two.parent)]})
    found = Catalog(settings).scan()
    assert found["llama"].path == one
    settings_path = tmp_path / "s.toml"
    write_settings(settings, settings_path)
    runtime = build_runtime(settings_path, db_path=tmp_path / "db")
    try:
        names = {v.name: v.path for v in runtime.cache.models()}
        assert names["llama"] == str(one)
        assert str(two) in names.values(), "the second folder is its own model, not the first"
    finally:
        runtime.close()
