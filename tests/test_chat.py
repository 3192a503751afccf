"""Chatting through the cache: streamed deltas, figures under each reply, Esc stops it."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable

from mlx_tui.core.cache import ModelState
from mlx_tui.core.chat import ChatMessage, GenerationParams, render_prompt
from mlx_tui.core.runtime import Runtime

ASK = [ChatMessage("system", "You are terse."), ChatMessage("user", "Tell me about loops.")]


def test_a_reply_streams_in_pieces_and_ends_with_its_figures(
        runtime_factory: Callable[..., Runtime], model_factory: Callable[..., Path]) -> None:
    runtime = runtime_factory({"tiny": str(model_factory("tiny"))})
    deltas = list(runtime.chat.stream("tiny", ASK, GenerationParams(max_tokens=12, temperature=0)))
    *pieces, last = deltas
    assert last.stats is not None and all(d.stats is None for d in pieces)
    assert len(pieces) >= 2
    stats = last.stats
    assert stats.tokens == 12 and stats.finish_reason == "length"
    assert stats.prompt_tokens > 5 and stats.tokens_per_second > 0
    assert stats.time_to_first_token > 0 and stats.loaded_first and stats.load_seconds > 0
    assert runtime.cache.get("tiny").leases == 0, "the lease ends with the reply"


def test_the_same_seed_gives_the_same_reply(runtime_factory: Callable[..., Runtime],
                                           model_factory: Callable[..., Path]) -> None:
    runtime = runtime_factory({"tiny": str(model_factory("tiny"))})
    params = GenerationParams(max_tokens=8, temperature=1.0, seed=7)
    first, _ = runtime.chat.complete("tiny", ASK, params)
    second, _ = runtime.chat.complete("tiny", ASK, params)
    assert first == second


def test_cancel_stops_a_reply_and_frees_the_model(runtime_factory: Callable[..., Runtime],
                                                   model_factory: Callable[..., Path]) -> None:
    runtime = runtime_factory({"tiny": str(model_factory("tiny"))})
    cancel = threading.Event()
    texts = []
    stats = None
    for delta in runtime.chat.stream("tiny", ASK, GenerationParams(max_tokens=200, temperature=0), cancel):
        texts.append(delta.text)
        if len(texts) == 3:
            cancel.set()
        stats = delta.stats or stats
    assert stats is not None and stats.finish_reason == "cancelled"
    assert stats.tokens < 200
    view = runtime.cache.get("tiny")
    assert view.state is ModelState.LOADED and view.leases == 0
    assert runtime.cache.evict("tiny"), "nothing holds the model after a cancel"


def test_the_prompt_uses_the_models_chat_template(runtime_factory: Callable[..., Runtime],
                                                  model_factory: Callable[..., Path]) -> None:
    runtime = runtime_factory({"tiny": str(model_factory("tiny"))})
    with runtime.cache.acquire("tiny") as lease:
        prompt = render_prompt(lease.tokenizer, ASK)
    assert "<|im_start|>system\nYou are terse.<|im_end|>" in prompt
    assert prompt.endswith("<|im_start|>assistant\n")


def test_cancel_while_the_model_loads_returns_at_once(
        runtime_factory: Callable[..., Runtime], tmp_path: Path) -> None:
    from mlx_tui.devtools.modelgen import write_random_model

    big = write_random_model(tmp_path / "big", target_bytes=600_000_000)
    runtime = runtime_factory({"big": str(big)})
    cancel = threading.Event()
    stream = runtime.chat.stream("big", ASK, GenerationParams(max_tokens=5), cancel)
    cancel.set()
    [only] = list(stream)
    assert only.stats is not None and only.stats.finish_reason == "cancelled"
    assert only.stats.tokens == 0
    assert runtime.cache.load("big").result(timeout=120).state is ModelState.LOADED, \
        "the load itself goes on for whoever wants the model next"
    assert runtime.cache.get("big").use_count == 0, "a cancelled request is not a use"
