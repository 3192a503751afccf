"""``POST /v1/completions``: OpenAI's text completions, for editors' autocomplete and scripts.

The prompt is text or token ids, fed to the model as they are (no chat template), through the
same generation workers as chat (:meth:`~mlx_tui.core.chat.ChatEngine.start_tokens`), so stop
strings, log-probabilities and penalties hold per request inside a batch. ``suffix`` asks for
fill-in-the-middle: it works where the model's tokenizer has FIM tokens (Qwen2.5-Coder's
``<|fim_prefix|>``, StarCoder's ``<fim_prefix>``, DeepSeek-Coder's, Codestral's), and is a 400
that says so elsewhere. ``echo`` puts the prompt in front of the reply; log-probabilities come
in the legacy shape (``tokens``, ``token_logprobs``, ``top_logprobs``, ``text_offset``).
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any, AsyncIterator, Mapping, Sequence

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ..core.chat import ChatStats, GenerationParams, prompt_tokens
from ..core.errors import UnsupportedRequest
from .bodies import MAX_WHOLE, flag, json_body, model_name, parsed, whole
from .errors import as_api_error, bad_request
from .openai import BoundEngine, ChatRequest, sampling, sse_event, unsupported, usage
from .streaming import Generation, cancel_on_disconnect

__all__ = ["CompletionRequest", "FillInTheMiddle", "fill_in_the_middle", "completion_routes",
           "DEFAULT_COMPLETION_TOKENS", "MAX_LOGPROBS"]

log = logging.getLogger("mlx_tui.server")

DEFAULT_COMPLETION_TOKENS = 16  # OpenAI's default for this endpoint
MAX_LOGPROBS = 5  # OpenAI's limit for this endpoint


@dataclass(frozen=True)
class FillInTheMiddle:
    """A tokenizer's fill-in-the-middle tokens and the order the model was trained on:
    prefix-suffix-middle (``<P>prefix<S>suffix<M>``), or Codestral's suffix first
    (``[SUFFIX]suffix[PREFIX]prefix``, no middle token)."""

    prefix: str
    suffix: str
    middle: str | None

    def text(self, before: str, after: str) -> str:
        if self.middle is None:
            return f"{self.suffix}{after}{self.prefix}{before}"
        return f"{self.prefix}{before}{self.suffix}{after}{self.middle}"


FIM_FAMILIES = (
    FillInTheMiddle("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"),  # Qwen2.5-Coder
    FillInTheMiddle("<fim_prefix>", "<fim_suffix>", "<fim_middle>"),  # StarCoder, SantaCoder
    FillInTheMiddle("<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>"),  # DeepSeek-Coder
    FillInTheMiddle("[PREFIX]", "[SUFFIX]", None),  # Codestral
)


def _has_token(tokenizer: Any, token: str) -> bool:
    try:
        token_id = tokenizer.convert_tokens_to_ids(token)
    except (KeyError, ValueError, TypeError):
        return False
    return isinstance(token_id, int) and token_id != getattr(tokenizer, "unk_token_id", None)


def fill_in_the_middle(tokenizer: Any) -> FillInTheMiddle | None:
    """The FIM family whose every token is in ``tokenizer``'s vocabulary, or None."""
    for family in FIM_FAMILIES:
        if all(_has_token(tokenizer, t) for t in (family.prefix, family.suffix, family.middle) if t):
            return family
    return None


def _prompt(raw: Any) -> str | tuple[int, ...]:
    """A text prompt, or token ids; OpenAI's lists of one prompt are taken as that one."""
    if isinstance(raw, list) and len(raw) == 1 and isinstance(raw[0], (str, list)):
        raw = raw[0]
    if isinstance(raw, str):
        return raw
    if isinstance(raw, list) and raw and all(isinstance(t, int) and not isinstance(t, bool)
                                             for t in raw):
        if not all(0 <= t <= MAX_WHOLE for t in raw):
            raise bad_request("prompt token ids must be whole numbers from 0")
        return tuple(raw)
    if isinstance(raw, list) and len(raw) > 1 and all(isinstance(p, (str, list)) for p in raw):
        raise unsupported("prompt", f"one prompt per request, got {len(raw)}: send one request "
                          "each (the engine batches them)")
    raise bad_request("prompt must be a string, a list of token ids, or a list of one of those")


@dataclass(frozen=True)
class CompletionRequest:
    """One ``POST /v1/completions`` body, validated."""

    model: str
    prompt: str | tuple[int, ...]
    params: GenerationParams
    suffix: str | None = None
    stream: bool = False
    include_usage: bool = False
    echo: bool = False
    logprobs: int | None = None

    @classmethod
    def parse(cls, body: Mapping[str, Any]) -> "CompletionRequest":
        model = model_name(body)
        for key in ("n", "best_of"):
            value = whole(body, key, 1)
            if value not in (None, 1):
                raise unsupported(key, f"one completion per request (1), got {value}")
        prompt = _prompt(body.get("prompt"))
        suffix = body.get("suffix")
        if suffix is not None and not isinstance(suffix, str):
            raise bad_request("suffix must be a string")
        if suffix is not None and not isinstance(prompt, str):
            raise bad_request("suffix needs a text prompt (the text before the gap)")
        logprobs = whole(body, "logprobs", 0, MAX_LOGPROBS)
        echo = flag(body, "echo")
        if echo and logprobs is not None:
            raise unsupported("echo", "echo with logprobs would need the prompt tokens' "
                              "log-probabilities, which are not computed; send one of them")
        options = body.get("stream_options")
        options = {} if options is None else options
        if not isinstance(options, dict):
            raise bad_request("stream_options must be an object")
        max_tokens = whole(body, "max_tokens", 1) or DEFAULT_COMPLETION_TOKENS
        return cls(
            model=model, prompt=prompt, suffix=suffix,
            params=sampling(body, max_tokens=max_tokens, logprobs=logprobs is not None,
                            top_logprobs=logprobs or 0),
            stream=flag(body, "stream"), include_usage=flag(options, "include_usage"),
            echo=echo, logprobs=logprobs,
        )

    @property
    def chars(self) -> int:
        """Characters of text the prompt holds (checked against the prompt cap)."""
        return len(self.prompt) + len(self.suffix or "") if isinstance(self.prompt, str) else 0


class _PromptIds:
    """Makes the request's token ids once the model's tokenizer is known (on a worker
    thread), and keeps the prompt's text for ``echo``."""

    def __init__(self, request: CompletionRequest, model: str) -> None:
        self._request = request
        self._model = model
        self.echo = request.prompt if isinstance(request.prompt, str) else ""

    def __call__(self, tokenizer: Any) -> list[int]:
        req = self._request
        if not isinstance(req.prompt, str):
            if req.echo:
                self.echo = tokenizer.decode(list(req.prompt))
            return list(req.prompt)
        text = req.prompt
        if req.suffix is not None:
            fim = fill_in_the_middle(tokenizer)
            if fim is not None:
                text = fim.text(req.prompt, req.suffix)
            elif req.suffix:
                raise UnsupportedRequest(
                    f"{self._model} has no fill-in-the-middle tokens, so it cannot complete "
                    "between a prompt and a suffix; send the request without suffix, or use a "
                    "coder model trained for it (Qwen2.5-Coder, StarCoder, DeepSeek-Coder, Codestral)")
        ids = prompt_tokens(tokenizer, text)
        bos = getattr(tokenizer, "bos_token_id", None)
        return ids or ([bos] if isinstance(bos, int) else [])  # "": begin a text from nothing


def _legacy_logprobs(items: Sequence[Any], offset: int) -> dict[str, Any]:
    """OpenAI's completions shape: parallel lists, ``text_offset`` counted in characters of
    the returned text (which starts with the echoed prompt, if any)."""
    tokens, values, tops, offsets = [], [], [], []
    for lp in items:
        tokens.append(lp.text)
        values.append(lp.logprob)
        tops.append({text: value for _, text, value in lp.top})
        offsets.append(offset)
        offset += len(lp.text)
    return {"tokens": tokens, "token_logprobs": values, "top_logprobs": tops,
            "text_offset": offsets}


class _Shape:
    """The ids and JSON of one completion."""

    def __init__(self, model: str, logprobs: bool) -> None:
        self.id = f"cmpl-{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())
        self.model = model
        self.logprobs = logprobs

    def body(self, text: str, finish_reason: str | None, logprobs: dict[str, Any] | None = None,
             stats: ChatStats | None = None) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "id": self.id, "object": "text_completion", "created": self.created,
            "model": self.model,
            "choices": [{"text": text, "index": 0,
                         "logprobs": logprobs if self.logprobs else None,
                         "finish_reason": finish_reason}],
        }
        if stats is not None:
            doc["usage"] = usage(stats)
        return doc

    def usage_chunk(self, stats: ChatStats) -> dict[str, Any]:
        return {"id": self.id, "object": "text_completion", "created": self.created,
                "model": self.model, "choices": [], "usage": usage(stats)}


async def completions(request: Request) -> Response:
    req = parsed(CompletionRequest.parse, await json_body(request))
    runtime = request.app.state.runtime
    engine = runtime.chat
    prompt = _PromptIds(req, req.model)

    def start(model: str, _messages: Any, params: GenerationParams, cancel: Any, _tools: Any,
              **where: Any) -> Any:
        return engine.start_tokens(model, prompt, params, cancel, text_chars=req.chars, **where)

    carrier = ChatRequest(model=req.model, messages=(), params=req.params, label="api",
                          allow_paths=runtime.settings_store.settings.api.allow_model_paths)
    generation = Generation(BoundEngine(engine.cache, start), carrier,
                            request.app.state.generations)
    shape = _Shape(req.model, req.logprobs is not None)
    try:
        async with cancel_on_disconnect(request.receive, generation.cancel):
            first = await generation.next()  # after the load: its failure is the status
            if not req.stream:
                parts, logprobs, stats, delta = [prompt.echo if req.echo else ""], [], None, first
                while delta is not None:
                    parts.append(delta.text)
                    logprobs.extend(delta.logprobs)
                    stats = delta.stats or stats
                    delta = await generation.next()
                assert stats is not None
                echoed = len(parts[0])
                return JSONResponse(shape.body("".join(parts), stats.finish_reason,
                                               _legacy_logprobs(logprobs, echoed), stats))
    except BaseException:
        generation.cancel.set()
        raise
    return StreamingResponse(_sse(generation, first, req, prompt, shape, request),
                             media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _sse(generation: Generation, first: Any, req: CompletionRequest, prompt: _PromptIds,
               shape: _Shape, request: Request) -> AsyncIterator[str]:
    """Chunks of text (the echoed prompt first), a last one with ``finish_reason``, the usage
    when asked, ``[DONE]``; an error after the start is one ``{"error": ...}`` event."""
    try:
        offset = 0
        if req.echo and prompt.echo:
            yield sse_event(shape.body(prompt.echo, None))  # echo excludes logprobs
            offset = len(prompt.echo)
        stats, delta = None, first
        while delta is not None:
            if delta.text or delta.logprobs:
                yield sse_event(shape.body(delta.text, None, _legacy_logprobs(delta.logprobs, offset)))
                offset += len(delta.text)
            stats = delta.stats or stats
            delta = await generation.next()
        assert stats is not None
        yield sse_event(shape.body("", stats.finish_reason, _legacy_logprobs((), offset)))
        if req.include_usage:
            yield sse_event(shape.usage_chunk(stats))
    except Exception as exc:  # noqa: BLE001 - the status line is sent; report in the stream
        error = as_api_error(exc, request.app.state.runtime.cache)
        if error.type == "internal_error":
            log.error("completion stream failed", exc_info=exc)
        yield sse_event(error.body())
    finally:
        generation.cancel.set()
    yield "data: [DONE]\n\n"


def completion_routes() -> list[Route]:
    return [Route("/v1/completions", completions, methods=["POST"])]
