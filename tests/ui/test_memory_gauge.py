"""The memory gauge repaints only what changed: over SSH every byte written to the terminal counts.

Textual writes a widget's update from the widget's left edge to its last changed cell, so what
a change costs is decided by which of the gauge's pieces (:class:`_Part` widgets) it repaints;
these tests watch the pieces' ``refresh`` calls. The gauge is mounted alone in a small app and
given readings directly, with a clock the test moves (the history's pace depends on it).
"""

from __future__ import annotations

from typing import Any

from textual.app import App, ComposeResult
from textual.geometry import Region

from mlx_tui.core.memory import MemorySnapshot
from mlx_tui.ui.widgets.memory_gauge import HISTORY_STEP, MemoryGauge, _Part

GIB = 1024**3


def reading(used_gib: float, total_gib: float = 20.0) -> MemorySnapshot:
    total, used = int(total_gib * GIB), int(used_gib * GIB)
    return MemorySnapshot(total_bytes=total, used_bytes=used, available_bytes=total - used,
                          swap_total_bytes=2 * GIB, swap_used_bytes=0, mlx_active_bytes=GIB,
                          mlx_cache_bytes=0, mlx_peak_bytes=GIB, pressure_level=None)


def percent(p: float, total_gib: float = 20.0) -> MemorySnapshot:
    return reading(total_gib * p / 100, total_gib)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Host(App[None]):
    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self.clock = clock

    def compose(self) -> ComposeResult:
        yield MemoryGauge(0.85, 0.98, id="gauge", clock=self.clock)


class Repaints:
    """Records the ``refresh`` calls of the gauge's pieces."""

    def __init__(self, gauge: MemoryGauge) -> None:
        self.calls: list[tuple[_Part, tuple[Region, ...], dict[str, Any]]] = []
        self.widgets = list(gauge.query(_Part))
        for widget in self.widgets:
            def spy(*regions: Region, _widget: _Part = widget, _refresh: Any = widget.refresh,
                    **kwargs: Any) -> Any:
                self.calls.append((_widget, regions, kwargs))
                return _refresh(*regions, **kwargs)
            widget.refresh = spy  # type: ignore[method-assign]

    def parts(self) -> set[str]:
        return {widget.part for widget, _, _ in self.calls}

    def widgets_of(self, part: str) -> list[_Part]:
        return [widget for widget, _, _ in self.calls if widget.part == part]

    def clear(self) -> None:
        self.calls.clear()


async def test_a_new_gb_figure_repaints_only_the_figure_even_when_it_gains_a_digit() -> None:
    clock = Clock()
    async with Host(clock).run_test(size=(120, 12)) as pilot:
        gauge = pilot.app.query_one(MemoryGauge)
        gauge.show_snapshot(reading(9.92))
        await pilot.pause()
        repaints = Repaints(gauge)
        bar_before = gauge.plain_lines()[0].split("▏")[0]
        for used in (10.04, 10.08, 9.92):  # 9.9, 10.0, 10.1 GB: 50% of 20 GB all along
            clock.now += 1
            assert gauge.show_snapshot(reading(used))
            await pilot.pause()
        assert repaints.parts() == {"amount"}, "only `used/total GB` repaints, not the bar"
        assert not any(kwargs.get("layout") for _, _, kwargs in repaints.calls), \
            "9.9 -> 10.0 GB keeps the figure's width: no new layout"
        for _, regions, _ in repaints.calls:
            assert regions and all(r.height == 1 and r.width <= 4 for r in regions), \
                "only the changed digits' cells"
        assert gauge.plain_lines()[0].split("▏")[0] == bar_before
        assert " 50% normal" in gauge.plain_lines()[0] and "9.9/20.0 GB" in gauge.plain_lines()[0]


async def test_the_bar_repaints_one_piece_only_when_its_filled_width_changes() -> None:
    clock = Clock()  # never moves: one history column, then none (too soon)
    async with Host(clock).run_test(size=(120, 12)) as pilot:
        gauge = pilot.app.query_one(MemoryGauge)
        gauge.show_snapshot(percent(1))
        await pilot.pause()
        repaints = Repaints(gauge)
        filled = gauge.plain_lines()[0].count("█")
        same_width = 0
        for p in range(2, 80):  # the normal zone: the bar's colour stays
            repaints.clear()
            assert gauge.show_snapshot(percent(p))
            await pilot.pause()
            now_filled = gauge.plain_lines()[0].count("█")
            assert f"{p}% normal" in gauge.plain_lines()[0]
            assert "level" in repaints.parts(), "the percentage repaints"
            if now_filled == filled:
                same_width += 1
                assert "bar" not in repaints.parts(), f"{p}%: same filled width, the bar stays"
            else:
                assert now_filled == filled + 1
                assert len(repaints.widgets_of("bar")) == 1, \
                    f"{p}%: one more filled cell repaints the one piece of the bar holding it"
            assert repaints.parts() <= {"bar", "level", "amount"}, "nothing else (not the history)"
            filled = now_filled
        assert same_width >= 5, "some percentages leave the filled width as it was"


async def test_the_history_adds_a_column_per_step_at_most_and_keeps_a_short_peak() -> None:
    clock = Clock()
    async with Host(clock).run_test(size=(120, 12)) as pilot:
        gauge = pilot.app.query_one(MemoryGauge)
        gauge.show_snapshot(percent(6))
        await pilot.pause()
        repaints = Repaints(gauge)

        def history() -> str:
            return gauge.plain_lines()[3].removeprefix("history ")

        for second in range(60):  # 6% <-> 7%: the same height and colour
            clock.now += 1
            gauge.show_snapshot(percent(7 if second % 2 else 6))
            await pilot.pause()
        assert history() == "▁" and "history" not in repaints.parts()

        for second in range(60):  # 30% <-> 60% every second: new columns once a step at most
            clock.now += 1
            gauge.show_snapshot(percent(60 if second % 2 else 30))
            await pilot.pause()
        steps = int(60 // HISTORY_STEP)
        assert 2 <= len(history()) - 1 <= steps + 1
        assert set(history()[1:]) == {"▂", "▅"}, "both figures show"
        assert len(repaints.widgets_of("history")) <= steps + 1, "one repaint per step at most"

        clock.now += 60
        gauge.show_snapshot(percent(50))  # long after the last column: shows at once
        before = history()
        assert before.endswith("▄")
        clock.now += 1
        gauge.show_snapshot(percent(90))  # a peak within the step ...
        clock.now += 1
        gauge.show_snapshot(percent(50))  # ... gone the next second
        assert history() == before, "too soon for a new column"
        for _ in range(int(HISTORY_STEP)):
            clock.now += 1
            gauge.show_snapshot(percent(50))  # steady: the first reading after the step adds it
        assert history() == before + "▇▄", "the peak is not lost, and the history ends at 50%"

        gauge.mark_cleanup("normal")
        assert history().endswith("▼  ▼ clean-up")
        clock.now += 1
        gauge.show_snapshot(percent(20))  # after a clean-up mark, the drop shows at once
        assert history().endswith("▼▂  ▼ clean-up")


# -- which memory the detail line measures, per machine (issue 14) ---------------------------------

MIB = 1024**2


def mac(wired_gib: float = 12.3, limit_mb: int = 0) -> MemorySnapshot:
    """A 32 GB Mac: unified memory, wired memory under MLX's recommended working set."""
    total, used = 32 * GIB, 20 * GIB
    return MemorySnapshot(total_bytes=total, used_bytes=used, available_bytes=total - used,
                          swap_total_bytes=2 * GIB, swap_used_bytes=GIB // 2,
                          mlx_active_bytes=int(10.2 * GIB), mlx_cache_bytes=int(1.1 * GIB),
                          mlx_peak_bytes=11 * GIB, pressure_level=1, kind="unified",
                          source="unified memory (psutil)", system_total_bytes=total,
                          system_used_bytes=used, wired_bytes=int(wired_gib * GIB),
                          wired_limit_bytes=limit_mb * MIB,
                          recommended_working_set_bytes=int(21.3 * GIB))


def h200() -> MemorySnapshot:
    """MLX's CUDA build on an H200: the GPU's own memory, from NVIDIA's driver."""
    total, used = 140 * GIB, 23 * GIB
    return MemorySnapshot(total_bytes=total, used_bytes=used, available_bytes=total - used,
                          mlx_active_bytes=int(22.9 * GIB), mlx_cache_bytes=0, kind="device",
                          source="GPU 0 device memory (NVML)", device_name="NVIDIA H200",
                          system_total_bytes=125 * GIB, system_used_bytes=int(2.5 * GIB))


def cpu() -> MemorySnapshot:
    """MLX on the CPU (Linux without a GPU build): system memory."""
    total, used = 16 * GIB, 8 * GIB
    return MemorySnapshot(total_bytes=total, used_bytes=used, available_bytes=total - used,
                          swap_total_bytes=2 * GIB, mlx_active_bytes=int(1.2 * GIB),
                          mlx_cache_bytes=100 * MIB, mlx_peak_bytes=2 * GIB)


async def test_the_detail_line_says_which_memory_it_measures_on_a_mac_a_gpu_and_a_cpu() -> None:
    clock = Clock()
    async with Host(clock).run_test(size=(160, 12)) as pilot:
        gauge = pilot.app.query_one(MemoryGauge)

        async def detail(snap: MemorySnapshot) -> str:
            gauge.show_snapshot(snap)
            await pilot.pause()
            return gauge.plain_lines()[2]

        assert await detail(mac()) == (
            "unified memory · MLX 10.2 GB active + 1.1 GB pool · wired 12.3 GB of 21.3 GB "
            "(iogpu default) · swap 0.5/2.0 GB · pressure normal")
        assert "wired 12.3 GB of 24.0 GB (iogpu.wired_limit_mb=24576)" in await detail(mac(limit_mb=24576))
        assert await detail(h200()) == (
            "NVIDIA H200 · GPU 0 device memory (NVML) · MLX 22.9 GB active + 0 B pool · "
            "system 2.5/125.0 GB")
        assert " 16% normal" in gauge.plain_lines()[0] and "23.0/140.0 GB" in gauge.plain_lines()[0], \
            "the bar is the GPU's memory"
        assert await detail(cpu()) == (
            "system memory · MLX 1.2 GB active + 100.0 MB pool · peak 2.0 GB · swap 0.0/2.0 GB")

        await pilot.resize_terminal(80, 12)  # each gives way, the memory's name and MLX's stay
        await pilot.pause()
        assert await detail(mac()) == "unified · MLX 10.2 GB + 1.1 GB pool · wired 12.3 GB/21.3 GB"
        assert await detail(h200()) == ("GPU 0 device memory (NVML) · MLX 22.9 GB + 0 B pool · "
                                         "system 2.5/125.0 GB")
        assert await detail(cpu()) == (
            "system memory · MLX 1.2 GB + 100.0 MB pool · peak 2.0 GB · swap 0.0/2.0 GB")
        assert all(len(line) <= 76 for line in gauge.plain_lines())


async def test_the_detail_line_repaints_only_when_its_text_changes_and_only_from_the_change() -> None:
    clock = Clock()
    async with Host(clock).run_test(size=(160, 12)) as pilot:
        gauge = pilot.app.query_one(MemoryGauge)
        gauge.show_snapshot(mac(wired_gib=12.30))
        await pilot.pause()
        repaints = Repaints(gauge)
        for _ in range(30):  # a second's readings: wired memory moves by a few MB, unseen
            clock.now += 1
            assert not gauge.show_snapshot(mac(wired_gib=12.31)), "same text: nothing repaints"
            await pilot.pause()
        assert repaints.calls == []

        before = gauge.plain_lines()[2]
        assert gauge.show_snapshot(mac(wired_gib=12.5))
        await pilot.pause()
        assert repaints.parts() == {"figures"}, "only the detail line"
        after = gauge.plain_lines()[2]
        assert "wired 12.5 GB of 21.3 GB" in after
        start = next(i for i, (a, b) in enumerate(zip(before, after)) if a != b)
        [(_, regions, _)] = repaints.calls
        assert regions and all(r.x >= start and r.height == 1 for r in regions), \
            "from the changed cell on, not the whole line"
