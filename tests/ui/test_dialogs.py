"""The screens over the main one, as a newcomer uses them with the keyboard alone: each can be
filled in and left with its keys, and the footer shows those keys."""

from __future__ import annotations

from textual.command import CommandList
from textual.widgets import Footer, Input, TextArea

from mlx_tui.ui.screens.chat_options import ChatOptionsScreen
from mlx_tui.ui.screens.confirm import ConfirmScreen
from mlx_tui.ui.screens.conversations import ConversationsScreen

from .helpers import notes, reply_done, screen_lines, type_text, until


def footer_keys(screen) -> str:  # type: ignore[no-untyped-def]
    """The keys the footer of ``screen`` shows, as text."""
    footer = screen.query_one(Footer)
    return " ".join(str(key.render()) for key in footer.query("FooterKey"))


async def test_chat_options_can_be_filled_in_with_tab_alone(make_app) -> None:
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("ctrl+t")
        await until(pilot, lambda: isinstance(app.screen, ChatOptionsScreen), what="the options")
        screen = app.screen
        for field in screen.query(Input):
            assert field.region.height >= 1 and field.region.width >= 10, (field.id, field.region)
            assert field.content_region.height >= 1, (field.id, field.content_region)
        assert isinstance(app.focused, TextArea)
        await type_text(pilot, "Be brief.")
        await pilot.press("tab")
        assert app.focused is screen.query_one("#temperature"), app.focused
        await pilot.press("ctrl+a", "backspace")  # the field's text, as a person clears it
        app.focused.value = ""
        await type_text(pilot, "0.2")
        for wanted in ("#top-p", "#max-tokens", "#seed"):
            await pilot.press("tab")
            assert app.focused is screen.query_one(wanted), (wanted, app.focused)
        await type_text(pilot, "7")
        await pilot.press("ctrl+s")
        await until(pilot, lambda: not isinstance(app.screen, ChatOptionsScreen), what="the save")
        assert app.chat.system_prompt == "Be brief."
        assert (app.chat.params.temperature, app.chat.params.seed) == (0.2, 7)


async def test_each_dialog_footer_shows_the_dialog_keys(make_app) -> None:
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("ctrl+t")
        await until(pilot, lambda: isinstance(app.screen, ChatOptionsScreen), what="the options")
        await until(pilot, lambda: footer_keys(app.screen), what="the footer")
        keys = footer_keys(app.screen)
        assert "Save" in keys and "Cancel" in keys and "Send" not in keys, keys
        await pilot.press("escape")

        app.table.focus()
        await pilot.pause()
        app.table.action_emergency_cleanup()
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the question")
        await until(pilot, lambda: footer_keys(app.screen), what="the footer")
        keys = footer_keys(app.screen)
        assert "Yes" in keys and "No" in keys and "Unload all" not in keys, keys


async def test_deleting_a_saved_chat_asks_first_and_rows_show_date_and_time(make_app) -> None:
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await type_text(pilot, "keep me")
        await pilot.press("enter")
        await reply_done(pilot, app)
        await pilot.press("ctrl+o")
        await until(pilot, lambda: isinstance(app.screen, ConversationsScreen), what="the list")
        listed = app.screen.query_one("#chats")
        row = str(listed.get_option_at_index(0).prompt)
        assert "keep me  ·  tiny-a  ·  2 messages" in row
        assert __import__("re").search(r"\d{4}-\d\d-\d\d \d\d:\d\d", row), row
        assert "\n" not in row

        await pilot.press("d")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the question")
        await pilot.press("n")
        await until(pilot, lambda: isinstance(app.screen, ConversationsScreen), what="the list")
        assert len(app.runtime.store.conversations()) == 1, "no means no"
        await pilot.press("d")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the question")
        await pilot.press("y")
        await until(pilot, lambda: app.runtime.store.conversations() == [], what="the deletion")
        assert app.screen.query_one("#chats").option_count == 0


async def test_the_palette_lists_each_action_once(make_app) -> None:
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("ctrl+p")
        await until(pilot, lambda: app.screen.query(CommandList), what="the palette")
        titles = [str(c.title) for c in app.get_system_commands(app.screen)]
        assert "Keys" not in titles and "Maximize" not in titles and "Minimize" not in titles
        assert sum("Every key" in t for t in titles) == 1
        assert sum("fill the screen" in t for t in titles) == 1
        assert "Theme" in titles and "Quit" in titles


async def test_text_in_brackets_reaches_the_screen_as_written(make_app, tmp_path) -> None:
    app = make_app()
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        settings = tmp_path / "settings.toml"
        settings.write_text(settings.read_text(encoding="utf-8") + "\n[foo]\nbar = 1\n",
                            encoding="utf-8")
        app.runtime.check_settings_file()
        await until(pilot, lambda: any("[foo]" in n for n in notes(app)), what="the report")
        await until(pilot, lambda: app.screen.query("Toast"), what="the toast")
        toasts = [str(toast.render()) for toast in app.screen.query("Toast")]
        assert any("[foo]: unknown section" in t for t in toasts), toasts
        app.chat.set_model("[bold]odd[/bold]")
        await pilot.pause()
        assert any("Chat · [bold]odd[/bold]" in line for line in screen_lines(app))
