"""Anthropic's Messages API driven by the official ``anthropic`` Python SDK against a real
server on loopback, over tiny real MLX models: what a coding agent built for Claude sees when
its base URL points at mlx-tui.

A tool round trip (``tool_use`` answered by ``tool_result``, then the final answer) needs a
model whose chat template takes tools; the tiny models here have none, so these tests check
the refusal and that tool blocks in the history reach the template. The round trip joins
when a tiny tool-calling model exists (issue 12 builds one for the OpenAI endpoint).
"""

from __future__ import annotations

import json
from typing import Any, Callable, Iterator

import anthropic
import httpx
import pytest

from mlx_tui.core.events import CacheEvent, EventKind
from mlx_tui.core.runtime import Runtime
from mlx_tui.devtools.modelgen import corrupt_model
from mlx_tui.server.serve import ApiServer
from tests.protocol_server import HELLO, give_tool_template, serving

ASK = [{"role": "user", "content": HELLO}]
WEATHER_TOOL = {"name": "get_weather", "description": "The weather in a city",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}},
                                 "required": ["city"]}}


@pytest.fixture
def runtime(runtime_factory: Callable[..., Runtime], model_factory: Callable[..., Any]) -> Runtime:
    return runtime_factory({"alpha": str(model_factory("alpha"))})


@pytest.fixture
def client(server: ApiServer) -> Iterator[anthropic.Anthropic]:
    client = anthropic.Anthropic(base_url=server.url, api_key="not-needed", max_retries=0,
                                 timeout=60)
    yield client
    client.close()


GREEDY = {"temperature": 0}  # older SDKs' keyword; this one sends it as an extra body field


def create(client: anthropic.Anthropic, **fields: Any) -> anthropic.types.Message:
    body: dict[str, Any] = {"model": "alpha", "max_tokens": 6, "messages": ASK,
                            "extra_body": GREEDY, **fields}
    return client.messages.create(**body)


def count(client: anthropic.Anthropic, **fields: Any) -> int:
    body: dict[str, Any] = {"model": "alpha", "messages": ASK, **fields}
    return client.messages.count_tokens(**body).input_tokens


# -- replies --------------------------------------------------------------------------------------
def test_a_message_has_text_a_stop_reason_and_usage_that_count_tokens_agrees_with(
        client: anthropic.Anthropic) -> None:
    reply = create(client)

    assert reply.type == "message" and reply.role == "assistant" and reply.model == "alpha"
    assert reply.id.startswith("msg_")
    (block,) = reply.content
    assert block.type == "text" and block.text
    assert reply.stop_reason in ("end_turn", "max_tokens")
    assert 0 < reply.usage.output_tokens <= 6
    prompt = reply.usage.input_tokens + (reply.usage.cache_read_input_tokens or 0)
    assert prompt == count(client) > 5


def test_max_tokens_ends_the_reply_with_stop_reason_max_tokens(client: anthropic.Anthropic) -> None:
    reply = create(client, max_tokens=1)

    assert reply.stop_reason == "max_tokens"
    assert reply.usage.output_tokens == 1


def test_a_system_prompt_as_a_string_or_as_text_blocks_is_the_same_prompt(
        client: anthropic.Anthropic) -> None:
    as_text = "You answer in one word."
    as_blocks = [{"type": "text", "text": "You answer "}, {"type": "text", "text": "in one word."}]

    assert count(client, system=as_text) == count(client, system=as_blocks) > count(client)
    assert create(client, system=as_text).content == create(client, system=as_blocks).content


def test_a_stream_sends_anthropics_events_in_order_and_says_what_the_plain_reply_says(
        client: anthropic.Anthropic) -> None:
    whole = create(client)
    assert whole.content  # one text block, so the stream opens and closes one
    with client.messages.stream(model="alpha", max_tokens=6, messages=ASK,
                                extra_body=GREEDY) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()

    assert kinds[0] == "message_start"
    assert kinds[1] == "content_block_start"
    deltas = kinds[2:kinds.index("content_block_stop")]
    assert deltas and set(deltas) <= {"content_block_delta", "text"}
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert [b.text for b in final.content] == [b.text for b in whole.content]  # type: ignore[union-attr]
    assert final.stop_reason == whole.stop_reason
    assert final.usage.input_tokens == whole.usage.input_tokens
    assert final.usage.output_tokens == whole.usage.output_tokens


def test_the_raw_stream_is_server_sent_events_with_a_ping(server: ApiServer) -> None:
    body = {"model": "alpha", "max_tokens": 4, "messages": ASK, "stream": True}
    with httpx.stream("POST", f"{server.url}/v1/messages", json=body, timeout=60) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]

    events = [line.removeprefix("event: ") for line in lines if line.startswith("event: ")]
    datas = [json.loads(line.removeprefix("data: ")) for line in lines if line.startswith("data: ")]
    assert events[:2] == ["message_start", "ping"]
    assert [d["type"] for d in datas] == events  # each event's data names its own type
    assert datas[-2]["usage"]["output_tokens"] > 0


def test_a_conversation_carrying_tool_use_and_tool_result_blocks_reaches_the_template(
        client: anthropic.Anthropic) -> None:
    def history(result: str) -> list[dict[str, Any]]:
        return [
            {"role": "user", "content": "What is the weather in Paris?"},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Let me look."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                 "input": {"city": "Paris"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": result},
                {"type": "text", "text": "So?"}]},
        ]

    short, long = history("Sunny."), history("Sunny, 24 degrees, a light wind from the west.")
    assert count(client, messages=long) > count(client, messages=short)
    reply = create(client, messages=short)
    assert reply.content and reply.content[0].type == "text"


def test_a_model_whose_template_takes_tools_gets_them_and_count_tokens_counts_them(
        runtime_factory: Callable[..., Runtime], fresh_model: Callable[[str], Any]) -> None:
    runtime = runtime_factory({"toolie": str(give_tool_template(fresh_model("toolie")))})
    call = [*ASK, {"role": "assistant", "content": [
        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "Sunny."}]}]
    longer = json.loads(json.dumps(call).replace("Paris", "Paris, Texas, United States"))

    with serving(runtime) as server, anthropic.Anthropic(base_url=server.url, api_key="x",
                                                         max_retries=0) as client:
        bare = count(client, model="toolie")
        with_tools = count(client, model="toolie", tools=[WEATHER_TOOL])
        after_call = count(client, model="toolie", tools=[WEATHER_TOOL], messages=call)
        after_longer_call = count(client, model="toolie", tools=[WEATHER_TOOL], messages=longer)
        reply = create(client, model="toolie", tools=[WEATHER_TOOL], messages=call)

    assert with_tools > bare  # the tool's definition is in the prompt
    assert after_longer_call > after_call  # and so are the call's arguments
    assert reply.usage.input_tokens + (reply.usage.cache_read_input_tokens or 0) == after_call
    assert reply.stop_reason in ("end_turn", "max_tokens", "tool_use")


# -- what is refused, and how ---------------------------------------------------------------------
def test_a_model_without_tool_support_refuses_tools_with_a_400(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as refused:
        create(client, tools=[WEATHER_TOOL])

    assert refused.value.type == "invalid_request_error"
    assert "tool" in (refused.value.api_message or "")


@pytest.mark.parametrize("fields, says", [
    ({"max_tokens": None}, "max_tokens"),
    ({"temperature": 1.5}, "temperature"),
    ({"stop_sequences": "END"}, "stop_sequences"),
    ({"messages": [{"role": "user", "content": [
        {"type": "image",
         "source": {"type": "base64", "media_type": "image/png", "data": "aGk="}}]}]},
     "image"),
    ({"messages": [*ASK, {"role": "assistant", "content": "The answer is"}]}, "prefill"),
    ({"messages": [{"role": "system", "content": "hi"}]}, "messages[0].role"),
    ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "server tools"),
    ({"tool_choice": {"type": "any"}, "tools": [WEATHER_TOOL]}, "tool_choice"),
    ({"thinking": {"type": "enabled", "budget_tokens": 1024}}, "thinking"),
])
def test_a_bad_or_unsupported_field_is_a_400_in_anthropics_shape(
        server: ApiServer, fields: dict[str, Any], says: str) -> None:
    body = {"model": "alpha", "max_tokens": 4, "messages": ASK, **fields}
    body = {k: v for k, v in body.items() if v is not None}

    answer = httpx.post(f"{server.url}/v1/messages", json=body, timeout=30)

    assert answer.status_code == 400, answer.text
    error = answer.json()
    assert error["type"] == "error"
    assert error["error"]["type"] == "invalid_request_error"
    assert says in error["error"]["message"]


def test_an_unknown_model_is_a_not_found_error(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as missing:
        create(client, model="no-such-model")

    assert missing.value.type == "not_found_error"
    assert "no-such-model" in (missing.value.api_message or "")


def test_a_client_that_retries_does_not_retry_a_model_that_cannot_load(
        runtime_factory: Callable[..., Runtime], fresh_model: Callable[[str], Any]) -> None:
    broken = fresh_model("broken")
    corrupt_model(broken, "bad_safetensors")
    runtime = runtime_factory({"broken": str(broken)})
    failures: list[CacheEvent] = []
    runtime.cache.subscribe(
        lambda e: failures.append(e) if e.kind is EventKind.LOAD_FAILED else None)
    body = {"model": "broken", "max_tokens": 4, "messages": ASK}

    with serving(runtime) as server, anthropic.Anthropic(base_url=server.url, api_key="x",
                                                         timeout=60) as retrying:
        once = httpx.post(f"{server.url}/v1/messages", json=body, timeout=60)
        per_request = len(failures)
        with pytest.raises(anthropic.APIStatusError) as failed:
            retrying.messages.create(**body)  # max_retries=2 by default

    assert once.json()["error"]["message"] == failed.value.api_message
    assert "broken" in once.json()["error"]["message"]
    assert len(failures) == 2 * per_request  # the SDK's call was one request, not three


def test_count_tokens_for_a_model_whose_tokenizer_is_damaged_says_so_with_a_4xx(
        runtime_factory: Callable[..., Runtime], fresh_model: Callable[[str], Any]) -> None:
    damaged = fresh_model("damaged")
    (damaged / "tokenizer.json").write_text("{not json")
    runtime = runtime_factory({"damaged": str(damaged)})

    with serving(runtime) as server, anthropic.Anthropic(base_url=server.url, api_key="x",
                                                         max_retries=0) as client:
        with pytest.raises(anthropic.APIStatusError) as failed:
            count(client, model="damaged")

    assert 400 <= failed.value.status_code < 500
    assert "tokenizer" in (failed.value.api_message or "")


def test_with_an_api_key_the_sdk_gets_in_with_bearer_or_x_api_key_and_not_without(
        runtime: Runtime) -> None:
    with serving(runtime, api_key="sekrit") as server:
        with anthropic.Anthropic(base_url=server.url, api_key="sekrit", max_retries=0) as bearer:
            assert create(bearer).content
        with anthropic.Anthropic(base_url=server.url, api_key=None, max_retries=0,
                                 default_headers={"x-api-key": "sekrit"}) as x_api_key:
            assert create(x_api_key).content
        with anthropic.Anthropic(base_url=server.url, api_key="wrong", max_retries=0) as wrong:
            with pytest.raises(anthropic.AuthenticationError):
                create(wrong)
