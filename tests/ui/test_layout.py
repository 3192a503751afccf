"""How the screen is laid out as a newcomer resizes and zooms it: the gauge after a live resize,
the event log's last column, the chat's room at 80x24, a zoomed table."""

from __future__ import annotations

import io
import time

from rich.console import Console

from mlx_tui.ui.app import MlxTuiApp

from .helpers import focus_table, until


def screen_lines(app: MlxTuiApp) -> list[str]:
    """The screen as the terminal shows it, one string per row."""
    width, height = app.size
    console = Console(width=width, height=height, file=io.StringIO(), force_terminal=True,
                      color_system="truecolor", record=True, legacy_windows=False, safe_box=False)
    console.print(app.screen._compositor.render_update(full=True))
    return console.export_text().splitlines()


def check_gauge(lines: list[str]) -> None:
    """One bar on the first line, both markers on it, each label under its marker."""
    bar, labels = lines[1], lines[2]
    assert bar.count("▕") == 1 and bar.count("▏") == 1, bar
    assert bar.count("┃") == 2, bar
    warning, emergency = bar.index("┃"), bar.rindex("┃")
    assert labels.index("┛") == warning, (bar, labels)
    assert "┗━ emergency 98%" in labels or "emergency 98%" in labels, labels
    assert labels.index("┗") == emergency or labels[emergency] == "┃", (bar, labels)


async def test_the_gauge_redraws_whole_after_a_live_resize(make_app) -> None:
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        check_gauge(screen_lines(app))
        for size in ((200, 50), (80, 24), (120, 40), (100, 30)):
            await pilot.resize_terminal(*size)
            await pilot.pause()
            await pilot.pause()
            lines = screen_lines(app)
            assert len(lines[0]) == size[0]
            check_gauge(lines)


async def test_the_event_log_never_hides_its_last_column_under_the_scrollbar(make_app) -> None:
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        log = app.event_log
        for i in range(40):  # more than fits: the scrollbar appears
            log.add_line("loaded", f"model-{i}: loaded in 0.05 s (weights 0.02 s, tokenizer "
                                   f"0.03 s), 545.2 KB, asked from the table", time.time())
        await pilot.pause()
        assert log.max_scroll_y > 0, "the log scrolls"
        visible = log.scrollable_content_region.width
        assert max(strip.cell_length for strip in log.lines) <= visible


async def test_wrapped_event_lines_are_indented_under_the_message(make_app) -> None:
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        app.event_log.clear()
        app.event_log.add_line("loaded", "tiny-a: loaded in 0.05 s (weights 0.02 s, tokenizer "
                                         "0.03 s), 545.2 KB (asked from the table)", time.time())
        await pilot.pause()
        rows = [line.text.rstrip() for line in app.event_log.lines]
        assert len(rows) >= 3, rows
        assert rows[0].split()[1:3] == ["loaded", "tiny-a:"], rows
        assert rows[0].index("tiny-a:") == 18, "stamp and label take 18 columns"
        for row in rows[1:]:
            assert row.startswith(" " * 18) and row[18] != " ", rows


async def test_at_80x24_the_chat_has_room_for_a_reply(make_app) -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        transcript = app.query_one("#transcript")
        assert transcript.size.height >= 8, transcript.size
        assert app.table.size.height >= 3, "the table still shows its header and a row"


async def test_zooming_the_table_makes_it_fill_the_screen(make_app) -> None:
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await focus_table(pilot, app)
        await pilot.press("ctrl+f")
        await until(pilot, lambda: app.screen.maximized is app.table, what="the zoom")
        await pilot.pause()
        assert app.table.outer_size.height >= 40 - 2, app.table.outer_size
        assert app.table.outer_size.width == 120
