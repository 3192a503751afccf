"""One reply for any protocol: what the Ollama and Anthropic routes share on top of the engine.

:func:`start_reply` starts a :class:`~.streaming.Generation` (the server's one way to run a
reply on the chat engine) with the request's tools and the API's rule on model paths.
:class:`ReplyPieces` awaits the first piece before a status line is sent (a model that cannot
load answers with its status, not with a stream that fails), then hands out text, tool calls
and the final :class:`ChatStats`.

Tool calls travel in the OpenAI shape the core uses (``{"id", "type": "function", "function":
{"name", "arguments": "<json>"}}``); :func:`tool_call_parts` reads one into a name, an id and an
arguments object, whatever form the arguments came in.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Sequence

from starlette.requests import Request

from ..core.cache import ModelCache
from ..core.catalog import UnknownModel
from ..core.chat import ChatDelta, ChatMessage, ChatStats, GenerationParams
from .openai import ChatRequest
from .streaming import Generation, cancel_on_disconnect

__all__ = ["ReplyPieces", "WholeReply", "start_reply",
           "tool_call_parts", "tool_calls_of", "cached_tokens_of", "allow_paths", "resolve_model"]


def start_reply(request: Request, model: str, messages: Sequence[ChatMessage],
                params: GenerationParams, tools: list[dict[str, Any]] | None = None) -> Generation:
    """Start generating the reply to ``messages`` (see :class:`Generation`). ``tools``
    (OpenAI's function-tool objects) go to the engine, which refuses them for a model whose
    chat template cannot call tools."""
    chat_request = ChatRequest(model=model, messages=tuple(messages), params=params,
                               tools=tuple(tools or ()), allow_paths=allow_paths(request))
    return Generation(request.app.state.runtime.chat, chat_request, request.app.state.generations)


def tool_calls_of(delta: ChatDelta) -> tuple[Any, ...]:
    """The tool calls a delta carries (none until the engine parses them)."""
    return tuple(getattr(delta, "tool_calls", None) or ())


def cached_tokens_of(stats: ChatStats) -> int:
    """Prompt tokens read from the prompt cache (0 until the engine reports them)."""
    return int(getattr(stats, "cached_tokens", 0) or 0)


def tool_call_parts(call: Any) -> tuple[str, str, dict[str, Any]]:
    """``(id, name, arguments)`` of one tool call: a :class:`~mlx_tui.core.chat.ToolCall` from
    the engine, or an OpenAI-shaped dict. Arguments that are not a JSON object come back as
    ``{"arguments": <what was sent>}`` rather than being lost."""
    if isinstance(call, dict):
        function = call.get("function") or {}
        call_id, name, raw = call.get("id"), function.get("name", ""), function.get("arguments", {})
    else:
        call_id, name, raw = call.id, call.name, call.arguments
    if isinstance(raw, str):
        try:
            raw = json.loads(raw) if raw.strip() else {}
        except ValueError:
            raw = {"arguments": raw}
    arguments = raw if isinstance(raw, dict) else {"arguments": raw}
    return str(call_id or f"call_{uuid.uuid4().hex[:24]}"), str(name), arguments


def allow_paths(request: Request) -> bool:
    """Whether this API may load a model by folder path (``[api].allow_model_paths``)."""
    return request.app.state.runtime.settings_store.settings.api.allow_model_paths


def resolve_model(cache: ModelCache, name: str, paths: bool) -> str:
    """The cache's name for ``name`` (an alias, a model, with ``paths`` a folder); Ollama's
    default tag ``NAME:latest`` finds ``NAME``. Raises :class:`UnknownModel` (a 404). May
    scan the disk: call it from a worker thread."""
    try:
        return cache.get(name, allow_paths=paths).name
    except UnknownModel:
        base, _, tag = name.rpartition(":")
        if not base or tag != "latest":
            raise
    try:
        return cache.get(base, allow_paths=paths).name
    except UnknownModel:
        raise UnknownModel(name, [v.name for v in cache.models()]) from None


@dataclass
class WholeReply:
    """A reply read to its end: its text, its tool calls and its figures."""

    text: str
    stats: ChatStats
    tool_calls: list[dict[str, Any]] = field(default_factory=list)


class ReplyPieces:
    """One generation as a protocol route reads it: :meth:`open` (or :meth:`whole`) while the
    status line can still change, then :meth:`pieces` inside the streamed body.

    Whatever way it ends (the last piece, an error, a client that went away), the
    generation is abandoned: the engine stops it at its next step and releases the model.
    """

    def __init__(self, request: Request, generation: Generation) -> None:
        self._request = request
        self.generation = generation
        self._first: ChatDelta | None = None

    async def open(self) -> None:
        """Wait for the first piece (after the load); raises what the engine raised."""
        try:
            async with cancel_on_disconnect(self._request.receive, self.generation.cancel):
                self._first = await self.generation.next()
        except BaseException:
            self.generation.abandon()
            raise

    async def whole(self) -> WholeReply:
        """The whole reply (for ``stream: false``); the client going away cancels it."""
        parts: list[str] = []
        calls: list[dict[str, Any]] = []
        stats: ChatStats | None = None
        try:
            async with cancel_on_disconnect(self._request.receive, self.generation.cancel):
                delta = await self.generation.next()
                while delta is not None:
                    parts.append(delta.text)
                    calls.extend(tool_calls_of(delta))
                    stats = delta.stats or stats
                    delta = await self.generation.next()
        finally:
            self.generation.abandon()
        assert stats is not None, "the engine ends every reply with its stats"
        return WholeReply("".join(parts), stats, calls)

    async def pieces(self) -> AsyncIterator[ChatDelta]:
        """The pieces after :meth:`open`: the first one, then the rest as they come."""
        try:
            delta = self._first
            while delta is not None:
                yield delta
                delta = await self.generation.next()
        finally:
            self.generation.abandon()
