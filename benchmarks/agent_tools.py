"""Benchmark (issue 12): a coding agent's trace with tools, time to first token per request,
``mlx-tui serve`` against ``mlx_lm.server`` on the same model in the same run.

The trace is the agent trace of the prompt-cache issue (one long system prompt, 20 different
short questions), run as an agent runs it with tools: every turn is two requests, each with
the same two tool definitions (``read_file``, ``search``) rendered by the model's chat template:

* **ask**: the system prompt and the turn's question (the model would answer with a tool
  call);
* **answer**: the same, then the assistant's ``read_file`` call and the tool's result (a short
  file), for the final answer.

The model is a real ``mlx_lm`` llama with random float32 weights and a Qwen2.5-style chat
template that takes tools (mlx-lm infers its ``json_tools`` parser), built in a temporary
folder. Both servers run as users start them (``mlx-tui --settings S --db D serve``,
``python -m mlx_lm.server --model PATH``), each warmed by one short unrelated request; then the
turns run one after the other, the two servers taking turns to go first. Every request is
streamed (``stream_options.include_usage``), greedy, ``max_tokens`` 4; TTFT is from sending
the request to the first chunk with text (or a tool call) as the client reads it, through the
same HTTP client code for both. Reported per turn: prompt tokens (both servers must see the
same), each server's TTFT and the tokens it reported reused from its prompt cache
(``usage.prompt_tokens_details.cached_tokens``), and the ratio mlx-tui / mlx_lm.server.
Target (issue 11's, for every turn after the first): within 1.1x of mlx_lm.server.

Run ``python -m benchmarks.agent_tools [--quick]``; it prints a Markdown section.
"""

from __future__ import annotations

import datetime as _dt
import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from . import common

__all__ = ["Plan", "Turn", "run", "main"]

DTYPE = "float32"
TARGET = 1.10  # every turn after the first within 1.1x of mlx_lm.server's TTFT
MAX_TOKENS = 4
MODEL = "agent"
TOOLS = [
    {"type": "function", "function": {
        "name": "read_file", "description": "Read a file of the repository",
        "parameters": {"type": "object", "properties": {"path": {"type": "string"}},
                       "required": ["path"]}}},
    {"type": "function", "function": {
        "name": "search", "description": "Search the repository for a regular expression",
        "parameters": {"type": "object", "properties": {"pattern": {"type": "string"},
                                                        "glob": {"type": "string"}},
                       "required": ["pattern"]}}},
]
SUBJECTS = ("the cache", "the loader", "the planner", "the policy", "the store", "the settings",
            "the catalog", "the monitor", "the engine", "the worker", "the sampler", "stop strings",
            "the splitter", "the server", "the guard", "the metrics", "the events", "the runtime",
            "the registry", "the wired limit")


@dataclass(frozen=True)
class Plan:
    """The size of one run."""

    turns: int
    system_chars: int

    @classmethod
    def for_mode(cls, quick: bool) -> "Plan":
        # CPU MLX prefills a few hundred tokens a second on a 2-core machine: the model is
        # modelgen's smallest, so that a system prompt near issue 11's ~8,000 tokens costs
        # seconds, not minutes, and the trace's 80 requests a few minutes.
        if quick:
            return cls(turns=4, system_chars=1_500)
        return cls(turns=20, system_chars=24_000)


def _system_prompt(chars: int) -> str:
    """Python's own help topics (deterministic) as an agent's long instructions."""
    from pydoc_data.topics import topics

    text = "You are a coding agent working in this repository. Follow these notes.\n\n"
    for key in sorted(topics):
        text += topics[key]
        if len(text) >= chars:
            break
    return text[:chars]


def _turn_messages(system: str, i: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The two requests of turn ``i``: the question; the question with the call and its result."""
    subject = SUBJECTS[i % len(SUBJECTS)]
    name = subject.split()[-1]
    question = [{"role": "system", "content": system},
                {"role": "user", "content": f"Where is {subject} implemented, and what does it own?"}]
    call = {"id": f"call_{i:04d}", "type": "function",
            "function": {"name": "read_file", "arguments": json.dumps({"path": f"src/{name}.py"})}}
    result = (f'"""{subject.capitalize()}: one owner of its state."""\n\n'
              f"class {name.capitalize()}:\n    def __init__(self) -> None:\n        self.items = []\n")
    answer = [*question, {"role": "assistant", "content": "", "tool_calls": [call]},
              {"role": "tool", "tool_call_id": call["id"], "content": result}]
    return question, answer


def _ask(client: Any, server: common.ServerProcess, messages: Sequence[dict[str, Any]]) -> common.StreamResult:
    """One streamed request with the tools; the first chunk with text or a tool call is the
    first token. Never raises (a failure is in ``error``)."""
    return common.chat_request(client, server, messages, max_tokens=MAX_TOKENS, tools=TOOLS)


@dataclass
class Turn:
    """One turn's two requests on both servers."""

    index: int
    first: str  # which server went first
    ours: tuple[common.StreamResult, common.StreamResult]
    theirs: tuple[common.StreamResult, common.StreamResult]


def _write_model(folder: Path) -> Path:
    from mlx_tui.devtools.modelgen import write_random_model
    from tests.protocol_server import QWEN_TOOLS_TEMPLATE

    write_random_model(folder, dtype=DTYPE, seed=3)
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["chat_template"] = QWEN_TOOLS_TEMPLATE
    config_path.write_text(json.dumps(config))
    return folder


def measure(plan: Plan, work: Path) -> tuple[list[Turn], dict[str, Any]]:
    import httpx

    log = common.logger("agent_tools")
    folder = _write_model(work / "agent")
    settings = common.write_settings(work / "settings.toml", {MODEL: str(folder)})
    system = _system_prompt(plan.system_chars)
    facts: dict[str, Any] = {"model": common.model_desc(folder, DTYPE), "load": common.machine_load()}
    turns: list[Turn] = []
    with common.mlx_tui_serve(settings, work / "stats.db", MODEL, work / "mlx-tui.log") as ours, \
            common.mlx_lm_server(folder, work / "mlx_lm.log") as theirs, \
            httpx.Client() as client:
        warm = [{"role": "user", "content": "Warm up: say hello."}]
        for server in (ours, theirs):
            result = _ask(client, server, warm)
            if not result.ok:
                raise RuntimeError(f"{server.name}: warm-up failed: {result.error}\n{server.log_tail()}")
        for i in range(plan.turns):
            ask, answer = _turn_messages(system, i)
            order = (ours, theirs) if i % 2 == 0 else (theirs, ours)
            got: dict[str, tuple[common.StreamResult, common.StreamResult]] = {}
            for server in order:
                pair = (_ask(client, server, ask), _ask(client, server, answer))
                for r in pair:
                    if not r.ok:
                        raise RuntimeError(f"{server.name}, turn {i + 1}: {r.error}\n{server.log_tail()}")
                got[server.name] = pair
            turns.append(Turn(i + 1, order[0].name, got[ours.name], got[theirs.name]))
            log(f"turn {i + 1}: mlx-tui {got[ours.name][0].ttft:.3f} / {got[ours.name][1].ttft:.3f} s, "
                f"mlx_lm.server {got[theirs.name][0].ttft:.3f} / {got[theirs.name][1].ttft:.3f} s")
    facts["load_after"] = common.machine_load()
    return turns, facts


def _row(turn: Turn, k: int, what: str) -> str:
    o, t = turn.ours[k], turn.theirs[k]
    same = "" if o.prompt_tokens == t.prompt_tokens else f" (mlx_lm.server: {t.prompt_tokens:,})"
    return (f"| {turn.index} | {what} | {o.prompt_tokens:,}{same} | {o.ttft:.3f} | {o.cached_tokens:,} "
            f"| {t.ttft:.3f} | {t.cached_tokens:,} | {common.ratio(o.ttft, t.ttft)} |")


def report(plan: Plan, turns: list[Turn], facts: dict[str, Any]) -> str:
    later = [t for t in turns if t.index > 1]
    ratios = {k: [t.ours[k].ttft / t.theirs[k].ttft for t in later] for k in (0, 1)}
    within = sum(r <= TARGET for k in (0, 1) for r in ratios[k])
    total = {"ours": sum(r.ttft for t in turns for r in t.ours),
             "theirs": sum(r.ttft for t in turns for r in t.theirs)}
    mismatched = sum(t.ours[k].prompt_tokens != t.theirs[k].prompt_tokens for t in turns for k in (0, 1))
    date = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "## Agent trace with tools: time to first token against mlx_lm.server",
        "",
        f"{facts['model']}, Qwen2.5-style tool template; {plan.turns} turns of two requests "
        f"(ask; answer after a `read_file` call and its result), the same two tools in every "
        f"request, a system prompt of {plan.system_chars:,} characters; streamed, greedy, "
        f"`max_tokens` {MAX_TOKENS}. Both servers started by this run on the same folder, "
        f"taking turns to go first. Date {date}; machine load {facts['load']} at the start, "
        f"{facts['load_after']} at the end. TTFT in seconds as the client saw it; *reused*: "
        "prompt tokens the server said it read from its prompt cache.",
        "",
        "| turn | request | prompt tokens | mlx-tui TTFT | mlx-tui reused | mlx_lm.server TTFT "
        "| mlx_lm.server reused | mlx-tui / mlx_lm.server |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for turn in turns:
        lines += [_row(turn, 0, "ask"), _row(turn, 1, "answer")]
    lines += [
        "",
        f"* **Turns after the first, ask: median {statistics.median(ratios[0]):.2f}x of "
        f"mlx_lm.server's TTFT (range {min(ratios[0]):.2f}-{max(ratios[0]):.2f}); answer: median "
        f"{statistics.median(ratios[1]):.2f}x (range {min(ratios[1]):.2f}-{max(ratios[1]):.2f}). "
        f"Target within {TARGET:.1f}x on every one: {common.verdict(within == 2 * len(later))}** "
        f"({within} of {2 * len(later)} requests within).",
        f"* Total TTFT over the trace: mlx-tui {total['ours']:.2f} s, mlx_lm.server "
        f"{total['theirs']:.2f} s ({common.ratio(total['ours'], total['theirs'])}).",
        f"* Prompt tokens: {'the same on both servers for every request' if not mismatched else f'{mismatched} requests differ (see the table)'} "
        "(both render the same chat template with the same tools, call and result).",
        "",
    ]
    return "\n".join(lines)


def run(quick: bool = False) -> str:
    plan = Plan.for_mode(quick)
    with common.work_folder("mlx-tui-agent-tools-") as work:
        turns, facts = measure(plan, work)
    return report(plan, turns, facts)


def main() -> None:
    common.main(__doc__, run, "4 turns and a shorter system prompt (about a minute)")


if __name__ == "__main__":
    main()
