"""A remote host's chat as the chat pane calls the local engine: ``stream(...)`` of ChatDelta.

The reply comes over the remote's OpenAI streaming endpoint (``/v1/chat/completions`` with
``stream: true`` and the usage chunk) and is handed out as the core's
:class:`~mlx_tui.core.chat.ChatDelta` pieces, the last one carrying a
:class:`~mlx_tui.core.chat.ChatStats` built from the remote's own figures (``usage`` and
``timings``), so the pane's stats line reads the same for either host.

The HTTP stream is read by a short-lived reader thread (it never touches MLX), so that ``esc``
stops a reply at once even while the remote is still loading the model: the reader closes the
stream when it next hears from the remote, and the remote stops generating when it sees the
connection go.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from typing import Any, Callable, Iterator, Sequence

from ..core.chat_types import ChatDelta, ChatMessage, ChatStats, GenerationParams
from .client import RemoteClient
from .errors import RemoteError, RemoteRefused

__all__ = ["RemoteChat", "request_body"]

CANCEL_CHECK_SECONDS = 0.1
"""How often a reply that is waiting for the remote looks at its cancel event."""


def request_body(model: str, messages: Sequence[ChatMessage],
                 params: GenerationParams) -> dict[str, Any]:
    """The OpenAI request for one streamed reply with these options."""
    defaults = GenerationParams()
    body: dict[str, Any] = {
        "model": model, "stream": True, "stream_options": {"include_usage": True},
        "messages": [{"role": m.role, "content": m.content} for m in messages],
        "temperature": params.temperature, "top_p": params.top_p, "max_tokens": params.max_tokens,
    }
    if params.seed is not None:
        body["seed"] = params.seed
    if params.stop:
        body["stop"] = list(params.stop)
    for key in ("top_k", "min_p", "repetition_penalty", "presence_penalty", "frequency_penalty"):
        value = getattr(params, key)
        if value != getattr(defaults, key):
            body[key] = value
    return body


class _Reply:
    """What one streamed reply has said so far, and its figures."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.started = time.monotonic()
        self.first_at: float | None = None
        self.pieces = 0
        self.finish: str | None = None
        self.timings: dict[str, Any] = {}
        self.usage: dict[str, Any] = {}

    def read(self, host: str, data: str) -> str:
        """One ``data:`` payload: the text it adds (may be empty)."""
        chunk = json.loads(data)
        if "error" in chunk:
            error = chunk["error"] if isinstance(chunk["error"], dict) else {}
            raise RemoteRefused(host, str(error.get("message", chunk["error"])), 500)
        self.usage = chunk.get("usage") or self.usage
        self.timings = chunk.get("timings") or self.timings
        text = ""
        for choice in chunk.get("choices") or ():
            text += (choice.get("delta") or {}).get("content") or ""
            self.finish = choice.get("finish_reason") or self.finish
        if text:
            self.pieces += 1
            if self.first_at is None:
                self.first_at = time.monotonic()
        return text

    def stats(self, cancelled: bool = False) -> ChatStats:
        elapsed = time.monotonic() - self.started
        t, u = self.timings, self.usage
        details = u.get("prompt_tokens_details") or {}
        local_ttft = (self.first_at - self.started) if self.first_at is not None else 0.0
        return ChatStats(
            model=self.model,
            prompt_tokens=int(u.get("prompt_tokens", 0)),
            tokens=int(u.get("completion_tokens", self.pieces)),
            tokens_per_second=float(t.get("tokens_per_second", 0.0)),
            prompt_tokens_per_second=float(t.get("prompt_tokens_per_second", 0.0)),
            time_to_first_token=float(t.get("time_to_first_token", local_ttft)),
            total_seconds=float(t.get("total_seconds", elapsed)),
            loaded_first=bool(t.get("loaded_first", False)),
            load_seconds=float(t.get("load_seconds", 0.0)),
            finish_reason="cancelled" if cancelled else (self.finish or "stop"),
            cached_tokens=int(details.get("cached_tokens", t.get("cached_tokens", 0)) or 0),
        )


class RemoteChat:
    """Streams replies from one remote host. Called from the chat pane's worker thread (it
    blocks); ``poke`` is called when a reply starts and ends, so the host is polled then."""

    def __init__(self, client: RemoteClient, poke: Callable[[], None] = lambda: None) -> None:
        self._client = client
        self._poke = poke

    def stream(self, model: str, messages: Sequence[ChatMessage],
               params: GenerationParams = GenerationParams(),
               cancel: threading.Event | None = None,
               tools: list[dict[str, Any]] | None = None) -> Iterator[ChatDelta]:
        """The reply to ``messages`` piece by piece; the last piece has the stats. Raises
        :class:`~.errors.RemoteError` (unreachable, refused) as the local engine raises its
        errors; a set ``cancel`` ends it with ``finish_reason == "cancelled"``."""
        if tools:
            raise RemoteRefused(self._client.address.name, "tools are not sent to remote hosts "
                                "from the app", 400)
        cancel = cancel or threading.Event()
        host = self._client.address.name
        reply = _Reply(model)
        events: queue.Queue[tuple[str, Any]] = queue.Queue()
        body = request_body(model, messages, params)
        done = threading.Event()  # the consumer went away: the reader stops too

        def read() -> None:
            try:
                with self._client.chat_events(body) as lines:
                    for data in lines:
                        if data == "[DONE]" or cancel.is_set() or done.is_set():
                            break  # leaving closes the stream: the remote stops generating
                        events.put(("data", data))
            except Exception as exc:  # noqa: BLE001 - handed to the reply's own thread
                events.put(("error", exc))
            finally:
                events.put(("end", None))

        self._poke()
        threading.Thread(target=read, name=f"remote-chat-{host}", daemon=True).start()
        try:
            while True:
                try:
                    kind, payload = events.get(timeout=CANCEL_CHECK_SECONDS)
                except queue.Empty:
                    if cancel.is_set():
                        yield ChatDelta(stats=reply.stats(cancelled=True))
                        return
                    continue
                if kind == "error":
                    if isinstance(payload, RemoteError):
                        raise payload
                    raise RemoteError(host, f"{host}: the reply broke off ({payload})")
                if kind == "end":
                    yield ChatDelta(stats=reply.stats(cancelled=cancel.is_set()))
                    return
                try:
                    text = reply.read(host, payload)
                except (ValueError, TypeError, AttributeError):
                    raise RemoteError(host, f"{host}: a piece of the reply was not JSON") from None
                if text:
                    yield ChatDelta(text)
        finally:
            done.set()
            self._poke()
