"""A server that runs for weeks, driven over real HTTP on loopback with real tiny MLX models:
no thread per request, concurrent requests batched, odd names that never break a listing."""

from __future__ import annotations

import os
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import pytest

from mlx_tui.core import mlx_threads
from mlx_tui.core.runtime import Runtime
from mlx_tui.server.serve import ApiServer

HELLO = [{"role": "user", "content": "Hello there"}]


@pytest.fixture
def serving(runtime_factory: Callable[..., Runtime]) -> Iterator[Callable[..., httpx.Client]]:
    """``serving(runtime)`` -> an httpx client of a real server over that runtime."""
    servers: list[tuple[ApiServer, httpx.Client]] = []

    def start(runtime: Runtime) -> httpx.Client:
        server = ApiServer(runtime, "127.0.0.1", 0)
        server.start()
        client = httpx.Client(base_url=server.url, timeout=60)
        servers.append((server, client))
        return client

    yield start
    for server, client in servers:
        client.close()
        server.stop()


def ask(client: httpx.Client, model: str, **fields: Any) -> httpx.Response:
    body = {"model": model, "messages": HELLO, "max_tokens": 3, "temperature": 0, **fields}
    return client.post("/v1/chat/completions", json=body)


def test_two_hundred_requests_leave_the_thread_count_flat(
        runtime_factory: Callable[..., Runtime], model_factory: Callable[..., Path],
        serving: Callable[..., httpx.Client]) -> None:
    runtime = runtime_factory({"a": str(model_factory("a")), "b": str(model_factory("b", seed=1))})
    client = serving(runtime)
    for model in ("a", "b", "a"):  # warm: both workers, the loaders, the server's pool
        assert ask(client, model).status_code == 200
    threads, made = threading.active_count(), mlx_threads.thread_count()
    with ThreadPoolExecutor(4) as pool:
        codes = list(pool.map(lambda i: ask(client, "ab"[i % 2]).status_code, range(180)))
    for _ in range(10):  # and twenty unloads and reloads
        for model in ("a", "b"):
            assert client.post("/models/evict", json={"model": model}).status_code == 200
            codes.append(ask(client, model).status_code)
    assert codes == [200] * 200
    assert runtime.cache.get("a").use_count + runtime.cache.get("b").use_count == 203
    assert mlx_threads.thread_count() <= made + 1, "MLX threads are reused, not made per request"
    assert threading.active_count() <= threads + 5, "flat within a few threads"


def test_eight_concurrent_streams_share_the_decode_steps(
        runtime_factory: Callable[..., Runtime], model_factory: Callable[..., Path],
        serving: Callable[..., httpx.Client]) -> None:
    runtime = runtime_factory({"a": str(model_factory("a"))})
    client = serving(runtime)
    alone = ask(client, "a", max_tokens=16).json()["choices"][0]["message"]["content"]
    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(lambda _: ask(client, "a", max_tokens=16).json(), range(8)))
    assert [r["choices"][0]["message"]["content"] for r in replies] == [alone] * 8
    with runtime.cache.acquire("a") as lease:
        assert lease.worker.peak_batch > 1


def test_odd_names_never_break_the_listings(
        runtime_factory: Callable[..., Runtime], model_factory: Callable[..., Path],
        serving: Callable[..., httpx.Client], tmp_path: Path) -> None:
    shelf = tmp_path / "shelf"
    shutil.copytree(model_factory("a"), shelf / os.fsdecode(b"m\xff\xfe-odd"))
    runtime = runtime_factory({"a": str(model_factory("a"))},
                              catalog={"dirs": [str(shelf)], "huggingface_cache": False})
    client = serving(runtime)
    surrogate = client.post("/v1/chat/completions", content=(
        b'{"model": "/tmp/\\ud800", "messages": [{"role": "user", "content": "hi"}]}'),
        headers={"content-type": "application/json"})
    assert surrogate.status_code in (400, 404), surrogate.text
    for path in ("/", "/health", "/v1/models"):
        response = client.get(path)
        assert response.status_code == 200, (path, response.text)
    names = [m["id"] for m in client.get("/v1/models").json()["data"]]
    assert "m\\xff\\xfe-odd" in names and "/tmp/\ud800" not in names


def test_a_full_queue_answers_503_with_retry_after_and_the_others_are_served(
        runtime_factory: Callable[..., Runtime], model_factory: Callable[..., Path],
        serving: Callable[..., httpx.Client]) -> None:
    runtime = runtime_factory({"a": str(model_factory("a"))}, engine={"max_batch": 1, "queue_size": 1})
    client = serving(runtime)
    assert ask(client, "a").status_code == 200
    gate = threading.Event()
    with runtime.cache.acquire("a") as lease:
        lease.worker.call(lambda: gate.wait(30))  # the worker is busy: requests pile up
    with ThreadPoolExecutor(3) as pool:
        first = [pool.submit(ask, client, "a") for _ in range(2)]
        wait_until(lambda: runtime.cache.get("a").requests_in_flight == 2)
        busy = ask(client, "a")
        gate.set()
        assert [f.result().status_code for f in first] == [200, 200]
    assert busy.status_code == 503, busy.text
    assert int(busy.headers["retry-after"]) >= 1
    assert "engine.queue_size" in busy.json()["error"]["message"]


def test_a_client_that_leaves_during_its_prompt_costs_at_most_one_prefill_chunk(
        runtime_factory: Callable[..., Runtime], model_factory: Callable[..., Path],
        serving: Callable[..., httpx.Client], caplog: pytest.LogCaptureFixture) -> None:
    runtime = runtime_factory({"a": str(model_factory("a"))}, engine={"prefill_step": 64})
    client = serving(runtime)
    assert ask(client, "a").status_code == 200
    caplog.set_level("INFO", logger="mlx_tui.chat")
    gate = threading.Event()
    with runtime.cache.acquire("a") as lease:
        lease.worker.call(lambda: gate.wait(30))
    long_prompt = [{"role": "user", "content": "word " * 3000}]
    with pytest.raises(httpx.ReadTimeout):  # the client gives up while the prompt waits
        client.post("/v1/chat/completions", timeout=1.0,
                    json={"model": "a", "messages": long_prompt, "max_tokens": 4, "stream": True})
    wait_until(lambda: runtime.cache.get("a").requests_in_flight == 1)
    gate.set()
    wait_until(lambda: runtime.cache.get("a").requests_in_flight == 0)
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().endswith("cancelled")]
    read = int(line.split(" read)")[0].rsplit(", ", 1)[1])
    assert read <= 64, f"at most one prefill chunk of a ~9,000-token prompt: {line}"


def wait_until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)
