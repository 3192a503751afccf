"""Stories of settings, themes, keys and the HTTP API as the app shows them."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlx_tui.core.memory import FixedMemoryProbe
from mlx_tui.core.settings import read_settings
from mlx_tui.devtools.ports import free_port
from mlx_tui.devtools.settings_files import write_isolated_settings
from mlx_tui.ui.app import MlxTuiApp
from mlx_tui.ui.screens.help import HelpScreen
from mlx_tui.ui.screens.settings import SettingsScreen
from mlx_tui.ui.widgets.chat import ChatInput

from .helpers import notes, press_in_table, select_row, until


def rewrite(path: Path, text: str) -> None:
    """Edit the file as an editor saves it (a new file renamed over the old one, so the watcher
    never reads it half written), with a new modification time."""
    fresh = path.with_name(f".{path.name}.new")
    fresh.write_text(text, encoding="utf-8")
    later = time.time() + 2
    os.utime(fresh, (later, later))
    os.replace(fresh, path)


async def test_a_threshold_changed_in_the_settings_screen_moves_the_markers_and_the_file(
        make_app, tmp_path: Path) -> None:
    app = make_app()
    settings_file = tmp_path / "settings.toml"
    async with app.run_test(size=(120, 40)) as pilot:
        assert "warning 85%" in app.gauge.plain_lines()[1]
        await pilot.press("ctrl+s")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, SettingsScreen)
        shown = str(screen.query_one("#settings-file").render())
        assert str(settings_file) in shown and "(found by: --settings)" in shown

        screen.query_one("#warning").value = "99"
        await pilot.press("ctrl+s")
        await pilot.pause()
        error = str(screen.query_one("#settings-error").render())
        assert "memory.warning_threshold: must be below memory.emergency_threshold" in error
        assert read_settings(settings_file).memory.warning_threshold == 0.85, "nothing written"

        screen.query_one("#warning").value = "70"
        await pilot.press("ctrl+s")
        await until(pilot, lambda: not isinstance(app.screen, SettingsScreen), what="the save")
        assert read_settings(settings_file).memory.warning_threshold == 0.7
        await until(pilot, lambda: app.gauge.thresholds == (0.7, 0.98), what="the markers")
        labels = app.gauge.plain_lines()[1]
        assert "warning 70% ━┛" in labels and "┗━ emergency 98%" in labels
        bar = app.gauge.plain_lines()[0]
        assert labels.index("┛") == bar.index("┃"), "the label points at its marker"


async def test_editing_the_file_on_disk_moves_the_gauge_and_a_broken_file_is_reported(
        make_app, tmp_path: Path, tiny_models) -> None:
    probe = FixedMemoryProbe(used_fraction=0.6)
    app = make_app(probe=probe, memory={"poll_seconds": 0.1})
    settings_file = tmp_path / "settings.toml"
    async with app.run_test(size=(120, 40)) as pilot:
        assert app.gauge.figures.zone == "normal"
        assert " 60% normal" in app.gauge.plain_lines()[0]
        assert not app.gauge.show_snapshot(probe.snapshot()), "same figures: no repaint"
        rewrite(settings_file, settings_file.read_text(encoding="utf-8").replace(
            "warning_threshold = 0.85", "warning_threshold = 0.5"))
        await until(pilot, lambda: app.gauge.thresholds == (0.5, 0.98), what="the new threshold")
        assert " 60% WARNING" in app.gauge.plain_lines()[0]
        assert "warning 50%" in app.gauge.plain_lines()[1]

        rewrite(settings_file, "[memory]\nwarning_threshold = 'high'\n")
        await until(pilot, lambda: any("not applied" in n for n in notes(app)), what="the report")
        assert any("memory.warning_threshold: must be a number" in n for n in notes(app))
        assert app.gauge.thresholds == (0.5, 0.98), "the last valid settings stay"

        probe.set_fraction(0.3)
        await until(pilot, lambda: " 30% normal" in app.gauge.plain_lines()[0], what="the gauge")


async def test_themes_from_settings_the_app_and_a_broken_file(make_app, tmp_path: Path) -> None:
    user_themes = tmp_path / "config" / "mlx-tui" / "themes"
    user_themes.mkdir(parents=True)
    (user_themes / "broken.toml").write_text('name = "broken"\nprimary = 12\n', encoding="utf-8")
    (user_themes / "mine.toml").write_text('name = "mine"\nprimary = "#ff00ff"\ndark = false\n',
                                           encoding="utf-8")
    app = make_app(ui={"theme": "broken"})
    settings_file = tmp_path / "settings.toml"
    async with app.run_test(size=(120, 40)) as pilot:
        assert app.theme == "mlx-dark", "an unusable theme falls back to the default"
        assert any("broken.toml: primary: must be a colour string" in n for n in notes(app))
        assert any("theme 'broken' not found" in n for n in notes(app))
        assert {"mine", "mlx-light", "textual-dark"} <= set(app.available_themes)

        app.theme = "mlx-light"  # as the command palette's "Change theme" does
        await until(pilot, lambda: read_settings(settings_file).ui.theme == "mlx-light",
                    what="the theme to be saved")

        await pilot.press("ctrl+s")
        await pilot.pause()
        app.screen.query_one("#theme").value = "mine"
        await pilot.press("ctrl+s")
        await until(pilot, lambda: app.theme == "mine", what="the picked theme")
        assert read_settings(settings_file).ui.theme == "mine"


async def test_keys_are_remapped_from_settings_and_the_help_shows_them(make_app) -> None:
    app = make_app(ui={"keys": {"evict": "d", "send": "ctrl+j", "newline": "enter",
                                "no-such-action": "z"}})
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: any("unknown binding id no-such-action" in n for n in notes(app)),
                    what="the report of the unknown id")
        await pilot.press("f1")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        help_text = app.screen.query_one("#help-text").source
        assert "| `d` | Unload the selected model now" in help_text
        assert "| `ctrl+j` | Send the message" in help_text
        assert "| `enter` | New line in the message" in help_text
        await pilot.press("escape")
        await pilot.pause()
        await pilot.press("h", "enter", "i")
        assert app.query_one(ChatInput).text == "h\ni", "enter adds a line now"
        await pilot.press("ctrl+j")
        await until(pilot, lambda: app.chat.running == 0 and app.runtime.store.conversations(),
                    what="ctrl+j to send")
        assert app.runtime.store.messages(app.chat.conversation_id)[0].content == "h\ni"
        await pilot.press("ctrl+f")
        assert app.screen.maximized is app.chat, "zoom: the chat fills the screen"
        await pilot.press("ctrl+f")
        assert app.screen.maximized is None

        app.runtime.cache.load("tiny-b").result()
        await until(pilot, lambda: app.table.row_text("tiny-b")["state"] == "loaded", what="load")
        await select_row(pilot, app, "tiny-b")
        await press_in_table(pilot, app, "x")  # no longer bound
        await press_in_table(pilot, app, "d")
        await until(pilot, lambda: app.table.row_text("tiny-b")["state"] == "not loaded",
                    what="the remapped eviction")


@pytest.mark.parametrize("case", ["serving", "port taken", "module missing"])
async def test_the_api_address_or_why_it_is_off(make_runtime, tiny_models, case: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()
    runtime = make_runtime(tiny_models, api={"port": port})
    blocker = socket.socket()
    if case == "port taken":
        blocker.bind(("127.0.0.1", port))
        blocker.listen(1)
    if case == "module missing":
        monkeypatch.setitem(sys.modules, "mlx_tui.server.serve", None)
    app = MlxTuiApp(runtime, model="tiny-a", api=True)
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            await until(pilot, lambda: not app.api_text.startswith("API starting"), what="the API")
            expected = {"serving": f"API http://127.0.0.1:{port}",
                        "port taken": f"API off: port {port} in use",
                        "module missing": "API unavailable"}[case]
            assert app.api_text == expected
            assert app.gauge.border_subtitle.startswith(expected)
            if case != "serving":
                assert any(n.startswith(expected) for n in notes(app))
    finally:
        blocker.close()
    assert app.api_server is None or not app.api_server.running, "stopped with the app"


async def test_settings_with_a_bad_file_at_start_are_reported(make_runtime, tiny_models,
                                                              tmp_path: Path) -> None:
    runtime = make_runtime(tiny_models)
    write_isolated_settings(tmp_path / "settings.toml", tiny_models)
    rewrite(tmp_path / "settings.toml", "[memory\n")
    runtime.settings_store.reload_if_changed()
    app = MlxTuiApp(runtime, model="tiny-a", api=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        assert any("not valid TOML" in n for n in notes(app))
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert "The file has a problem" in str(app.screen.query_one(".error").render())


async def test_a_save_from_the_settings_screen_is_one_write_applied_once(
        make_app, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = make_app()
    store = app.runtime.settings_store
    writes: list[dict] = []
    original = store.update
    monkeypatch.setattr(store, "update", lambda changes: writes.append(changes) or original(changes))
    heard: list[frozenset[str]] = []
    app.runtime.on_settings(lambda change: heard.append(change.sections), sections=("ui", "memory"))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("ctrl+s")
        await until(pilot, lambda: isinstance(app.screen, SettingsScreen), what="the settings")
        app.screen.query_one("#warning").value = "70"
        app.screen.query_one("#theme").value = "mlx-light"
        await pilot.press("ctrl+s")
        await until(pilot, lambda: app.theme == "mlx-light" and app.gauge.thresholds == (0.7, 0.98),
                    what="both changes")
        await app.workers.wait_for_complete()
    assert len(writes) == 1 and set(writes[0]) == {"memory", "ui"}, writes
    assert heard == [frozenset({"memory", "ui"})], "one change, with both sections, heard once"


async def test_a_bad_settings_file_at_start_is_marked_until_it_is_fixed(
        make_runtime, tiny_models, tmp_path: Path) -> None:
    runtime = make_runtime(tiny_models, memory={"poll_seconds": 0.1})
    good = (tmp_path / "settings.toml").read_text(encoding="utf-8")
    rewrite(tmp_path / "settings.toml", "[memory\n")
    runtime.settings_store.reload_if_changed()
    app = MlxTuiApp(runtime, model="tiny-a", api=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        assert "settings.toml ✗ not valid (--settings)" in str(app.gauge.border_subtitle)
        assert any("settings" in line and "not valid TOML" in line
                   for line in app.event_log.lines_written), app.event_log.lines_written
        rewrite(tmp_path / "settings.toml", good)
        await until(pilot, lambda: "not valid" not in str(app.gauge.border_subtitle),
                    what="the mark to go once the file is fixed")
        assert "settings.toml (--settings)" in str(app.gauge.border_subtitle)


def test_make_run_keeps_its_settings_outside_the_repository() -> None:
    repo = Path(__file__).resolve().parent.parent.parent
    done = subprocess.run(["make", "-n", "-s", "run", "VENV=/nonexistent-venv"], cwd=repo,
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "XDG_CONFIG_HOME": "/tmp/somewhere-else"})
    command = done.stdout.strip().splitlines()[-1]
    assert "mlx-tui --model demo --settings" in command, done.stdout
    settings = Path(subprocess.run(["sh", "-c", f"echo {command.split('--settings ')[1]}"],
                                   capture_output=True, text=True,
                                   env={**os.environ, "XDG_CONFIG_HOME": "/tmp/somewhere-else"},
                                   ).stdout.strip())
    assert settings == Path("/tmp/somewhere-else/mlx-tui/settings.toml")
    assert repo not in settings.parents
