"""``GET /metrics`` scraped from a real server on loopback and read with
``prometheus_client``'s own parsers, as Prometheus would read it, after real loads, replies
through the Ollama and Anthropic clients, evictions and refusals of tiny real MLX models.
"""

from __future__ import annotations

from typing import Any, Callable

import anthropic
import httpx
import ollama
import openai
import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics
from prometheus_client.parser import text_string_to_metric_families

from mlx_tui.core.memory import FixedMemoryProbe
from mlx_tui.core.runtime import Runtime
from mlx_tui.server.metrics import eviction_cause
from mlx_tui.server.serve import ApiServer
from tests.protocol_server import HELLO, serving, wait_until

GREETING = [{"role": "user", "content": HELLO}]
SHORT = {"temperature": 0, "num_predict": 4}

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(server: ApiServer, **headers: str) -> Samples:
    """Every sample of one scrape: ``(name, sorted labels) -> value``."""
    answer = httpx.get(f"{server.url}/metrics", headers=headers, timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(answer.text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum over every sample of ``name`` whose labels include ``labels``."""
    return sum(v for (n, ls), v in samples.items()
               if n == name and set(labels.items()) <= set(ls))


@pytest.fixture
def models(model_factory: Callable[..., Any]) -> dict[str, str]:
    return {"alpha": str(model_factory("alpha")), "beta": str(model_factory("beta", seed=1))}


@pytest.fixture
def runtime(runtime_factory: Callable[..., Runtime], models: dict[str, str],
            fixed_probe: FixedMemoryProbe) -> Runtime:
    return runtime_factory(models, probe=fixed_probe)


def test_a_scrape_counts_loads_replies_tokens_and_evictions_and_shows_the_cache_now(
        server: ApiServer, runtime: Runtime) -> None:
    with ollama.Client(host=server.url, timeout=60) as client:
        replies = [client.chat("alpha", GREETING, options=SHORT) for _ in range(2)]
        with pytest.raises(ollama.ResponseError):
            client.chat("no-such-model", GREETING)
    with anthropic.Anthropic(base_url=server.url, api_key="x", max_retries=0) as claude:
        message = claude.messages.create(model="beta", max_tokens=4, messages=GREETING)
    httpx.post(f"{server.url}/models/evict", json={"model": "alpha"}, timeout=30).raise_for_status()

    samples = scrape(server)

    assert value(samples, "mlx_tui_model_loads_total", model="alpha") == 1
    assert value(samples, "mlx_tui_model_loads_total", model="beta") == 1
    assert value(samples, "mlx_tui_model_load_seconds_count", model="alpha") == 1
    assert value(samples, "mlx_tui_model_load_seconds_sum", model="alpha") == pytest.approx(
        runtime.cache.get("alpha").load_time_seconds)
    assert value(samples, "mlx_tui_model_evictions_total", model="alpha", cause="requested") == 1
    assert value(samples, "mlx_tui_model_loaded", model="alpha") == 0
    assert value(samples, "mlx_tui_model_resident_bytes", model="alpha") == 0
    beta = runtime.cache.get("beta")
    assert value(samples, "mlx_tui_model_resident_bytes", model="beta") == beta.resident_bytes > 0
    assert value(samples, "mlx_tui_model_use_count", model="beta") == beta.use_count == 1

    assert total(samples, "mlx_tui_requests_total", endpoint="/api/chat", model="alpha") == 2
    assert total(samples, "mlx_tui_requests_total", endpoint="/v1/messages", model="beta") == 1
    assert value(samples, "mlx_tui_tokens_total", endpoint="/api/chat", model="alpha",
                 kind="completion") == sum(r.eval_count or 0 for r in replies)
    prompt = message.usage.input_tokens + (message.usage.cache_read_input_tokens or 0)
    assert value(samples, "mlx_tui_tokens_total", endpoint="/v1/messages", model="beta",
                 kind="prompt") == prompt
    assert total(samples, "mlx_tui_time_to_first_token_seconds_count") == 3
    assert value(samples, "mlx_tui_request_errors_total", endpoint="/api/chat", status="404") == 1
    assert value(samples, "mlx_tui_requests_in_flight") == 0


def test_the_openai_endpoint_is_counted_too_plain_streamed_and_refused(server: ApiServer) -> None:
    sdk = openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0)
    plain = sdk.chat.completions.create(model="alpha", messages=GREETING, max_tokens=3)
    streamed = list(sdk.chat.completions.create(model="alpha", messages=GREETING, max_tokens=3,
                                                stream=True, stream_options={"include_usage": True}))
    with pytest.raises(openai.NotFoundError):
        sdk.chat.completions.create(model="no-such-model", messages=GREETING)
    samples = scrape(server)
    path = "/v1/chat/completions"
    assert total(samples, "mlx_tui_requests_total", endpoint=path, model="alpha") == 2
    usage = streamed[-1].usage
    assert plain.usage is not None and usage is not None
    assert value(samples, "mlx_tui_tokens_total", endpoint=path, model="alpha", kind="completion") == \
        plain.usage.completion_tokens + usage.completion_tokens
    assert value(samples, "mlx_tui_request_errors_total", endpoint=path, status="404") == 1


def test_a_repeated_prompt_is_read_from_the_prompt_cache_and_the_scrape_counts_it(
        runtime_factory: Callable[..., Runtime], models: dict[str, str]) -> None:
    runtime = runtime_factory({"beta": models["beta"]}, prompt_cache={"min_tokens": 1})
    ask = [{"role": "user", "content": "Hello there, how are you today, my friend?"}]

    with serving(runtime) as server, anthropic.Anthropic(base_url=server.url, api_key="x",
                                                         max_retries=0) as claude:
        first, again = (claude.messages.create(model="beta", max_tokens=4, messages=ask)
                        for _ in range(2))
        samples = scrape(server)

    hits = again.usage.cache_read_input_tokens or 0
    assert (first.usage.cache_read_input_tokens or 0) == 0
    assert hits > 0
    assert again.usage.input_tokens + hits == first.usage.input_tokens  # the same prompt
    assert value(samples, "mlx_tui_prompt_cache_hit_tokens_total", model="beta") == hits
    assert value(samples, "mlx_tui_model_prompt_cache_bytes", model="beta") == \
        runtime.cache.get("beta").prompt_cache_bytes > 0


def test_memory_and_thresholds_are_the_cache_s_own_figures(server: ApiServer,
                                                          runtime: Runtime) -> None:
    samples = scrape(server)
    snap = runtime.cache.memory()

    assert value(samples, "mlx_tui_memory_total_bytes") == snap.total_bytes == 16 * 1024**3
    assert value(samples, "mlx_tui_memory_used_fraction") == pytest.approx(snap.used_fraction)
    thresholds = runtime.cache.thresholds
    assert value(samples, "mlx_tui_memory_warning_threshold") == thresholds.warning
    assert value(samples, "mlx_tui_memory_emergency_threshold") == thresholds.emergency


def test_a_load_refused_for_memory_is_counted_as_a_refusal(
        server: ApiServer, fixed_probe: FixedMemoryProbe) -> None:
    fixed_probe.set_fraction(0.99)  # past the emergency threshold, nothing loaded to free

    refused = httpx.post(f"{server.url}/models/load", json={"model": "alpha"}, timeout=30)

    assert refused.status_code == 422
    samples = scrape(server)
    assert value(samples, "mlx_tui_model_refusals_total", model="alpha") == 1
    assert ("mlx_tui_model_loads_total", (("model", "alpha"),)) not in samples


def test_a_reply_under_way_is_in_flight_until_its_client_leaves(server: ApiServer) -> None:
    body = {"model": "alpha", "messages": GREETING, "options": {"temperature": 0}}
    with httpx.stream("POST", f"{server.url}/api/chat", json=body, timeout=60) as reply:
        lines = reply.iter_lines()
        next(lines)
        assert value(scrape(server), "mlx_tui_requests_in_flight") == 1
    wait_until(lambda: value(scrape(server), "mlx_tui_requests_in_flight") == 0)


def test_two_servers_in_one_process_count_apart(
        runtime_factory: Callable[..., Runtime], models: dict[str, str],
        server: ApiServer) -> None:
    with ollama.Client(host=server.url, timeout=60) as client:
        client.chat("alpha", GREETING, options=SHORT)
    other_runtime = runtime_factory({"beta": models["beta"]})

    with serving(other_runtime) as other:
        theirs = scrape(other)

    assert total(theirs, "mlx_tui_model_loads_total") == 0
    assert total(theirs, "mlx_tui_requests_total") == 0
    assert value(scrape(server), "mlx_tui_model_loads_total", model="alpha") == 1


def test_metrics_need_the_api_key_like_every_other_path(runtime: Runtime) -> None:
    with serving(runtime, api_key="sekrit") as server:
        assert httpx.get(f"{server.url}/metrics", timeout=10).status_code == 401
        samples = scrape(server, Authorization="Bearer sekrit")
    assert ("mlx_tui_memory_used_fraction", ()) in samples


def test_openmetrics_is_served_to_a_scraper_that_asks_for_it(server: ApiServer) -> None:
    answer = httpx.get(f"{server.url}/metrics", timeout=10,
                       headers={"Accept": "application/openmetrics-text; version=1.0.0"})

    assert answer.headers["content-type"].startswith("application/openmetrics-text")
    assert answer.text.endswith("# EOF\n")
    names = {family.name for family in openmetrics(answer.text)}
    assert {"mlx_tui_model_loads", "mlx_tui_memory_used_fraction"} <= names


@pytest.mark.parametrize("reason, cause", [
    ("making room for beta", "admission"),
    ("idle for 300 s", "idle"),
    ("normal clean-up, asked via the API", "cleanup"),
    ("deferred clean-up, request finished", "cleanup"),
    ("emergency clean-up", "emergency"),
    ("keep_alive 0 from an Ollama client", "keep_alive"),
    ("closing", "shutdown"),
    ("asked via the API", "requested"),
])
def test_eviction_reasons_become_a_few_causes(reason: str, cause: str) -> None:
    assert eviction_cause(reason) == cause
