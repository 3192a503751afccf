"""Tool calls kept out of a reply's text and parsed with mlx-lm's own parsers.

The splitter is fed text the way the generation worker hands it out (a few characters per
token, markers split anywhere) with real tokenizers whose templates or settings choose
mlx-lm's parsers; then the whole engine path with a model that writes a tool call.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from mlx_tui.core.chat import ChatMessage, GenerationParams
from mlx_tui.core.engine.tools import ToolCallSplitter
from mlx_tui.core.errors import UnsupportedRequest
from mlx_tui.core.runtime import Runtime
from tests.protocol_server import QWEN_TOOLS_TEMPLATE, write_scripted_tool_model

WEATHER = [{"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                                                    "days": {"type": "integer"}}}}}]
CALL = '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'


def tokenizer_with(folder: Path, **config: Any) -> Any:
    """mlx-lm's tokenizer of the tiny model in ``folder`` with ``config`` in its
    tokenizer_config.json (a chat template, a ``tool_parser_type``)."""
    from mlx_lm.tokenizer_utils import load

    path = folder / "tokenizer_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **config}))
    return load(folder)


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory: pytest.TempPathFactory,
               model_factory: Callable[..., Path]) -> dict[str, Any]:
    """Real tokenizers choosing three of mlx-lm's parsers: json_tools (inferred from a
    Qwen2.5-style template), qwen3_coder and mistral (named in the tokenizer's config)."""
    made = {}
    for name, config in {"json": {"chat_template": QWEN_TOOLS_TEMPLATE},
                         "qwen3_coder": {"tool_parser_type": "qwen3_coder"},
                         "mistral": {"tool_parser_type": "mistral"}}.items():
        folder = tmp_path_factory.mktemp(name)
        for file in model_factory("tools-base").iterdir():
            if file.is_file():
                shutil.copy(file, folder)
        made[name] = tokenizer_with(folder, **config)
    return made


def pieces(text: str, size: int) -> Iterator[str]:
    for i in range(0, len(text), size):
        yield text[i:i + size]


def split(splitter: ToolCallSplitter, chunks: Any) -> tuple[list[str], str, tuple[Any, ...]]:
    """What a reader sees: each chunk's content, the content at the end, the calls."""
    shown = [splitter.feed(chunk) for chunk in chunks]
    tail, calls = splitter.finish()
    return shown, tail, calls


def test_the_json_tools_parser_is_chosen_from_a_qwen_style_template(tokenizers: dict[str, Any]) -> None:
    tokenizer = tokenizers["json"]
    assert tokenizer.has_tool_calling and tokenizer.tool_call_start == "<tool_call>"


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 11, 80])
def test_a_call_split_anywhere_never_shows_a_marker_and_parses_the_same(
        tokenizers: dict[str, Any], size: int) -> None:
    reply = f"Let me look.{CALL}"
    shown, tail, calls = split(ToolCallSplitter(tokenizers["json"], WEATHER), pieces(reply, size))
    assert "".join(shown) + tail == "Let me look."
    assert all("<" not in piece for piece in shown)  # no marker, not even its first character
    (call,) = calls
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Paris"}
    assert call.id.startswith("call_") and len(call.id) > 10


def test_two_calls_get_two_ids_and_the_text_around_them_stays(tokenizers: dict[str, Any]) -> None:
    second = CALL.replace("Paris", "Oslo")
    shown, tail, calls = split(ToolCallSplitter(tokenizers["json"], WEATHER),
                               pieces(f"A{CALL} and {second}B", 4))
    assert "".join(shown) + tail == "A and B"
    assert [json.loads(c.arguments)["city"] for c in calls] == ["Paris", "Oslo"]
    assert calls[0].id != calls[1].id


def test_a_call_cut_short_comes_back_as_text_with_its_markers(tokenizers: dict[str, Any]) -> None:
    cut = CALL[:40]  # max_tokens ended the reply inside the call
    shown, tail, calls = split(ToolCallSplitter(tokenizers["json"], WEATHER), pieces(cut, 3))
    assert calls == ()
    assert "".join(shown) + tail == cut + "</tool_call>"  # nothing the model wrote is lost


def test_text_that_only_looked_like_a_marker_is_shown_in_the_end(tokenizers: dict[str, Any]) -> None:
    splitter = ToolCallSplitter(tokenizers["json"], WEATHER)
    assert splitter.feed("x < y and <tool") == "x < y and "
    assert splitter.feed("box>") == "<toolbox>"
    shown, tail, calls = split(splitter, ["then <tool_"])
    assert shown == ["then "] and tail == "<tool_" and calls == ()


def test_a_forced_call_starts_inside_the_call(tokenizers: dict[str, Any]) -> None:
    # tool_choice "required": the prompt already ends with the start marker.
    body = CALL.removeprefix("<tool_call>")
    shown, tail, calls = split(ToolCallSplitter(tokenizers["json"], WEATHER, inside_call=True),
                               pieces(body, 6))
    assert "".join(shown) + tail == ""
    assert [c.name for c in calls] == ["get_weather"]


def test_qwen3_coder_calls_read_their_parameter_types_from_the_tools(
        tokenizers: dict[str, Any]) -> None:
    reply = ("<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n"
             "<parameter=days>\n3\n</parameter>\n</function>\n</tool_call>")
    shown, tail, calls = split(ToolCallSplitter(tokenizers["qwen3_coder"], WEATHER),
                               pieces(reply, 5))
    assert "".join(shown) + tail == ""
    (call,) = calls
    assert json.loads(call.arguments) == {"city": "Paris", "days": 3}  # 3 typed by the schema


def test_mistral_calls_have_no_end_marker_and_run_to_the_end(tokenizers: dict[str, Any]) -> None:
    reply = 'Sure.[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}}]'
    shown, tail, calls = split(ToolCallSplitter(tokenizers["mistral"], WEATHER), pieces(reply, 4))
    assert "".join(shown) + tail == "Sure."
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [("get_weather", {"city": "Paris"})]


# -- the engine path: a model that writes a tool call --------------------------------------------
@pytest.fixture
def scripted(runtime_factory: Callable[..., Runtime], tmp_path: Path) -> Runtime:
    folder = write_scripted_tool_model(tmp_path / "weather")
    return runtime_factory({"weather": str(folder)})


def reply_of(runtime: Runtime, messages: list[ChatMessage], **kwargs: Any) -> tuple[str, Any]:
    deltas = list(runtime.chat.stream("weather", messages, GenerationParams(temperature=0), **kwargs))
    return "".join(d.text for d in deltas), deltas[-1]


def test_with_tools_the_engine_hands_the_call_on_the_last_delta_and_says_tool_calls(
        scripted: Runtime) -> None:
    question = [ChatMessage("user", "What is the weather in Paris?")]
    text, last = reply_of(scripted, question, tools=WEATHER)
    assert text == ""
    assert last.stats.finish_reason == "tool_calls"
    (call,) = last.tool_calls
    assert (call.name, json.loads(call.arguments)) == ("get_weather", {"city": "Paris"})

    # Without tools the same reply is plain text: nothing is parsed that was not asked for.
    text, last = reply_of(scripted, question)
    assert text == CALL and last.tool_calls == () and last.stats.finish_reason == "stop"

    # The call and its result go back through the template; the model answers.
    history = [*question,
               ChatMessage("assistant", "", tool_calls=({"id": call.id, "type": "function",
                                                         "function": {"name": call.name,
                                                                      "arguments": call.arguments}},)),
               ChatMessage("tool", "Sunny, 24 C", tool_call_id=call.id)]
    text, last = reply_of(scripted, history, tools=WEATHER)
    assert text == "It is sunny in Paris today."
    assert last.tool_calls == () and last.stats.finish_reason == "stop"


def test_tool_choice_none_hides_the_tools_and_required_needs_some(scripted: Runtime) -> None:
    question = [ChatMessage("user", "What is the weather in Paris?")]
    with_tools = scripted.chat.start("weather", question, GenerationParams(temperature=0),
                                     tools=WEATHER)
    hidden = scripted.chat.start("weather", question, GenerationParams(temperature=0),
                                 tools=WEATHER, tool_choice="none")
    with with_tools, hidden:
        assert hidden.prompt_tokens < with_tools.prompt_tokens  # the tools are not in the prompt
    with pytest.raises(UnsupportedRequest, match="required"):
        scripted.chat.start("weather", question, tool_choice="required")


def test_a_model_that_cannot_call_tools_refuses_them_instead_of_dropping_them(
        runtime_factory: Callable[..., Runtime], model_factory: Callable[..., Path]) -> None:
    plain = runtime_factory({"tiny": str(model_factory("tiny"))})
    with pytest.raises(UnsupportedRequest, match="cannot call tools"):
        plain.chat.start("tiny", [ChatMessage("user", "Weather?")], tools=WEATHER)
