"""What a web page, a script or a careless client can make the API do, tried for real.

Each test sends what a browser or a script would send (a rebinding page's ``Host``, a foreign
``Origin``, a ``text/plain`` form post, a preflight, a body too large or oddly shaped, a key of
any length) to a real server on loopback over tiny real MLX models, and checks both the
answer and that nothing changed that should not have. The retry tests use the official
``openai`` SDK, which retries 408, 409, 429 and 5xx on its own.
"""

from __future__ import annotations

import json
import socket
from typing import Any, Callable, Iterator

import httpx
import openai
import pytest
from starlette.requests import Request

from mlx_tui.core.cache import ModelState
from mlx_tui.core.errors import ModelBusy, RequestTooLarge, UnsupportedRequest
from mlx_tui.core.events import CacheEvent, EventKind
from mlx_tui.core.memory import FixedMemoryProbe
from mlx_tui.core.runtime import Runtime
from mlx_tui.devtools.modelgen import corrupt_model
from mlx_tui.server import security
from mlx_tui.server.security import host_allowed, origin_allowed
from mlx_tui.server.serve import ApiServer
from tests.protocol_server import Serve

HELLO = [{"role": "user", "content": "Hello there"}]
EVIL = "http://evil.example"


@pytest.fixture
def models(model_factory: Callable[..., Any]) -> dict[str, str]:
    return {"alpha": str(model_factory("alpha")), "beta": str(model_factory("beta", seed=1))}


def state(runtime: Runtime, name: str) -> ModelState:
    return runtime.cache.get(name).state


def load(client: httpx.Client, name: str) -> None:
    assert client.post("/models/load", json={"model": name}).status_code == 200


def error_of(response: httpx.Response) -> dict[str, Any]:
    assert response.headers["content-type"] == "application/json", response.text
    error = response.json()["error"]
    assert error["message"] and error["type"]
    return error


def events_of(runtime: Runtime) -> list[CacheEvent]:
    events: list[CacheEvent] = []
    runtime.cache.subscribe(events.append)
    return events


# -- Host: DNS rebinding ---------------------------------------------------------------------------
def test_a_dns_rebinding_page_gets_403_everywhere_and_changes_nothing(
        runtime_factory: Callable[..., Runtime], models: dict[str, str], serve: Serve) -> None:
    runtime = runtime_factory(models)
    server, client = serve(runtime)
    load(client, "alpha")
    events = events_of(runtime)
    # evil.example now resolves to 127.0.0.1: its page's requests are same-origin for the
    # browser, so they carry no Origin, only the page's own name in Host.
    rebound = {"Host": f"evil.example:{server.port}"}
    answers = [
        client.get("/", headers=rebound),
        client.get("/health", headers=rebound),
        client.get("/v1/models", headers=rebound),
        client.post("/v1/chat/completions", headers=rebound,
                    json={"model": "alpha", "messages": HELLO, "max_tokens": 1}),
        client.post("/models/evict", headers=rebound, json={"model": "alpha"}),
        client.post("/models/load", headers=rebound, json={"model": "beta"}),
        client.post("/models/cleanup", headers=rebound, json={"level": "emergency"}),
        client.options("/v1/models", headers={**rebound, "Origin": "http://evil.example",
                                              "Access-Control-Request-Method": "GET"}),
    ]
    for response in answers:
        assert response.status_code == 403, response.text
        error = error_of(response)
        assert error["type"] == "host_not_allowed"
        assert "evil.example" in error["message"] and "allowed_hosts" in error["message"]
        assert "alpha" not in response.text  # no model name leaks
    assert state(runtime, "alpha") is ModelState.LOADED and state(runtime, "beta") is ModelState.NOT_LOADED
    assert events == []

    for host in (f"localhost:{server.port}", f"127.0.0.1:{server.port}", f"[::1]:{server.port}",
                 "localhost", "LOCALHOST:80", f"127.0.0.2:{server.port}"):
        assert client.get("/v1/models", headers={"Host": host}).status_code == 200, host


def test_allowed_hosts_from_settings_apply_without_a_restart(
        runtime_factory: Callable[..., Runtime], models: dict[str, str], serve: Serve) -> None:
    runtime = runtime_factory(models, api={"allowed_hosts": ["mybox.lan"]})
    server, client = serve(runtime)
    assert client.get("/v1/models", headers={"Host": f"MyBox.lan:{server.port}"}).status_code == 200
    assert client.get("/v1/models", headers={"Host": "other.lan"}).status_code == 403

    runtime.settings_store.update({"api": {"allowed_hosts": []}})  # settings.toml edited
    assert client.get("/v1/models", headers={"Host": "mybox.lan"}).status_code == 403
    runtime.settings_store.update({"api": {"allowed_hosts": ["*"]}})  # explicit: any name
    assert client.get("/v1/models", headers={"Host": "anything.example"}).status_code == 200


def test_bound_beyond_loopback_the_key_guards_lan_names_and_loopback_is_still_checked(
        runtime_factory: Callable[..., Runtime], models: dict[str, str], serve: Serve) -> None:
    # On a LAN address clients use the machine's IP or any of its names: not checked (the key,
    # which such a bind needs, is what guards them), as Ollama does.
    assert host_allowed("192.168.1.20:11435", on_loopback=False, allowed=())
    assert host_allowed("evil.example", on_loopback=False, allowed=())
    assert not host_allowed("evil.example", on_loopback=True, allowed=())
    assert not host_allowed("localhost@evil.example", on_loopback=True, allowed=())
    assert not host_allowed("localhost:notaport", on_loopback=True, allowed=())
    assert host_allowed(None, on_loopback=True, allowed=())  # HTTP/1.0 without Host: no browser

    # Bound to 0.0.0.0, a connection that arrives on 127.0.0.1 is still a rebinding target.
    _, client = serve(runtime_factory(models), api_key="k", host="0.0.0.0")
    key = {"Authorization": "Bearer k"}
    assert client.get("/v1/models", headers={**key, "Host": "evil.example"}).status_code == 403
    assert client.get("/v1/models", headers=key).status_code == 200


# -- Origin and CORS -------------------------------------------------------------------------------
def test_a_cross_site_text_plain_post_cannot_change_anything(
        runtime_factory: Callable[..., Runtime], models: dict[str, str], serve: Serve) -> None:
    runtime = runtime_factory(models)
    _, client = serve(runtime)
    load(client, "alpha")
    events = events_of(runtime)
    # What a page on evil.example can send without a preflight: a "simple" request.
    for path, body in (("/models/evict", {"model": "alpha"}), ("/models/load", {"model": "beta"}),
                       ("/models/pin", {"model": "alpha"}), ("/models/cleanup", {"level": "emergency"}),
                       ("/v1/chat/completions", {"model": "alpha", "messages": HELLO})):
        for content_type in ("text/plain", "application/x-www-form-urlencoded", "application/json"):
            response = client.post(path, content=json.dumps(body),
                                   headers={"Origin": EVIL, "Content-Type": content_type})
            assert response.status_code == 403, (path, content_type, response.text)
            assert error_of(response)["type"] == "origin_not_allowed"
            assert "access-control-allow-origin" not in response.headers
    assert state(runtime, "alpha") is ModelState.LOADED and not runtime.cache.get("alpha").pinned
    assert state(runtime, "beta") is ModelState.NOT_LOADED
    assert events == []
    # A refused origin cannot read either: not the document, not the list.
    for path in ("/", "/v1/models", "/v1/models/alpha"):
        assert client.get(path, headers={"Origin": EVIL}).status_code == 403


def test_a_body_that_is_not_json_is_415_whoever_sends_it(
        runtime_factory: Callable[..., Runtime], models: dict[str, str], serve: Serve) -> None:
    runtime = runtime_factory(models)
    _, client = serve(runtime)
    load(client, "alpha")
    body = json.dumps({"model": "alpha"})
    # An old browser without Origin, a form, `curl -d` (form-urlencoded), a missing type.
    for headers in ({"Content-Type": "text/plain"}, {"Content-Type": "multipart/form-data; boundary=x"},
                    {"Content-Type": "application/x-www-form-urlencoded"}, {},
                    {"Content-Type": "text/plain", "Origin": "http://localhost:5173"}):
        response = client.post("/models/evict", content=body, headers=headers)
        assert response.status_code == 415, (headers, response.text)
        error = error_of(response)
        assert error["type"] == "unsupported_media_type"
        assert "Content-Type: application/json" in error["message"]
    assert state(runtime, "alpha") is ModelState.LOADED
    evicted = client.post("/models/evict", content=body,
                          headers={"Content-Type": "application/json; charset=utf-8"})
    assert evicted.status_code == 200 and evicted.json()["evicted"] is True


def test_pages_and_apps_on_this_machine_get_cors_headers(
        runtime_factory: Callable[..., Runtime], models: dict[str, str], serve: Serve) -> None:
    _, client = serve(runtime_factory(models))
    for origin in ("http://localhost:5173", "http://127.0.0.1:8080", "http://[::1]:3000",
                   "https://localhost", "vscode-webview://1f2e3d", "app://obsidian.md",
                   "tauri://localhost"):
        response = client.get("/v1/models", headers={"Origin": origin})
        assert response.status_code == 200, origin
        assert response.headers["access-control-allow-origin"] == origin
        assert "Origin" in response.headers["vary"]
        assert "access-control-allow-credentials" not in response.headers  # no cookies here
    for origin in (EVIL, "http://localhost.evil.example", "http://127.0.0.1.nip.io",
                   "null", "https://localhost:3000/path", "ftp://localhost", "http://192.168.1.9"):
        assert client.get("/v1/models", headers={"Origin": origin}).status_code == 403, origin
    assert not origin_allowed("http://user@localhost", ())


def test_an_allowed_origin_from_settings_gets_preflights_and_cors_headers(
        runtime_factory: Callable[..., Runtime], models: dict[str, str], serve: Serve) -> None:
    app_origin = "https://chat.example.org"
    runtime = runtime_factory(models, api={"allowed_origins": [app_origin]})
    _, client = serve(runtime)
    preflight = client.options("/v1/chat/completions", headers={
        "Origin": app_origin, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type, x-stainless-os",
        "Access-Control-Request-Private-Network": "true"})
    assert preflight.status_code == 204 and preflight.content == b""
    assert preflight.headers["access-control-allow-origin"] == app_origin
    assert "POST" in preflight.headers["access-control-allow-methods"]
    allowed_headers = {h.strip().lower() for h in preflight.headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "content-type", "x-stainless-os"} <= allowed_headers
    assert int(preflight.headers["access-control-max-age"]) > 0
    assert preflight.headers["access-control-allow-private-network"] == "true"

    reply = client.post("/v1/chat/completions", headers={"Origin": app_origin},
                        json={"model": "alpha", "messages": HELLO, "max_tokens": 2})
    assert reply.status_code == 200, reply.text
    assert reply.headers["access-control-allow-origin"] == app_origin
    assert reply.json()["choices"][0]["message"]["role"] == "assistant"

    refused = client.options("/v1/chat/completions", headers={
        "Origin": "https://other.example.org", "Access-Control-Request-Method": "POST"})
    assert refused.status_code == 403 and error_of(refused)["type"] == "origin_not_allowed"
    assert "access-control-allow-origin" not in refused.headers

    runtime.settings_store.update({"api": {"allowed_origins": []}})  # applies at once
    assert client.get("/v1/models", headers={"Origin": app_origin}).status_code == 403


def test_star_allows_every_origin_only_when_set(
        runtime_factory: Callable[..., Runtime], models: dict[str, str], serve: Serve) -> None:
    runtime = runtime_factory(models)
    _, client = serve(runtime)
    assert client.get("/v1/models", headers={"Origin": EVIL}).status_code == 403
    runtime.settings_store.update({"api": {"allowed_origins": ["*"]}})
    opened = client.get("/v1/models", headers={"Origin": EVIL})
    assert opened.status_code == 200 and opened.headers["access-control-allow-origin"] == EVIL
    preflight = client.options("/models/evict", headers={"Origin": EVIL,
                                                         "Access-Control-Request-Method": "POST"})
    assert preflight.status_code == 204
    # Still JSON only: a form post is refused even from an allowed origin.
    assert client.post("/models/evict", content=b'{"model": "alpha"}',
                       headers={"Origin": EVIL, "Content-Type": "text/plain"}).status_code == 415


# -- the API key -----------------------------------------------------------------------------------
def test_with_a_key_only_health_answers_without_it_and_only_its_status(
        runtime_factory: Callable[..., Runtime], models: dict[str, str], serve: Serve) -> None:
    runtime = runtime_factory(models)
    _, client = serve(runtime, api_key="s3cret")
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"},
                    {"Authorization": "Basic czNjcmV0"}, {"x-api-key": "wrong"}):
        for method, path in (("GET", "/"), ("GET", "/v1/models"), ("GET", "/v1/models/alpha"),
                             ("POST", "/v1/chat/completions"), ("POST", "/models/evict")):
            response = client.request(method, path, headers=headers, json={"model": "alpha"})
            assert response.status_code == 401, (method, path, headers)
            assert error_of(response)["type"] == "authentication_error"
            assert response.headers["www-authenticate"] == "Bearer"
    assert client.get("/health").json() == {"status": "normal"}  # liveness, no model names
    heartbeat = client.head("/")  # Ollama's clients probe HEAD / before anything else
    assert heartbeat.status_code == 200 and heartbeat.content == b""
    for good in ({"Authorization": "Bearer s3cret"}, {"Authorization": "bearer  s3cret"},
                 {"x-api-key": "s3cret"}):
        assert "cached_models" in client.get("/", headers=good).json(), good
        assert "cached_models" in client.get("/health", headers=good).json(), good

    # A page allowed to call (here: localhost) reads why it was refused; its preflight needs no key.
    page = {"Origin": "http://localhost:5173"}
    refused = client.get("/v1/models", headers=page)
    assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == page["Origin"]
    preflight = client.options("/v1/models", headers={**page, "Access-Control-Request-Method": "GET",
                                                      "Access-Control-Request-Headers": "authorization"})
    assert preflight.status_code == 204

    # A new key in settings.toml applies at once; removing it does not open the API.
    runtime.settings_store.update({"api": {"api_key": "n3w"}})
    assert client.get("/v1/models", headers={"Authorization": "Bearer s3cret"}).status_code == 401
    assert client.get("/v1/models", headers={"Authorization": "Bearer n3w"}).status_code == 200
    runtime.settings_store.update({"api": {"api_key": ""}})
    assert client.get("/v1/models").status_code == 401
    assert client.get("/v1/models", headers={"Authorization": "Bearer s3cret"}).status_code == 200


def test_keys_of_every_length_are_compared_as_equal_length_digests(
        runtime_factory: Callable[..., Runtime], models: dict[str, str], serve: Serve,
        monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[tuple[int, int]] = []
    real = security.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(security, "compare_digest", spy)
    _, client = serve(runtime_factory(models), api_key="s3cret")
    tries = ["", "s", "s3cre", "s3cret!", "x" * 10_000, "ключ", "s3cret"]
    statuses = [client.get("/v1/models", headers={"x-api-key": k.encode("utf-8")}).status_code
                for k in tries]
    assert statuses == [401] * 6 + [200]
    # compare_digest is constant-time only for equal lengths: it always sees two 32-byte digests.
    assert len(compared) == len(tries) and set(compared) == {(32, 32)}


# -- limits and malformed input ------------------------------------------------------------------
def test_a_body_over_the_limit_is_413_while_it_is_read(
        runtime_factory: Callable[..., Runtime], models: dict[str, str], serve: Serve) -> None:
    runtime = runtime_factory(models, api={"max_body_bytes": 4096})
    _, client = serve(runtime)
    padded = b'{"model": "alpha", "pinned": true' + b" " * 10_000 + b"}"  # 10 KB of valid JSON
    json_type = {"Content-Type": "application/json"}

    declared = client.post("/models/pin", content=padded, headers=json_type)
    assert declared.status_code == 413
    error = error_of(declared)
    assert error["type"] == "request_too_large" and "4,096" in error["message"]
    assert "max_body_bytes" in error["message"] and error["limit"] == 4096
    assert declared.headers["connection"] == "close"  # the rest of the body is not read

    def chunks() -> Iterator[bytes]:  # no Content-Length: Transfer-Encoding: chunked
        for start in range(0, len(padded), 1000):
            yield padded[start:start + 1000]

    chunked = client.post("/models/pin", content=chunks(), headers=json_type)
    assert chunked.status_code == 413 and "4,096" in error_of(chunked)["message"]
    assert not runtime.cache.get("alpha").pinned

    runtime.settings_store.update({"api": {"max_body_bytes": 20_000}})  # applies at once
    assert client.post("/models/pin", content=chunks(), headers=json_type).status_code == 200
    assert runtime.cache.get("alpha").pinned


def test_malformed_fields_are_4xx_and_the_connection_stays_usable(
        runtime_factory: Callable[..., Runtime], models: dict[str, str], serve: Serve) -> None:
    runtime = runtime_factory(models)
    _, client = serve(runtime)
    ok = {"model": "alpha", "messages": HELLO, "max_tokens": 1}
    deep = b'{"model": "alpha", "messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    bodies: list[tuple[str, bytes]] = [
        ("/v1/chat/completions", deep),
        ("/v1/chat/completions", json.dumps({**ok, "seed": 2**64}).encode()),
        ("/v1/chat/completions", json.dumps({**ok, "max_tokens": 2**80}).encode()),
        ("/v1/chat/completions", json.dumps({**ok, "messages": [{"role": ["user"], "content": "x"}]}).encode()),
        ("/v1/chat/completions", json.dumps({**ok, "messages": [{"role": {"a": 1}, "content": "x"}]}).encode()),
        ("/v1/chat/completions", json.dumps({**ok, "model": "m" * 5000}).encode()),
        ("/v1/chat/completions", json.dumps({**ok, "model": "~nosuchuser/m"}).encode()),
        ("/v1/chat/completions", json.dumps({**ok, "model": "al\x00pha"}).encode()),
        ("/v1/chat/completions", b'{"model": "/tmp/\\ud800", "messages": [{"role": "user", "content": "x"}]}'),
        ("/v1/chat/completions", b'{"model": "alpha", "messages": [{"role": "user", "content": "x\\udc80"}]}'),
        ("/v1/chat/completions", b'{"model": "alpha", "max_tokens": 1' + b"0" * 5000 + b', "messages": []}'),
        ("/v1/chat/completions", b'{"model": "alpha", "temperature": NaN, "messages": [{"role": "user", "content": "x"}]}'),
        ("/models/load", json.dumps({"model": "~nosuchuser/m"}).encode()),
        ("/models/evict", json.dumps({"model": "x" * 5000}).encode()),
        ("/models/pin", json.dumps({"model": ["alpha"]}).encode()),
    ]
    answers = [(path, body[:80], client.post(path, content=body, headers={"Content-Type": "application/json"}))
               for path, body in bodies]
    answers += [(path, b"", client.get(path)) for path in
                ("/v1/models/al%00pha", "/v1/models/" + "m" * 5000, "/v1/models/~nosuchuser/m")]
    for path, body, response in answers:
        assert response.status_code == 400, (path, body, response.status_code, response.text[:300])
        assert error_of(response)["type"] == "invalid_request_error"
        assert "connection" not in response.headers  # a 4xx keeps the connection
    assert client.get("/health").status_code == 200  # same keep-alive connection, no reset
    assert runtime.cache.loaded_names() == [] and {m.name for m in runtime.cache.models()} == {"alpha", "beta", "demo"}


# -- statuses that say whether to retry ------------------------------------------------------------
def raising_route(server: ApiServer, seen: list[str]) -> None:
    """A route standing in for the core raising each of its request errors (and a bug)."""

    async def raise_it(request: Request) -> None:
        kind = request.path_params["kind"]
        seen.append(kind)
        raise {
            "busy": ModelBusy("alpha", queued=8, retry_after=0.02),
            "too-large": RequestTooLarge("prompt tokens", 9000, 8192, "engine.max_prompt_tokens"),
            "unsupported": UnsupportedRequest("tools: this model's chat template has no tool support"),
            "bug": RuntimeError("a bug"),
        }[kind]

    server.app.add_route("/v1/test-raise/{kind}", raise_it, methods=["POST"])


def test_core_refusals_answer_statuses_clients_retry_only_when_it_can_help(
        runtime_factory: Callable[..., Runtime], models: dict[str, str], serve: Serve) -> None:
    seen: list[str] = []
    server, client = serve(runtime_factory(models), before_start=lambda s: raising_route(s, seen))
    expected = {"busy": (503, "model_busy"), "too-large": (413, "request_too_large"),
                "unsupported": (400, "invalid_request_error"), "bug": (500, "internal_error")}
    for kind, (status, type_) in expected.items():
        response = client.post(f"/v1/test-raise/{kind}", json={})
        assert response.status_code == status and error_of(response)["type"] == type_, kind
        assert (response.headers.get("connection") == "close") == (status >= 500), kind
    busy = client.post("/v1/test-raise/busy", json={})
    assert busy.headers["retry-after"] == "1" and busy.headers["retry-after-ms"] == "20"
    assert error_of(busy)["model"] == "alpha" and error_of(busy)["queued"] == 8
    too_large = error_of(client.post("/v1/test-raise/too-large", json={}))
    assert (too_large["limit"], too_large["setting"]) == (8192, "engine.max_prompt_tokens")

    sdk = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=2)
    for kind, retried in (("busy", True), ("too-large", False), ("unsupported", False)):
        seen.clear()
        with pytest.raises(openai.APIStatusError) as caught:
            sdk.post(f"/test-raise/{kind}", body={}, cast_to=object)
        assert caught.value.status_code == expected[kind][0]
        assert seen == [kind] * (3 if retried else 1), kind


def test_a_bug_is_a_json_500_that_closes_the_connection_cleanly(
        runtime_factory: Callable[..., Runtime], models: dict[str, str], serve: Serve) -> None:
    server, client = serve(runtime_factory(models), before_start=lambda s: raising_route(s, []))
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"POST /v1/test-raise/bug HTTP/1.1\r\nHost: localhost\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
        raw = b""
        while chunk := sock.recv(65536):  # the server ends the connection: no reset, no hang
            raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 500 ")
    assert b"\r\nconnection: close" in head.lower()
    assert json.loads(body)["error"]["type"] == "internal_error" and b"Traceback" not in body
    # A keep-alive client reads the close and opens a new connection for its next request.
    assert client.post("/v1/test-raise/bug", json={}).status_code == 500
    assert client.get("/health").status_code == 200


def test_a_model_that_cannot_load_is_tried_once_by_the_openai_sdk(
        runtime_factory: Callable[..., Runtime], models: dict[str, str], serve: Serve,
        fresh_model: Callable[[str], Any]) -> None:
    broken = fresh_model("broken")
    corrupt_model(broken, "missing_weights")
    runtime = runtime_factory({**models, "broken": str(broken)})
    events = events_of(runtime)
    server, _ = serve(runtime)
    sdk = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused")  # max_retries: 2
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        sdk.chat.completions.create(model="broken", messages=HELLO, max_tokens=1)
    assert caught.value.status_code == 422
    assert caught.value.body["type"] == "model_load_failed" and "weights" in caught.value.body["message"]
    kinds = [e.kind for e in events if e.model == "broken"]
    assert kinds.count(EventKind.LOAD_QUEUED) == 1 and kinds.count(EventKind.LOAD_FAILED) == 1


def test_a_model_too_large_is_refused_once_by_the_openai_sdk(
        runtime_factory: Callable[..., Runtime], models: dict[str, str], serve: Serve) -> None:
    probe = FixedMemoryProbe(total_bytes=600_000, used_fraction=0.5)  # the model is 545 KB
    runtime = runtime_factory(models, probe=probe)
    events = events_of(runtime)
    server, _ = serve(runtime)
    sdk = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused")
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        sdk.chat.completions.create(model="alpha", messages=HELLO, max_tokens=1)
    assert caught.value.body["type"] == "model_too_large" and "needs" in caught.value.body["message"]
    assert [e.kind for e in events if e.model == "alpha"].count(EventKind.REFUSED) == 1
