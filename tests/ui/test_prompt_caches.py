"""Prompt caches as the app shows them: in the models table, in their own view (ctrl+g), under
each reply, and in the event log. Real tiny MLX models chat for real; nothing is faked but the
memory figures."""

from __future__ import annotations

import re
import socket

import mlx.core as mx

from mlx_tui.core.chat import ChatMessage
from mlx_tui.remote.address import RemoteAddress
from mlx_tui.ui.app import MlxTuiApp
from mlx_tui.ui.screens.host import HostScreen
from mlx_tui.ui.screens.prompt_caches import PromptCachesScreen
from mlx_tui.ui.widgets.chat import ReplyView
from mlx_tui.ui.widgets.models_table import short_bytes

from .helpers import QUICK, focus_table, notes, reply_done, type_text, until

LONG_ENOUGH = {"min_tokens": 8}
"""Short test messages keep a prompt cache too (the default keeps prompts of 64 tokens on)."""


async def chat_turn(pilot, app: MlxTuiApp, text: str) -> str:
    """Send ``text`` and wait for the reply; returns the figures under it."""
    await type_text(pilot, text)
    await pilot.press("enter")
    await reply_done(pilot, app)
    return str(list(app.query(ReplyView))[-1].query_one(".stats").render())


def caches_screen(app: MlxTuiApp) -> PromptCachesScreen:
    assert isinstance(app.screen, PromptCachesScreen), type(app.screen).__name__
    return app.screen


async def test_a_second_turn_reads_its_history_from_the_prompt_cache_the_table_and_the_view_show(
        make_app) -> None:
    app = make_app(prompt_cache=LONG_ENOUGH)
    async with app.run_test(size=(120, 40)) as pilot:
        assert app.table.row_text("tiny-a")["prompt_cache"] == "-", "nothing kept yet"
        first = await chat_turn(pilot, app, "hello there")
        assert "from cache" not in first, first
        prompt = int(re.search(r"prompt ([\d,]+) tokens", first).group(1).replace(",", ""))

        second = await chat_turn(pilot, app, "and once more")
        found = re.search(r"prompt ([\d,]+) tokens, ([\d,]+) from cache, prefill [\d.]+ s( ·|$)", second)
        assert found, second
        total, cached = (int(g.replace(",", "")) for g in found.groups()[:2])
        assert total > prompt and cached >= prompt - 1, "the first turn came from the cache"

        view = app.runtime.cache.get("tiny-a")
        assert view.prompt_cache_bytes > 0
        cell = app.table.row_text("tiny-a")["prompt_cache"]
        assert cell == f"{short_bytes(view.prompt_cache_bytes)}/0", cell
        await focus_table(pilot, app)
        assert "prompt caches" in str(app.table.border_subtitle) and "in memory" in str(
            app.table.border_subtitle)

        await pilot.press("k")  # from the table (ctrl+g from anywhere)
        await until(pilot, lambda: isinstance(app.screen, PromptCachesScreen), what="the view")
        screen = caches_screen(app)
        rows = screen.rows_text()
        assert rows and all(r["model"] == "tiny-a" and r["label"] == "chat" for r in rows), rows
        newest = rows[0]
        assert newest["tier"] == "memory" and newest["disk"] == "-"
        assert int(newest["tokens"].replace(",", "")) >= total, "the whole second turn is kept"
        assert newest["saves"].endswith(" s")
        kept = sum(v.memory_bytes for v in app.runtime.cache.prompt_caches())
        assert kept == view.prompt_cache_bytes
        assert "in memory" in str(screen.query_one("#prompt-caches-summary").render())

        active_before = mx.get_active_memory()
        drop = screen.highlighted
        assert drop is not None and drop.memory_bytes > 0
        await pilot.press("d")
        await until(pilot, lambda: len(screen.rows_text()) == len(rows) - 1, what="the row to go")
        assert any(n.startswith("Prompt cache dropped: ") and "freed" in n for n in notes(app)), notes(app)
        assert app.runtime.cache.get("tiny-a").prompt_cache_bytes == view.prompt_cache_bytes - drop.memory_bytes
        while screen.rows_text():  # the others too (a cache read to make a newer one shares
            left = len(screen.rows_text())  # its arrays: MLX frees them with the last of them)
            await pilot.press("d")
            await until(pilot, lambda left=left: len(screen.rows_text()) == left - 1,
                        what="the row to go")
        assert app.runtime.cache.get("tiny-a").prompt_cache_bytes == 0
        assert mx.get_active_memory() < active_before, "MLX gave the caches' arrays back"
        assert "No prompt caches yet" in str(screen.query_one("#prompt-caches-summary").render())

        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, PromptCachesScreen), what="closing")
        await until(pilot, lambda: app.table.row_text("tiny-a")["prompt_cache"] == "-",
                    what="the table to show the freed memory")
        log = "\n".join(app.event_log.lines_written)
        assert re.search(r"prompt   tiny-a: prompt cache of [\d,]+ tokens dropped from memory "
                         r"\(asked from the prompt-cache view\)", log), log


async def test_the_view_lists_new_prompt_caches_while_it_is_open_and_says_when_there_are_none(
        make_app) -> None:
    app = make_app(prompt_cache=LONG_ENOUGH)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("ctrl+g")  # from the message box
        screen = caches_screen(app)
        assert screen.rows_text() == []
        assert "No prompt caches yet" in str(screen.query_one("#prompt-caches-summary").render())

        # A request from elsewhere (the API, a script) while the view is open.
        worker = app.run_worker(lambda: app.runtime.chat.complete(
            "tiny-b", [ChatMessage("user", "a question from a script, long enough to keep")],
            app.params_for("tiny-b")), thread=True)
        await worker.wait()
        await until(pilot, lambda: [r["model"] for r in screen.rows_text()] == ["tiny-b"],
                    what="the new prompt cache to be listed")
        assert "1 prompt cache: " in str(screen.query_one("#prompt-caches-summary").render())

        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, PromptCachesScreen), what="closing")
        await pilot.press("ctrl+p")
        await type_text(pilot, "prompt caches")
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, PromptCachesScreen),
                    what="the view from the command palette")


async def test_on_a_remote_hosts_screen_the_key_says_whose_prompt_caches_it_lists(
        make_runtime, tiny_models) -> None:
    with socket.socket() as gone:  # a port nothing listens on: a host that went away
        gone.bind(("127.0.0.1", 0))
        port = gone.getsockname()[1]
    app = MlxTuiApp(make_runtime(tiny_models), model="tiny-a", api=False, params=QUICK,
                    remotes=[RemoteAddress("studio", f"http://127.0.0.1:{port}")])
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("f3")  # the next host: studio
        await until(pilot, lambda: isinstance(app.screen, HostScreen), what="studio's screen")
        await pilot.press("ctrl+g")
        await pilot.pause()
        assert isinstance(app.screen, HostScreen), "not this machine's list over studio's screen"
        assert any(n.startswith("Prompt caches: ") and "this machine's" in n for n in notes(app))
        await pilot.press("f3")  # back to this machine
        await until(pilot, lambda: not isinstance(app.screen, HostScreen), what="this machine")
        await pilot.press("ctrl+g")
        await until(pilot, lambda: isinstance(app.screen, PromptCachesScreen), what="the view")
