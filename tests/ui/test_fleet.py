"""Several Macs from one terminal: the app beside three real ``mlx-tui serve`` instances.

The remotes run as real processes on loopback ports, started once for this module: ``studio``
wants an API key, ``laptop`` does not, ``spare`` is stopped and started again in one story.
The app over this machine's own tiny models shows them in the fleet overview (f2), goes to
one (f3, or its number there), loads and evicts on it with the models table's own keys, chats
with it through the chat pane, and saves the conversation with its host. A remote that
accepts connections and never answers (a black hole) must not slow the local screen: the
event loop's lateness is measured and reported beside a run without remotes; what is asserted
is that the keys pressed meanwhile were handled.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import pytest
from textual.pilot import Pilot

from mlx_tui.core.model_view import ModelState
from mlx_tui.devtools.ports import free_port
from mlx_tui.devtools.settings_files import write_isolated_settings
from mlx_tui.remote.address import RemoteAddress
from mlx_tui.cli import parse_args
from mlx_tui.ui.app import MlxTuiApp, run_app
from mlx_tui.ui.hosts import hosts_of_run
from mlx_tui.ui.screens.fleet import FleetScreen
from mlx_tui.ui.screens.host import HostScreen
from mlx_tui.ui.widgets.chat import ChatInput, ReplyView
from mlx_tui.ui.widgets.models_table import ModelsTable

from .helpers import QUICK, SlowTypist, screen_lines, type_text, until

MLX_TUI = str(Path(sys.executable).with_name("mlx-tui"))
KEY = "studio-secret-key-0042"


class Served:
    """One ``mlx-tui serve`` process on a fixed loopback port (stop and start it again)."""

    def __init__(self, name: str, folder: Path, models: dict[str, str], api_key: str = "") -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.api_key = api_key
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        api: dict[str, Any] = {"port": self.port, **({"api_key": api_key} if api_key else {})}
        self.settings = write_isolated_settings(folder / "settings.toml", models, api=api)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> RemoteAddress:
        return RemoteAddress(self.name, self.url, self.api_key)

    def start(self) -> None:
        env = {**os.environ, "XDG_CONFIG_HOME": str(self.folder / "config"),
               "XDG_DATA_HOME": str(self.folder / "data"), "HF_HUB_OFFLINE": "1",
               "HF_HOME": str(self.folder / "hf")}
        with (self.folder / "serve.log").open("ab") as log:
            self.process = subprocess.Popen(
                [MLX_TUI, "--settings", str(self.settings), "--db", str(self.folder / "serve.db"),
                 "serve"], stdout=log, stderr=subprocess.STDOUT, env=env)

    def health(self) -> dict[str, Any] | None:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        try:
            return httpx.get(f"{self.url}/health", headers=headers, timeout=2).json()
        except httpx.HTTPError:
            return None

    def wait_up(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while self.health() is None:
            assert self.process is not None and self.process.poll() is None, (
                (self.folder / "serve.log").read_text())
            assert time.monotonic() < deadline, f"{self.name} did not start"
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def state_of(self, model: str) -> str | None:
        doc = self.health() or {}
        return next((m["state"] for m in doc.get("models", []) if m["name"] == model), None)


@pytest.fixture(scope="module")
def remotes(tmp_path_factory: pytest.TempPathFactory,
            model_factory: Callable[..., Path]) -> Iterator[dict[str, Served]]:
    """Three serve processes, started together once for the module."""
    root = tmp_path_factory.mktemp("fleet")
    alpha, beta = str(model_factory("alpha")), str(model_factory("beta", seed=1))
    served = {
        "studio": Served("studio", root / "studio", {"alpha": alpha, "beta": beta}, KEY),
        "laptop": Served("laptop", root / "laptop", {"alpha": alpha}),
        "spare": Served("spare", root / "spare", {"beta": beta}),
    }
    try:
        for s in served.values():
            s.start()
        for s in served.values():
            s.wait_up()
        yield served
    finally:
        for s in served.values():
            s.stop()


@pytest.fixture
def fleet_app(make_runtime: Callable[..., Any], tiny_models: dict[str, str],
              remotes: dict[str, Served]) -> Callable[..., MlxTuiApp]:
    def make(*hosts: Served | RemoteAddress) -> MlxTuiApp:
        addresses = [h.address if isinstance(h, Served) else h for h in hosts]
        return MlxTuiApp(make_runtime(tiny_models), model="tiny-a", api=False, params=QUICK,
                         key_clock=SlowTypist(), remotes=addresses)

    return make


def block(app: MlxTuiApp, name: str) -> str:
    screen = app.screen
    assert isinstance(screen, FleetScreen)
    return screen.block_text(name)


async def open_fleet(pilot: Pilot, app: MlxTuiApp) -> FleetScreen:
    await pilot.press("f2")
    await until(pilot, lambda: isinstance(app.screen, FleetScreen), what="the fleet overview")
    assert isinstance(app.screen, FleetScreen)
    return app.screen


async def go_to(pilot: Pilot, app: MlxTuiApp, number: int) -> HostScreen:
    """f2, then the host's number: its own screen, once it has answered."""
    await open_fleet(pilot, app)
    await pilot.press(str(number))
    await until(pilot, lambda: isinstance(app.screen, HostScreen), what=f"host {number}")
    screen = app.screen
    assert isinstance(screen, HostScreen)
    await until(pilot, lambda: screen.table.row_count > 0, what="the remote's models")
    return screen


async def select(pilot: Pilot, app: MlxTuiApp, table: ModelsTable, name: str) -> None:
    """Tab to a host screen's models table and put the cursor on ``name``."""
    for _ in range(4):
        if app.focused is table:
            break
        await pilot.press("shift+tab")
    assert app.focused is table
    await pilot.press("home")
    for _ in range(table.row_count):
        if table.selected == name:
            return
        await pilot.press("down")
    assert table.selected == name


async def press_in(pilot: Pilot, table: ModelsTable, *keys: str) -> None:
    """Keys pressed one at a time in a host screen's table, each acting before the next."""
    for key in keys:
        await pilot.press(key)
        await until(pilot, lambda: not table.key_pending, what=f"{key!r} to act")
        await pilot.pause()


async def test_the_fleet_shows_every_host_and_one_going_away_and_coming_back(
        fleet_app: Callable[..., MlxTuiApp], remotes: dict[str, Served]) -> None:
    studio, laptop, spare = remotes["studio"], remotes["laptop"], remotes["spare"]
    app = fleet_app(studio, laptop, spare)
    async with app.run_test(size=(120, 40)) as pilot:
        await open_fleet(pilot, app)
        await until(pilot, lambda: all(block(app, n).split("\n")[0].endswith("up")
                                       for n in ("studio", "laptop", "spare")), what="all up")
        lines = block(app, "local").splitlines()
        assert lines[0].startswith("1 local") and "up (this machine)" in lines[0]
        studio_lines = block(app, "studio").splitlines()
        assert studio_lines[0].startswith(f"2 studio  {studio.url}")
        assert "% normal · " in studio_lines[1] and "GB" in studio_lines[1]  # memory in use
        assert "warning 85% · emergency 98% · 0 in flight" in block(app, "studio")
        assert studio_lines[-1].strip() == "no model in memory"

        spare.stop()
        await pilot.press("r")  # ask every host again now
        await until(pilot, lambda: block(app, "spare").split("\n")[0].count("down"),
                    what="spare seen down")
        down = block(app, "spare")
        assert "connection refused" in down and "next try" in down
        assert "as last seen" in down  # its last figures stay, marked as old
        assert block(app, "studio").split("\n")[0].endswith("up"), "the others are not affected"

        spare.start()
        await asyncio.to_thread(spare.wait_up)
        await pilot.press("r")
        await until(pilot, lambda: "back" in block(app, "spare").split("\n")[0], what="spare back")
        assert "after" in block(app, "spare").split("\n")[0] and "down" in block(app, "spare")
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, FleetScreen), what="closed")
        logged = "\n".join(app.event_log.lines_written)
        assert "spare (http://127.0.0.1" in logged and "spare answers again after" in logged
        assert KEY not in logged


async def test_load_and_evict_on_a_remote_with_the_tables_keys_change_its_health(
        fleet_app: Callable[..., MlxTuiApp], remotes: dict[str, Served]) -> None:
    studio = remotes["studio"]
    app = fleet_app(studio, remotes["laptop"])
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await go_to(pilot, app, 2)
        assert screen.host.name == "studio" and set(screen.table.order()) >= {"alpha", "beta"}
        assert "studio" in str(screen.gauge.border_subtitle)
        await select(pilot, app, screen.table, "beta")
        await press_in(pilot, screen.table, "l")
        await until(pilot, lambda: studio.state_of("beta") == "loaded", what="beta loaded there")
        await until(pilot, lambda: screen.table.row_text("beta")["state"] == "loaded",
                    what="the row")
        assert app.runtime.cache.get("tiny-a").state is ModelState.NOT_LOADED, "not here"
        await press_in(pilot, screen.table, "x")
        await until(pilot, lambda: studio.state_of("beta") == "not_loaded", what="beta evicted")
        await until(pilot, lambda: screen.table.row_text("beta")["state"] == "not loaded",
                    what="the row again")
        logged = screen.event_log.lines_written
        assert any("beta: loaded on studio" in line for line in logged)
        assert any("beta: unloaded on studio" in line for line in logged)


async def test_a_chat_streams_from_a_remote_and_is_saved_with_its_host(
        fleet_app: Callable[..., MlxTuiApp], remotes: dict[str, Served]) -> None:
    laptop = remotes["laptop"]
    app = fleet_app(remotes["studio"], laptop)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("f3")  # the next host: studio
        await until(pilot, lambda: isinstance(app.screen, HostScreen), what="studio")
        await pilot.press("f3")  # and the one after: laptop
        await until(pilot, lambda: getattr(app.screen, "host", None) is not None
                    and app.screen.host.name == "laptop", what="laptop")
        screen = app.screen
        assert isinstance(screen, HostScreen)
        await until(pilot, lambda: screen.chat.model is not None, what="a model to chat with")
        await select(pilot, app, screen.table, "alpha")
        await press_in(pilot, screen.table, "c")  # chat with it: the message box has the focus
        assert screen.chat.model == "alpha" and app.focused is screen.query_one(ChatInput)
        await type_text(pilot, "hello laptop")
        await pilot.press("enter")
        await until(pilot, lambda: screen.chat.running == 0 and screen.chat.last_reply(),
                    what="the reply")
        await app.workers.wait_for_complete()
        await pilot.pause()
        [reply] = screen.query(ReplyView)
        assert reply.text and reply.text == screen.chat.last_reply()
        stats = str(reply.query_one(".stats").render())
        assert re.search(r"^\d+ tokens · [\d.]+ tok/s · TTFT", stats), stats
        assert laptop.health()["cached_models"][0]["use_count"] >= 1
        [saved] = app.runtime.store.conversations()
        assert (saved.host, saved.model, saved.title) == ("laptop", "alpha", "hello laptop")

        await pilot.press("f3")  # back to this machine
        await until(pilot, lambda: not isinstance(app.screen, HostScreen), what="this machine")
        await app.chat.new_chat()
        await pilot.press("ctrl+o")
        await until(pilot, lambda: app.screen.query("#chats"), what="the saved chats")
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, HostScreen), what="back on laptop")
        assert app.screen is screen and screen.chat.conversation_id == saved.id
        assert [m.role for m in screen.chat.history] == ["user", "assistant"]


async def _lateness(pilot: Pilot, seconds: float, tick: float = 0.02) -> list[float]:
    """How late the event loop ran a timer, each ``tick`` for ``seconds`` (ms)."""
    late: list[float] = []
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while loop.time() < end:
        wanted = loop.time() + tick
        await asyncio.sleep(tick)
        late.append((loop.time() - wanted) * 1000)
    return late


async def _typing_measured(pilot: Pilot, app: MlxTuiApp) -> list[float]:
    """Type a line and hide the log on the local screen, measuring the loop meanwhile (2 s)."""
    measuring = asyncio.create_task(_lateness(pilot, 2.0))
    await type_text(pilot, "still here")
    await pilot.press("ctrl+l")
    late = await measuring
    assert app.query_one(ChatInput).text == "still here"
    return late


def _figures(late: list[float]) -> str:
    ranked = sorted(late)
    return (f"median {statistics.median(ranked):.1f} ms, p95 {ranked[int(len(ranked) * 0.95)]:.1f} ms, "
            f"max {ranked[-1]:.1f} ms over {len(ranked)} ticks")


class SlowServer:
    """A remote that answers one byte of headers every half second (so a poll stays under way,
    each read inside its timeout) until told to go silent; then nothing more (the poll times
    out). Stands in for a host behind a failing link."""

    def __init__(self) -> None:
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self._socket.listen(16)
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"
        self.asked = threading.Event()
        self.silent = threading.Event()
        self._stop = threading.Event()
        self._open: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._socket.accept()
            except OSError:
                return
            self._open.append(conn)
            threading.Thread(target=self._dribble, args=(conn,), daemon=True).start()

    def _dribble(self, conn: socket.socket) -> None:
        try:
            conn.recv(65536)
            self.asked.set()
            conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
            while not self.silent.is_set() and not self._stop.wait(0.5):
                conn.sendall(b"z")
        except OSError:
            pass

    def close(self) -> None:
        self._stop.set()
        self._socket.close()
        for conn in self._open:
            conn.close()


async def test_the_local_screen_keeps_answering_while_a_remote_never_answers(
        fleet_app: Callable[..., MlxTuiApp], remotes: dict[str, Served],
        record_property: Callable[[str, Any], None], capsys: pytest.CaptureFixture[str]) -> None:
    baseline_app = fleet_app()
    async with baseline_app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        baseline = await _typing_measured(pilot, baseline_app)

    slow = SlowServer()
    try:
        app = fleet_app(RemoteAddress("slow", slow.url), remotes["laptop"])
        async with app.run_test(size=(120, 40)) as pilot:
            await until(pilot, slow.asked.is_set, what="the slow host asked")
            slow_host = app.hosts.hosts[0]
            # the same keys on the local screen while the slow host's poll is under way
            during = await _typing_measured(pilot, app)
            assert slow_host.report is None, "the slow host's first poll is still under way"
            assert app.query_one("#lower").has_class("show-log") is False  # ctrl+l was handled
            slow.silent.set()  # now it says nothing at all: the poll times out
            await until(pilot, lambda: slow_host.report is not None, timeout=10,
                        what="the slow host given up on")
            assert "no answer within 3 s" in (slow_host.report.problem or "")
            fleet = await open_fleet(pilot, app)
            await until(pilot, lambda: fleet.block_text("laptop").split("\n")[0].endswith("up"),
                        what="laptop up beside it")
            assert "down" in fleet.block_text("slow").split("\n")[0]
            assert "no answer within 3 s" in fleet.block_text("slow")
            assert any("2 of 3 hosts answer" in line for line in screen_lines(app))
    finally:
        slow.close()

    figures = (f"event-loop lateness while a remote's poll hung: {_figures(during)}; "
               f"without remotes: {_figures(baseline)}")
    record_property("loop_lateness", figures)
    with capsys.disabled():
        print(f"\n{figures}")


async def test_remote_on_the_command_line_opens_on_that_host_and_the_palette_lists_them(
        make_runtime: Callable[..., Any], tiny_models: dict[str, str], remotes: dict[str, Served],
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    studio, laptop = remotes["studio"], remotes["laptop"]
    runtime = make_runtime(tiny_models)
    settings_path = runtime.settings_store.path
    runtime.settings_store.update({"remotes": [
        {"name": "studio", "url": studio.url, "api_key": KEY}]})
    os.chmod(settings_path, 0o644)  # a file with a key that others may read
    settings = runtime.settings_store.settings
    addresses, open_on = hosts_of_run(settings, [laptop.url])  # as `mlx-tui --remote URL`
    assert [a.name for a in addresses] == ["studio", f"127.0.0.1:{laptop.port}"]
    assert open_on == f"127.0.0.1:{laptop.port}" and addresses[0].api_key == KEY

    app = MlxTuiApp(runtime, model="tiny-a", api=False, params=QUICK, key_clock=SlowTypist(),
                    remotes=addresses, open_on=open_on)
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        await until(pilot, lambda: isinstance(app.screen, HostScreen), what="the remote of --remote")
        assert app.screen.host.address.url == laptop.url
        assert any("chmod 600" in n.message for n in app._notifications)
        assert any("chmod 600" in line for line in app.event_log.lines_written)
        titles = {str(c.title): c for c in app.get_system_commands(app.screen)}
        assert {"Hosts: go to 1 local", "Hosts: go to 2 studio"} <= set(titles)
        await pilot.press("ctrl+p")
        await type_text(pilot, "go to 2 studio")
        await pilot.press("enter")
        await until(pilot, lambda: getattr(app.screen, "host", None) is not None
                    and app.screen.host.name == "studio", what="studio from the palette")
        await until(pilot, lambda: app.screen.table.row_count > 0, what="studio's models (its key)")
        assert KEY not in "\n".join(screen_lines(app))

    parsed = parse_args(["--settings", str(settings_path), "--db", str(tmp_path / "other.db"),
                         "--remote", "cupboard"])
    assert run_app(parsed) == 2
    assert "--remote 'cupboard': no [[remotes]] table has that name (studio)" in capsys.readouterr().err
