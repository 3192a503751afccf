"""The Ollama API driven by the official ``ollama`` Python client against a real server on
loopback, over tiny real MLX models: what a user of oterm, Open WebUI or a script built for
Ollama sees when they point it at mlx-tui instead.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import ollama
import pytest

from mlx_tui.core.cache import ModelState
from mlx_tui.core.runtime import Runtime
from mlx_tui.server.ollama_listener import listening_sockets
from mlx_tui.server.ollama_models import FOREVER
from mlx_tui.server.serve import ApiServer, PortInUse, _bind
from tests.protocol_server import HELLO, give_tool_template, serving, wait_until

GREETING = [{"role": "user", "content": HELLO}]
SHORT = {"temperature": 0, "num_predict": 6}


@pytest.fixture
def models(model_factory: Callable[..., Any]) -> dict[str, str]:
    return {"alpha": str(model_factory("alpha")), "beta": str(model_factory("beta", seed=1))}


@pytest.fixture
def runtime(runtime_factory: Callable[..., Runtime], models: dict[str, str]) -> Runtime:
    return runtime_factory(models)


@pytest.fixture
def client(server: ApiServer) -> Iterator[ollama.Client]:
    client = ollama.Client(host=server.url, timeout=60)
    yield client
    client.close()


def state(runtime: Runtime, name: str) -> ModelState:
    return runtime.cache.get(name).state


# -- what is there --------------------------------------------------------------------------------
def test_the_client_lists_every_model_with_its_size_digest_and_details(
        client: ollama.Client, runtime: Runtime, models: dict[str, str]) -> None:
    listed = {m.model: m for m in client.list().models}

    assert {"alpha", "beta"} <= set(listed)
    alpha = listed["alpha"]
    on_disk = sum(p.stat().st_size for p in Path(models["alpha"]).iterdir() if p.is_file())
    assert alpha.size == on_disk
    assert re.fullmatch(r"[0-9a-f]{64}", alpha.digest or "")
    assert alpha.digest != listed["beta"].digest
    assert alpha.details is not None
    assert alpha.details.family == "llama"
    assert alpha.details.quantization_level == "F32"
    assert re.fullmatch(r"\d+(\.\d)?[KMB]", alpha.details.parameter_size or "")
    assert alpha.modified_at is not None and alpha.modified_at.tzinfo is not None


def test_ps_lists_only_the_models_in_memory_with_their_bytes_and_expiry(
        client: ollama.Client, runtime: Runtime) -> None:
    assert client.ps().models == []

    client.chat("alpha", GREETING, options=SHORT)

    (loaded,) = client.ps().models
    view = runtime.cache.get("alpha")
    assert loaded.model == "alpha"
    assert loaded.size == loaded.size_vram == view.resident_bytes > 0
    assert loaded.context_length == 2048  # config.json's max_position_embeddings
    # No idle unload in the settings: the model stays until memory or a person needs it gone.
    assert loaded.expires_at == datetime.fromisoformat(FOREVER)


def test_show_gives_the_chat_template_details_and_context_length(client: ollama.Client) -> None:
    shown = client.show("alpha")

    assert "<|im_start|>" in (shown.template or "")
    assert shown.modelinfo is not None
    assert shown.modelinfo["general.architecture"] == "llama"
    assert shown.modelinfo["llama.context_length"] == 2048
    assert shown.modelinfo["general.parameter_count"] > 0
    assert shown.details is not None and shown.details.family == "llama"
    assert shown.capabilities == ["completion"]  # the tiny template has no tool support


def test_show_still_answers_for_a_model_whose_tokenizer_is_damaged(
        runtime_factory: Callable[..., Runtime], fresh_model: Callable[[str], Any]) -> None:
    damaged = fresh_model("damaged")
    (damaged / "tokenizer.json").write_text("{not json")
    runtime = runtime_factory({"damaged": str(damaged)})

    with serving(runtime) as server, ollama.Client(host=server.url, timeout=60) as client:
        shown = client.show("damaged")

    assert shown.capabilities == ["completion"]
    assert shown.modelinfo is not None and shown.modelinfo["llama.context_length"] == 2048


# -- replies --------------------------------------------------------------------------------------
def test_a_streamed_chat_says_what_the_plain_one_says_and_ends_with_its_figures(
        client: ollama.Client) -> None:
    whole = client.chat("alpha", GREETING, options=SHORT)
    parts = list(client.chat("alpha", GREETING, options=SHORT, stream=True))

    assert whole.message.role == "assistant"
    assert whole.message.content
    *pieces, last = parts
    assert pieces and all(not p.done for p in pieces)
    assert "".join(p.message.content or "" for p in parts) == whole.message.content
    assert last.done and last.done_reason in ("stop", "length")
    assert last.done_reason == whole.done_reason
    assert last.eval_count == whole.eval_count
    assert 0 < whole.eval_count <= SHORT["num_predict"]
    assert whole.prompt_eval_count and whole.prompt_eval_count > 5
    assert whole.total_duration and whole.total_duration >= (whole.eval_duration or 0) > 0


def test_num_predict_limits_the_reply_and_says_length(client: ollama.Client) -> None:
    reply = client.chat("alpha", GREETING, options={"temperature": 0, "num_predict": 1})

    assert reply.eval_count == 1
    assert reply.done_reason == "length"


def test_generate_answers_a_prompt_with_a_system_message_streamed_and_not(
        client: ollama.Client) -> None:
    whole = client.generate("alpha", "Name a colour.", system="Answer in one word.", options=SHORT)
    parts = list(client.generate("alpha", "Name a colour.", system="Answer in one word.",
                                 options=SHORT, stream=True))

    assert whole.done and whole.response
    assert "".join(p.response or "" for p in parts) == whole.response
    assert parts[-1].done and parts[-1].prompt_eval_count == whole.prompt_eval_count


def test_the_default_latest_tag_finds_the_model(client: ollama.Client) -> None:
    reply = client.chat("alpha:latest", GREETING, options=SHORT)

    assert reply.model == "alpha:latest"
    assert reply.message.content


def test_a_model_without_tool_support_refuses_tools_instead_of_dropping_them(
        client: ollama.Client) -> None:
    def add(a: int, b: int) -> int:
        """Add two numbers.

        Args:
          a: the first number
          b: the second number
        """
        return a + b

    with pytest.raises(ollama.ResponseError) as refused:
        client.chat("alpha", GREETING, options=SHORT, tools=[add])

    assert refused.value.status_code == 400
    assert "tool" in refused.value.error


def test_a_model_whose_template_takes_tools_says_so_and_gets_them(
        runtime_factory: Callable[..., Runtime], fresh_model: Callable[[str], Any]) -> None:
    runtime = runtime_factory({"toolie": str(give_tool_template(fresh_model("toolie")))})
    weather = {"type": "function", "function": {
        "name": "get_weather", "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}
    history = [*GREETING, {"role": "assistant", "content": "",
                           "tool_calls": [{"function": {"name": "get_weather",
                                                        "arguments": {"city": "Paris"}}}]},
               {"role": "tool", "content": "Sunny.", "tool_name": "get_weather"}]

    with serving(runtime) as server, ollama.Client(host=server.url, timeout=60) as client:
        shown = client.show("toolie")
        plain = client.chat("toolie", GREETING, options=SHORT)
        given = client.chat("toolie", GREETING, options=SHORT, tools=[weather])
        answered = client.chat("toolie", history, options=SHORT, tools=[weather])

    assert shown.capabilities == ["completion", "tools"]
    assert (given.prompt_eval_count or 0) > (plain.prompt_eval_count or 0)  # tools in the prompt
    assert (answered.prompt_eval_count or 0) > (given.prompt_eval_count or 0)  # and the call
    assert answered.done


# -- keep_alive -----------------------------------------------------------------------------------
def test_keep_alive_0_unloads_the_model_when_the_reply_ends(
        client: ollama.Client, runtime: Runtime) -> None:
    client.chat("alpha", GREETING, options=SHORT)
    assert state(runtime, "alpha") is ModelState.LOADED

    client.chat("alpha", GREETING, options=SHORT, keep_alive=0)
    assert state(runtime, "alpha") is ModelState.NOT_LOADED

    list(client.chat("beta", GREETING, options=SHORT, keep_alive="0s", stream=True))
    wait_until(lambda: state(runtime, "beta") is ModelState.NOT_LOADED)
    assert client.ps().models == []


def test_an_empty_request_loads_and_keep_alive_0_unloads_as_ollama_stop_does(
        client: ollama.Client, runtime: Runtime) -> None:
    loaded = client.generate("alpha")
    assert loaded.done and loaded.done_reason == "load"
    assert state(runtime, "alpha") is ModelState.LOADED

    unloaded = client.generate("alpha", keep_alive=0)
    assert unloaded.done_reason == "unload"
    assert state(runtime, "alpha") is ModelState.NOT_LOADED


def test_keep_alive_minus_1_pins_and_a_duration_sets_the_idle_unload_instead(
        client: ollama.Client, runtime: Runtime) -> None:
    client.chat("alpha", GREETING, options=SHORT, keep_alive=-1)
    assert runtime.cache.get("alpha").pinned
    assert client.ps().models[0].expires_at == datetime.fromisoformat(FOREVER)

    client.chat("alpha", GREETING, options=SHORT, keep_alive="5m")
    view = runtime.cache.get("alpha")
    assert not view.pinned  # the pin keep_alive made is lifted by the next keep_alive
    assert view.idle_unload_seconds == 300
    (shown,) = client.ps().models
    assert shown.expires_at is not None
    assert shown.expires_at.timestamp() == pytest.approx(view.last_used + 300, abs=0.01)


def test_keep_alive_never_lifts_a_pin_someone_set_in_the_app(
        client: ollama.Client, runtime: Runtime) -> None:
    runtime.cache.pin("alpha")
    client.chat("alpha", GREETING, options=SHORT, keep_alive=-1)
    client.chat("alpha", GREETING, options=SHORT, keep_alive="10m")

    assert runtime.cache.get("alpha").pinned


# -- what is refused, and how ---------------------------------------------------------------------
def test_an_unknown_model_is_a_404_naming_it(client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as missing:
        client.chat("no-such-model", GREETING)

    assert missing.value.status_code == 404
    assert "no-such-model" in missing.value.error


@pytest.mark.parametrize("call, says", [
    (lambda c: c.pull("llama3"), "never downloads"),
    (lambda c: c.push("alpha"), "registry"),
    (lambda c: c.delete("alpha"), "never deletes"),
    (lambda c: c.copy("alpha", "alpha2"), "alias"),
    (lambda c: c.create("mine", from_="alpha"), "Modelfiles"),
    (lambda c: c.embed("alpha", "some text"), "no embedding model"),
    (lambda c: c.embeddings("alpha", "some text"), "no embedding model"),
])
def test_what_mlx_tui_does_not_do_is_a_501_that_says_why(
        client: ollama.Client, call: Callable[[ollama.Client], Any], says: str) -> None:
    with pytest.raises(ollama.ResponseError) as refused:
        call(client)

    assert refused.value.status_code == 501
    assert says in refused.value.error


@pytest.mark.parametrize("body, says", [
    ({"options": {"mirostat": 2}}, "options.mirostat"),
    ({"options": {"temperature": 9}}, "options.temperature"),
    ({"options": {"num_predict": 0}}, "options.num_predict"),
    ({"options": {"stop": 5}}, "options.stop"),
    ({"keep_alive": "soon"}, "keep_alive"),
    ({"format": "json"}, "format"),
    ({"think": True}, "think"),
    ({"messages": [{"role": "user", "content": "hi", "images": ["aGk="]}]}, "images"),
    ({"messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role"),
    ({"messages": "hi"}, "messages"),
])
def test_a_bad_or_unsupported_field_is_a_400_naming_it(
        server: ApiServer, runtime: Runtime, body: dict[str, Any], says: str) -> None:
    full = {"model": "alpha", "messages": GREETING, "stream": False, **body}

    answer = httpx.post(f"{server.url}/api/chat", json=full, timeout=30)

    assert answer.status_code == 400, answer.text
    assert says in answer.json()["error"]
    assert state(runtime, "alpha") is ModelState.NOT_LOADED  # refused before any load


def test_generate_refuses_raw_prompts_and_ollama_contexts(client: ollama.Client) -> None:
    for fields in ({"raw": True}, {"context": [1, 2, 3]}, {"suffix": "end"}):
        with pytest.raises(ollama.ResponseError) as refused:
            client.generate("alpha", "Hello", **fields)
        assert refused.value.status_code == 400
        assert next(iter(fields)) in refused.value.error


def test_an_unknown_ollama_path_is_a_404_in_ollama_shape(server: ApiServer) -> None:
    answer = httpx.get(f"{server.url}/api/nothing-here", timeout=10)

    assert answer.status_code == 404
    assert "/api/nothing-here" in answer.json()["error"]


# -- the root, as clients probe it -----------------------------------------------------------------
def test_the_root_answers_probes_and_stays_the_seed_document(server: ApiServer) -> None:
    probe = httpx.head(f"{server.url}/", timeout=10)  # Ollama's own client's heartbeat
    assert probe.status_code == 200

    version = httpx.get(f"{server.url}/api/version", timeout=10)  # Open WebUI's check
    assert re.fullmatch(r"\d+\.\d+\.\d+", version.json()["version"])

    root = httpx.get(f"{server.url}/", timeout=10)
    assert root.status_code == 200
    assert "cached_models" in json.loads(root.content)


# -- [api].ollama_port ----------------------------------------------------------------------------
def test_the_ollama_port_gets_its_own_socket_and_a_taken_one_says_which_setting() -> None:
    main = _bind("127.0.0.1", 0)
    assert listening_sockets(main, "127.0.0.1", 0, _bind) == [main]  # off
    assert listening_sockets(main, "127.0.0.1", main.getsockname()[1], _bind) == [main]

    taken = _bind("127.0.0.1", 0)
    port = taken.getsockname()[1]
    with pytest.raises(PortInUse, match=r"\[api\]\.ollama_port"):
        listening_sockets(main, "127.0.0.1", port, _bind)
    assert main.fileno() == -1  # closed: start() fails without leaving the main port bound
    taken.close()

    main = _bind("127.0.0.1", 0)
    both = listening_sockets(main, "127.0.0.1", port, _bind)  # free again
    assert [s.getsockname()[1] for s in both] == [main.getsockname()[1], port]
    for sock in both:
        sock.close()


def test_with_an_ollama_port_set_ollama_clients_find_the_same_app_there_too(
        runtime_factory: Callable[..., Runtime], models: dict[str, str]) -> None:
    from mlx_tui.devtools.ports import free_port

    port = free_port()
    runtime = runtime_factory(models, api={"ollama_port": port})
    with serving(runtime) as server:
        with ollama.Client(host=f"http://127.0.0.1:{port}", timeout=60) as there:
            names = {m.model for m in there.list().models}
            reply = there.chat("alpha", GREETING, options=SHORT)
        assert {"alpha", "beta"} <= {n.removesuffix(":latest") for n in names}
        assert reply.message.content is not None and reply.done
        assert runtime.cache.get("alpha").use_count == 1, "one cache behind both ports"
        assert httpx.get(f"{server.url}/api/version", timeout=10).status_code == 200
