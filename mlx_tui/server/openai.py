"""OpenAI-compatible shapes: the chat request read from JSON, the replies written as JSON.

:meth:`ChatRequest.parse` reads every field of OpenAI's chat request: what the engine honours
(sampling, penalties, ``stop``, ``logprobs``, ``tools`` and ``tool_choice``, ``role: "tool"``
messages and assistant ``tool_calls``), what it accepts and ignores because it changes nothing
here (``user``, ``metadata``, ``store``, ...), and what it refuses with a 400 that says so
because honouring it is not possible (``n`` > 1, ``response_format`` JSON, audio, ...); the
README's table lists each. A bad value is a 400 that names the field. :class:`Reply` writes
the completion and its stream chunks, with tool calls and log-probabilities in OpenAI's shape.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from ..core.cache import ModelCache, ModelView
from ..core.chat import ChatMessage, ChatStats, GenerationParams, Reply as EngineReply, ToolCall
from .bodies import flag, model_name, number, whole
from .errors import ApiError, bad_request

__all__ = ["DEFAULT_MAX_TOKENS", "MAX_STOPS", "MAX_TOP_LOGPROBS", "ChatRequest", "Reply",
           "BoundEngine", "model_object", "usage", "timings", "stop_strings", "sampling",
           "unsupported", "logprob_entry", "sse_event"]

DEFAULT_MAX_TOKENS = 512  # as mlx_lm.server; a request without a limit still ends
MAX_STOPS = 4  # as OpenAI
MAX_TOP_LOGPROBS = 20  # as OpenAI
MAX_TOOLS = 128  # as OpenAI
_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant",
          "tool": "tool"}

def unsupported(field: str, why: str) -> ApiError:
    """A 400 for a field this server cannot honour (``code: "unsupported"``)."""
    return ApiError(400, "invalid_request_error", f"{field}: {why}", code="unsupported",
                    param=field)


def _text_parts(where: str, content: Any, allow_none: bool = True) -> str:
    """A message's text: a string, or OpenAI's list of ``{"type": "text"}`` parts."""
    if content is None and allow_none:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) for p in content):
        if all(p.get("type") == "text" and isinstance(p.get("text"), str) for p in content):
            return "".join(p["text"] for p in content)
        raise unsupported(where, "only text parts are supported (no images, audio or files)")
    raise bad_request(f"{where} must be a string or a list of text parts")


def _tool_calls(where: str, raw: Any) -> tuple[dict[str, Any], ...]:
    """An assistant message's ``tool_calls``, checked, in the shape the core keeps."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise bad_request(f"{where} must be a list of tool calls")
    calls = []
    for n, call in enumerate(raw):
        here = f"{where}[{n}]"
        if not isinstance(call, dict):
            raise bad_request(f"{here} must be an object with id, type and function")
        if call.get("type", "function") != "function":
            raise unsupported(f"{here}.type", f"only function calls are supported, not {call.get('type')!r}")
        function = call.get("function")
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise bad_request(f"{here}.function.name must be a string")
        arguments = function.get("arguments", "{}")
        if isinstance(arguments, dict):  # sent as an object (Ollama's way): keep it as JSON text
            arguments = json.dumps(arguments, ensure_ascii=False)
        if not isinstance(arguments, str):
            raise bad_request(f"{here}.function.arguments must be a string of JSON")
        call_id = call.get("id")
        if call_id is not None and not isinstance(call_id, str):
            raise bad_request(f"{here}.id must be a string")
        calls.append({"id": call_id or "", "type": "function",
                      "function": {"name": function["name"], "arguments": arguments}})
    return tuple(calls)


def _message(i: int, item: Any) -> ChatMessage:
    where = f"messages[{i}]"
    if not isinstance(item, dict):
        raise bad_request(f"{where} must be an object with role and content")
    raw_role = item.get("role")
    if raw_role == "function":
        raise unsupported(f"{where}.role", 'the "function" role is OpenAI\'s deprecated form; '
                          'send role "tool" with tool_call_id')
    role = _ROLES.get(raw_role) if isinstance(raw_role, str) else None
    if role is None:
        raise bad_request(f"{where}.role must be one of {', '.join(_ROLES)}, got {raw_role!r}")
    content = _text_parts(f"{where}.content", item.get("content"))
    if role == "assistant":
        calls = _tool_calls(f"{where}.tool_calls", item.get("tool_calls"))
        if item.get("function_call") is not None:
            raise unsupported(f"{where}.function_call", "deprecated; send tool_calls")
        return ChatMessage(role, content, tool_calls=calls)
    if role == "tool":
        call_id = item.get("tool_call_id")
        if not isinstance(call_id, str) or not call_id:
            raise bad_request(f"{where}.tool_call_id must be the id of the call this answers")
        name = item.get("name")
        if name is not None and not isinstance(name, str):
            raise bad_request(f"{where}.name must be a string")
        return ChatMessage(role, content, tool_call_id=call_id, name=name)
    return ChatMessage(role, content)


def _messages(raw: Any) -> tuple[ChatMessage, ...]:
    if not isinstance(raw, list) or not raw:
        raise bad_request("messages must be a non-empty list of {role, content} objects")
    return tuple(_message(i, item) for i, item in enumerate(raw))


def _tools(raw: Any) -> tuple[dict[str, Any], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise bad_request("tools must be a list of {type: function, function: {...}} objects")
    if len(raw) > MAX_TOOLS:
        raise bad_request(f"tools has {len(raw)} entries; at most {MAX_TOOLS} are accepted")
    tools = []
    for n, tool in enumerate(raw):
        where = f"tools[{n}]"
        if not isinstance(tool, dict):
            raise bad_request(f"{where} must be an object")
        if tool.get("type") != "function":
            raise unsupported(f"{where}.type", f"only function tools are supported, not {tool.get('type')!r}")
        function = tool.get("function")
        if not isinstance(function, dict) or not isinstance(function.get("name"), str) \
                or not function["name"]:
            raise bad_request(f"{where}.function.name must be a non-empty string")
        if "parameters" in function and not isinstance(function["parameters"], dict):
            raise bad_request(f"{where}.function.parameters must be a JSON Schema object")
        if "description" in function and not isinstance(function["description"], str):
            raise bad_request(f"{where}.function.description must be a string")
        tools.append({"type": "function", "function": dict(function)})
    return tuple(tools)


def _tool_choice(raw: Any, tools: tuple[dict[str, Any], ...]) -> tuple[str, tuple[dict[str, Any], ...]]:
    """``(tool_choice for the engine, tools for the template)``: a named function narrows
    the tools to that one and requires a call."""
    if raw is None:
        return "auto", tools
    if raw in ("auto", "none", "required"):
        if raw == "required" and not tools:
            raise bad_request('tool_choice "required" needs tools')
        return raw, tools
    if isinstance(raw, dict) and raw.get("type") == "function":
        function = raw.get("function")
        name = function.get("name") if isinstance(function, dict) else None
        if not isinstance(name, str):
            raise bad_request("tool_choice.function.name must be the name of one of the tools")
        chosen = tuple(t for t in tools if t["function"]["name"] == name)
        if not chosen:
            raise bad_request(f"tool_choice names {name!r}, which is not among the tools")
        return "required", chosen
    if isinstance(raw, dict) and raw.get("type") in ("allowed_tools", "custom"):
        raise unsupported("tool_choice", f"{raw.get('type')!r} is not supported; send "
                          '"auto", "none", "required" or {"type": "function", ...}')
    raise bad_request('tool_choice must be "auto", "none", "required" or '
                      '{"type": "function", "function": {"name": ...}}')


def stop_strings(body: Mapping[str, Any]) -> tuple[str, ...]:
    """``stop``: a string or a list of up to :data:`MAX_STOPS` non-empty strings."""
    raw = body.get("stop")
    if raw is None:
        return ()
    stops = [raw] if isinstance(raw, str) else raw
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise bad_request("stop must be a string or a list of strings")
    if len(stops) > MAX_STOPS:
        raise bad_request(f"stop has {len(stops)} strings; at most {MAX_STOPS} are accepted")
    if any(not s for s in stops):
        raise bad_request("stop strings must not be empty")
    return tuple(stops)


def sampling(body: Mapping[str, Any], *, max_tokens: int, logprobs: bool,
             top_logprobs: int) -> GenerationParams:
    """The sampling fields both endpoints share (OpenAI's and mlx-lm's extensions)."""
    for key in ("logit_bias",):
        if body.get(key):
            raise unsupported(key, "not supported by this server (send it empty or leave it out)")
    defaults = GenerationParams()
    return GenerationParams(
        temperature=number(body, "temperature", defaults.temperature, 0, 2),
        top_p=number(body, "top_p", defaults.top_p, 0, 1),
        max_tokens=max_tokens,
        seed=whole(body, "seed", 0),
        stop=stop_strings(body),
        top_k=whole(body, "top_k", 0) or 0,
        min_p=number(body, "min_p", defaults.min_p, 0, 1),
        repetition_penalty=number(body, "repetition_penalty", 0, 0, 10) or None,
        presence_penalty=number(body, "presence_penalty", 0, -2, 2),
        frequency_penalty=number(body, "frequency_penalty", 0, -2, 2),
        logprobs=logprobs,
        top_logprobs=top_logprobs,
    )


def _refuse_unsupported(body: Mapping[str, Any]) -> None:
    n = whole(body, "n", 1)
    if n not in (None, 1):
        raise unsupported("n", f"one reply per request (n = 1); got {n}: send {n} requests, "
                          "which the engine batches")
    fmt = body.get("response_format")
    if fmt is not None:
        kind = fmt.get("type") if isinstance(fmt, dict) else None
        if kind not in ("text", "json_object", "json_schema"):
            raise bad_request('response_format must be {"type": "text"}, "json_object" or "json_schema"')
        if kind != "text":
            raise unsupported("response_format", f"{kind} is not supported: replies are not "
                              "constrained to JSON here; ask for JSON in the prompt instead")
    modalities = body.get("modalities")
    if modalities is not None and modalities != ["text"]:
        raise unsupported("modalities", 'only ["text"] is supported')
    for key, why in (("audio", "audio output is not supported"),
                     ("prediction", "predicted outputs are not supported"),
                     ("web_search_options", "web search is not supported"),
                     ("functions", "deprecated; send tools"),
                     ("function_call", "deprecated; send tool_choice")):
        if body.get(key) is not None:
            raise unsupported(key, why)


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
    tool_choice: str = "auto"  # "auto", "none", "required" (a named function: tools narrowed)
    parallel_tool_calls: bool = True

    @classmethod
    def parse(cls, body: Mapping[str, Any]) -> "ChatRequest":
        model = model_name(body)
        _refuse_unsupported(body)
        options = body.get("stream_options")
        options = {} if options is None else options
        if not isinstance(options, dict):
            raise bad_request("stream_options must be an object")
        max_tokens = whole(body, "max_completion_tokens", 1) or whole(body, "max_tokens", 1)
        logprobs = flag(body, "logprobs")
        top = whole(body, "top_logprobs", 0, MAX_TOP_LOGPROBS)
        if top is not None and not logprobs:
            raise bad_request("top_logprobs needs logprobs: true")
        tool_choice, tools = _tool_choice(body.get("tool_choice"), _tools(body.get("tools")))
        parallel = body.get("parallel_tool_calls")
        return cls(
            model=model,
            messages=_messages(body.get("messages")),
            params=sampling(body, max_tokens=max_tokens or DEFAULT_MAX_TOKENS, logprobs=logprobs,
                            top_logprobs=top or 0),
            stream=flag(body, "stream"),
            include_usage=flag(options, "include_usage"),
            tools=tools,
            tool_choice=tool_choice,
            parallel_tool_calls=True if parallel is None else flag(body, "parallel_tool_calls"),
        )


class BoundEngine:
    """The chat engine as :class:`~.streaming.Generation` calls it (``cache`` and ``start``),
    with what one request adds that Generation does not pass on: ``tool_choice``, or a prompt
    of token ids (``/v1/completions``)."""

    def __init__(self, cache: ModelCache, start: Callable[..., EngineReply]) -> None:
        self.cache = cache
        self.start = start


def sse_event(data: dict[str, Any]) -> str:
    """One server-sent event carrying ``data`` as compact JSON."""
    return f"data: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n"


def usage(stats: ChatStats) -> dict[str, Any]:
    return {
        "prompt_tokens": stats.prompt_tokens,
        "completion_tokens": stats.tokens,
        "total_tokens": stats.prompt_tokens + stats.tokens,
        "prompt_tokens_details": {"cached_tokens": stats.cached_tokens},
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
        "cached_tokens": stats.cached_tokens,
    }


def logprob_entry(token: str, logprob: float) -> dict[str, Any]:
    """One token in OpenAI's chat shape (``bytes``: the UTF-8 of its text as decoded alone;
    a token holding part of a character shows U+FFFD there)."""
    return {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8"))}


def _chat_logprobs(items: Sequence[Any]) -> dict[str, Any]:
    return {"content": [{**logprob_entry(lp.text, lp.logprob),
                         "top_logprobs": [logprob_entry(text, value) for _, text, value in lp.top]}
                        for lp in items],
            "refusal": None}


def _call(call: ToolCall, index: int | None = None) -> dict[str, Any]:
    shaped: dict[str, Any] = {"id": call.id, "type": "function",
                              "function": {"name": call.name, "arguments": call.arguments}}
    return shaped if index is None else {"index": index, **shaped}


class Reply:
    """The ids and shapes of one reply, as one JSON completion or a run of chunks."""

    def __init__(self, model: str, logprobs: bool = False) -> None:
        self.id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())
        self.model = model
        self.logprobs = logprobs

    def _head(self, obj: str) -> dict[str, Any]:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model}

    def completion(self, text: str, stats: ChatStats, calls: Sequence[ToolCall] = (),
                   logprobs: Sequence[Any] = ()) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if calls:
            message["content"] = text if text.strip() else None
            message["tool_calls"] = [_call(c) for c in calls]
        return {
            **self._head("chat.completion"),
            "choices": [{
                "index": 0,
                "message": message,
                "logprobs": _chat_logprobs(logprobs) if self.logprobs else None,
                "finish_reason": stats.finish_reason,
            }],
            "usage": usage(stats),
            "timings": timings(stats),
        }

    def chunk(self, delta: dict[str, Any], finish_reason: str | None = None,
              logprobs: Sequence[Any] = ()) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish_reason}
        if self.logprobs:
            choice["logprobs"] = _chat_logprobs(logprobs) if logprobs else None
        return {**self._head("chat.completion.chunk"), "choices": [choice]}

    def tool_calls_chunk(self, calls: Sequence[ToolCall]) -> dict[str, Any]:
        """Every call at once (they are parsed when the reply ends), each with its index."""
        return self.chunk({"tool_calls": [_call(c, i) for i, c in enumerate(calls)]})

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
