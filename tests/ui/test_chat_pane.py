"""Stories of the chat pane, with tiny real MLX models generating real (random) text."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Callable

import pytest
from textual.widgets import Markdown

from mlx_tui.devtools.modelgen import corrupt_model
from mlx_tui.ui.app import MlxTuiApp
from mlx_tui.ui.widgets import chat as chat_widgets
from mlx_tui.ui.widgets.chat import ChatInput, ReplyView

from .helpers import QUICK, GatedLoader, press_in_table, reply_done, select_row, type_text, until

STATS = re.compile(r"^\d+ tokens · [\d.]+ tok/s · TTFT [\d.]+ s · ")


def replies(app: MlxTuiApp) -> list[ReplyView]:
    return list(app.query(ReplyView))



async def test_a_message_gets_a_streamed_reply_with_its_figures(
        make_app, monkeypatch: pytest.MonkeyPatch) -> None:
    pieces: list[str] = []
    original = ReplyView.append

    async def counting_append(self: ReplyView, fragment: str) -> None:
        pieces.append(fragment)
        await original(self, fragment)

    monkeypatch.setattr(ReplyView, "append", counting_append)
    monkeypatch.setattr(chat_widgets, "STREAM_INTERVAL", 0.0)  # every token on its own
    app = make_app(model="tiny-a")
    async with app.run_test(size=(120, 40)) as pilot:
        assert app.chat.border_title == "Chat · tiny-a"
        assert isinstance(app.focused, ChatInput)
        await type_text(pilot, "hello there")
        await pilot.press("enter")
        await reply_done(pilot, app)

        [reply] = replies(app)
        assert len(pieces) > 1, "the reply arrived in one piece, not streamed"
        assert reply.query_one(Markdown).source == "".join(pieces) == reply.text
        stats = str(reply.query_one(".stats").render())
        assert STATS.match(stats), stats
        assert "loaded first in" in stats  # tiny-a was not loaded before the message
        assert app.table.row_text("tiny-a")["state"] == "loaded"
        assert app.table.row_text("tiny-a")["uses"] == "1"
        assert app.query_one(ChatInput).text == ""

        await type_text(pilot, "again")
        await pilot.press("enter")
        await reply_done(pilot, app)
        assert "model was loaded" in str(replies(app)[1].query_one(".stats").render())
        assert app.table.row_text("tiny-a")["uses"] == "2"

        [conversation] = app.runtime.store.conversations()
        assert conversation.title == "hello there" and conversation.model == "tiny-a"
        saved = app.runtime.store.messages(conversation.id)
        assert [m.role for m in saved] == ["user", "assistant", "user", "assistant"]
        assert saved[1].content == reply.text and saved[1].stats["tokens"] > 0

        await pilot.press("ctrl+r")
        assert app.clipboard == saved[3].content


async def test_chats_are_saved_and_reopened_with_their_options(make_app) -> None:
    app = make_app(model="tiny-a")
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("ctrl+t")
        await pilot.pause()
        options = app.screen
        options.query_one("#system-prompt").text = "Answer in one word."
        options.query_one("#max-tokens").value = "3"
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert "max 3 tokens · system prompt" in app.chat.border_subtitle

        await type_text(pilot, "first chat")
        await pilot.press("enter")
        await reply_done(pilot, app)
        stats = str(replies(app)[0].query_one(".stats").render())
        assert stats.startswith("3 tokens") and stats.endswith("stopped at max tokens")

        await pilot.press("ctrl+n")
        await pilot.pause()
        assert replies(app) == [] and app.chat.title == "new chat"

        await pilot.press("ctrl+o")
        await pilot.pause()
        listed = app.screen.query_one("#chats")
        assert listed.option_count == 1
        assert "first chat  ·  tiny-a  ·  2 messages" in str(listed.get_option_at_index(0).prompt)
        await pilot.press("enter")
        await pilot.pause()
        assert app.chat.title == "first chat"
        assert app.chat.system_prompt == "Answer in one word." and app.chat.params.max_tokens == 3
        [reopened] = replies(app)
        assert reopened.text == app.runtime.store.messages(app.chat.conversation_id)[1].content
        assert str(reopened.query_one(".stats").render()) == stats


async def test_esc_stops_a_long_reply(make_app) -> None:
    from mlx_tui.core.chat import GenerationParams

    app = make_app(model="tiny-a", params=GenerationParams(max_tokens=5000, seed=0))
    async with app.run_test(size=(120, 40)) as pilot:
        await type_text(pilot, "talk")
        await pilot.press("enter")
        await until(pilot, lambda: replies(app) and replies(app)[0].text, what="the first words")
        assert app.chat.generating
        await pilot.press("escape")
        await reply_done(pilot, app)
        stats = str(replies(app)[0].query_one(".stats").render())
        assert stats.endswith("stopped (esc)")
        assert int(stats.split()[0]) < 5000


async def test_a_second_model_answers_while_the_first_still_loads(make_runtime, tiny_models) -> None:
    loader = GatedLoader("tiny-a")
    runtime = make_runtime(tiny_models, loader=loader)
    app = MlxTuiApp(runtime, model="tiny-a", api=False, params=QUICK)
    async with app.run_test(size=(120, 40)) as pilot:
        await type_text(pilot, "slow one")
        await pilot.press("enter")
        await until(pilot, loader.waiting.is_set, what="tiny-a to start loading")
        await until(pilot, lambda: app.table.row_text("tiny-a")["state"].startswith("loading"),
                    what="the table to show the load")
        await until(pilot, lambda: replies(app)[0].status_text.startswith("loading tiny-a"),
                    what="the reply to say the model is loading")

        await pilot.press("ctrl+n")
        await select_row(pilot, app, "tiny-b")
        await press_in_table(pilot, app, "c")
        assert app.chat.model == "tiny-b" and isinstance(app.focused, ChatInput)
        await type_text(pilot, "quick one")
        await pilot.press("enter")
        await until(pilot, lambda: app.chat.running == 1, what="tiny-b's reply")
        assert app.table.row_text("tiny-a")["state"].startswith("loading")
        assert STATS.match(str(replies(app)[0].query_one(".stats").render()))

        await pilot.press("ctrl+o")  # back to the first chat: its reply still waits for tiny-a
        await pilot.pause()
        await pilot.press("down", "enter")
        await until(pilot, lambda: app.chat.title == "slow one", what="the first chat")
        await until(pilot, lambda: replies(app) and replies(app)[-1].status_text.startswith(
            "loading tiny-a"), what="the reopened reply to show the load")
        await pilot.press("ctrl+n")

        loader.release()
        await reply_done(pilot, app)
        saved = {c.model: app.runtime.store.messages(c.id) for c in app.runtime.store.conversations()}
        assert [m.role for m in saved["tiny-a"]] == ["user", "assistant"]
        assert saved["tiny-a"][1].stats["loaded_first"] is True
        assert [m.role for m in saved["tiny-b"]] == ["user", "assistant"]
        await until(pilot, lambda: any("saved in “slow one”" in n.message
                                       for n in app._notifications), what="the notification")


async def test_a_broken_model_shows_its_error_and_the_app_goes_on(
        make_app, tiny_models, fresh_model: Callable[[str], Path]) -> None:
    broken = fresh_model("broken")
    corrupt_model(broken, "missing_weights")
    app = make_app(model="broken", models={**tiny_models, "broken": str(broken)})
    async with app.run_test(size=(120, 40)) as pilot:
        await type_text(pilot, "hi")
        await pilot.press("enter")
        await reply_done(pilot, app)
        status = replies(app)[0].status_text
        assert status.startswith("error: broken: weights do not match config.json"), status
        assert app.table.row_text("broken")["state"] == "failed"
        assert "weights do not match" in app.table.border_subtitle
        assert any(n.title == "Load failed" for n in app._notifications)
        assert any("failed" in line and "broken" in line for line in app.event_log.lines_written)

        await select_row(pilot, app, "tiny-a")
        await pilot.press("enter")  # chat with the selected model
        await type_text(pilot, "hi again")
        await pilot.press("enter")
        await reply_done(pilot, app)
        assert STATS.match(str(replies(app)[-1].query_one(".stats").render()))


async def test_esc_during_the_load_stops_the_reply_not_the_load(make_runtime, tiny_models) -> None:
    loader = GatedLoader("tiny-a")
    app = MlxTuiApp(make_runtime(tiny_models, loader=loader), model="tiny-a", api=False,
                    params=QUICK)
    async with app.run_test(size=(120, 40)) as pilot:
        await type_text(pilot, "hi")
        await pilot.press("enter")
        await until(pilot, loader.waiting.is_set, what="tiny-a to start loading")
        await pilot.press("escape")
        await until(pilot, lambda: app.chat.running == 0, what="the reply to stop")
        assert replies(app)[0].status_text == (
            "stopped (esc) before tiny-a finished loading; the load goes on")
        assert not any(n.severity == "error" for n in app._notifications)
        loader.release()
        await until(pilot, lambda: app.table.row_text("tiny-a")["state"] == "loaded",
                    what="the load to finish anyway")


async def test_a_chat_starts_with_its_model_own_generation_defaults(
        make_app, tiny_models, fresh_model: Callable[[str], Path]) -> None:
    tuned = fresh_model("tuned")
    (tuned / "generation_config.json").write_text('{"temperature": 0.3, "top_p": 0.5}',
                                                  encoding="utf-8")
    app = make_app(model="demo", models={**tiny_models, "tuned": str(tuned)}, params=None)
    async with app.run_test(size=(120, 40)) as pilot:
        # The bundled demo model writes sense only when sampled greedily: its own file says so.
        assert app.chat.params.temperature == 0.0
        assert "temp 0 ·" in app.chat.border_subtitle

        await select_row(pilot, app, "tuned")
        await press_in_table(pilot, app, "c")
        assert (app.chat.params.temperature, app.chat.params.top_p) == (0.3, 0.5)
        assert "temp 0.3 ·" in app.chat.border_subtitle

        app.chat.set_options("", replace(app.chat.params, temperature=1.1))  # as ctrl+t does
        await select_row(pilot, app, "tiny-a")
        await press_in_table(pilot, app, "c")
        assert app.chat.params.temperature == 1.1, "options the user chose stay with the chat"
        await pilot.press("ctrl+n")
        await pilot.pause()
        assert app.chat.params.temperature == 0.7, "a new chat starts from tiny-a's defaults"
