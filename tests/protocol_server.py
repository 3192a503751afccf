"""A real API server on a free loopback port, for the tests that drive it with other
protocols' official clients (Ollama, Anthropic, Prometheus)."""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from mlx_tui.core.runtime import Runtime
from mlx_tui.server.serve import ApiServer

HELLO = "Hello there, how are you?"


@contextmanager
def serving(runtime: Runtime, api_key: str = "") -> Iterator[ApiServer]:
    """``runtime``'s API served by uvicorn on 127.0.0.1 until the block ends."""
    server = ApiServer(runtime, "127.0.0.1", 0, api_key=api_key)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def wait_until(check: Callable[[], bool], timeout: float = 20.0) -> None:
    """Poll ``check`` until it holds (for what a server does after its answer is sent)."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


TOOLS_TEMPLATE = (
    "{{ bos_token }}"
    "{% if tools %}<|im_start|>system\nYou may call these tools:\n"
    "{% for tool in tools %}{{ tool | tojson }}\n{% endfor %}"
    "Answer <tool_call>{\"name\": NAME, \"arguments\": {...}}</tool_call> to call one.<|im_end|>\n"
    "{% endif %}"
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}"
    "{% for call in message.get('tool_calls', []) %}<tool_call>{\"name\": "
    "\"{{ call['function']['name'] }}\", \"arguments\": {{ call['function']['arguments'] }}}"
    "</tool_call>{% endfor %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
"""A ChatML template that renders tools and tool calls, as Qwen's does."""


def give_tool_template(folder: Path) -> Path:
    """Make the tiny model in ``folder`` one whose chat template takes tools (mlx-lm's
    ``json_tools`` markers), as a tool-calling model's is."""
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config.update(chat_template=TOOLS_TEMPLATE, tool_parser_type="json_tools")
    config_path.write_text(json.dumps(config))
    return folder
