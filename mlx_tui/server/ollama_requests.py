"""Ollama request bodies read into the core's shapes: messages, :class:`GenerationParams`,
``keep_alive``. Each bad or unsupported value is a 400 (an :class:`ApiError`) that names it.

``options`` map onto :class:`GenerationParams` (temperature, top_p, top_k, min_p, seed,
num_predict, stop, repeat_penalty, presence_penalty, frequency_penalty). Options about how
Ollama itself loads and runs a model (``num_ctx``, ``num_gpu``, ``num_thread``, ...) mean
nothing to MLX and are ignored, as Ollama ignores options it does not know; sampling options
mlx-tui cannot honour (``mirostat``, ``tfs_z``, ``typical_p``, ``repeat_last_n``) are refused
when set, never dropped.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Literal, Mapping

from ..core.chat import ChatMessage, GenerationParams
from .bodies import flag, model_name, number, whole
from .errors import bad_request

__all__ = ["KeepAlive", "OllamaRequest", "REFUSED_OPTIONS", "parse_keep_alive", "parse_chat",
           "parse_generate", "params_from_options", "requested_model"]

REFUSED_OPTIONS = {  # option: its neutral value (sent as that, it changes nothing)
    "mirostat": 0, "tfs_z": 1.0, "typical_p": 1.0, "repeat_last_n": None,
}
"""Sampling options mlx-tui cannot honour: refused unless they hold their neutral value."""

_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"^([+-])?((?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|µs|ms|s|m|h))+$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")


@dataclass(frozen=True)
class KeepAlive:
    """What ``keep_alive`` asks of the cache: ``unload`` after this reply, ``pin`` (keep it
    loaded), or ``idle`` (unload after ``seconds`` without use)."""

    action: Literal["unload", "pin", "idle"]
    seconds: float = 0.0


def parse_keep_alive(value: Any) -> KeepAlive | None:
    """Ollama's ``keep_alive``: seconds as a number, or a Go duration (``"5m"``, ``"1h30m"``);
    0 unloads after the reply, a negative value keeps the model loaded; None leaves the
    cache's rules as they are."""
    if value is None or value == "":
        return None
    seconds: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"[+-]?\d+(\.\d*)?", text):
            seconds = float(text)
        elif _DURATION.match(text):
            magnitude = sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(text))
            seconds = -magnitude if text.startswith("-") else magnitude
    if seconds is None:
        raise bad_request(
            f'keep_alive must be a duration like "5m" or "1h", a number of seconds, 0 to unload '
            f'the model after the reply or -1 to keep it loaded; got {value!r}')
    if seconds == 0:
        return KeepAlive("unload")
    if seconds < 0:
        return KeepAlive("pin")
    return KeepAlive("idle", seconds)


def _stop(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,) if value else ()
    if isinstance(value, list) and all(isinstance(s, str) for s in value):
        return tuple(s for s in value if s)
    raise bad_request(f"options.stop must be a string or a list of strings, got {value!r}")


def params_from_options(raw: Any, max_tokens: int) -> GenerationParams:
    """``options`` as :class:`GenerationParams`; ``num_predict`` -1, -2 or absent means the
    server's cap (``max_tokens``, settings.toml ``[engine].max_tokens``)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise bad_request("options must be an object")
    for key, neutral in REFUSED_OPTIONS.items():
        if raw.get(key) is not None and raw[key] != neutral:
            raise bad_request(f"options.{key} is not supported by mlx-tui (mlx-lm's samplers); "
                              "leave it out")
    opts = {f"options.{k}": v for k, v in raw.items()}  # so each message names options.<key>
    defaults = GenerationParams()
    predict = opts.get("options.num_predict")
    if predict in (None, -1, -2):
        limit = max_tokens
    else:
        limit = whole(opts, "options.num_predict", 1) or max_tokens
    seed = opts.get("options.seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise bad_request(f"options.seed must be a whole number, got {seed!r}")
    repeat = opts.get("options.repeat_penalty")
    return GenerationParams(
        temperature=number(opts, "options.temperature", defaults.temperature, 0, 2),
        top_p=number(opts, "options.top_p", defaults.top_p, 0, 1),
        top_k=whole(opts, "options.top_k", 0) or 0,
        min_p=number(opts, "options.min_p", defaults.min_p, 0, 1),
        max_tokens=limit,
        seed=seed if seed is not None and seed >= 0 else None,
        stop=_stop(raw.get("stop")),
        repetition_penalty=(None if repeat is None
                            else number(opts, "options.repeat_penalty", 1.0, 0, 10)),
        presence_penalty=number(opts, "options.presence_penalty", 0.0, -2, 2),
        frequency_penalty=number(opts, "options.frequency_penalty", 0.0, -2, 2),
    )


def _tool_calls(index: int, raw: Any) -> tuple[dict[str, Any], ...]:
    """Ollama's ``[{"function": {"name", "arguments": {...}}}]`` in the core's OpenAI shape."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise bad_request(f"messages[{index}].tool_calls must be a list")
    calls = []
    for n, call in enumerate(raw):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise bad_request(f"messages[{index}].tool_calls[{n}] needs function.name")
        arguments = function.get("arguments", {})
        calls.append({
            "id": call.get("id") or f"call_{index}_{n}",
            "type": "function",
            "function": {"name": function["name"],
                         "arguments": (arguments if isinstance(arguments, str)
                                       else json.dumps(arguments))},
        })
    return tuple(calls)


_ROLES = ("system", "user", "assistant", "tool")


def _messages(raw: Any) -> tuple[ChatMessage, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise bad_request("messages must be a list of {role, content} objects")
    messages = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise bad_request(f"messages[{i}] must be an object with role and content")
        role, content = item.get("role"), item.get("content")
        if role not in _ROLES:
            raise bad_request(f"messages[{i}].role must be one of {', '.join(_ROLES)}, "
                              f"got {role!r}")
        if content is not None and not isinstance(content, str):
            raise bad_request(f"messages[{i}].content must be a string")
        if item.get("images"):
            raise bad_request(f"messages[{i}].images: mlx-tui serves text models only")
        messages.append(ChatMessage(
            role, content or "", tool_calls=_tool_calls(i, item.get("tool_calls")),
            name=item.get("tool_name") if role == "tool" else None,
        ))
    return tuple(messages)


def _tools(raw: Any) -> list[dict[str, Any]] | None:
    if raw in (None, []):
        return None
    if not isinstance(raw, list) or not all(isinstance(t, dict) for t in raw):
        raise bad_request("tools must be a list of {type: function, function: {...}} objects")
    return raw


def _refuse_unsupported(body: Mapping[str, Any]) -> None:
    if body.get("format") not in (None, ""):
        raise bad_request("format (JSON output) is not supported by mlx-tui; leave it out")
    if body.get("think") not in (None, False):
        raise bad_request("think is not supported by mlx-tui (no model here separates its "
                          "thinking); leave it out or send false")
    if body.get("images"):
        raise bad_request("images: mlx-tui serves text models only")


def requested_model(body: Mapping[str, Any]) -> str:
    """``model`` (or the older ``name``) of an Ollama body."""
    return model_name({"model": body.get("model") or body.get("name")})


@dataclass(frozen=True)
class OllamaRequest:
    """One ``/api/chat`` or ``/api/generate`` body, validated. No messages (no prompt) asks
    only to load the model, or with ``keep_alive`` 0 to unload it, as Ollama does."""

    model: str
    messages: tuple[ChatMessage, ...]
    params: GenerationParams
    stream: bool = True
    keep_alive: KeepAlive | None = None
    tools: list[dict[str, Any]] | None = None


def parse_chat(body: Mapping[str, Any], max_tokens: int) -> OllamaRequest:
    """A ``POST /api/chat`` body (``stream`` defaults to true, as Ollama's)."""
    _refuse_unsupported(body)
    return OllamaRequest(
        model=requested_model(body),
        messages=_messages(body.get("messages")),
        params=params_from_options(body.get("options"), max_tokens),
        stream=flag(body, "stream", True),
        keep_alive=parse_keep_alive(body.get("keep_alive")),
        tools=_tools(body.get("tools")),
    )


def parse_generate(body: Mapping[str, Any], max_tokens: int) -> OllamaRequest:
    """A ``POST /api/generate`` body: ``system`` and ``prompt`` become a two-message chat
    through the model's template (``raw``, ``template``, ``suffix`` and ``context`` are refused)."""
    _refuse_unsupported(body)
    if body.get("raw"):
        raise bad_request("raw is not supported: mlx-tui always applies the model's chat template")
    for key, why in (("template", "the model's own chat template is used"),
                     ("suffix", "fill-in-the-middle is not supported here"),
                     ("context", "send the conversation to /api/chat instead")):
        if body.get(key):
            raise bad_request(f"{key} is not supported: {why}")
    prompt, system = body.get("prompt"), body.get("system")
    for key, value in (("prompt", prompt), ("system", system)):
        if value is not None and not isinstance(value, str):
            raise bad_request(f"{key} must be a string")
    messages = []
    if prompt:  # no prompt: only load (or unload) the model
        if system:
            messages.append(ChatMessage("system", system))
        messages.append(ChatMessage("user", prompt))
    return OllamaRequest(
        model=requested_model(body),
        messages=tuple(messages),
        params=params_from_options(body.get("options"), max_tokens),
        stream=flag(body, "stream", True),
        keep_alive=parse_keep_alive(body.get("keep_alive")),
    )
