"""Stories of the cached-models table: load, evict, pin, clean up, sort; all live."""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Callable

from mlx_tui.core.cache import ModelState
from mlx_tui.core.chat import ChatMessage
from mlx_tui.core.memory import MemorySnapshot
from mlx_tui.core.units import format_bytes
from mlx_tui.distributed.views import RankView
from mlx_tui.ui.app import MlxTuiApp
from mlx_tui.ui.screens.confirm import ConfirmScreen
from mlx_tui.ui.widgets.models_table import COLUMNS, ModelsTable, short_bytes

from .helpers import (QUICK, focus_table, notes, press_in_table, screen_lines, select_row,
                      type_text, until)


def state(app: MlxTuiApp, name: str) -> str:
    return app.table.row_text(name)["state"]


async def test_preload_pin_and_evict_from_the_table(make_app) -> None:
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        assert set(app.table.order()) >= {"tiny-a", "tiny-b"}
        assert state(app, "tiny-b") == "not loaded"
        assert app.table.row_text("tiny-b")["size"].startswith("~")  # an estimate until loaded

        await select_row(pilot, app, "tiny-b")
        await press_in_table(pilot, app, "l")
        await until(pilot, lambda: state(app, "tiny-b") == "loaded", what="tiny-b to load")
        row = app.table.row_text("tiny-b")
        assert re.fullmatch(r"\d\d:\d\d:\d\d", row["loaded_at"])
        assert re.fullmatch(r"\d+\.\d+", row["load_time"])
        assert not row["size"].startswith("~")
        assert app.table.order()[0] == "tiny-b", "loaded models come first"
        assert app.table.selected == "tiny-b", "the cursor follows its model when rows move"
        assert "llama" in app.table.border_subtitle

        updated: list[str] = []
        original = ModelsTable.update_cell

        def spy(table: ModelsTable, row: object, column: object, value: object, **kw: object) -> None:
            updated.append(str(column))
            original(table, row, column, value, **kw)

        app.table.update_cell = spy.__get__(app.table)  # type: ignore[method-assign]
        app.table.sync()
        assert updated == [], "nothing changed, nothing is redrawn"
        await press_in_table(pilot, app, "p")
        await until(pilot, lambda: app.table.row_text("tiny-b")["pinned"] == "●", what="the pin")
        assert updated == ["pinned"], "a change updates its cell, not the table"
        await press_in_table(pilot, app, "p")
        await until(pilot, lambda: app.table.row_text("tiny-b")["pinned"] == "", what="the unpin")

        await press_in_table(pilot, app, "x")
        await until(pilot, lambda: state(app, "tiny-b") == "not loaded", what="the eviction")
        await app.workers.wait_for_complete()
        log = "\n".join(app.event_log.lines_written)
        for expected in ("loaded   tiny-b: loaded in", "pinned   tiny-b: pinned",
                         "evicted  tiny-b: unloaded", "asked from the table"):
            assert expected in log, log


async def test_clean_ups_from_the_table(make_app) -> None:
    app = make_app(memory={"keep_on_cleanup": 1}, cache={"policy": "frequency"})
    async with app.run_test(size=(120, 40)) as pilot:
        cache = app.runtime.cache
        cache.acquire("tiny-a").release()  # tiny-a: used once, the one worth keeping
        cache.load("tiny-b").result()
        await until(pilot, lambda: state(app, "tiny-b") == "loaded", what="both loaded")
        assert app.table.order()[:2] == ["tiny-a", "tiny-b"], "keep order: most used first"

        await focus_table(pilot, app)
        await press_in_table(pilot, app, "u")
        await until(pilot, lambda: state(app, "tiny-b") == "not loaded", what="normal clean-up")
        assert state(app, "tiny-a") == "loaded"
        assert "▼" in app.gauge.plain_lines()[3], "the clean-up shows in the memory history"

        await press_in_table(pilot, app, "U")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")
        await pilot.pause()
        assert state(app, "tiny-a") == "loaded", "no means no"
        await press_in_table(pilot, app, "U")
        await pilot.press("y")
        await until(pilot, lambda: state(app, "tiny-a") == "not loaded", what="emergency clean-up")
        assert any("emergency clean-up" in line for line in app.event_log.lines_written)


def _bytes_of(text: str) -> float:
    """``545 KB`` -> bytes (``0`` is zero)."""
    if text == "0":
        return 0
    number, unit = text.split()
    return float(number) * {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3}[unit]


def _sort_value(column: str, text: str) -> object:
    """Turn a cell back into something comparable, as a reader would."""
    if column == "state":
        return ["loaded", "in use", "loading", "queued", "evicting", "not loaded", "failed",
                "unavailable"].index(text.split()[0] if text.startswith("loading") else text)
    if column == "size":
        if text == "?":
            return 0
        number, unit = text.lstrip("~").split()
        return float(number) * {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3}[unit]
    if column == "prompt_cache":
        return (0, 0) if text == "-" else tuple(_bytes_of(part) for part in text.split("/"))
    if column in ("uses",):
        return int(text)
    if column in ("last_used", "loaded_at"):
        return "" if text == "-" else text
    if column == "load_time":
        return 0.0 if text == "-" else float(text)
    if column == "name":
        return text.lower()
    return text


async def test_sort_by_every_column_with_keys_and_clicks(
        make_runtime, tiny_models, model_factory: Callable[..., object]) -> None:
    models = {**tiny_models, "tiny-wide": str(model_factory("tiny-wide", hidden_size=128, seed=3)),
              "not-here": "mlx-community/not-downloaded-4bit"}
    runtime = make_runtime(models, cache={"policy": "frequency"}, prompt_cache={"min_tokens": 8})
    cache = runtime.cache
    runtime.chat.complete("tiny-a", [ChatMessage("user", "a question, to keep a prompt cache")], QUICK)
    cache.evict("tiny-a")  # its prompt cache goes to disk ...
    runtime.chat.complete("tiny-a", [ChatMessage("user", "another question, another cache")], QUICK)
    cache.acquire("tiny-wide").release()  # ... and the new one stays in memory
    cache.pin("tiny-wide", True)
    app = MlxTuiApp(runtime, model="tiny-a", api=False)
    async with app.run_test(size=(120, 40)) as pilot:
        table = app.table
        assert table.border_title == "Models · sorted by keep order (frequency)"
        assert table.order()[:2] == ["tiny-wide", "tiny-a"], "pinned first, then most used"
        await focus_table(pilot, app)
        for number, spec in enumerate(COLUMNS, start=1):
            await press_in_table(pilot, app, str(number))
            cells = [_sort_value(spec.key, table.row_text(n)[spec.key]) for n in table.order()]
            assert cells == sorted(cells), (spec.key, cells)
            assert table.header_text()[number - 1] == f"{spec.label} ▲"
            assert table.border_title == f"Models · sorted by {spec.label} ascending"
            await press_in_table(pilot, app, str(number))
            cells = [_sort_value(spec.key, table.row_text(n)[spec.key]) for n in table.order()]
            assert cells == sorted(cells, reverse=True), (spec.key, cells)
            assert table.header_text()[number - 1] == f"{spec.label} ▼"

        await press_in_table(pilot, app, "0")
        assert table.order()[:2] == ["tiny-wide", "tiny-a"]
        assert all("▲" not in h and "▼" not in h for h in table.header_text())

        uses = [spec.key for spec in COLUMNS].index("uses")
        x = 1 + sum(table.columns[spec.key].get_render_width(table) for spec in COLUMNS[:uses]) + 2
        await pilot.click(ModelsTable, offset=(x, 1))  # the "Uses" header
        assert table.header_text()[uses] == "Uses ▲"
        assert [table.row_text(n)["uses"] for n in table.order()][-1] == "2"
        assert format_bytes(cache.get("tiny-wide").resident_bytes) == table.row_text("tiny-wide")["size"]
        tiny_a = cache.get("tiny-a")
        assert tiny_a.prompt_cache_bytes and tiny_a.prompt_cache_disk_bytes, "one in memory, one on disk"
        assert table.row_text("tiny-a")["prompt_cache"] == (
            f"{short_bytes(tiny_a.prompt_cache_bytes)}/{short_bytes(tiny_a.prompt_cache_disk_bytes)}")
        assert table.row_text("tiny-wide")["prompt_cache"] == "-"


async def test_table_actions_are_in_the_command_palette(make_app) -> None:
    from textual.command import CommandList

    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        app.runtime.cache.load("tiny-b").result()
        await until(pilot, lambda: state(app, "tiny-b") == "loaded", what="tiny-b to load")
        await pilot.press("ctrl+p")
        await type_text(pilot, "unload every")
        await until(pilot, lambda: app.screen.query(CommandList)
                    and app.screen.query_one(CommandList).option_count == 1, what="the command")
        assert "Models: Emergency clean-up now" in str(
            app.screen.query_one(CommandList).get_option_at_index(0).prompt)
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the question")
        await pilot.press("y")
        await until(pilot, lambda: state(app, "tiny-b") == "not loaded", what="the clean-up")


# -- what a newcomer trips over (issue 13) ----------------------------------------------------------

LONG = "mlx-community/Qwen2.5-Coder-32B-Instruct-4bit-with-a-very-long-name"


async def test_the_model_column_takes_the_free_width_and_cuts_long_names_in_the_middle(
        make_app, tiny_models, model_factory: Callable[..., object]) -> None:
    app = make_app(models={**tiny_models, LONG: str(model_factory("tiny-c", seed=3))})
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        table = app.table
        widths = [table.columns[spec.key].get_render_width(table) for spec in COLUMNS]
        assert sum(widths) == table.scrollable_content_region.width, "no empty columns at the end"
        shown = table.row_text(LONG)["name"]
        assert shown.endswith("-long-name") or shown == LONG, shown
        assert len(shown) > 22, "wider than the old fixed 22 columns"

        await pilot.resize_terminal(80, 24)
        await pilot.pause()
        narrow = table.row_text(LONG)["name"]
        assert "…" in narrow and narrow.startswith("mlx-") and narrow.endswith("-name"), narrow
        assert len(narrow) == table.columns["name"].width

        await pilot.resize_terminal(200, 40)
        await pilot.pause()
        assert table.row_text(LONG)["name"] == LONG, "room enough: the whole name"


async def test_the_cursor_starts_on_the_chat_model_and_home_end_move_to_the_ends(make_app) -> None:
    app = make_app(model="tiny-b")
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        assert app.table.selected == "tiny-b"
        await focus_table(pilot, app)
        await pilot.press("end")
        assert app.table.selected == app.table.order()[-1]
        await pilot.press("home")
        assert app.table.selected == app.table.order()[0]


async def test_loading_an_unavailable_model_says_why_at_once(make_app, tiny_models) -> None:
    missing = "mlx-community/not-downloaded-4bit"
    app = make_app(models={**tiny_models, "ghost": missing})
    async with app.run_test(size=(120, 40)) as pilot:
        await select_row(pilot, app, "ghost")
        subtitle = str(app.table.border_subtitle)
        assert not subtitle.startswith("ghost"), "the row names the model already"
        assert subtitle.endswith("mlx-tui never downloads)"), "the end of the reason stays"
        await press_in_table(pilot, app, "l")
        assert any(n.startswith("Not loaded: ghost cannot load: ") and "not downloaded" in n
                   for n in notes(app)), notes(app)
        await app.workers.wait_for_complete()
        kinds = [line.split()[1] for line in app.event_log.lines_written]
        assert "queued" not in kinds and "failed" not in kinds, "no load was tried"


async def test_a_sentence_typed_into_the_table_does_nothing_and_says_why(make_app) -> None:
    class Still:
        def __call__(self) -> float:
            return 100.0  # every key at the same moment: a burst

    app = make_app(key_clock=Still())
    async with app.run_test(size=(120, 40)) as pilot:
        app.runtime.cache.load("tiny-b").result()
        await until(pilot, lambda: state(app, "tiny-b") == "loaded", what="tiny-b to load")
        await focus_table(pilot, app)
        app.table.BURST_SECONDS = 30.0  # the first key waits far longer than the test runs
        before = (app.table.order(), app.table.border_title)
        await type_text(pilot, "lucky pun")  # l: load, u: clean up, p: pin, s: sort...
        assert not app.table.key_pending, "the first key's action was called off"
        assert any(n.startswith("Typing?") for n in notes(app))
        assert (app.table.order(), app.table.border_title) == before, "no sort"
        assert state(app, "tiny-b") == "loaded" and app.table.row_text("tiny-b")["pinned"] == ""
        await app.workers.wait_for_complete()
        assert not any(" clean-up " in line for line in app.event_log.lines_written)


async def test_a_clean_up_from_the_table_says_what_happened(make_app) -> None:
    app = make_app(memory={"keep_on_cleanup": 1}, cache={"policy": "frequency"})
    async with app.run_test(size=(120, 40)) as pilot:
        cache = app.runtime.cache
        cache.load("tiny-b").result()
        await until(pilot, lambda: state(app, "tiny-b") == "loaded", what="tiny-b to load")
        await focus_table(pilot, app)
        await press_in_table(pilot, app, "u")
        await app.workers.wait_for_complete()
        await until(pilot, lambda: any(n.startswith("Nothing unloaded: ") and "keep_on_cleanup" in n
                                       for n in notes(app)),
                    what="the word that nothing went, and why")  # one model, and one is kept

        cache.load("tiny-a").result()
        await until(pilot, lambda: state(app, "tiny-a") == "loaded", what="tiny-a to load")
        await press_in_table(pilot, app, "u")
        await until(pilot, lambda: "not loaded" in (state(app, "tiny-a"), state(app, "tiny-b")),
                    what="the clean-up")
        line = next(line for line in app.event_log.lines_written if " clean-up " in line)
        assert "asked from the table at 60% memory" in line, line


async def test_the_model_the_user_named_keeps_that_name(make_app, tiny_models) -> None:
    app = make_app(model="nick", models={"main": tiny_models["tiny-a"], "nick": tiny_models["tiny-a"]})
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        assert app.chat.border_title == "Chat · nick"
        canonical = app.runtime.cache.get("nick").name
        assert app.table.row_text(canonical)["name"] == "nick"
        assert app.table.selected == canonical
        other = "main" if canonical == "nick" else canonical
        assert f"also {other}" in str(app.table.border_subtitle)

        app.runtime.cache.load("nick").result()
        await until(pilot, lambda: any("nick: loaded in" in line
                                       for line in app.event_log.lines_written), what="the load")
        assert not any(f"{other}: " in line for line in app.event_log.lines_written), \
            app.event_log.lines_written


# -- a model served across hosts (issue 17) -----------------------------------------------------------

GIB = 1024**3


def host_memory(fraction: float, total_gib: int) -> MemorySnapshot:
    total = total_gib * GIB
    used = int(total * fraction)
    return MemorySnapshot(total_bytes=total, used_bytes=used, available_bytes=total - used)


async def test_a_model_served_across_hosts_shows_a_line_per_rank_and_every_rank_below(make_app) -> None:
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        ranks = (RankView(0, "studio", "loaded", shard_bytes=20 * GIB, memory=host_memory(0.61, 128)),
                 RankView(1, "mini", "loading", estimated_shard_bytes=20 * GIB,
                          memory=host_memory(0.44, 64)))
        # What the cache reports of a model its distributed loader runs on two Macs.
        views = [replace(v, ranks=ranks, state=ModelState.LOADED, resident_bytes=20 * GIB)
                 if v.name == "tiny-b" else v for v in app.runtime.cache.models()]
        app.table.sync(views)
        await pilot.pause()
        row = app.table.row_text("tiny-b")
        assert row["name"].splitlines() == ["tiny-b", "  studio 61%", "  mini 44%"]
        assert row["state"].splitlines() == ["loaded", "loaded", "loading"]
        assert row["size"].splitlines() == ["20.0 GB", "20.0 GB", "~20.0 GB"]
        assert app.table.row_text("tiny-a")["name"] == "tiny-a", "other rows keep one line"
        screen = "\n".join(screen_lines(app))
        assert re.search(r"│ tiny-b +loaded +20\.0 GB .*\n│   studio 61% +loaded +20\.0 GB +│?"
                         r".*\n│   mini 44% +loading +~20\.0 GB", screen), screen

        await select_row(pilot, app, "tiny-b")
        details = app.table.details(views[[v.name for v in views].index("tiny-b")])
        assert details.startswith(
            "2 hosts: studio loaded, 20.0 GB shard, memory 61% of 128 GB; "
            "mini loading, ~20.0 GB shard, memory 44% of 64 GB"), details
        assert str(app.table.border_subtitle) == details, "the whole line fits at 120 columns"

        app.table.sync()  # the model stopped: no ranks reported any more
        await pilot.pause()
        assert app.table.row_text("tiny-b")["name"] == "tiny-b"
        assert app.table.selected == "tiny-b", "the cursor stays on its model"
