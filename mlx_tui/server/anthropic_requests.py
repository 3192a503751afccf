"""Anthropic Messages bodies read into the core's shapes; each bad or unsupported value is a
400 (an :class:`ApiError`) that names it, in the order Anthropic's API checks them.

Content blocks map onto :class:`ChatMessage`: ``text`` blocks join into one message;
an assistant's ``tool_use`` blocks become its ``tool_calls`` (the OpenAI shape the core uses,
arguments as JSON text); a user's ``tool_result`` blocks become ``role="tool"`` messages with
their ``tool_call_id``, ahead of the user's text. ``thinking`` blocks in the history are left
out (mlx-tui never writes them). Images, documents and server tools are refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping

from ..core.chat import ChatMessage, GenerationParams
from .bodies import flag, model_name, number, whole
from .errors import bad_request

__all__ = ["MessagesRequest", "parse_messages_request"]

_SKIPPED_BLOCKS = frozenset({"thinking", "redacted_thinking"})


def _text(where: str, content: Any) -> str:
    """A string, or a list of ``text`` blocks (as ``system`` and ``tool_result`` allow)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for j, block in enumerate(content):
            if not isinstance(block, dict) or block.get("type") != "text" \
                    or not isinstance(block.get("text"), str):
                kind = block.get("type") if isinstance(block, dict) else type(block).__name__
                raise bad_request(f"{where}[{j}]: only text blocks are supported here, "
                                  f"got {kind!r}")
            parts.append(block["text"])
        return "".join(parts)
    raise bad_request(f"{where} must be a string or a list of text blocks")


def _tool_use(where: str, block: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(block.get("id"), str) or not isinstance(block.get("name"), str):
        raise bad_request(f"{where}: a tool_use block needs id and name")
    arguments = block.get("input", {})
    if not isinstance(arguments, dict):
        raise bad_request(f"{where}.input must be an object")
    return {"id": block["id"], "type": "function",
            "function": {"name": block["name"], "arguments": json.dumps(arguments)}}


def _tool_result(where: str, block: dict[str, Any]) -> ChatMessage:
    if not isinstance(block.get("tool_use_id"), str):
        raise bad_request(f"{where}: a tool_result block needs tool_use_id")
    content = block.get("content", "")
    text = _text(f"{where}.content", content) if content else ""
    if block.get("is_error"):
        text = f"Error: {text}"
    return ChatMessage("tool", text, tool_call_id=block["tool_use_id"])


def _turn(i: int, role: str, content: Any) -> list[ChatMessage]:
    """One Anthropic message as the core's messages (a user turn may hold tool results)."""
    where = f"messages[{i}].content"
    if isinstance(content, str):
        return [ChatMessage(role, content)]
    if not isinstance(content, list):
        raise bad_request(f"{where} must be a string or a list of content blocks")
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    results: list[ChatMessage] = []
    for j, block in enumerate(content):
        kind = block.get("type") if isinstance(block, dict) else None
        at = f"{where}[{j}]"
        if kind == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif kind == "tool_use" and role == "assistant":
            calls.append(_tool_use(at, block))
        elif kind == "tool_result" and role == "user":
            results.append(_tool_result(at, block))
        elif kind in _SKIPPED_BLOCKS and role == "assistant":
            continue
        elif kind in ("image", "document", "search_result"):
            raise bad_request(f"{at}: {kind} blocks are not supported; mlx-tui serves text models")
        else:
            raise bad_request(f"{at}: a {kind!r} block is not supported in a {role} message")
    text = "".join(texts)
    if role == "assistant":
        return [ChatMessage("assistant", text, tool_calls=tuple(calls))]
    return results + ([ChatMessage("user", text)] if text or not results else [])


def _messages(raw: Any, system: Any) -> tuple[ChatMessage, ...]:
    if not isinstance(raw, list) or not raw:
        raise bad_request("messages must be a non-empty list of {role, content} objects")
    out: list[ChatMessage] = []
    if system:
        out.append(ChatMessage("system", _text("system", system)))
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise bad_request(f"messages[{i}] must be an object with role and content")
        role = item.get("role")
        if role not in ("user", "assistant"):
            raise bad_request(f"messages[{i}].role must be user or assistant, got {role!r}")
        out.extend(_turn(i, role, item.get("content")))
    if raw[-1].get("role") == "assistant":
        raise bad_request("the last message is the assistant's: continuing a prefilled answer "
                          "is not supported; end with a user message")
    return tuple(out)


def _tools(raw: Any, choice: Any) -> list[dict[str, Any]] | None:
    """Anthropic's custom tools in the OpenAI function shape chat templates take."""
    if choice is not None:
        kind = choice.get("type") if isinstance(choice, dict) else None
        if kind not in ("auto", "none"):
            raise bad_request(f"tool_choice {kind!r} (forcing a tool) is not supported; "
                              "use auto or none")
        if kind == "none":
            return None
    if raw in (None, []):
        return None
    if not isinstance(raw, list):
        raise bad_request("tools must be a list of {name, description, input_schema} objects")
    tools = []
    for i, tool in enumerate(raw):
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
            raise bad_request(f"tools[{i}] needs a name")
        if tool.get("type") not in (None, "custom"):
            raise bad_request(f"tools[{i}]: server tools ({tool['type']}) are not supported; "
                              "only custom tools with an input_schema")
        schema = tool.get("input_schema", {"type": "object", "properties": {}})
        if not isinstance(schema, dict):
            raise bad_request(f"tools[{i}].input_schema must be an object")
        tools.append({"type": "function", "function": {
            "name": tool["name"], "description": tool.get("description", ""),
            "parameters": schema}})
    return tools


def _stop_sequences(raw: Any) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(s, str) and s for s in raw):
        raise bad_request("stop_sequences must be a list of non-empty strings")
    return tuple(raw)


@dataclass(frozen=True)
class MessagesRequest:
    """One ``POST /v1/messages`` (or ``count_tokens``) body, validated."""

    model: str
    messages: tuple[ChatMessage, ...]
    params: GenerationParams
    stream: bool = False
    tools: list[dict[str, Any]] | None = None


def parse_messages_request(body: Mapping[str, Any], counting: bool = False) -> MessagesRequest:
    """Read a Messages body; ``counting`` for ``count_tokens``, which has no ``max_tokens``."""
    model = model_name(body)
    max_tokens = whole(body, "max_tokens", 1)
    if max_tokens is None and not counting:
        raise bad_request("max_tokens is required: the most tokens the reply may have")
    thinking = body.get("thinking")
    disabled = isinstance(thinking, dict) and thinking.get("type") == "disabled"
    if thinking is not None and not disabled:
        raise bad_request("thinking is not supported by mlx-tui; leave it out")
    defaults = GenerationParams()
    return MessagesRequest(
        model=model,
        messages=_messages(body.get("messages"), body.get("system")),
        params=GenerationParams(
            temperature=number(body, "temperature", defaults.temperature, 0, 1),
            top_p=number(body, "top_p", defaults.top_p, 0, 1),
            top_k=whole(body, "top_k", 0) or 0,
            max_tokens=max_tokens or defaults.max_tokens,
            stop=_stop_sequences(body.get("stop_sequences")),
        ),
        stream=flag(body, "stream"),
        tools=_tools(body.get("tools"), body.get("tool_choice")),
    )
