"""The OpenAI API as coding agents and editors use it, driven by the official ``openai`` SDK
against a real server on loopback over tiny real MLX models.

Tool calls need a model that writes one: a random tiny model never does, so those stories use
:func:`~tests.protocol_server.write_scripted_tool_model`, a real one-layer llama whose weights
spell out a weather call until a tool result is in the conversation, and an answer after.
Everything between the SDK and those weights is the real path: the chat template with the
tools, the generation worker's batch, the detokenizer, the splitter and mlx-lm's parser.
"""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterator

import openai
import pytest

from mlx_tui.core.chat import prompt_tokens
from mlx_tui.core.events import CacheEvent, EventKind
from mlx_tui.core.runtime import Runtime
from mlx_tui.devtools.modelgen import corrupt_model
from mlx_tui.server.serve import ApiServer
from tests.protocol_server import HELLO, WEATHER_ANSWER, serving, write_scripted_tool_model

QUESTION = [{"role": "user", "content": "What is the weather in Paris?"}]
GREETING = [{"role": "user", "content": HELLO}]
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city now",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}
CLOCK_TOOL = {"type": "function", "function": {
    "name": "get_time", "description": "The time in a city now",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}
OSLO_CALL = '<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>'
FIM = ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>")


@pytest.fixture
def models(model_factory: Callable[..., Path], tmp_path: Path) -> dict[str, str]:
    """``weather`` (scripted tool caller), ``tiny`` (repeats itself: penalties show),
    ``varied`` (every token depends on the context: stop strings have text to cut)."""
    return {
        "weather": str(write_scripted_tool_model(tmp_path / "weather")),
        "tiny": str(model_factory("tiny")),
        "varied": str(model_factory("varied", tie_word_embeddings=False, weight_scale=3.0)),
    }


@pytest.fixture
def runtime(runtime_factory: Callable[..., Runtime], models: dict[str, str]) -> Runtime:
    return runtime_factory(models)


@pytest.fixture
def client(server: ApiServer) -> Iterator[openai.OpenAI]:
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0,
                           timeout=60)
    yield client
    client.close()


def greedy(client: openai.OpenAI, **fields: Any) -> Any:
    body = {"model": "varied", "messages": GREETING, "temperature": 0, "max_tokens": 24, **fields}
    return client.chat.completions.create(**body)


def streamed(client: openai.OpenAI, **fields: Any) -> tuple[list[Any], str, str | None]:
    """A streamed chat: its chunks, the text they carry, the finish reason."""
    body = {"model": "varied", "messages": GREETING, "temperature": 0, "max_tokens": 24, **fields}
    chunks = list(client.chat.completions.create(stream=True, **body))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finish = next((c.choices[0].finish_reason for c in chunks
                   if c.choices and c.choices[0].finish_reason), None)
    return chunks, text, finish


def tool_calls_of(chunks: list[Any]) -> list[dict[str, Any]]:
    """The calls of a stream, put together by index as the SDK's users do."""
    calls: dict[int, dict[str, Any]] = {}
    for chunk in chunks:
        for part in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            call = calls.setdefault(part.index, {"id": "", "name": "", "arguments": ""})
            call["id"] += part.id or ""
            call["name"] += part.function.name or ""
            call["arguments"] += part.function.arguments or ""
    return [calls[i] for i in sorted(calls)]


# -- tools: an agent's round trip ---------------------------------------------------------------
def test_an_agent_calls_a_tool_sends_the_result_and_gets_the_answer(client: openai.OpenAI) -> None:
    first = client.chat.completions.create(model="weather", messages=QUESTION,
                                           tools=[WEATHER_TOOL], temperature=0)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    details = first.usage.prompt_tokens_details
    assert 0 <= details.cached_tokens < first.usage.prompt_tokens

    # What agents send next: the assistant message as it came, then the tool's result.
    history = [*QUESTION, choice.message.model_dump(exclude_none=True),
               {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 24 C"}]
    final = client.chat.completions.create(model="weather", messages=history,
                                           tools=[WEATHER_TOOL], temperature=0)
    assert final.choices[0].message.content == "".join(WEATHER_ANSWER)
    assert final.choices[0].message.tool_calls is None
    assert final.choices[0].finish_reason == "stop"
    assert final.usage.prompt_tokens > first.usage.prompt_tokens  # the call and result were read


def test_a_streamed_tool_call_arrives_as_delta_tool_calls_never_as_text(
        client: openai.OpenAI) -> None:
    chunks, text, finish = streamed(client, model="weather", messages=QUESTION,
                                    tools=[WEATHER_TOOL], max_tokens=32)
    assert text == ""  # not a character of the markers or the JSON
    assert finish == "tool_calls"
    (call,) = tool_calls_of(chunks)
    assert call["id"].startswith("call_") and call["name"] == "get_weather"
    assert json.loads(call["arguments"]) == {"city": "Paris"}

    history = [*QUESTION,
               {"role": "assistant", "content": None, "tool_calls": [
                   {"id": call["id"], "type": "function",
                    "function": {"name": call["name"], "arguments": call["arguments"]}}]},
               {"role": "tool", "tool_call_id": call["id"], "content": "Sunny"}]
    chunks, text, finish = streamed(client, model="weather", messages=history,
                                    tools=[WEATHER_TOOL], max_tokens=32)
    assert text == "".join(WEATHER_ANSWER) and finish == "stop" and tool_calls_of(chunks) == []


def test_without_tools_the_same_reply_is_plain_text(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model="weather", messages=QUESTION, temperature=0)
    assert reply.choices[0].message.content.startswith('<tool_call>{"name": "get_weather"')
    assert reply.choices[0].message.tool_calls is None
    assert reply.choices[0].finish_reason == "stop"


def test_a_model_whose_template_has_no_tools_refuses_them(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="tiny", messages=QUESTION, tools=[WEATHER_TOOL])
    assert "cannot call tools" in str(refused.value)


def test_parallel_calls_come_as_two_and_parallel_tool_calls_false_keeps_one(
        runtime_factory: Callable[..., Runtime], model_factory: Callable[..., Path],
        tmp_path: Path) -> None:
    from tests.protocol_server import WEATHER_CALL

    folder = write_scripted_tool_model(tmp_path / "twice", call=(*WEATHER_CALL, OSLO_CALL))
    with serving(runtime_factory({"twice": str(folder)})) as server:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0)
        both = client.chat.completions.create(model="twice", messages=QUESTION,
                                              tools=[WEATHER_TOOL], temperature=0)
        one = client.chat.completions.create(model="twice", messages=QUESTION, tools=[WEATHER_TOOL],
                                             temperature=0, parallel_tool_calls=False)
    cities = [json.loads(c.function.arguments)["city"] for c in both.choices[0].message.tool_calls]
    assert cities == ["Paris", "Oslo"]
    assert len({c.id for c in both.choices[0].message.tool_calls}) == 2
    assert [json.loads(c.function.arguments)["city"]
            for c in one.choices[0].message.tool_calls] == ["Paris"]


def test_tool_choice_required_or_named_makes_the_reply_a_call_and_none_hides_the_tools(
        runtime_factory: Callable[..., Runtime], tmp_path: Path) -> None:
    # This model writes only a call's body: as text unless the start marker is forced.
    body = ('{"name": "get_weather", ', '"arguments": {"city": "Paris"}}', "</tool_call>")
    folder = write_scripted_tool_model(tmp_path / "body", call=body)
    with serving(runtime_factory({"body": str(folder)})) as server:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0)

        def ask(**fields: Any) -> Any:
            return client.chat.completions.create(model="body", messages=QUESTION,
                                                  temperature=0, **fields)

        auto = ask(tools=[WEATHER_TOOL, CLOCK_TOOL])
        required = ask(tools=[WEATHER_TOOL, CLOCK_TOOL], tool_choice="required")
        named = ask(tools=[WEATHER_TOOL, CLOCK_TOOL],
                    tool_choice={"type": "function", "function": {"name": "get_weather"}})
        hidden = ask(tools=[WEATHER_TOOL, CLOCK_TOOL], tool_choice="none")
        with pytest.raises(openai.BadRequestError, match="not among the tools"):
            ask(tools=[CLOCK_TOOL], tool_choice={"type": "function",
                                                 "function": {"name": "get_weather"}})
    assert auto.choices[0].message.tool_calls is None
    assert auto.choices[0].message.content == "".join(body)
    for forced in (required, named):
        assert forced.choices[0].finish_reason == "tool_calls"
        (call,) = forced.choices[0].message.tool_calls
        assert (call.function.name, json.loads(call.function.arguments)) == \
            ("get_weather", {"city": "Paris"})
    # The named function is the only tool the model is shown; "none" shows none.
    assert hidden.usage.prompt_tokens < named.usage.prompt_tokens < required.usage.prompt_tokens
    assert hidden.choices[0].message.tool_calls is None


# -- stop, logprobs, penalties ----------------------------------------------------------------------
def test_stop_strings_cut_the_reply_in_both_modes_and_say_stop(client: openai.OpenAI) -> None:
    free = greedy(client).choices[0].message.content
    stop = free[6:9]
    expected = free[:free.index(stop)]

    plain = greedy(client, stop=stop)
    assert plain.choices[0].message.content == expected
    assert plain.choices[0].finish_reason == "stop"

    chunks, text, finish = streamed(client, stop=[free[15:18], stop])  # the earlier one wins
    assert text == expected and finish == "stop"
    assert not any(stop in (c.choices[0].delta.content or "") for c in chunks if c.choices)

    assert greedy(client).choices[0].finish_reason == "length"  # without stop, max_tokens ends it
    with pytest.raises(openai.BadRequestError, match="at most 4"):
        greedy(client, stop=["a", "b", "c", "d", "e"])


def test_eight_concurrent_streams_each_keep_their_own_stop_string(client: openai.OpenAI) -> None:
    free = greedy(client, max_tokens=48).choices[0].message.content
    stops: list[str] = []
    for start in range(3, len(free) - 2):
        candidate = free[start:start + 2]
        if candidate.strip() and candidate not in stops and \
                not any(candidate in s or s in candidate for s in stops):
            stops.append(candidate)
        if len(stops) == 8:
            break
    assert len(stops) == 8

    def run(stop: str) -> tuple[str, str | None]:
        _, text, finish = streamed(client, max_tokens=48, stop=stop)
        return text, finish

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(run, stops))
    assert results == [(free[:free.index(stop)], "stop") for stop in stops]


def test_logprobs_come_in_openais_shape_in_both_modes(client: openai.OpenAI) -> None:
    reply = greedy(client, max_tokens=6, logprobs=True, top_logprobs=3)
    entries = reply.choices[0].logprobs.content
    assert len(entries) == reply.usage.completion_tokens == 6
    for entry in entries:
        assert entry.logprob <= 0 and entry.bytes == list(entry.token.encode("utf-8"))
        values = [top.logprob for top in entry.top_logprobs]
        assert len(values) == 3 and values == sorted(values, reverse=True)
        assert entry.top_logprobs[0].token == entry.token  # greedy: the chosen is the likeliest
        assert entry.top_logprobs[0].logprob == pytest.approx(entry.logprob)

    chunks, _, _ = streamed(client, max_tokens=6, logprobs=True, top_logprobs=3)
    streamed_entries = [e for c in chunks if c.choices and c.choices[0].logprobs
                        for e in c.choices[0].logprobs.content]
    assert [(e.token, e.logprob) for e in streamed_entries] == \
        [(e.token, pytest.approx(e.logprob)) for e in entries]

    assert greedy(client, max_tokens=2).choices[0].logprobs is None
    with pytest.raises(openai.BadRequestError, match="top_logprobs"):
        greedy(client, logprobs=True, top_logprobs=21)
    with pytest.raises(openai.BadRequestError, match="needs logprobs"):
        greedy(client, top_logprobs=2)


def test_penalties_change_a_reply_that_repeats_itself(client: openai.OpenAI) -> None:
    def reply(**fields: Any) -> str:
        return greedy(client, model="tiny", max_tokens=20, **fields).choices[0].message.content

    repeating = reply()
    for fields in ({"presence_penalty": 2.0}, {"frequency_penalty": 2.0},
                   {"extra_body": {"repetition_penalty": 5.0}}):
        assert reply(**fields) != repeating, fields
    assert reply(presence_penalty=0.0, extra_body={"top_k": 1, "min_p": 0.5}) == repeating
    with pytest.raises(openai.BadRequestError, match="presence_penalty"):
        reply(presence_penalty=3.0)


def test_what_cannot_be_honoured_is_a_400_and_what_changes_nothing_is_accepted(
        client: openai.OpenAI) -> None:
    for fields in ({"n": 2}, {"response_format": {"type": "json_object"}},
                   {"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
                   {"logit_bias": {"5": 10}}, {"audio": {"voice": "alloy", "format": "wav"}}):
        with pytest.raises(openai.BadRequestError) as refused:
            greedy(client, max_tokens=2, **fields)
        assert refused.value.body["code"] == "unsupported", fields
    accepted = greedy(client, max_tokens=2, user="me", metadata={"task": "t"}, store=False,
                      parallel_tool_calls=True, response_format={"type": "text"},
                      service_tier="auto", stream_options=None, seed=3)
    assert accepted.choices[0].finish_reason == "length"


# -- /v1/completions ----------------------------------------------------------------------------------
def complete(client: openai.OpenAI, **fields: Any) -> Any:
    body = {"model": "varied", "prompt": "def add(a, b):", "max_tokens": 8, "temperature": 0,
            **fields}
    return client.completions.create(**body)


def test_completions_plain_streamed_echoed_and_from_token_ids_agree(
        client: openai.OpenAI, models: dict[str, str]) -> None:
    from mlx_lm.tokenizer_utils import load

    plain = complete(client)
    text = plain.choices[0].text
    assert plain.object == "text_completion" and text
    assert plain.choices[0].finish_reason == "length" and plain.usage.completion_tokens == 8

    chunks = list(complete(client, stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == text
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 8

    assert complete(client, echo=True).choices[0].text == "def add(a, b):" + text

    ids = prompt_tokens(load(Path(models["varied"])), "def add(a, b):")
    from_ids = complete(client, prompt=ids)
    assert from_ids.choices[0].text == text and from_ids.usage.prompt_tokens == len(ids)

    cut = complete(client, stop=text[3:5])
    assert cut.choices[0].text == text[:text.index(text[3:5])]
    assert cut.choices[0].finish_reason == "stop"


def test_completion_logprobs_come_in_the_legacy_shape(client: openai.OpenAI) -> None:
    reply = complete(client, logprobs=2)
    lp = reply.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 8
    assert all(v <= 0 for v in lp.token_logprobs)
    assert all(1 <= len(top) <= 2 and max(top.values()) == pytest.approx(v)
               for top, v in zip(lp.top_logprobs, lp.token_logprobs))
    offsets = [0]
    for token in lp.tokens[:-1]:
        offsets.append(offsets[-1] + len(token))
    assert lp.text_offset == offsets
    # The tokens spell the text, its first space included (a chat reply drops that one).
    assert "".join(lp.tokens) == reply.choices[0].text and reply.choices[0].text[0] == " "
    for fields in ({"logprobs": 6}, {"logprobs": 1, "echo": True}):
        with pytest.raises(openai.BadRequestError):
            complete(client, **fields)


def add_fim_tokens(folder: Path) -> Path:
    """Give a tiny model Qwen2.5-Coder's fill-in-the-middle tokens (its vocabulary has room)."""
    path = folder / "tokenizer.json"
    spec = json.loads(path.read_text())
    base = len(spec["model"]["vocab"])
    for i, token in enumerate(FIM):
        spec["added_tokens"].append({"id": base + i, "content": token, "single_word": False,
                                     "lstrip": False, "rstrip": False, "normalized": False,
                                     "special": True})
    path.write_text(json.dumps(spec))
    return folder


def test_suffix_fills_in_the_middle_where_the_tokenizer_can_and_is_a_400_elsewhere(
        client: openai.OpenAI, runtime_factory: Callable[..., Runtime],
        model_factory: Callable[..., Path], tmp_path: Path) -> None:
    from mlx_lm.tokenizer_utils import load

    with pytest.raises(openai.BadRequestError, match="fill-in-the-middle"):
        complete(client, suffix="    return c\n")

    coder = add_fim_tokens(Path(shutil.copytree(model_factory("fim", vocab_size=1040),
                                                tmp_path / "coder")))
    before, after = "def add(a, b):\n    c = ", "\n    return c\n"
    layout = prompt_tokens(load(coder), f"{FIM[0]}{before}{FIM[1]}{after}{FIM[2]}")
    with serving(runtime_factory({"coder": str(coder)})) as server:
        fim = openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0)
        filled = fim.completions.create(model="coder", prompt=before, suffix=after, max_tokens=4,
                                        temperature=0)
        plain = fim.completions.create(model="coder", prompt=before, max_tokens=4, temperature=0)
    assert filled.usage.prompt_tokens == len(layout)  # the model read prefix, suffix, middle
    assert plain.usage.prompt_tokens < filled.usage.prompt_tokens


# -- errors that do not invite retries -------------------------------------------------------------
def test_a_model_that_cannot_load_is_a_422_the_sdk_does_not_retry(
        runtime_factory: Callable[..., Runtime], fresh_model: Callable[[str], Path]) -> None:
    broken = fresh_model("broken")
    corrupt_model(broken, "missing_weights")
    runtime = runtime_factory({"broken": str(broken)})
    events: list[CacheEvent] = []
    runtime.cache.subscribe(events.append)
    with serving(runtime) as server:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=2)
        with pytest.raises(openai.UnprocessableEntityError) as chat_refused:
            client.chat.completions.create(model="broken", messages=GREETING)
        with pytest.raises(openai.UnprocessableEntityError):
            client.completions.create(model="broken", prompt="x")
    assert "broken" in str(chat_refused.value)
    # One load attempt per request: the SDK's two retries were not spent on it.
    assert sum(e.kind is EventKind.LOAD_STARTED for e in events) == 2
