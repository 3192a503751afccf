"""What a request hands the generation worker and what comes back.

A request thread builds a :class:`GenerationRequest` (token ids, parameters, a cancel event)
and submits it; the worker thread fills the request's :class:`GenerationHandle` with
:class:`Piece` items as text is ready and one :class:`Finished` (or an exception) at the end.
The handle can be read from a plain thread (:meth:`GenerationHandle.take`) or from an asyncio
event loop (:meth:`GenerationHandle.atake`) without a thread per request.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from ..chat_types import GenerationParams

__all__ = ["TokenLogprob", "Piece", "Finished", "GenerationRequest", "GenerationHandle"]


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    """One generated token with its log-probability, and the most likely alternatives."""

    token: int
    text: str
    logprob: float
    top: tuple[tuple[int, str, float], ...] = ()


@dataclass(frozen=True, slots=True)
class Piece:
    """Text ready to show (stop strings held back until they cannot match), the tokens it came
    from, and their log-probabilities when asked for."""

    text: str
    tokens: tuple[int, ...] = ()
    logprobs: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True, slots=True)
class Finished:
    """The end of a request, with its figures (seconds on ``time.perf_counter``)."""

    finish_reason: str  # "stop", "length" or "cancelled"
    prompt_tokens: int
    cached_tokens: int
    generation_tokens: int
    prefill_seconds: float
    first_token_at: float | None
    decode_seconds: float
    queued_seconds: float
    generated: tuple[int, ...] = ()
    prefilled_tokens: int = 0  # prompt tokens actually processed (the rest came from a cache)
    stop_sequence: str | None = None  # the stop string that ended it, when one did


@dataclass(eq=False)
class GenerationRequest:
    """One generation: the prompt as token ids and how to sample the reply.

    ``cancel`` is checked by the worker between steps (each decode step and each prefill chunk
    of ``[engine].prefill_step`` tokens), so a client that leaves stops costing compute at once.
    """

    prompt: list[int]
    params: GenerationParams
    cancel: threading.Event = field(default_factory=threading.Event)
    label: str = "request"  # "chat", "api", ... for the prompt cache and the event log
    submitted_at: float = field(default_factory=time.perf_counter)
    keep_leading_space: bool = False
    """A text completion continues the prompt's text: the space that begins the reply is
    part of it (mlx-lm's streaming detokenizers drop it, right for a chat reply)."""


def _wake(loop: asyncio.AbstractEventLoop, event: asyncio.Event) -> None:
    try:
        loop.call_soon_threadsafe(event.set)
    except RuntimeError:  # the loop has closed: nobody reads any more
        pass


class GenerationHandle:
    """The output side of one request; written by the worker thread, read by one reader."""

    def __init__(self, request: GenerationRequest) -> None:
        self.request = request
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._items: list[object] = []
        self._done = False
        self._waker: Callable[[], None] | None = None
        self.on_done: Callable[[object], None] | None = None
        """Called once (on the worker's thread) with the last item (a :class:`Finished` or an
        exception) when the request ends: the engine logs the reply and releases the model's
        lease there, so a reply nobody reads to the end still lets its model go."""

    # -- the worker's side ------------------------------------------------------------------
    def put(self, item: object) -> None:
        """Add a :class:`Piece`, a :class:`Finished` or an exception (the last two end it)."""
        with self._lock:
            if self._done:
                return
            self._items.append(item)
            ended = not isinstance(item, Piece)
            if ended:
                self._done = True
            self._ready.notify_all()
            waker, self._waker = self._waker, None
        if waker is not None:
            waker()
        if ended and self.on_done is not None:
            self.on_done(item)

    @property
    def done(self) -> bool:
        with self._lock:
            return self._done

    # -- the reader's side ------------------------------------------------------------------
    def cancel(self) -> None:
        """Ask the worker to stop this request at its next step; it ends with "cancelled"."""
        self.request.cancel.set()

    def take(self, timeout: float | None = None) -> list[object]:
        """Every item produced since the last call (waits until there is one, or ``timeout``)."""
        with self._lock:
            if not self._items:
                self._ready.wait(timeout)
            items, self._items = self._items, []
        return items

    async def atake(self) -> list[object]:
        """:meth:`take` for an asyncio reader: waits without holding a thread."""
        loop = asyncio.get_running_loop()
        while True:
            event = asyncio.Event()
            with self._lock:
                if self._items:
                    items, self._items = self._items, []
                    return items
                self._waker = lambda: _wake(loop, event)
            try:
                await event.wait()
            except BaseException:
                with self._lock:
                    self._waker = None
                raise
