"""What the main screen looks like, pinned: 80x24 and 120x40, dark and light.

Everything on screen is fixed: memory from :class:`StillProbe`, nothing loaded (so no times),
the event log's clock stopped at noon, a model the Hugging Face cache does not have, selected
(its problem is the line under the table), and the alias ``demo`` pointed at a tiny test model
so the real demo model does not change the picture. Update with ``pytest --snapshot-update``
after looking at the report (``snapshot_report.html``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import pytest
from textual.pilot import Pilot

from mlx_tui.ui.app import MlxTuiApp

from .helpers import QUICK, StillProbe

NOON = time.mktime((2026, 1, 26, 12, 0, 0, 0, 0, -1))


@pytest.mark.parametrize("theme", ["mlx-dark", "mlx-light"])
@pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=["80x24", "120x40"])
def test_main_screen(snap_compare, make_runtime, model_factory: Callable[..., Path],
                     theme: str, size: tuple[int, int]) -> None:
    runtime = make_runtime(
        {"demo": str(model_factory("tiny-a", seed=1)), "tiny-b": str(model_factory("tiny-b", seed=2)),
         "coder-7b": "mlx-community/Qwen2.5-Coder-7B-Instruct-4bit"},
        probe=StillProbe(0.6), ui={"theme": theme}, cache={"policy": "frequency"})
    app = MlxTuiApp(runtime, model="demo", api=False, params=QUICK, clock=lambda: NOON)

    async def select_the_unavailable_model(pilot: Pilot) -> None:
        # The line under the table then says why it cannot load, not a folder of this run.
        pilot.app.table.move_cursor(row=pilot.app.table.get_row_index("coder-7b"))
        await pilot.pause()

    assert snap_compare(app, terminal_size=size, run_before=select_the_unavailable_model)
