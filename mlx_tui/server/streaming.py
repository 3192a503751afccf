"""From a generating thread to the event loop: one :class:`Generation` per chat request.

``ChatEngine.stream`` blocks (it may wait for a load, then runs MLX), so each request gets its
own daemon thread that hands the pieces of the reply to the event loop; the loop only awaits
them, so ``/health`` keeps answering while models load and generate. A request whose client goes away
sets the generation's cancel event, and the engine stops at the next token.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
from contextlib import asynccontextmanager
from typing import AsyncIterator

from starlette.types import Receive

from ..core.chat import ChatDelta, ChatEngine
from .openai import ChatRequest

__all__ = ["Generation", "Generations", "cancel_on_disconnect"]

log = logging.getLogger("mlx_tui.server")

_END = object()


def _release_mlx_streams() -> None:
    """Destroy the MLX streams this thread created. MLX asks every thread that used it to do
    this before it ends; a thread's streams left to process exit make exit abort at random."""
    mx = sys.modules.get("mlx.core")
    if mx is not None and hasattr(mx, "clear_streams"):
        mx.clear_streams()


class Generation:
    """One reply generated in its own thread; the event loop reads it with :meth:`next`.

    The thread appends pieces to a list and wakes the event loop only when it waits, so a
    reply that comes faster than the client takes it is sent in fewer, larger pieces instead
    of costing the loop one wake-up per token.
    """

    def __init__(self, chat: ChatEngine, request: ChatRequest, registry: "Generations") -> None:
        self.cancel = threading.Event()
        self._chat = chat
        self._request = request
        self._registry = registry
        self._loop = asyncio.get_running_loop()
        self._lock = threading.Lock()
        self._items: list[object] = []  # ChatDelta, then _END or the exception raised
        self._waiting = False
        self._ready = asyncio.Event()
        self._last: object | None = None  # _END or an exception, once taken from _items
        self.thread = threading.Thread(target=self._run, name=f"chat-{request.model}", daemon=True)
        registry.add(self)
        self.thread.start()

    def _put(self, item: object) -> None:
        with self._lock:
            self._items.append(item)
            wake, self._waiting = self._waiting, False
        if wake:
            try:
                self._loop.call_soon_threadsafe(self._ready.set)
            except RuntimeError:  # the event loop is closed: nobody reads any more
                self.cancel.set()

    def _run(self) -> None:
        req = self._request
        try:
            for delta in self._chat.stream(req.model, req.messages, req.params, self.cancel):
                if delta.stats is not None:
                    s = delta.stats
                    log.info("%s: %d tokens at %.1f tok/s, prompt %d tokens, %s%s", req.model,
                             s.tokens, s.tokens_per_second, s.prompt_tokens, s.finish_reason,
                             f", loaded first in {s.load_seconds:.2f} s" if s.loaded_first else "")
                self._put(delta)
        except Exception as exc:  # noqa: BLE001 - the request answers with it
            self._put(exc)
        else:
            self._put(_END)
        finally:
            self._registry.discard(self)
            _release_mlx_streams()

    async def next(self) -> ChatDelta | None:
        """Every piece produced since the last call, as one delta; None after the last piece.

        Raises what the engine raised (after handing out the text that came before it).
        """
        if self._last is None:
            while True:
                with self._lock:
                    items, self._items = self._items, []
                    if not items:
                        self._waiting = True
                        self._ready.clear()
                if items:
                    break
                await self._ready.wait()
            if not isinstance(items[-1], ChatDelta):
                self._last = items.pop()
            if items:
                deltas = [d for d in items if isinstance(d, ChatDelta)]
                return ChatDelta("".join(d.text for d in deltas), deltas[-1].stats)
        if isinstance(self._last, BaseException):
            raise self._last
        return None


class Generations:
    """The generations under way, so a server that stops can cancel them and wait."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._live: set[Generation] = set()

    def add(self, generation: Generation) -> None:
        with self._lock:
            self._live.add(generation)

    def discard(self, generation: Generation) -> None:
        with self._lock:
            self._live.discard(generation)

    def __len__(self) -> int:
        with self._lock:
            return len(self._live)

    def cancel_all(self, timeout: float = 5.0) -> None:
        """Cancel every generation and wait (up to ``timeout`` each) for its thread to end."""
        with self._lock:
            live = list(self._live)
        for generation in live:
            generation.cancel.set()
        for generation in live:
            generation.thread.join(timeout)


@asynccontextmanager
async def cancel_on_disconnect(receive: Receive, cancel: threading.Event) -> AsyncIterator[None]:
    """Within the block, set ``cancel`` if the client disconnects (the body is already read)."""

    async def watch() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        cancel.set()

    watcher = asyncio.ensure_future(watch())
    try:
        yield
    finally:
        watcher.cancel()
