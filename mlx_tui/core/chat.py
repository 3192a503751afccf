"""The chat engine: streamed generation with a model leased from the cache.

:class:`ChatEngine.stream` runs in the caller's thread (the app's worker thread, the server's
thread pool), yields text deltas as ``mlx_lm.stream_generate`` produces them, stops when the
caller's cancel event is set, and ends with one :class:`ChatDelta` that carries
:class:`ChatStats`: tokens, tokens/s, time to first token, and whether (and how long) the model
had to be loaded first.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator, Sequence

from .cache import ModelCache, ModelState

__all__ = ["ChatMessage", "GenerationParams", "ChatStats", "ChatDelta", "ChatEngine", "render_prompt"]


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
    finish_reason: str = "stop"  # "stop", "length", "cancelled"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ChatDelta:
    """A piece of the reply; the last one has ``stats`` (and usually empty text)."""

    text: str = ""
    stats: ChatStats | None = field(default=None)


def render_prompt(tokenizer: Any, messages: Sequence[ChatMessage]) -> str:
    """The model's own chat template, or a plain transcript when it has none."""
    dicts = [{"role": m.role, "content": m.content} for m in messages]
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(dicts, add_generation_prompt=True, tokenize=False)
    lines = [f"{m.role.capitalize()}: {m.content}" for m in messages]
    return "\n".join(lines) + "\nAssistant:"


class ChatEngine:
    """Generates replies with models from one :class:`ModelCache`. Stateless; thread-safe."""

    def __init__(self, cache: ModelCache) -> None:
        self.cache = cache

    def stream(
        self,
        model: str,
        messages: Sequence[ChatMessage],
        params: GenerationParams = GenerationParams(),
        cancel: threading.Event | None = None,
    ) -> Iterator[ChatDelta]:
        """Yield the reply as it is generated. Blocks while the model loads (not an event loop).

        Raises the cache's errors (unknown model, load failure, too large) before any text.
        """
        from mlx_lm import stream_generate  # lazy: importing mlx_lm costs about a second
        from mlx_lm.sample_utils import make_sampler

        started = time.perf_counter()
        was_loaded = self.cache.get(model).state is ModelState.LOADED
        if not was_loaded and not self._wait_for_load(model, cancel):
            yield ChatDelta(stats=ChatStats(model=model, loaded_first=True, finish_reason="cancelled",
                                            total_seconds=time.perf_counter() - started))
            return
        with self.cache.acquire(model) as lease:
            load_seconds = 0.0 if was_loaded else time.perf_counter() - started
            prompt = render_prompt(lease.tokenizer, messages)
            if params.seed is not None:
                import mlx.core as mx

                mx.random.seed(params.seed)
            sampler = make_sampler(temp=params.temperature, top_p=params.top_p)
            gen_started = time.perf_counter()
            first_token_at: float | None = None
            last = None
            finish = "stop"
            for response in stream_generate(lease.model, lease.tokenizer, prompt,
                                            max_tokens=params.max_tokens, sampler=sampler):
                if first_token_at is None:
                    first_token_at = time.perf_counter()
                last = response
                if response.text:
                    yield ChatDelta(response.text)
                if cancel is not None and cancel.is_set():
                    finish = "cancelled"
                    break
                if response.finish_reason:
                    finish = response.finish_reason
        ended = time.perf_counter()
        tokens = last.generation_tokens if last else 0
        decode_seconds = ended - (first_token_at or ended)
        yield ChatDelta(stats=ChatStats(
            model=model,
            prompt_tokens=last.prompt_tokens if last else 0,
            tokens=tokens,
            tokens_per_second=(tokens - 1) / decode_seconds if tokens > 1 and decode_seconds > 0 else 0.0,
            prompt_tokens_per_second=last.prompt_tps if last else 0.0,
            time_to_first_token=(first_token_at - gen_started) if first_token_at else 0.0,
            total_seconds=ended - started,
            loaded_first=not was_loaded,
            load_seconds=load_seconds,
            finish_reason=finish,
        ))

    def _wait_for_load(self, model: str, cancel: threading.Event | None) -> bool:
        """Wait for ``model`` to load, watching ``cancel``; False when cancelled first.

        The load goes on for whoever else wants the model; only this reply stops waiting.
        """
        future = self.cache.load(model, reason="chat")
        while True:
            try:
                future.result(timeout=0.05)
                return True
            except TimeoutError:
                if cancel is not None and cancel.is_set():
                    return False

    def complete(self, model: str, messages: Sequence[ChatMessage],
                 params: GenerationParams = GenerationParams()) -> tuple[str, ChatStats]:
        """The whole reply at once, with its figures."""
        parts: list[str] = []
        stats: ChatStats | None = None
        for delta in self.stream(model, messages, params):
            parts.append(delta.text)
            stats = delta.stats or stats
        assert stats is not None
        return "".join(parts), stats
