"""``mlx.launch``, unchanged but for one wait: ``python -m mlx_tui.distributed.quiet_launch ARGS``.

MLX 0.32's launcher forwards each rank's input and output in a thread that waits with
``select(outputs, [rank's stdin], [], 1.0)``. A pipe that nobody fills is always writable, so
that wait returns at once and every rank's thread spins: measured here, ``mlx.launch`` held
95% of a core for as long as its ranks ran (mlx-tui's run for weeks). This module runs MLX's own
launcher (``mlx._distributed_utils.launch.main``: the same arguments, hostfile, ssh and
environment handling) with its ``select`` wrapped: the writable ends are still reported, but only
after the outputs had up to 50 ms to become readable, so an idle launcher wakes 20 times a
second instead of spinning. Output is forwarded as soon as it comes; input (which mlx-tui never
sends) waits at most 50 ms. If a later MLX stops calling ``select`` this way, the wrapper is
simply not used.
"""

from __future__ import annotations

import select as _select
import sys
from typing import Any

__all__ = ["calm_select", "main"]

POLL_SECONDS = 0.05


def calm_select(rlist: list[Any], wlist: list[Any], xlist: list[Any],
                timeout: float | None = None) -> tuple[list[Any], list[Any], list[Any]]:
    """``select.select``, except that writable ends alone do not end the wait early."""
    if not wlist:
        return _select.select(rlist, wlist, xlist, timeout)
    readable, writable, errors = _select.select(rlist, wlist, xlist, 0)
    if readable or errors or timeout == 0:
        return readable, writable, errors
    wait = POLL_SECONDS if timeout is None else min(timeout, POLL_SECONDS)
    readable, _, errors = _select.select(rlist, [], xlist, wait)
    return readable, writable, errors


def main() -> int:
    from mlx._distributed_utils import launch

    if getattr(launch, "select", None) is _select.select:
        launch.select = calm_select  # type: ignore[attr-defined]
    sys.argv[0] = "mlx.launch"
    return launch.main() or 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
