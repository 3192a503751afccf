"""How the screen is laid out as a newcomer resizes and zooms it: the gauge after a live resize,
the event log's last column, the chat's room at 80x24, a zoomed table."""

from __future__ import annotations

import time

from .helpers import focus_table, screen_lines, until


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


async def test_shrinking_the_terminal_gives_the_chat_its_place_back(make_app) -> None:
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        assert app.event_log.display and app.chat.display
        await pilot.resize_terminal(80, 24)
        await pilot.pause()
        assert app.query_one("#transcript").size.height >= 8, "the chat, not the log, is shown"
        await pilot.resize_terminal(120, 40)
        await pilot.pause()
        assert app.event_log.size.width > 0 and app.chat.size.width > 0, "both side by side again"


async def test_the_event_log_wraps_again_at_a_new_width(make_app) -> None:
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        app.event_log.clear()
        message = "tiny-a: loaded in 0.05 s, 545.2 KB (preload)"
        app.event_log.add_line("loaded", message, time.time())
        await pilot.pause()
        narrow = len(app.event_log.lines)
        await pilot.resize_terminal(80, 24)
        await pilot.press("ctrl+l")  # the log in the chat's place: the whole width
        await pilot.pause()
        await pilot.pause()
        assert len(app.event_log.lines) < narrow, [line.text for line in app.event_log.lines]
        assert any(message in line.text for line in app.event_log.lines)


async def test_zooming_the_table_makes_it_fill_the_screen(make_app) -> None:
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await focus_table(pilot, app)
        await pilot.press("ctrl+f")
        await until(pilot, lambda: app.screen.maximized is app.table, what="the zoom")
        await pilot.pause()
        assert app.table.outer_size.height >= 40 - 2, app.table.outer_size
        assert app.table.outer_size.width == 120


async def test_the_table_takes_the_height_the_chat_can_spare(make_app) -> None:
    app = make_app()
    for size in ((120, 30), (100, 26), (80, 24)):
        async with app.run_test(size=size) as pilot:
            await pilot.pause()
            transcript = app.query_one("#transcript").size.height
            rows_shown = app.table.size.height - 1  # the header
            assert transcript >= 8, (size, transcript)
            assert rows_shown >= min(len(app.table.order()), 2), (size, rows_shown)
            if size[1] >= 30:
                assert rows_shown >= len(app.table.order()), "room for every row"
        app = make_app()
