"""The HTTP API served for real: uvicorn on a free loopback port, httpx, tiny real MLX models.

Each test drives a story a script or an OpenAI client would live through, and checks what it
would see: the seed document's ``cached_models`` (through the real ``jq``), completions with
consistent usage, streams, errors with their status, the API key, and ``/health`` answering
while a model loads or generates.
"""

from __future__ import annotations

import json
import re
import socket
import statistics
import subprocess
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import httpx
import pytest

from mlx_tui.core.events import CacheEvent, EventKind
from mlx_tui.core.memory import FixedMemoryProbe
from mlx_tui.core.runtime import Runtime
from mlx_tui.devtools.modelgen import corrupt_model
from mlx_tui.server.serve import ApiServer, PortInUse, UnsafeBind, is_loopback
from tests.protocol_server import Serve

SEED_FIELDS = ("name", "use_count", "last_used", "loaded_at", "load_time_seconds")
CACHED_FIELDS = (*SEED_FIELDS, "state", "pinned", "size_bytes")
ISO_SECONDS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d$")
HELLO = [{"role": "user", "content": "Hello there, how are you?"}]
SEED_RULES = {  # the seed document's thresholds and clean-up, as settings.toml sections
    "memory": {"warning_threshold": 0.85, "emergency_threshold": 0.98, "keep_on_cleanup": 1,
               "cleanup": "keep_best"},
    "cache": {"policy": "frequency"},  # use_count, then last_used
}


@pytest.fixture
def models(model_factory: Callable[..., Any]) -> dict[str, str]:
    """Three distinct tiny models, as ``[models]`` aliases."""
    return {
        "alpha": str(model_factory("alpha")),
        "beta": str(model_factory("beta", seed=1)),
        "gamma": str(model_factory("gamma", seed=2)),
    }


@pytest.fixture
def medium(model_factory: Callable[..., Any]) -> str:
    """A 200 MB model: its load lasts long enough (a few tenths of a second) to watch."""
    return str(model_factory("medium", target_bytes=200_000_000))


def jq(program: str, raw: bytes) -> Any:
    """Run the real ``jq`` on a response body, as the seed document's shell pipeline does."""
    done = subprocess.run(["jq", program], input=raw, capture_output=True, check=True, timeout=10)
    return json.loads(done.stdout)


def chat(client: httpx.Client, model: str, timeout: float = 60, **fields: Any) -> httpx.Response:
    body = {"model": model, "messages": HELLO, "max_tokens": 8, "temperature": 0, **fields}
    return client.post("/v1/chat/completions", json=body, timeout=timeout)


def use(client: httpx.Client, model: str, times: int = 1) -> dict[str, Any]:
    """Count ``times`` uses of ``model`` the way a client does: short completions."""
    reply: dict[str, Any] = {}
    for _ in range(times):
        response = chat(client, model, max_tokens=1)
        assert response.status_code == 200, response.text
        reply = response.json()
    return reply


def stream_events(client: httpx.Client, body: dict[str, Any]) -> list[Any]:
    """POST a streaming completion; the decoded ``data:`` events, ``"[DONE]"`` kept as text."""
    events: list[Any] = []
    with client.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line:
                assert line.startswith("data: "), line
                data = line.removeprefix("data: ")
                events.append(data if data == "[DONE]" else json.loads(data))
    return events


@contextmanager
def generating(client: httpx.Client, model: str) -> Iterator[Iterator[str]]:
    """A streamed reply that would run for minutes, open after its first event; leaving the
    block disconnects the client."""
    body = {"model": model, "messages": HELLO, "max_tokens": 8000, "temperature": 0,
            "stream": True}
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        lines = response.iter_lines()  # kept: a dropped iterator closes the connection
        next(lines)
        yield lines


def by_name(doc: dict[str, Any], key: str = "models") -> dict[str, dict[str, Any]]:
    return {m["name"]: m for m in doc[key]}


def wait_until(check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


# -- GET / and /health: the seed document's monitoring -------------------------------------------
def test_root_lists_cached_models_with_the_seed_fields_and_the_seed_jq_filters_work(
        runtime_factory: Callable[..., Runtime], models: dict[str, str], serve: Serve) -> None:
    server, client = serve(runtime_factory(models))
    empty = client.get("/").json()
    assert empty["cached_models"] == []
    assert set(by_name(empty)) == {"alpha", "beta", "gamma", "demo"}

    use(client, "alpha", 3)
    use(client, "beta", 1)

    # curl http://localhost:11435/ | jq '.cached_models'
    raw = httpx.get(f"http://localhost:{server.port}/", timeout=10).content
    cached = jq(".cached_models", raw)
    assert [m["name"] for m in cached] == ["alpha", "beta"]  # gamma was never loaded
    for model in cached:
        assert set(CACHED_FIELDS) <= set(model)
        assert ISO_SECONDS.match(model["last_used"]) and ISO_SECONDS.match(model["loaded_at"])
        assert model["load_time_seconds"] > 0
        assert model["state"] == "loaded" and model["pinned"] is False
        assert model["size_bytes"] > 0
    assert {m["name"]: m["use_count"] for m in cached} == {"alpha": 3, "beta": 1}

    # curl http://localhost:11435/ | jq '.cached_models | sort_by(.use_count) | reverse'
    ranked = jq(".cached_models | sort_by(.use_count) | reverse", raw)
    assert [(m["name"], m["use_count"]) for m in ranked] == [("alpha", 3), ("beta", 1)]

    # curl http://localhost:11435/health | jq '.cached_models'
    health_raw = client.get("/health").content
    assert [m["name"] for m in jq(".cached_models", health_raw)] == ["alpha", "beta"]
    health = json.loads(health_raw)
    assert health["status"] == "normal"
    memory = health["memory"]
    assert memory["warning_threshold"] == 0.85 and memory["emergency_threshold"] == 0.98
    assert 0 < memory["used_fraction"] < 1
    assert memory["total_bytes"] >= memory["used_bytes"] > 0
    assert memory["mlx_active_bytes"] > 0 and "mlx_cache_bytes" in memory
    gamma = by_name(health)["gamma"]
    assert gamma["state"] == "not_loaded" and gamma["use_count"] == 0


def test_v1_models_lists_configured_discovered_and_loaded_models(
        runtime_factory: Callable[..., Runtime], models: dict[str, str], serve: Serve,
        fresh_model: Callable[[str], Any]) -> None:
    folder = fresh_model("delta").parent
    _, client = serve(runtime_factory(models, catalog={"dirs": [str(folder)]}))
    assert client.post("/models/load", json={"model": "alpha"}).status_code == 200
    fresh_model("epsilon")  # downloaded while the server runs

    listing = client.get("/v1/models").json()
    assert listing["object"] == "list"
    entries = {m["id"]: m for m in listing["data"]}
    assert {"alpha", "beta", "gamma", "delta", "epsilon"} <= set(entries)
    assert all(m["object"] == "model" and isinstance(m["created"], int) for m in entries.values())
    assert entries["alpha"]["loaded"] is True and entries["alpha"]["state"] == "loaded"
    assert entries["beta"]["loaded"] is False and entries["beta"]["state"] == "not_loaded"
    assert entries["delta"]["owned_by"] == "folder"
    assert client.get("/v1/models/alpha").json()["loaded"] is True


# -- chat completions -----------------------------------------------------------------------------
def test_chat_completion_has_content_and_consistent_usage(
        runtime_factory: Callable[..., Runtime], models: dict[str, str], serve: Serve) -> None:
    _, client = serve(runtime_factory(models))
    response = chat(client, "alpha", max_tokens=8, seed=7)
    assert response.status_code == 200, response.text
    reply = response.json()
    assert reply["object"] == "chat.completion" and reply["model"] == "alpha"
    assert reply["id"].startswith("chatcmpl-")
    choice = reply["choices"][0]
    assert choice["message"]["role"] == "assistant" and choice["message"]["content"]
    usage = reply["usage"]
    assert usage["prompt_tokens"] > 0 and 0 < usage["completion_tokens"] <= 8
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert choice["finish_reason"] in ("stop", "length")
    if choice["finish_reason"] == "length":
        assert usage["completion_tokens"] == 8
    assert reply["timings"]["loaded_first"] is True  # loaded through the cache on demand

    short = chat(client, "alpha", max_completion_tokens=3, max_tokens=50).json()
    assert short["usage"]["completion_tokens"] <= 3
    assert short["timings"]["loaded_first"] is False
    assert by_name(client.get("/").json())["alpha"]["use_count"] == 2


def test_streaming_sends_chunks_then_finish_usage_and_done_matching_the_plain_reply(
        runtime_factory: Callable[..., Runtime], models: dict[str, str], serve: Serve) -> None:
    _, client = serve(runtime_factory(models))
    body = {"model": "alpha", "messages": HELLO, "max_tokens": 12, "temperature": 0}
    plain = client.post("/v1/chat/completions", json=body).json()

    events = stream_events(client, {**body, "stream_options": {"include_usage": True}})
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1 and chunks[0]["model"] == "alpha"
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    *pieces, finish, usage = chunks
    assert finish["choices"][0]["finish_reason"] == plain["choices"][0]["finish_reason"]
    assert all(p["choices"][0]["finish_reason"] is None for p in pieces)
    assert usage["choices"] == [] and usage["usage"] == plain["usage"]
    text = "".join(p["choices"][0]["delta"].get("content", "") for p in pieces)
    assert text and text == plain["choices"][0]["message"]["content"]
    assert len(pieces) - 1 <= usage["usage"]["completion_tokens"]

    without_usage = stream_events(client, body)
    assert without_usage[-1] == "[DONE]"
    assert all("usage" not in c for c in without_usage[:-1])
    assert without_usage[-2]["choices"][0]["finish_reason"] is not None


def test_concurrent_requests_for_a_loading_model_share_one_load(
        runtime_factory: Callable[..., Runtime], medium: str, serve: Serve) -> None:
    runtime = runtime_factory({"medium": medium})
    events: list[CacheEvent] = []
    runtime.cache.subscribe(events.append)
    _, client = serve(runtime)
    results: list[httpx.Response] = []

    def ask() -> None:
        # A short prompt and one token: the 200 MB model generates slowly on a CPU.
        results.append(chat(client, "medium", max_tokens=1,
                            messages=[{"role": "user", "content": "hi"}]))

    threads = [threading.Thread(target=ask) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert [r.status_code for r in results] == [200, 200, 200]
    assert sum(e.kind is EventKind.LOAD_STARTED and e.model == "medium" for e in events) == 1
    assert sum(r.json()["timings"]["loaded_first"] for r in results) == 3  # all waited for it
    assert by_name(client.get("/").json())["medium"]["use_count"] == 3


def wait_for_cancelled_reply(runtime: Runtime, server: ApiServer,
                             caplog: pytest.LogCaptureFixture, model: str) -> None:
    """Wait until ``model``'s one reply has ended, and check it ended cancelled, not finished."""
    wait_until(lambda: runtime.cache.get(model).leases == 0 and not len(server.app.state.generations))
    replies = [r.getMessage() for r in caplog.records
               if r.name == "mlx_tui.chat" and r.getMessage().startswith(f"{model}:")]
    assert len(replies) == 1 and "tokens at" in replies[0] and "cancelled" in replies[0]


def test_a_client_that_disconnects_mid_stream_cancels_its_generation(
        runtime_factory: Callable[..., Runtime], models: dict[str, str], serve: Serve,
        caplog: pytest.LogCaptureFixture) -> None:
    runtime = runtime_factory(models)
    server, client = serve(runtime)
    caplog.set_level("INFO", logger="mlx_tui.chat")
    with generating(client, "alpha") as lines:
        assert [next(lines) for _ in range(6)][-1].startswith("data: ")  # three more events
        assert runtime.cache.get("alpha").leases == 1
    # The client is gone: the generation stops at its next token and gives the model back.
    wait_for_cancelled_reply(runtime, server, caplog, "alpha")


def test_a_client_that_gives_up_on_a_plain_request_cancels_its_generation(
        runtime_factory: Callable[..., Runtime], models: dict[str, str], serve: Serve,
        caplog: pytest.LogCaptureFixture) -> None:
    runtime = runtime_factory(models)
    server, client = serve(runtime)
    caplog.set_level("INFO", logger="mlx_tui.chat")
    with pytest.raises(httpx.ReadTimeout):
        chat(client, "gamma", max_tokens=8000, timeout=1.5)
    wait_for_cancelled_reply(runtime, server, caplog, "gamma")


def test_stopping_the_server_cancels_the_replies_under_way(
        runtime_factory: Callable[..., Runtime], models: dict[str, str]) -> None:
    runtime = runtime_factory(models)
    server = ApiServer(runtime, "127.0.0.1", 0)
    server.start()
    with httpx.Client(base_url=server.url, timeout=10) as client, \
            generating(client, "alpha") as lines:
        server.stop()  # what the app does when it quits
        rest = [line.removeprefix("data: ") for line in lines if line]
    assert not server.running and runtime.cache.get("alpha").leases == 0
    # The reply was ended, not cut: the client reads why, then the end of the stream.
    assert rest[-1] == "[DONE]"
    assert json.loads(rest[-2])["choices"][0]["finish_reason"] == "cancelled"


def test_evicting_a_model_that_generates_waits_for_its_request(
        runtime_factory: Callable[..., Runtime], models: dict[str, str], serve: Serve) -> None:
    runtime = runtime_factory(models)
    _, client = serve(runtime)
    with generating(client, "beta"):
        answer = client.post("/models/evict", json={"model": "beta"}).json()
        assert answer["evicted"] is False and answer["deferred"] is True
        assert answer["model"]["state"] == "loaded"
    wait_until(lambda: runtime.cache.get("beta").state.value == "not_loaded")


# -- scripts: load, evict, pin, clean-up ----------------------------------------------------------
def test_load_pin_cleanup_unpin_and_evict_through_the_api(
        runtime_factory: Callable[..., Runtime], models: dict[str, str], serve: Serve) -> None:
    _, client = serve(runtime_factory(models, memory={"keep_on_cleanup": 0}))
    loaded = client.post("/models/load", json={"model": "alpha"})
    assert loaded.status_code == 200
    assert loaded.json()["model"]["state"] == "loaded"
    assert loaded.json()["model"]["load_time_seconds"] > 0
    assert loaded.json()["model"]["use_count"] == 0  # a load is not a use

    queued = client.post("/models/load", json={"model": "beta", "wait": False})
    assert queued.status_code == 202
    assert queued.json()["model"]["state"] in ("queued", "loading", "loaded")
    wait_until(lambda: by_name(client.get("/").json())["beta"]["state"] == "loaded")

    pinned = client.post("/models/pin", json={"model": "alpha"}).json()
    assert pinned["model"]["pinned"] is True
    plan = client.post("/models/cleanup", json={"level": "normal"}).json()
    assert plan["level"] == "normal" and plan["evicted"] == ["beta"] and "alpha" in plan["kept"]
    cached = client.get("/").json()["cached_models"]
    assert [(m["name"], m["pinned"]) for m in cached] == [("alpha", True)]

    unpinned = client.post("/models/pin", json={"model": "alpha", "pinned": False}).json()
    assert unpinned["model"]["pinned"] is False
    evicted = client.post("/models/evict", json={"model": "alpha"}).json()
    assert evicted["evicted"] is True and evicted["model"]["state"] == "not_loaded"
    assert client.get("/").json()["cached_models"] == []
    again = client.post("/models/evict", json={"model": "alpha"}).json()
    assert again["evicted"] is False and again["deferred"] is False


# -- the seed document's clean-up scenarios, with its thresholds in settings.toml ----------------
def test_seed_scenario_1_normal_cleanup_keeps_the_most_used_model(
        runtime_factory: Callable[..., Runtime], models: dict[str, str], serve: Serve,
        fixed_probe: FixedMemoryProbe) -> None:
    runtime = runtime_factory(models, probe=fixed_probe, **SEED_RULES)
    _, client = serve(runtime)
    use(client, "alpha", 5)  # the seed's qwen2.5-coder-32b, the most used
    use(client, "beta", 3)
    use(client, "gamma", 2)
    ranked = jq(".cached_models | sort_by(.use_count) | reverse", client.get("/").content)
    assert [(m["name"], m["use_count"]) for m in ranked] == [("alpha", 5), ("beta", 3), ("gamma", 2)]

    fixed_probe.set_fraction(0.90)  # between 85 % and 95 %
    runtime.cache.check_memory()
    doc = client.get("/").json()
    assert doc["status"] == "warning" and doc["memory"]["zone"] == "warning"
    assert [m["name"] for m in doc["cached_models"]] == ["alpha"]
    others = by_name(doc)
    assert (others["beta"]["state"], others["beta"]["use_count"]) == ("not_loaded", 3)
    assert (others["gamma"]["state"], others["gamma"]["use_count"]) == ("not_loaded", 2)

    fixed_probe.set_fraction(0.5)  # the unloads gave the memory back
    assert use(client, "alpha")["timings"]["loaded_first"] is False  # instant: in cache
    reloaded = use(client, "beta")["timings"]
    assert reloaded["loaded_first"] is True and reloaded["load_seconds"] > 0


def test_seed_scenario_2_emergency_cleanup_unloads_every_model(
        runtime_factory: Callable[..., Runtime], models: dict[str, str], serve: Serve,
        fixed_probe: FixedMemoryProbe) -> None:
    runtime = runtime_factory(models, probe=fixed_probe, **SEED_RULES)
    _, client = serve(runtime)
    for name in models:
        use(client, name)
    client.post("/models/pin", json={"model": "alpha"})
    assert len(client.get("/").json()["cached_models"]) == 3

    fixed_probe.set_fraction(0.99)
    runtime.cache.check_memory()
    doc = client.get("/health").json()
    assert doc["status"] == "emergency" and doc["cached_models"] == []
    assert jq(".cached_models", client.get("/").content) == []

    fixed_probe.set_fraction(0.5)
    assert use(client, "gamma")["timings"]["loaded_first"] is True  # any model needs a load


# -- errors ---------------------------------------------------------------------------------------
def test_malformed_bodies_are_400_with_a_message(
        runtime_factory: Callable[..., Runtime], models: dict[str, str], serve: Serve) -> None:
    _, client = serve(runtime_factory(models))
    ok = {"model": "alpha", "messages": HELLO}
    chat_bodies: list[Any] = [
        b"", b"{", b"[1, 2]", b"\xff\xfe",
        {"messages": HELLO}, {"model": "", "messages": HELLO}, {"model": "alpha"},
        {**ok, "messages": []}, {**ok, "messages": ["hi"]},
        {**ok, "messages": [{"role": "wizard", "content": "hi"}]},
        {**ok, "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
        {**ok, "temperature": "hot"}, {**ok, "temperature": 3}, {**ok, "top_p": -1},
        {**ok, "max_tokens": 0}, {**ok, "max_completion_tokens": 1.5}, {**ok, "seed": -1},
        {**ok, "n": 2}, {**ok, "stream": "yes"}, {**ok, "stream_options": []},
    ]
    script_bodies: list[tuple[str, Any]] = [
        ("/models/load", {}), ("/models/load", {"model": 5}), ("/models/load", b"model=alpha"),
        ("/models/load", {"model": "alpha", "wait": "no"}),
        ("/models/evict", {"name": "alpha"}), ("/models/pin", {"model": "alpha", "pinned": "no"}),
        ("/models/cleanup", {"level": "panic"}),
    ]
    for path, body in [("/v1/chat/completions", b) for b in chat_bodies] + script_bodies:
        sent = {"content": body} if isinstance(body, bytes) else {"json": body}
        response = client.post(path, headers={"Content-Type": "application/json"}, **sent)
        assert response.status_code == 400, (path, body, response.text)
        error = response.json()["error"]
        assert error["type"] == "invalid_request_error" and error["message"], (path, body)
    assert client.get("/").json()["cached_models"] == []  # nothing was loaded by a bad request


def test_unknown_models_are_404_on_every_endpoint(
        runtime_factory: Callable[..., Runtime], models: dict[str, str], serve: Serve) -> None:
    _, client = serve(runtime_factory(models))
    answers = [
        chat(client, "no-such-model"),
        chat(client, "no-such-model", stream=True),
        client.post("/models/load", json={"model": "no-such-model"}),
        client.post("/models/evict", json={"model": "no-such-model"}),
        client.post("/models/pin", json={"model": "no-such-model"}),
        client.get("/v1/models/no-such-model"),
    ]
    for response in answers:
        assert response.status_code == 404, response.text
        error = response.json()["error"]
        assert error["type"] == "model_not_found" and "no-such-model" in error["message"]
        assert "alpha" in error["message"]  # the message lists what is known


def test_a_model_that_cannot_fit_is_422_with_the_figures(
        runtime_factory: Callable[..., Runtime], models: dict[str, str], serve: Serve) -> None:
    probe = FixedMemoryProbe(total_bytes=600_000, used_fraction=0.5)  # the model is 545 KB
    _, client = serve(runtime_factory(models, probe=probe))
    answers = [
        chat(client, "alpha"),
        chat(client, "alpha", stream=True),
        client.post("/models/load", json={"model": "alpha"}),
    ]
    for response in answers:
        assert response.status_code == 422, response.text  # not 5xx: clients would retry it
        assert response.headers["content-type"] == "application/json"
        error = response.json()["error"]
        assert error["type"] == "model_too_large"
        assert "needs 545.2 KB" in error["message"] and "emergency threshold" in error["message"]
        assert error["memory"]["total_bytes"] == 600_000
    assert by_name(client.get("/").json())["alpha"]["state"] == "failed"


def test_a_failed_load_is_422_with_the_reason_and_no_stack_trace(
        runtime_factory: Callable[..., Runtime], serve: Serve,
        fresh_model: Callable[[str], Any]) -> None:
    broken = fresh_model("broken")
    corrupt_model(broken, "missing_weights")
    _, client = serve(runtime_factory({"broken": str(broken)}))
    for response in (chat(client, "broken"), client.post("/models/load", json={"model": "broken"})):
        assert response.status_code == 422, response.text  # not 5xx: clients would retry it
        error = response.json()["error"]
        assert error["type"] == "model_load_failed"
        assert error["message"].startswith("broken: ") and "weights" in error["message"]
        assert "Traceback" not in response.text and 'File "' not in response.text
    assert by_name(client.get("/").json())["broken"]["error"]


def test_unknown_routes_and_methods_answer_json(
        runtime_factory: Callable[..., Runtime], models: dict[str, str], serve: Serve) -> None:
    _, client = serve(runtime_factory(models))
    missing = client.get("/v1/embeddings")
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found"
    wrong = client.get("/v1/chat/completions")
    assert wrong.status_code == 405 and wrong.json()["error"]["type"] == "method_not_allowed"


# -- the API key and the bind address -------------------------------------------------------------
def test_with_an_api_key_every_endpoint_but_health_needs_it(
        runtime_factory: Callable[..., Runtime], models: dict[str, str], serve: Serve) -> None:
    _, client = serve(runtime_factory(models), api_key="s3cret")
    good = {"Authorization": "Bearer s3cret"}
    for method, path in (("GET", "/"), ("GET", "/v1/models"), ("POST", "/v1/chat/completions"),
                         ("POST", "/models/load"), ("POST", "/models/cleanup")):
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
            response = client.request(method, path, headers=headers, json={"model": "alpha"})
            assert response.status_code == 401, (path, headers)
            assert response.json()["error"]["type"] == "authentication_error"
            assert response.headers["www-authenticate"] == "Bearer"
    assert client.get("/health").json() == {"status": "normal"}  # liveness, no model names
    assert "cached_models" in client.get("/health", headers=good).json()
    assert client.get("/", headers=good).status_code == 200
    assert chat(client, "alpha", max_tokens=1).status_code == 401
    replied = client.post("/v1/chat/completions", headers=good,
                          json={"model": "alpha", "messages": HELLO, "max_tokens": 1})
    assert replied.status_code == 200


def test_binding_beyond_loopback_needs_an_api_key(
        runtime_factory: Callable[..., Runtime], models: dict[str, str]) -> None:
    runtime = runtime_factory(models)
    open_server = ApiServer(runtime, "0.0.0.0", 0)
    with pytest.raises(UnsafeBind, match=r"api_key"):
        open_server.start()
    assert not open_server.running
    with ApiServer(runtime, "0.0.0.0", 0, api_key="k") as keyed:
        url = f"http://127.0.0.1:{keyed.port}/"
        assert httpx.get(url).status_code == 401
        assert httpx.get(url, headers={"Authorization": "Bearer k"}).status_code == 200
    assert all(is_loopback(h) for h in ("localhost", "127.0.0.1", "127.0.0.2", "::1", "[::1]"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "192.168.1.20", "example.org"))


def test_a_taken_port_raises_port_in_use_at_start(
        runtime_factory: Callable[..., Runtime], models: dict[str, str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = ApiServer(runtime_factory(models), "127.0.0.1", port)
        with pytest.raises(PortInUse, match=rf"port {port} on 127\.0\.0\.1 is in use") as caught:
            server.start()
        assert isinstance(caught.value, RuntimeError) and "[api].port" in str(caught.value)
        assert not server.running


# -- /health never waits for a load or a generation ----------------------------------------------
def test_health_answers_while_a_model_loads(
        runtime_factory: Callable[..., Runtime], medium: str, serve: Serve) -> None:
    _, client = serve(runtime_factory({"medium": medium}))
    assert client.post("/models/load", json={"model": "medium", "wait": False}).status_code == 202
    states, latencies = [], []
    while not states or states[-1] != "loaded":
        started = time.perf_counter()
        response = client.get("/health", timeout=5)
        latencies.append(time.perf_counter() - started)
        assert response.status_code == 200
        states.append(by_name(response.json())["medium"]["state"])
        assert len(states) < 100_000
    assert {"queued", "loading"} & set(states), states  # answered while the load ran
    during = latencies[:-1] or latencies
    print(f"\n/health during a {len(during)}-request load: p50 "
          f"{statistics.median(during) * 1000:.1f} ms, max {max(during) * 1000:.1f} ms")


def test_health_answers_while_a_model_generates(
        runtime_factory: Callable[..., Runtime], models: dict[str, str], serve: Serve) -> None:
    runtime = runtime_factory(models)
    server, client = serve(runtime)
    with generating(client, "alpha"):
        with httpx.Client(base_url=server.url, timeout=5) as other:
            for _ in range(20):
                doc = other.get("/health").json()
                assert by_name(doc, "cached_models")["alpha"]["in_use"] == 1
    wait_until(lambda: runtime.cache.get("alpha").leases == 0)
