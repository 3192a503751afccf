"""Themes as a newcomer meets them: every theme works, a broken one never takes the app down,
and theme files are read again while the app runs."""

from __future__ import annotations

import os
import time
from pathlib import Path

from textual.theme import BUILTIN_THEMES, Theme

from mlx_tui.core.settings import read_settings

from .helpers import notes, reply_done, type_text, until


def touch_later(path: Path, text: str) -> None:
    """Write ``path`` as an editor would, with a modification time the app cannot miss."""
    path.write_text(text, encoding="utf-8")
    later = time.time() + 2
    os.utime(path, (later, later))


async def test_every_shipped_theme_draws_the_whole_screen_while_the_app_works(make_app) -> None:
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        app.runtime.cache.load("tiny-b").result()  # events in the log, a loaded row in the table
        themes = sorted(set(BUILTIN_THEMES) | {"mlx-dark", "mlx-light"})
        assert {"ansi-dark", "ansi-light"} <= set(themes), "the 16-colour themes are among them"
        for name in themes:
            app.theme = name
            await pilot.pause()
            app.event_log.add_line("test", f"drawn with {name}", time.time(), "error")
            app.event_log.add_line("test", "a warning line", time.time(), "warning")
            app.gauge.mark_cleanup("normal")
            assert "Memory" in app.export_screenshot()  # renders every widget
            assert app.theme == name, f"{name} was refused"
        await type_text(pilot, "hi")
        await pilot.press("enter")
        await reply_done(pilot, app)
        assert app.is_running
        assert not [n for n in notes(app) if n.startswith("Theme")], notes(app)


async def test_a_theme_that_fails_when_applied_falls_back_with_a_notification(
        make_app, tmp_path: Path) -> None:
    themes = tmp_path / "config" / "mlx-tui" / "themes"
    themes.mkdir(parents=True)
    # Every colour parses, but a variable is not a colour: Textual's stylesheet rejects it only
    # when the theme is applied.
    (themes / "fragile.toml").write_text(
        'name = "fragile"\nprimary = "#884488"\n[variables]\nblock-cursor-background = "nonsense"\n',
        encoding="utf-8")
    app = make_app(ui={"theme": "fragile"})
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        assert app.is_running and app.theme == "mlx-dark", "the saved theme did not stop the start"
        assert any("fragile" in n and "cannot be used" in n for n in notes(app)), notes(app)

        assert "fragile" not in app.available_themes, "not offered in the palette"

        app.theme = "mlx-light"
        await pilot.pause()
        # A theme registered some other way (a plugin, Textual itself) is checked too.
        app.register_theme(Theme("fragile", primary="#884488",
                                 variables={"block-cursor-background": "nonsense"}))
        app.theme = "fragile"  # as "Change theme" in the command palette would
        await pilot.pause()
        assert app.is_running and app.theme == "mlx-light", "the theme in use stays"
        assert any("keeping mlx-light" in n for n in notes(app)), notes(app)
        await until(pilot, lambda: read_settings(tmp_path / "settings.toml").ui.theme == "mlx-light",
                    what="the theme that works to be the one saved")


async def test_theme_files_are_read_again_while_the_app_runs(make_app, tmp_path: Path) -> None:
    themes = tmp_path / "config" / "mlx-tui" / "themes"
    themes.mkdir(parents=True)
    mine = themes / "mine.toml"
    mine.write_text('name = "mine"\nprimary = "#ff00ff"\n', encoding="utf-8")
    app = make_app(ui={"theme": "mine"}, memory={"poll_seconds": 0.1})
    async with app.run_test(size=(120, 40)) as pilot:
        assert app.theme == "mine"
        assert app.current_theme.primary == "#ff00ff"

        touch_later(mine, 'name = "mine"\nprimary = "#00ff00"\n')
        await until(pilot, lambda: app.current_theme.primary == "#00ff00",
                    what="the edited theme to apply")

        touch_later(mine, 'name = "mine"\nprimary = 12\n')  # broken while in use
        await until(pilot, lambda: any("mine.toml: primary" in n for n in notes(app)),
                    what="the broken file to be reported")
        assert app.theme == "mine" and app.current_theme.primary == "#00ff00", \
            "a broken file keeps the theme it replaced"

        touch_later(themes / "new.toml", 'name = "new"\nprimary = "#123456"\n')
        await until(pilot, lambda: "new" in app.available_themes, what="a new theme file")
