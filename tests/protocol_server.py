"""A real API server on a free loopback port, for the tests that drive it over HTTP (httpx and
the official OpenAI, Ollama and Anthropic clients); the fixtures over it are in ``conftest.py``."""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import httpx

from mlx_tui.core.runtime import Runtime
from mlx_tui.server.serve import ApiServer

HELLO = "Hello there, how are you?"

Serve = Callable[..., tuple[ApiServer, httpx.Client]]
"""The ``serve`` fixture: ``serve(runtime, api_key="", host="127.0.0.1", before_start=None)``."""


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
    "\"{{ call['function']['name'] }}\", \"arguments\": {{ call['function']['arguments'] | tojson }}}"
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


QWEN_TOOLS_TEMPLATE = (
    "{{ bos_token }}"
    "{% if tools %}<|im_start|>system\n"
    "{% if messages[0]['role'] == 'system' %}{{ messages[0]['content'] }}\n\n{% endif %}"
    "# Tools\n\nYou are provided with function signatures within <tools></tools> XML tags:\n"
    "<tools>{% for tool in tools %}\n{{ tool | tojson }}{% endfor %}\n</tools>\n\n"
    "For each function call, return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags.<|im_end|>\n"
    "{% elif messages[0]['role'] == 'system' %}"
    "<|im_start|>system\n{{ messages[0]['content'] }}<|im_end|>\n{% endif %}"
    "{% for message in messages %}"
    "{% if message.role == 'system' and loop.first %}"
    "{% elif message.role == 'tool' %}"
    "<|im_start|>user\n<tool_response>\n{{ message.content }}\n</tool_response><|im_end|>\n"
    "{% elif message.role == 'assistant' and message.tool_calls %}"
    "<|im_start|>assistant\n{{ message.content }}"
    "{% for tool_call in message.tool_calls %}{% set tool_call = tool_call.function %}"
    "<tool_call>{\"name\": \"{{ tool_call.name }}\", \"arguments\": "
    "{{ tool_call.arguments | tojson }}}</tool_call>{% endfor %}<|im_end|>\n"
    "{% else %}<|im_start|>{{ message.role }}\n{{ message.content }}<|im_end|>\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
"""Qwen2.5's way with tools, shortened: tool results come back in a user turn between
``<tool_response>`` tags, and mlx-lm recognises the template (``<tool_call>`` and
``tool_call.name``) as one for its ``json_tools`` parser without being told."""

TOOL_RESULT_MARK = "<tool_response>"
WEATHER_CALL = ('<tool_ca', 'll>{"name": "get_weather", "argu', 'ments": {"city": "Par',
                'is"}}</tool_', 'call>')
"""The call the scripted model makes, in the pieces it writes it (one token each): the
markers arrive split across tokens, as a real model's often do."""
WEATHER_ANSWER = ("It is sunny", " in Paris", " today.")
"""What the scripted model answers once a tool result is in the conversation."""


def write_scripted_tool_model(dest: Path, call: tuple[str, ...] = WEATHER_CALL,
                              answer: tuple[str, ...] = WEATHER_ANSWER) -> Path:
    """A real mlx-lm llama (one layer, real tokenizer, Qwen-style tool template) whose greedy
    reply is written into its weights: ``call`` (joined) while no tool result is in the
    conversation, ``answer`` once one is, then end of turn.

    A random tiny model never writes a tool call, so a test of the tool round trip would have
    nothing to parse. This one is built so that it must: each piece of ``call`` and
    ``answer`` is a token of its own (added to the tokenizer), and the weights say which token
    follows which. How: every ordinary token's embedding has a "start" feature, each scripted
    token a feature of its own, and the ``<tool_response>`` token a "result" feature. The one
    attention layer has zero queries, so it averages the whole context: a "result seen"
    feature is non-zero exactly when a tool result was given. The head then picks the first
    call token after an ordinary token unless a result was seen (then the first answer
    token), each scripted token's successor after it, and ``<|im_end|>`` after the last.
    Everything else (template, tokenizer, loading, batching, detokenizing) is the real thing.
    """
    import numpy as np

    import mlx.core as mx
    from mlx_tui.devtools.modelgen import (EOS_TOKEN, SPECIAL_TOKENS, llama_config, save_weights,
                                           write_config, write_tokenizer)

    write_tokenizer(dest)
    tokenizer_path = dest / "tokenizer.json"
    spec = json.loads(tokenizer_path.read_text())
    base = len(spec["model"]["vocab"])
    scripted = (*call, *answer)
    ids = {piece: base + i for i, piece in enumerate((TOOL_RESULT_MARK, *scripted))}
    for piece, token in ids.items():
        spec["added_tokens"].append({"id": token, "content": piece, "single_word": False,
                                     "lstrip": False, "rstrip": False, "normalized": False,
                                     "special": False})
    tokenizer_path.write_text(json.dumps(spec))
    config_path = dest / "tokenizer_config.json"
    tokenizer_config = json.loads(config_path.read_text())
    tokenizer_config["chat_template"] = QWEN_TOOLS_TEMPLATE
    config_path.write_text(json.dumps(tokenizer_config))

    hidden, heads, kv_heads, mlp = 64, 4, 2, 8
    head_dim = hidden // heads
    vocab = base + len(ids)
    start, result, seen = 0, 1, hidden - 1
    own = {piece: 2 + i for i, piece in enumerate(scripted)}
    embed = np.zeros((vocab, hidden), np.float32)
    embed[:, start] = 1.0
    embed[ids[TOOL_RESULT_MARK], result] = 1.0
    head = np.zeros((vocab, hidden), np.float32)
    for piece, dim in own.items():
        embed[ids[piece]] = 0.0
        embed[ids[piece], dim] = 1.0
    head[ids[call[0]], start] = 10.0
    head[ids[call[0]], seen] = -1e4  # any result in the context outweighs the 1-point lead
    head[ids[answer[0]], start] = 9.0
    eos = SPECIAL_TOKENS.index(EOS_TOKEN)
    for script in (call, answer):
        for before, after in zip(script, script[1:]):
            head[ids[after], own[before]] = 20.0
        head[eos, own[script[-1]]] = 20.0
    values = np.zeros((kv_heads * head_dim, hidden), np.float32)
    values[0, result] = 1.0
    out = np.zeros((hidden, heads * head_dim), np.float32)
    out[seen, 0] = 1.0
    layer = "model.layers.0."
    weights = {
        "model.embed_tokens.weight": embed, "lm_head.weight": head,
        "model.norm.weight": np.ones(hidden, np.float32),
        f"{layer}input_layernorm.weight": np.ones(hidden, np.float32),
        f"{layer}post_attention_layernorm.weight": np.ones(hidden, np.float32),
        f"{layer}self_attn.q_proj.weight": np.zeros((heads * head_dim, hidden), np.float32),
        f"{layer}self_attn.k_proj.weight": np.zeros((kv_heads * head_dim, hidden), np.float32),
        f"{layer}self_attn.v_proj.weight": values,
        f"{layer}self_attn.o_proj.weight": out,
        f"{layer}mlp.gate_proj.weight": np.zeros((mlp, hidden), np.float32),
        f"{layer}mlp.up_proj.weight": np.zeros((mlp, hidden), np.float32),
        f"{layer}mlp.down_proj.weight": np.zeros((hidden, mlp), np.float32),
    }
    for stale in dest.glob("model*.safetensors"):
        stale.unlink()
    save_weights(dest, [(name, mx.array(array)) for name, array in weights.items()])
    config = llama_config(hidden_size=hidden, num_hidden_layers=1, intermediate_size=mlp,
                          num_attention_heads=heads, num_key_value_heads=kv_heads,
                          vocab_size=vocab)
    config["tie_word_embeddings"] = False
    write_config(dest, config)
    return dest
