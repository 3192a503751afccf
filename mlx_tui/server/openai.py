"""OpenAI-compatible shapes: the chat request read from JSON, the replies written as JSON.

Only what the chat engine can honour is read (``model``, ``messages``, ``stream``,
``stream_options.include_usage``, ``temperature``, ``top_p``, ``max_tokens`` /
``max_completion_tokens``, ``seed``, ``n`` = 1); other fields OpenAI clients send are ignored.
A bad value is a 400 that names the field.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any, Mapping

from ..core.cache import ModelView
from ..core.chat import ChatMessage, ChatStats, GenerationParams
from .bodies import flag, model_name, number, whole
from .errors import bad_request

__all__ = ["DEFAULT_MAX_TOKENS", "ChatRequest", "Reply", "model_object"]

DEFAULT_MAX_TOKENS = 512  # as mlx_lm.server; a request without a limit still ends
_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


def _content(index: int, content: Any) -> str:
    """A message's text: a string, or OpenAI's list of ``{"type": "text"}`` parts."""
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list) and all(isinstance(p, dict) for p in content):
        if all(p.get("type") == "text" and isinstance(p.get("text"), str) for p in content):
            return "".join(p["text"] for p in content)
        raise bad_request(f"messages[{index}].content: only text parts are supported")
    raise bad_request(f"messages[{index}].content must be a string or a list of text parts")


def _messages(raw: Any) -> tuple[ChatMessage, ...]:
    if not isinstance(raw, list) or not raw:
        raise bad_request("messages must be a non-empty list of {role, content} objects")
    messages = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise bad_request(f"messages[{i}] must be an object with role and content")
        role = _ROLES.get(item.get("role"))  # type: ignore[arg-type]
        if role is None:
            raise bad_request(f"messages[{i}].role must be one of {', '.join(_ROLES)}, "
                              f"got {item.get('role')!r}")
        messages.append(ChatMessage(role, _content(i, item.get("content"))))
    return tuple(messages)


@dataclass(frozen=True)
class ChatRequest:
    """One ``POST /v1/chat/completions`` body, validated."""

    model: str
    messages: tuple[ChatMessage, ...]
    params: GenerationParams
    stream: bool = False
    include_usage: bool = False
    tools: tuple[dict[str, Any], ...] = ()
    allow_paths: bool = False
    label: str = "api"

    @classmethod
    def parse(cls, body: Mapping[str, Any]) -> "ChatRequest":
        model = model_name(body)
        n = whole(body, "n", 1)
        if n not in (None, 1):
            raise bad_request(f"n must be 1 (one reply per request), got {n}")
        options = body.get("stream_options")
        options = {} if options is None else options
        if not isinstance(options, dict):
            raise bad_request("stream_options must be an object")
        max_tokens = whole(body, "max_completion_tokens", 1) or whole(body, "max_tokens", 1)
        return cls(
            model=model,
            messages=_messages(body.get("messages")),
            params=GenerationParams(
                temperature=number(body, "temperature", GenerationParams.temperature, 0, 2),
                top_p=number(body, "top_p", GenerationParams.top_p, 0, 1),
                max_tokens=max_tokens or DEFAULT_MAX_TOKENS,
                seed=whole(body, "seed", 0),
            ),
            stream=flag(body, "stream"),
            include_usage=flag(options, "include_usage"),
        )


def usage(stats: ChatStats) -> dict[str, int]:
    return {
        "prompt_tokens": stats.prompt_tokens,
        "completion_tokens": stats.tokens,
        "total_tokens": stats.prompt_tokens + stats.tokens,
    }


def timings(stats: ChatStats) -> dict[str, Any]:
    """The engine's figures of one reply (not an OpenAI field; clients ignore it)."""
    return {
        "tokens_per_second": round(stats.tokens_per_second, 2),
        "prompt_tokens_per_second": round(stats.prompt_tokens_per_second, 2),
        "time_to_first_token": round(stats.time_to_first_token, 4),
        "total_seconds": round(stats.total_seconds, 4),
        "loaded_first": stats.loaded_first,
        "load_seconds": round(stats.load_seconds, 3),
    }


class Reply:
    """The ids and shapes of one reply, as one JSON completion or a run of chunks."""

    def __init__(self, model: str) -> None:
        self.id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())
        self.model = model

    def _head(self, obj: str) -> dict[str, Any]:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model}

    def completion(self, text: str, stats: ChatStats) -> dict[str, Any]:
        return {
            **self._head("chat.completion"),
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": stats.finish_reason,
            }],
            "usage": usage(stats),
            "timings": timings(stats),
        }

    def chunk(self, delta: dict[str, str], finish_reason: str | None = None) -> dict[str, Any]:
        return {
            **self._head("chat.completion.chunk"),
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        }

    def final_chunk(self, stats: ChatStats) -> dict[str, Any]:
        return {**self.chunk({}, stats.finish_reason), "timings": timings(stats)}

    def usage_chunk(self, stats: ChatStats) -> dict[str, Any]:
        """OpenAI's ``stream_options.include_usage`` chunk: no choices, the whole usage."""
        return {**self._head("chat.completion.chunk"), "choices": [], "usage": usage(stats)}


def model_object(view: ModelView, created: int) -> dict[str, Any]:
    """One entry of ``GET /v1/models``: OpenAI's fields, then the cache's."""
    return {
        "id": view.name,
        "object": "model",
        "created": created,
        "owned_by": view.source,
        "loaded": view.is_loaded,
        "state": view.state.value,
        "pinned": view.pinned,
        "size_bytes": view.size_bytes,
        "use_count": view.use_count,
        "error": view.error,
    }
