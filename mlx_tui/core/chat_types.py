"""The values of a conversation: messages, sampling parameters, reply pieces and figures.

Plain frozen data shared by the chat engine, the generation workers, the app and the server.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["ChatMessage", "GenerationParams", "ChatStats", "ChatDelta", "ToolCall"]


@dataclass(frozen=True)
class ChatMessage:
    """One message of a conversation, as the model's chat template receives it.

    ``tool_calls`` (on an assistant message) are ``{"id", "type": "function", "function":
    {"name", "arguments"}}`` objects as OpenAI sends them; ``tool_call_id`` and ``name`` belong
    to a ``role="tool"`` message carrying a tool's result.
    """

    role: str  # "system", "user", "assistant" or "tool"
    content: str
    tool_calls: tuple[dict[str, Any], ...] = ()
    tool_call_id: str | None = None
    name: str | None = None


@dataclass(frozen=True)
class GenerationParams:
    """Sampling settings of one reply. Each request carries its own, also inside a batch."""

    temperature: float = 0.7
    top_p: float = 0.95
    max_tokens: int = 256
    seed: int | None = None
    stop: tuple[str, ...] = ()
    top_k: int = 0
    min_p: float = 0.0
    repetition_penalty: float | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logprobs: bool = False
    top_logprobs: int = 0


@dataclass(frozen=True)
class ToolCall:
    """A call the model asked for: ``arguments`` is the JSON text of the arguments."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class ChatStats:
    """Figures of one finished reply."""

    model: str
    prompt_tokens: int = 0
    tokens: int = 0
    tokens_per_second: float = 0.0
    prompt_tokens_per_second: float = 0.0
    time_to_first_token: float = 0.0
    total_seconds: float = 0.0
    loaded_first: bool = False
    load_seconds: float = 0.0
    finish_reason: str = "stop"  # "stop", "length", "cancelled", "tool_calls"
    cached_tokens: int = 0
    prefilled_tokens: int = 0  # prompt tokens the model actually read (the rest was cached)
    stop_sequence: str | None = None  # which of the request's stop strings ended the reply
    prefill_seconds: float = 0.0
    queued_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ChatDelta:
    """A piece of the reply; the last one has ``stats`` (and usually empty text).

    ``logprobs`` holds :class:`~mlx_tui.core.engine.request.TokenLogprob` items when asked for;
    ``tool_calls`` the calls parsed from the reply (on the last delta).
    """

    text: str = ""
    stats: ChatStats | None = field(default=None)
    logprobs: tuple[Any, ...] = ()
    tool_calls: tuple[ToolCall, ...] = ()
