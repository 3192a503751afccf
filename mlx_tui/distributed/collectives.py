"""Python objects over MLX's own collectives: rank 0 shares a decision, every rank reports back.

This is the only channel between ranks besides the model's own collectives: no sockets of our
own. An object travels pickled, as bytes in an ``mx.uint8`` array (``mx.distributed.all_sum``
with zeros from the other ranks, as ``mlx_lm.server`` shares its requests; ``all_gather`` to
collect one object from each rank).

Every rank must make the same calls in the same order, on the thread that runs the model (its
stream then orders these collectives with the model's). A peer that died makes the call raise
(``[ring] connection to a peer was lost``); the caller treats any exception as a lost group.
"""

from __future__ import annotations

import pickle
from typing import Any

__all__ = ["Collective"]


class Collective:
    """``share`` and ``gather`` over one ``mx.distributed`` group. Owned by the rank's MLX
    thread; not thread-safe (collectives must be issued in one order on every rank)."""

    def __init__(self, group: Any) -> None:
        self.group = group
        self.rank: int = group.rank()
        self.size: int = group.size()

    def share(self, obj: Any = None) -> Any:
        """Rank 0's ``obj`` on every rank (the others pass nothing). ``None`` costs one scalar."""
        import mlx.core as mx

        data = pickle.dumps(obj) if self.rank == 0 and obj is not None else b""
        size = mx.distributed.all_sum(mx.array([len(data)], dtype=mx.int32), group=self.group)
        length = int(size.item())
        if length == 0:
            return None
        if self.rank == 0:
            payload = mx.array(memoryview(data), dtype=mx.uint8)
        else:
            payload = mx.zeros((length,), dtype=mx.uint8)
        total = mx.distributed.all_sum(payload, group=self.group)
        mx.eval(total)
        return obj if self.rank == 0 else pickle.loads(memoryview(total))

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank."""
        import mlx.core as mx

        data = pickle.dumps(obj)
        sizes = mx.distributed.all_gather(mx.array([len(data)], dtype=mx.int32), group=self.group)
        lengths = [int(n) for n in sizes.tolist()]
        width = max(lengths)
        padded = data + b"\0" * (width - len(data))
        rows = mx.distributed.all_gather(mx.array(memoryview(padded), dtype=mx.uint8), group=self.group)
        mx.eval(rows)
        raw = memoryview(rows)
        return [pickle.loads(raw[i * width:i * width + n]) for i, n in enumerate(lengths)]

    def barrier(self) -> None:
        """Return once every rank got here."""
        import mlx.core as mx

        mx.eval(mx.distributed.all_sum(mx.array([1], dtype=mx.int32), group=self.group))
