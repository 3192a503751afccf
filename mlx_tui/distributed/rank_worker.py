"""The generation worker every rank runs: the core's own :class:`GenerationWorker`, in step.

Each rank runs the same worker code over its shard. Everything that comes from outside the loop
(new requests, cancels, the order to stop) enters through ``_drain_inbox``; here that method is
one collective: rank 0 turns what its link brought into a :class:`~.protocol.Step` and shares
it, every rank applies it, so every rank inserts and removes the same requests in the same
order and calls ``BatchGenerator.next`` together (the model's own collectives need that).
What follows from the tokens (end of sequence, ``max_tokens``, stop strings) is computed alike
on every rank from identical tokens, so it needs no message. Rank 0 forwards each request's
output to the API process; the other ranks drop it.

A collective that fails (a peer died) ends the worker with :attr:`RankWorker.lost` set.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import Future
from typing import Any, Callable

from ..core.engine.request import Finished, GenerationHandle, GenerationRequest, Piece
from ..core.engine.worker import GenerationWorker
from ..core.settings import EngineSettings
from .collectives import Collective
from .link import RankLink
from .pace import Pace
from .protocol import Cancel, Evict, Item, Load, Memory, RankReport, RemoteError, Shutdown, Step, Submit

__all__ = ["RankWorker", "run_inline"]

log = logging.getLogger("mlx_tui.distributed.rank")


class _Inline:
    """A stand-in for the core's thread pool: the rank's main thread runs the worker itself."""

    def __init__(self) -> None:
        self.job: Callable[[], Any] | None = None

    def run(self, fn: Callable[[], Any]) -> tuple[None, Future[Any]]:
        self.job = fn
        return None, Future()


def run_inline(worker: GenerationWorker) -> None:
    """Run ``worker`` on this thread until it stops (the rank's only MLX thread)."""
    pool = _Inline()
    worker.start(pool)  # type: ignore[arg-type]
    assert pool.job is not None
    pool.job()


class _RankHandle(GenerationHandle):
    """A request's output on a rank: forwarded to the API process on rank 0, dropped elsewhere."""

    def __init__(self, request: GenerationRequest, seq: int, forward: Callable[[Item], None] | None,
                 forget: Callable[[int], None], lost: Callable[[], BaseException | None]) -> None:
        super().__init__(request)
        self.seq = seq
        self._forward = forward
        self._forget = forget
        self._lost = lost

    def put(self, item: object) -> None:
        final = not isinstance(item, Piece)
        if self._forward is not None:
            lost = self._lost()
            if lost is not None and isinstance(item, Finished):
                item = lost  # the worker ends its requests as cancelled; they failed
            if not isinstance(item, (Piece, Finished)):
                item = RemoteError(type(item).__name__, str(item))
            self._forward(Item(self.seq, item))  # type: ignore[arg-type]
        if final:
            self._forget(self.seq)


class RankWorker(GenerationWorker):
    """:class:`GenerationWorker` whose input is rank 0's shared :class:`Step`. Runs on the
    rank's MLX thread (:func:`run_inline`); rank 0 passes its ``link``, the others None."""

    def __init__(self, name: str, model: Any, tokenizer: Any, settings: EngineSettings, *,
                 comm: Collective, link: RankLink | None, report: Callable[[], RankReport],
                 pace: Pace) -> None:
        super().__init__(name, model, tokenizer, settings, prompt_cache=None)
        self._comm = comm
        self._link = link
        self._report = report
        self._pace = pace
        self._requests: dict[int, GenerationRequest] = {}
        self.lost: BaseException | None = None
        self.shutdown = False

    # -- rank 0 ------------------------------------------------------------------------------
    def _decide(self, block: bool) -> Step:
        assert self._link is not None
        wait = self._pace.idle_wait() if block else 0.0
        commands = self._link.take(wait)
        if commands or not block:
            self._pace.busy()
        submits: list[Submit] = []
        cancels: list[int] = []
        stop = shutdown = False
        for command in commands:
            if isinstance(command, Submit):
                submits.append(command)
            elif isinstance(command, Cancel):
                cancels.append(command.seq)
            elif isinstance(command, (Evict, Shutdown)):
                stop = True
                shutdown = shutdown or isinstance(command, Shutdown)
            elif isinstance(command, Load):
                log.warning("%s: a load arrived while loaded; ignored", self.name)
        return Step(tuple(submits), tuple(cancels), stop, shutdown, self._pace.probe_due(),
                    idle=0.0 if commands else wait)

    # -- every rank ----------------------------------------------------------------------------
    def _drain_inbox(self, waiting: Any, block: bool) -> bool:
        try:
            step: Step = self._comm.share(self._decide(block) if self._comm.rank == 0 else None)
            if step.probe:
                reports = self._comm.gather(self._report())
                if self._link is not None:
                    self._link.send(Memory(tuple(reports)))
        except Exception as exc:  # noqa: BLE001 - a collective failed: the group is gone
            self.lost = exc
            return False
        for seq in step.cancels:
            request = self._requests.get(seq)
            if request is not None:
                request.cancel.set()
        forward = self._link.send if self._link is not None else None
        for submit in step.submits:
            request = GenerationRequest(list(submit.prompt), submit.params, label=submit.label)
            self._requests[submit.seq] = request
            waiting.append(_RankHandle(request, submit.seq, forward, self._forget, lambda: self.lost))
        if step.stop:
            self.shutdown = step.shutdown
            return False
        if step.idle and self._comm.rank != 0:
            time.sleep(step.idle)  # rank 0 waits that long for work before the next collective
        return True

    def _forget(self, seq: int) -> None:
        self._requests.pop(seq, None)
