"""Anthropic's Messages API on the same cache and port: :func:`anthropic_routes`.

``POST /v1/messages`` answers with one ``message`` object, or with ``stream: true`` with
Anthropic's server-sent events (``message_start``, ``content_block_start``, ``ping``,
``content_block_delta``, ``content_block_stop``, ``message_delta`` with the stop reason and
usage, ``message_stop``); ``POST /v1/messages/count_tokens`` counts a body's prompt tokens with
the model's own tokenizer and template. Errors are ``{"type": "error", "error": {"type",
"message"}}``; a 5xx that a retry cannot fix says ``x-should-retry: false`` (which Anthropic's
clients obey), so a model that cannot load is not loaded three times.

Usage follows Anthropic's sums: ``input_tokens`` + ``cache_read_input_tokens`` is the whole
prompt, the part read from the prompt cache in the second (0 until the engine reports it).
"""

from __future__ import annotations

import json
import uuid
from functools import partial
from typing import Any, AsyncIterator

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ..core.chat import ChatStats
from .anthropic_requests import parse_messages_request
from .bodies import json_body, parsed
from .errors import ApiError
from .metrics import record_error, record_request
from .replies import (
    ReplyPieces,
    allow_paths,
    cached_tokens_of,
    resolve_model,
    start_reply,
    tool_call_parts,
    tool_calls_of,
)
from .route_errors import answering_errors, request_failure
from .tokenizers import folder_tokenizers

__all__ = ["AnthropicApi", "anthropic_routes", "anthropic_error", "MessageShape"]

ENDPOINT = "/v1/messages"

_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
                529: "overloaded_error"}


def anthropic_error(error: ApiError) -> tuple[int, dict[str, Any], dict[str, str]]:
    """Status, body and headers of ``error`` in Anthropic's shape."""
    status, headers = error.status, dict(error.headers or {})
    if error.type == "model_busy":
        status = 529  # Anthropic's "overloaded": clients back off and retry
    elif status >= 500:
        headers["x-should-retry"] = "false"  # a failed load or a bug: the same again fails again
    kind = _ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return status, {"type": "error", "error": {"type": kind, "message": error.message}}, headers


def _anthropic_response(error: ApiError) -> JSONResponse:
    status, body, headers = anthropic_error(error)
    return JSONResponse(body, status_code=status, headers=headers)


_anthropic_errors = answering_errors(ENDPOINT, _anthropic_response)


def _stop_reason(stats: ChatStats, called_tools: bool) -> tuple[str, str | None]:
    """Anthropic's ``stop_reason`` and ``stop_sequence`` of a finished reply."""
    if called_tools or stats.finish_reason == "tool_calls":
        return "tool_use", None
    if stats.finish_reason == "length":
        return "max_tokens", None
    sequence = getattr(stats, "stop_sequence", None)  # once the engine says which one matched
    return ("stop_sequence", sequence) if sequence else ("end_turn", None)


def _usage(stats: ChatStats) -> dict[str, int]:
    cached = cached_tokens_of(stats)
    return {"input_tokens": max(0, stats.prompt_tokens - cached), "output_tokens": stats.tokens,
            "cache_creation_input_tokens": 0, "cache_read_input_tokens": cached}


def _tool_use_block(call: dict[str, Any]) -> dict[str, Any]:
    call_id, name, arguments = tool_call_parts(call)
    return {"type": "tool_use", "id": call_id, "name": name, "input": arguments}


def _sse(event: str, data: dict[str, Any]) -> str:
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return f"event: {event}\ndata: {text}\n\n"


class MessageShape:
    """The id and the shapes of one reply: a whole ``message``, or its run of events."""

    def __init__(self, model: str) -> None:
        self.id = f"msg_{uuid.uuid4().hex[:24]}"
        self.model = model
        self.stats: ChatStats | None = None  # the reply's figures, once :meth:`events` ended

    def message(self, content: list[dict[str, Any]], stats: ChatStats | None,
                called_tools: bool = False) -> dict[str, Any]:
        reason, sequence = _stop_reason(stats, called_tools) if stats else (None, None)
        usage = _usage(stats) if stats else {"input_tokens": 0, "output_tokens": 0}
        return {"id": self.id, "type": "message", "role": "assistant", "model": self.model,
                "content": content, "stop_reason": reason, "stop_sequence": sequence,
                "usage": usage}

    async def events(self, pieces: ReplyPieces) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """``(event, data)`` pairs for the reply in ``pieces``: a text block opened at the
        first text, a tool_use block (with its whole input as one JSON delta) per tool call."""
        yield "message_start", {"type": "message_start", "message": self.message([], None)}
        yield "ping", {"type": "ping"}
        index, text_open, called, stats = 0, False, False, None
        async for delta in pieces.pieces():
            if delta.text:
                if not text_open:
                    yield "content_block_start", {"type": "content_block_start", "index": index,
                                                  "content_block": {"type": "text", "text": ""}}
                    text_open = True
                yield "content_block_delta", {"type": "content_block_delta", "index": index,
                                              "delta": {"type": "text_delta", "text": delta.text}}
            for call in tool_calls_of(delta):
                if text_open:
                    yield "content_block_stop", {"type": "content_block_stop", "index": index}
                    index, text_open = index + 1, False
                block = _tool_use_block(call)
                yield "content_block_start", {"type": "content_block_start", "index": index,
                                              "content_block": {**block, "input": {}}}
                yield "content_block_delta", {"type": "content_block_delta", "index": index,
                                              "delta": {"type": "input_json_delta",
                                                        "partial_json": json.dumps(block["input"])}}
                yield "content_block_stop", {"type": "content_block_stop", "index": index}
                index, called = index + 1, True
            stats = delta.stats or stats
        if text_open:
            yield "content_block_stop", {"type": "content_block_stop", "index": index}
        assert stats is not None, "the engine ends every reply with its stats"
        reason, sequence = _stop_reason(stats, called)
        yield "message_delta", {"type": "message_delta",
                                "delta": {"stop_reason": reason, "stop_sequence": sequence},
                                "usage": _usage(stats)}
        yield "message_stop", {"type": "message_stop"}
        self.stats = stats


class AnthropicApi:
    """The Messages routes of one app."""

    def routes(self) -> list[Route]:
        return [
            Route("/v1/messages", self.messages, methods=["POST"]),
            Route("/v1/messages/count_tokens", self.count_tokens, methods=["POST"]),
        ]

    @_anthropic_errors
    async def messages(self, request: Request) -> Response:
        req = parsed(parse_messages_request, await json_body(request))
        cache = request.app.state.runtime.cache
        name = await run_in_threadpool(resolve_model, cache, req.model, allow_paths(request))
        shape = MessageShape(req.model)
        generation = start_reply(request, name, req.messages, req.params, req.tools)
        pieces = ReplyPieces(request, generation)
        if not req.stream:
            whole = await pieces.whole()
            record_request(request, ENDPOINT, whole.stats)
            content = ([{"type": "text", "text": whole.text}] if whole.text else []) + \
                [_tool_use_block(call) for call in whole.tool_calls]
            return JSONResponse(shape.message(content, whole.stats, bool(whole.tool_calls)))
        await pieces.open()  # errors up to the first piece (the load) answer with their status
        return StreamingResponse(self._stream(request, shape, pieces),
                                 media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def _stream(self, request: Request, shape: MessageShape,
                      pieces: ReplyPieces) -> AsyncIterator[str]:
        try:
            async for event, data in shape.events(pieces):
                yield _sse(event, data)
            assert shape.stats is not None
            record_request(request, ENDPOINT, shape.stats)
        except Exception as exc:  # noqa: BLE001 - the status line is sent; report in the stream
            error = request_failure(exc, request.app.state.runtime.cache)
            record_error(request, ENDPOINT, error.status)
            yield _sse("error", anthropic_error(error)[1])

    @_anthropic_errors
    async def count_tokens(self, request: Request) -> Response:
        req = parsed(partial(parse_messages_request, counting=True), await json_body(request))
        cache = request.app.state.runtime.cache
        name = await run_in_threadpool(resolve_model, cache, req.model, allow_paths(request))
        path = (await run_in_threadpool(cache.get, name)).path
        if not path:
            raise ApiError(400, "invalid_request_error",
                           f"{req.model} has no local folder to read its tokenizer from")
        tokens = await run_in_threadpool(folder_tokenizers.count, name, path, req.messages,
                                         req.tools)
        return JSONResponse({"input_tokens": tokens})


def anthropic_routes() -> list[Route]:
    """The Messages API's routes, for ``create_app``'s route list."""
    return AnthropicApi().routes()
