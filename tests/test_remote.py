"""Another mlx-tui seen from this one: its ``/health`` read back as the local cache's views, its
models loaded, evicted, pinned and cleaned up through its API, a chat streamed from it, a host
going away and coming back, and ``mlx-tui status --all`` over several hosts. The remotes are
real servers on loopback (in this process) over real tiny models; keys never show."""

from __future__ import annotations

import argparse
import logging
import os
import socket
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import pytest

from mlx_tui.core.chat import ChatMessage, GenerationParams
from mlx_tui.core.events import CacheEvent, EventKind
from mlx_tui.core.loader import LoadedModel, MlxLoader
from mlx_tui.core.memory import FixedMemoryProbe
from mlx_tui.core.model_view import ModelState
from mlx_tui.core.runtime import Runtime
from mlx_tui.core.settings import parse_settings
from mlx_tui.core.store import Store
from mlx_tui.devtools.ports import free_port
from mlx_tui.devtools.settings_files import isolated_settings
from mlx_tui.remote.address import RemoteAddress, UnknownRemote, resolve_remote
from mlx_tui.remote.client import RemoteClient
from mlx_tui.remote.documents import view_from_document
from mlx_tui.remote.errors import RemoteNeedsKey, RemoteRefused, RemoteUnreachable
from mlx_tui.remote.host import RemoteHost
from mlx_tui.remote.permissions import key_file_warning
from mlx_tui.remote.poller import HostPoller
from mlx_tui.server.serve import ApiServer
from mlx_tui.status_all import run_status_all

KEY = "k3y-for-the-studio-only"
QUICK = GenerationParams(temperature=0.0, max_tokens=6, seed=0)


@pytest.fixture
def models(model_factory: Callable[..., Path]) -> dict[str, str]:
    return {"alpha": str(model_factory("alpha")), "beta": str(model_factory("beta", seed=1))}


@pytest.fixture
def studio(runtime_factory: Callable[..., Runtime], models: dict[str, str]) -> Iterator[ApiServer]:
    """A remote instance with an API key, on loopback."""
    runtime = runtime_factory(models, FixedMemoryProbe(used_fraction=0.4), api={"api_key": KEY})
    with ApiServer(runtime, "127.0.0.1", 0, api_key=KEY) as server:
        yield server


@pytest.fixture
def host(studio: ApiServer) -> Iterator[RemoteHost]:
    """The studio as the app sees it (polled by hand: no poller thread)."""
    remote = RemoteHost(RemoteAddress("studio", studio.url, KEY), Store(":memory:"))
    yield remote
    remote.close()


class Events:
    """Cache events a listener received, and a way to wait for one (no sleeps)."""

    def __init__(self) -> None:
        self.seen: list[CacheEvent] = []
        self._changed = threading.Condition()

    def __call__(self, event: CacheEvent) -> None:
        with self._changed:
            self.seen.append(event)
            self._changed.notify_all()

    def kinds(self) -> list[EventKind]:
        return [e.kind for e in self.seen if e.kind not in (EventKind.MEMORY, EventKind.USED)]

    def wait_for(self, kind: EventKind, timeout: float = 10.0) -> CacheEvent:
        with self._changed:
            found = self._changed.wait_for(
                lambda: next((e for e in self.seen if e.kind is kind), None), timeout)
        assert found is not None, f"no {kind.value} event"
        return found


def poll_until(host: RemoteHost, condition: Callable[[], bool], polls: int = 200) -> None:
    for _ in range(polls):
        host.poller.poll()
        if condition():
            return
    raise AssertionError("the remote never got there")


def test_a_remote_reads_back_as_the_same_views_the_local_cache_gives(
        studio: ApiServer, host: RemoteHost) -> None:
    cache = studio.runtime.cache
    cache.load("alpha", reason="test").result(timeout=60)
    cache.pin("alpha")
    list(studio.runtime.chat.stream("alpha", [ChatMessage("user", "hi")], QUICK))

    report = host.poller.poll()
    assert report.reachable and report.problem is None
    remote = {v.name: v for v in host.cache.models()}
    for local in cache.models():
        there = remote[local.name]
        assert (there.state, there.use_count, there.pinned, there.resident_bytes, there.leases) == (
            local.state, local.use_count, local.pinned, local.resident_bytes, local.leases)
        assert there.load_time_seconds == pytest.approx(local.load_time_seconds, abs=1e-3)
        assert there.estimated_bytes == local.estimated_bytes
    assert host.cache.get("alpha").is_loaded and host.cache.loaded_names() == ["alpha"]
    snap, here = host.cache.memory(), cache.memory()
    assert (snap.total_bytes, snap.used_fraction) == (here.total_bytes, pytest.approx(here.used_fraction, abs=1e-3))
    assert host.cache.thresholds == cache.thresholds
    assert report.reading is not None and [v.name for v in report.reading.cached] == ["alpha"]
    with pytest.raises(LookupError, match="gamma"):
        host.cache.get("gamma")


def test_a_load_under_way_keeps_its_progress_and_moves_on_with_the_clock() -> None:
    doc = {"name": "big", "state": "loading", "progress": 0.4, "eta_seconds": 3.0,
           "use_count": 2, "last_used": "2026-01-26T15:30:00", "in_use": 1}
    view = view_from_document(doc, now=1000.0)
    assert view.progress(1000.0) == pytest.approx(0.4) and view.eta_seconds(1000.0) == pytest.approx(3.0)
    assert view.progress(1001.0) == pytest.approx(0.6) and view.eta_seconds(1001.0) == pytest.approx(2.0)
    assert (view.use_count, view.leases, view.info.path) == (2, 1, None)


def test_load_evict_pin_and_cleanup_go_through_the_remote_api_and_come_back_as_events(
        studio: ApiServer, host: RemoteHost) -> None:
    events = Events()
    host.cache.subscribe(events)
    host.poller.poll()

    loaded = host.cache.load("beta", reason="test")
    poll_until(host, loaded.done)
    assert loaded.result().is_loaded and studio.runtime.cache.get("beta").is_loaded
    assert events.wait_for(EventKind.LOADED).message.startswith("beta: loaded on studio")

    host.cache.pin("beta", True)  # returns at once: sent from the host's action thread
    poll_until(host, lambda: host.cache.get("beta").pinned)
    assert studio.runtime.cache.get("beta").pinned and EventKind.PINNED in events.kinds()

    assert host.cache.evict("beta", reason="test") is True
    host.poller.poll()
    assert studio.runtime.cache.get("beta").state is ModelState.NOT_LOADED
    assert events.wait_for(EventKind.EVICTED).model == "beta"

    poll_until(host, host.cache.load("alpha").done)
    plan = host.cache.cleanup("emergency", reason="test")
    assert plan.evict == ("alpha",) and plan.level == "emergency"
    assert studio.runtime.cache.loaded_names() == []


def test_a_refused_action_is_a_clear_error_and_a_refused_pin_an_event(
        host: RemoteHost) -> None:
    events = Events()
    host.cache.subscribe(events)
    with pytest.raises(RemoteRefused, match="gamma") as refused:
        host.cache.load("gamma")
    assert refused.value.status == 404
    host.cache.pin("gamma", True)
    refusal = events.wait_for(EventKind.REFUSED)
    assert refusal.model == "gamma" and "not pinned" in refusal.message


def test_a_chat_streams_from_the_remote_in_the_cores_shapes(host: RemoteHost) -> None:
    deltas = list(host.chat.stream("alpha", [ChatMessage("user", "hello there")], QUICK))
    text = "".join(d.text for d in deltas)
    stats = deltas[-1].stats
    assert stats is not None and all(d.stats is None for d in deltas[:-1])
    assert text and stats.tokens == 6 and stats.finish_reason == "length"
    assert stats.prompt_tokens > 0 and stats.tokens_per_second > 0 and stats.loaded_first
    assert stats.model == "alpha"
    # asked again: the same reply (greedy), from the model already loaded
    again = list(host.chat.stream("alpha", [ChatMessage("user", "hello there")], QUICK))
    assert "".join(d.text for d in again) == text and not again[-1].stats.loaded_first


class HeldLoader(MlxLoader):
    """The real loader, held at a gate until released."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.waiting = threading.Event()

    def load(self, info: Any) -> LoadedModel:
        self.waiting.set()
        self.gate.wait(timeout=60)
        return super().load(info)


def test_esc_stops_a_remote_reply_at_once_while_the_remote_still_loads(
        runtime_factory: Callable[..., Runtime], models: dict[str, str]) -> None:
    loader = HeldLoader()
    runtime = runtime_factory(models, loader=loader)
    with ApiServer(runtime, "127.0.0.1", 0) as server:
        remote = RemoteHost(RemoteAddress("slow", server.url), Store(":memory:"))
        cancel = threading.Event()
        stream = remote.chat.stream("alpha", [ChatMessage("user", "hi")], QUICK, cancel)
        pieces: list[Any] = []
        reader = threading.Thread(target=lambda: pieces.extend(stream))
        reader.start()
        assert loader.waiting.wait(30)
        cancel.set()
        reader.join(timeout=5)
        alive = reader.is_alive()
        loader.gate.set()
        remote.close()
    assert not alive, "the reply did not stop while the model loaded"
    assert [p.text for p in pieces] == [""] and pieces[-1].stats.finish_reason == "cancelled"


def test_a_host_going_away_and_coming_back_is_reported_with_backoff_never_raised() -> None:
    answers: list[Exception | None] = [None, RemoteUnreachable("box", "box: connection refused"),
                                       RemoteUnreachable("box", "box: connection refused"),
                                       RemoteUnreachable("box", "box: connection refused"),
                                       RemoteUnreachable("box", "box: connection refused"),
                                       RemoteUnreachable("box", "box: connection refused"),
                                       RemoteUnreachable("box", "box: connection refused"), None]
    now = [1000.0]

    class Reading:
        busy = False

    def fetch() -> Any:
        answer = answers.pop(0)
        if answer is not None:
            raise answer
        return Reading()

    delivered: list[Any] = []
    poller = HostPoller("box", fetch, delivered.append, clock=lambda: now[0])
    reports = []
    for _ in range(8):
        reports.append(poller.poll())
        now[0] += reports[-1].next_poll_in
    assert [r.reachable for r in reports] == [True, False, False, False, False, False, False, True]
    assert [r.next_poll_in for r in reports] == [2.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 2.0]
    back = reports[-1]
    assert back.down_seconds == pytest.approx(2 + 4 + 8 + 16 + 30 + 30) and back.outages == 1
    assert back.since == back.at and reports[3].since == reports[1].at
    assert reports[1].problem == "box: connection refused" and delivered == reports


def test_a_host_that_accepts_but_never_answers_times_out_as_unreachable() -> None:
    with socket.socket() as hole:
        hole.bind(("127.0.0.1", 0))
        hole.listen(8)  # connections complete in the kernel; nothing ever reads or answers
        url = f"http://127.0.0.1:{hole.getsockname()[1]}"
        client = RemoteClient(RemoteAddress("hole", url), timeout=httpx.Timeout(0.3))
        with pytest.raises(RemoteUnreachable, match=r"hole \(http://127.0.0.1:\d+\): no answer within 0.3 s"):
            client.health()
        client.close()


def test_a_missing_or_wrong_key_says_what_to_set_and_no_key_is_ever_shown(
        studio: ApiServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "not-the-studio-key"
    for key, words in (("", "needs an API key: add api_key"), (wrong, "does not take the api_key")):
        address = RemoteAddress("studio", studio.url, key)
        remote = RemoteHost(address, Store(":memory:"))
        report = remote.poller.poll()
        assert not report.reachable and words in (report.problem or "")
        with pytest.raises(RemoteNeedsKey):
            remote.cache.load("alpha")
        remote.close()
        assert wrong not in repr(address) and KEY not in repr(RemoteAddress("s", "u", KEY))
    assert KEY not in caplog.text and wrong not in caplog.text


def test_remote_names_and_urls_and_plain_http_over_the_network() -> None:
    configured = [RemoteAddress("studio", "http://192.168.1.20:11435", KEY),
                  RemoteAddress("tunnel", "http://127.0.0.1:21435", "")]
    assert resolve_remote("studio", configured) is configured[0]
    assert resolve_remote("192.168.1.20:11435", configured) is configured[0]  # brings its key
    other = resolve_remote("https://laptop.local:11435/", configured)
    assert (other.name, other.url, other.api_key) == ("laptop.local:11435", "https://laptop.local:11435", "")
    with pytest.raises(UnknownRemote, match=r"'cupboard'.*studio, tunnel"):
        resolve_remote("cupboard", configured)
    assert configured[0].plain_over_network and "unencrypted" in (configured[0].security_note or "")
    assert not configured[1].plain_over_network and not other.plain_over_network


def test_a_settings_file_holding_keys_must_not_be_readable_by_others(tmp_path: Path) -> None:
    path = tmp_path / "settings.toml"
    path.write_text("")
    with_key = parse_settings({"remotes": [{"name": "studio", "url": "http://s:1", "api_key": KEY}]})
    os.chmod(path, 0o644)
    warning = key_file_warning(path, with_key)
    assert warning is not None and "every user" in warning and "chmod 600" in warning
    assert KEY not in warning
    assert key_file_warning(path, parse_settings({})) is None  # no key: nothing to hide
    os.chmod(path, 0o600)
    assert key_file_warning(path, with_key) is None


def test_status_all_prints_every_host_and_fails_when_one_is_down(
        runtime_factory: Callable[..., Runtime], models: dict[str, str], studio: ApiServer,
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    studio.runtime.cache.load("alpha", reason="test").result(timeout=60)
    list(studio.runtime.chat.stream("alpha", [ChatMessage("user", "hi")], QUICK))
    here = runtime_factory(models)  # writes tmp_path/settings.toml; rewritten below
    down = f"http://127.0.0.1:{free_port()}"
    with ApiServer(here, "127.0.0.1", 0) as local:
        settings_path = tmp_path / "status-all.toml"

        def write(remotes: list[dict[str, str]]) -> argparse.Namespace:
            from mlx_tui.core.settings import write_settings

            settings = isolated_settings(models, api={"port": local.port})
            write_settings(settings.with_changes({"remotes": remotes}), settings_path)
            os.chmod(settings_path, 0o600)
            return argparse.Namespace(settings=settings_path, db=None, url=None, json=False,
                                      port=None, all=True)

        studio_table = {"name": "studio", "url": studio.url, "api_key": KEY}
        assert run_status_all(write([studio_table, {"name": "laptop", "url": down}])) == 1
        out, err = capsys.readouterr()
        assert run_status_all(write([studio_table])) == 0
        all_up, _ = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0].split() == ["HOST", "ADDRESS", "STATE", "MEMORY", "MODELS", "IN", "FLIGHT"]
    hosts = {line.split()[0]: line for line in lines[1:4]}
    assert hosts["local"].split()[1:3] == [local.url, "up"]
    assert hosts["studio"].split()[1:3] == [studio.url, "up"] and "40% of" in hosts["studio"]
    assert hosts["laptop"].split()[1:3] == [down, "unreachable"] and "refused" in hosts["laptop"]
    model_rows = [line.split() for line in lines[5:] if line.startswith("studio")]
    assert [row[:4] for row in model_rows] == [["studio", "alpha", "loaded", "1"]]
    assert "1 of 3 hosts do not answer: laptop" in err
    assert KEY not in out + err + all_up
    assert "laptop" not in all_up and "studio" in all_up
