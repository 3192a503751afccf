"""The generation engine: one long-lived worker per model, batching every request it serves.

Real tiny MLX models throughout. Concurrent requests share decode steps and each keeps its own
sampling, stop strings, limits and cancel; nothing starts a thread per request or per load.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import pytest

from mlx_tui.core import mlx_threads
from mlx_tui.core.chat import ChatMessage, GenerationParams
from mlx_tui.core.engine.request import Finished, GenerationRequest
from mlx_tui.core.engine.stops import StopMatcher
from mlx_tui.core.errors import ModelBusy, RequestRejected, RequestTooLarge
from mlx_tui.core.runtime import Runtime

HI = [ChatMessage("user", "Tell me about the for statement.")]
GREEDY = GenerationParams(max_tokens=24, temperature=0)


@pytest.fixture
def runtime(runtime_factory: Callable[..., Runtime], model_factory: Callable[..., Path]) -> Runtime:
    return runtime_factory({"tiny": str(model_factory("tiny")), "other": str(model_factory("other", seed=1))})


def test_batched_replies_are_token_for_token_the_replies_of_one_request_alone(runtime: Runtime) -> None:
    prompts = [[ChatMessage("user", f"Question number {i}: what is a loop?")] for i in range(6)]
    alone = [runtime.chat.complete("tiny", p, GREEDY)[0] for p in prompts]
    with ThreadPoolExecutor(6) as pool:
        together = list(pool.map(lambda p: runtime.chat.complete("tiny", p, GREEDY)[0], prompts))
    assert together == alone
    with runtime.cache.acquire("tiny") as lease:
        assert lease.worker.peak_batch > 1, "the six requests shared decode steps"


def test_each_request_in_a_batch_keeps_its_own_stop_strings_and_limits(runtime: Runtime) -> None:
    free, _ = runtime.chat.complete("tiny", HI, GREEDY)
    assert len(free) > 6
    stop_at = free[3:6]  # a stop string from the middle of the free reply
    params = [GenerationParams(max_tokens=24, temperature=0, stop=(stop_at,)),
              GenerationParams(max_tokens=5, temperature=0),
              GREEDY]
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda p: runtime.chat.complete("tiny", HI, p), params))
    (stopped, s1), (short, s2), (whole, s3) = results
    assert stopped == free[:free.index(stop_at)] and s1.finish_reason == "stop"
    assert s2.tokens == 5 and s2.finish_reason == "length"
    assert whole == free


def test_a_stop_string_split_across_tokens_is_held_back_and_never_shown() -> None:
    matcher = StopMatcher(("\n\nUser:",))
    shown = [matcher.feed(piece) for piece in ("Sure", ".\n", "\nUs", "er: hi")]
    assert shown == ["Sure", ".", "", ""]
    assert matcher.stopped
    other = StopMatcher(("END",))
    assert other.feed("the EN") == "the " and other.feed("ding") == "ENding"
    assert other.flush() == "" and not other.stopped


def test_logprobs_come_with_each_token_and_the_top_alternatives(runtime: Runtime) -> None:
    params = GenerationParams(max_tokens=6, temperature=0, logprobs=True, top_logprobs=3)
    logprobs = [lp for d in runtime.chat.stream("tiny", HI, params) for lp in d.logprobs]
    assert len(logprobs) == 6
    for lp in logprobs:
        assert lp.logprob <= 0 and len(lp.top) == 3
        assert lp.top[0][0] == lp.token, "greedy: the chosen token is the most likely one"
        assert [t[2] for t in lp.top] == sorted((t[2] for t in lp.top), reverse=True)


def test_a_cancel_during_a_long_prompt_costs_at_most_one_prefill_chunk(
        runtime_factory: Callable[..., Runtime], model_factory: Callable[..., Path]) -> None:
    runtime = runtime_factory({"tiny": str(model_factory("tiny"))}, engine={"prefill_step": 32})
    runtime.cache.load("tiny").result(timeout=60)
    cancel = threading.Event()
    with runtime.cache.acquire("tiny") as lease:
        tokens = lease.tokenizer.encode("word " * 3000)
        gate = threading.Event()
        # The request waits behind a call on the worker's thread, so it is cancelled before
        # its first chunk: nothing of the prompt is read at all.
        lease.worker.call(lambda: gate.wait(30))
        handle = lease.worker.submit(GenerationRequest(tokens, GenerationParams(max_tokens=4), cancel))
        cancel.set()
        gate.set()
        [finished] = [i for i in handle.take(timeout=30) if isinstance(i, Finished)]
    assert finished.finish_reason == "cancelled"
    assert finished.prefilled_tokens < 32, "not a single chunk of the 3,000-token prompt"


def test_a_full_queue_answers_busy_instead_of_waiting_without_bound(
        runtime_factory: Callable[..., Runtime], model_factory: Callable[..., Path]) -> None:
    runtime = runtime_factory({"tiny": str(model_factory("tiny"))},
                              engine={"max_batch": 1, "queue_size": 1})
    runtime.cache.load("tiny").result(timeout=60)
    gate = threading.Event()
    with runtime.cache.acquire("tiny") as lease:
        lease.worker.call(lambda: gate.wait(30))  # hold the worker so requests pile up
        first = runtime.chat.start("tiny", HI, GREEDY)
        second = runtime.chat.start("tiny", HI, GREEDY)
        with pytest.raises(ModelBusy, match="busy: 1 requests are waiting") as caught:
            runtime.chat.start("tiny", HI, GREEDY)
        assert caught.value.retry_after > 0
        gate.set()
        for reply in (first, second):
            with reply:
                while not reply.done:
                    reply.take(timeout=30)
                assert reply.stats is not None and reply.stats.tokens > 0


def test_caps_on_messages_prompt_and_max_tokens_refuse_before_any_work(
        runtime_factory: Callable[..., Runtime], model_factory: Callable[..., Path]) -> None:
    runtime = runtime_factory({"tiny": str(model_factory("tiny"))},
                              engine={"max_messages": 10, "max_prompt_tokens": 100, "max_tokens": 50})
    with pytest.raises(RequestTooLarge, match="engine.max_messages"):
        runtime.chat.start("tiny", [ChatMessage("user", "hi")] * 11, GREEDY)
    with pytest.raises(RequestTooLarge, match="engine.max_prompt_tokens"):
        runtime.chat.start("tiny", [ChatMessage("user", "x" * 1_000_000)], GREEDY)
    assert runtime.cache.get("tiny").use_count == 0, "a megabyte was refused before any load"
    with pytest.raises(RequestRejected, match="engine.max_tokens"):
        runtime.chat.start("tiny", HI, GenerationParams(max_tokens=51))
    with pytest.raises(RequestTooLarge, match="prompt tokens: .* over the limit of 100"):
        runtime.chat.start("tiny", [ChatMessage("user", "word " * 200)], GREEDY)
    assert runtime.cache.get("tiny").leases == 0


def test_requests_and_loads_add_no_threads(runtime: Runtime) -> None:
    runtime.chat.complete("tiny", HI, GREEDY)
    runtime.chat.complete("other", HI, GREEDY)
    threads, mlx = threading.active_count(), mlx_threads.thread_count()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda i: runtime.chat.complete("tiny" if i % 2 else "other", HI,
                                                      GenerationParams(max_tokens=3)), range(100)))
    for _ in range(10):  # unload and load again: the workers' threads are reused
        runtime.cache.evict("tiny")
        runtime.chat.complete("tiny", HI, GenerationParams(max_tokens=2))
    assert mlx_threads.thread_count() == mlx, "no new MLX thread for a request or a reload"
    assert threading.active_count() <= threads + 4, "the pool's own threads, nothing per request"
