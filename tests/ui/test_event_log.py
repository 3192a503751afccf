"""The event log tells what happened to prompt caches and to a Mac's wired memory, in colours
that say how much it matters, with every theme (the 16-colour ones draw ANSI colours)."""

from __future__ import annotations

import pytest
from rich.color import Color, ColorType

from mlx_tui.core.events import CacheEvent, EventKind
from mlx_tui.ui.app import MlxTuiApp
from mlx_tui.ui.messages import CacheEventPosted
from mlx_tui.ui.widgets.event_log import EventLog

from .helpers import until

NEWS = [  # (what the cache says, the label, the colour it gets)
    (CacheEvent(EventKind.PROMPT_CACHE, "tiny-a: prompt cache of 1,200 tokens read from disk in "
                "0.01 s instead of a prefill", "tiny-a", data={"what": "restored"}), "prompt", "success"),
    (CacheEvent(EventKind.PROMPT_CACHE, "tiny-a: prompt cache of 1,200 tokens saved to disk (0.6 MB)",
                "tiny-a", data={"what": "spilled"}), "prompt", "info"),
    (CacheEvent(EventKind.PROMPT_CACHE, "tiny-a: prompt cache of 1,200 tokens dropped from memory "
                "(emergency clean-up at 99% memory), still on disk", "tiny-a",
                data={"what": "dropped"}), "prompt", "info"),
    (CacheEvent(EventKind.PROMPT_CACHE, "tiny-a: a prompt cache file was deleted: it was written by "
                "another format (3f2a.json)", "tiny-a", data={"what": "discarded"}), "prompt", "warning"),
    (CacheEvent(EventKind.PROMPT_CACHE, "tiny-a: prompt caches stay in memory only: cannot write to "
                "/full (No space left on device); fix the folder or [prompt_cache].dir", "tiny-a",
                data={"what": "disk_failed"}), "prompt", "error"),
    (CacheEvent(EventKind.MEMORY_ADVICE, "tiny-a needs 30.0 GB wired, more than the 21.3 GB the GPU "
                "may wire now (macOS's default): ... run `sudo sysctl iogpu.wired_limit_mb=32768`",
                "tiny-a", data={"wired_advice": "..."}), "wired", "warning"),
    (CacheEvent(EventKind.MEMORY_ADVICE, "another process is wiring memory too: 6.0 GB is wired "
                "beyond what this app's MLX holds"), "wired", "warning"),
    (CacheEvent(EventKind.EVICTED, "tiny-a: unloaded, 545.2 KB freed (emergency clean-up at 99% "
                "memory); MLX still pools 300.0 MB", "tiny-a",
                data={"cause": "emergency", "pool_bytes_after": 300 * 1024**2}), "evicted", "error"),
    (CacheEvent(EventKind.EVICTED, "tiny-a: unloaded, 545.2 KB freed (making room for tiny-b)",
                "tiny-a", data={"cause": "admission", "pool_bytes_after": 0}), "evicted", "warning"),
]


def label_colour(log: EventLog) -> tuple[str, Color | None]:
    """The label of the log's only line, and the colour it is drawn in."""
    _stamp, label = list(log.lines[0])[:2]
    return label.text.strip(), label.style.color if label.style else None


@pytest.mark.parametrize("theme", ["mlx-dark", "ansi-dark", "ansi-light"])
async def test_prompt_cache_and_wired_memory_news_is_logged_in_the_themes_colours(
        make_app, theme: str) -> None:
    app: MlxTuiApp = make_app(ui={"theme": theme})
    async with app.run_test(size=(120, 40)) as pilot:
        assert app.theme == theme
        log = app.event_log

        def colour_of(severity: str) -> Color | None:
            return log.get_component_rich_style(f"event-log--{severity}").color

        seen: dict[str, Color | None] = {}
        for event, label, severity in NEWS:
            log.clear()
            app.post_message(CacheEventPosted(event))  # as the cache's listener does
            await until(pilot, lambda: log.lines_written and log.lines, what="the line")
            assert log.lines_written[0].split(maxsplit=1)[1] == f"{label:<8} {event.message}"
            shown, colour = label_colour(log)
            assert shown == label and colour == colour_of(severity), (event.message, severity)
            seen[severity] = colour
        assert len(set(seen.values())) == 4, "error, warning, success and info look different"
        if theme.startswith("ansi"):
            assert all(c is not None and c.type is ColorType.STANDARD for c in seen.values()), \
                "the terminal's own 16 colours"


async def test_an_unload_the_user_asked_for_is_no_warning_and_says_what_mlx_still_pools(
        make_app) -> None:
    app = make_app()  # the still probe's MLX pool holds 300 MB
    async with app.run_test(size=(120, 40)) as pilot:
        app.runtime.cache.load("tiny-b").result()
        app.event_log.clear()
        app.runtime.cache.evict("tiny-b", reason="asked from a script")
        await until(pilot, lambda: any(" evicted " in line for line in app.event_log.lines_written),
                    what="the unload")
        [line] = [line for line in app.event_log.lines_written if " evicted " in line]
        assert "tiny-b: unloaded" in line and "(asked from a script); MLX still pools 300.0 MB" in line
        strip = next(s for s in app.event_log.lines if "evicted" in s.text)
        label = list(strip)[1]
        assert label.text.strip() == "evicted"
        warning = app.event_log.get_component_rich_style("event-log--warning").color
        assert label.style.color != warning, "nothing went wrong: no warning colour"
