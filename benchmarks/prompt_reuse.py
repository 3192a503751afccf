"""Benchmarks (issue 11): never pay twice for the same prompt. Time to first token of
conversations that grow and of an agent's repeated system prompt, mlx-tui against
``mlx_lm.server`` (which reuses its own KV caches) on the same model folder, against mlx-tui
with ``[prompt_cache] enabled = false``, and after a restart (the disk tier).

Servers, all on loopback, all up for the whole run:

* **mlx-tui** ``mlx-tui --settings S --db D serve`` with its prompt cache on (``[prompt_cache]
  dir`` in the run's folder), the model preloaded;
* **mlx-tui, no reuse**: the same with ``[prompt_cache] enabled = false``;
* **mlx_lm.server** ``python -m mlx_lm.server --model PATH`` (its defaults: an LRU of 10 KV
  caches, prefill step 2048).

Every request is streamed (SSE), greedy, ``max_tokens`` 16; *TTFT* is from sending it to the
first piece of reply text, as the client sees it (tokenizing, the cache lookup, the prefill of
what is not cached and the first token). Both servers report ``usage.prompt_tokens_details.
cached_tokens``, printed beside each figure.

1. **Multi-turn chat**: 8 turns (``--quick``: 4), each a new user message of about 700 tokens
   (``--quick``: 300) of text, growing to about 6,000 tokens (``--quick``: 1,300); every turn
   sends the whole conversation with each server's own earlier replies, as a chat client does.
   Each turn goes to mlx-tui and ``mlx_lm.server`` one after the other (the order alternates).
   Target: every turn after the first within 1.1x of ``mlx_lm.server``'s TTFT.
2. **Restart-resume**: mlx-tui is stopped (SIGTERM: the prompt caches go to the disk tier) and
   started again on the same settings; once its preload is done, the conversation goes on with
   one more question. Its TTFT against the same request to mlx-tui without reuse (a full
   prefill). Target: at most 0.2x.
3. **Agent trace**: one system prompt of about 8,000 tokens (``--quick``: 2,000) and 20 different
   short questions (``--quick``: 6), each sent alone after the system prompt, to mlx-tui and
   ``mlx_lm.server`` in turn; the first 6 (``--quick``: 2) also to mlx-tui without reuse. Each
   of those is the same work (the whole system prompt, then a question), so the no-reuse total
   for the trace is their mean times the number of questions. Target: the trace's total TTFT
   (prefill) with reuse at most 0.1x of that; TTFT per request against ``mlx_lm.server``.

The model is tiny on purpose (a float32 llama of hidden size 32, two layers, one head): on
this CPU build of MLX, matrix work runs at about 1 GFLOP/s, and a prefill of 8,000 tokens
takes seconds even so (attention over the whole prompt).

Run ``python -m benchmarks.prompt_reuse [--quick]``; it prints a Markdown section.
"""

from __future__ import annotations

import statistics
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from mlx_tui.core.settings import EngineSettings

from . import common

__all__ = ["Plan", "run", "main"]

DTYPE = "float32"
SHAPE: dict[str, int] = {
    "hidden_size": 32, "num_hidden_layers": 2, "intermediate_size": 64,
    "num_attention_heads": 1, "num_key_value_heads": 1,
}
MAX_TOKENS = 16
TURN_TARGET = 1.10
AGENT_TARGET = 0.10
RESUME_TARGET = 0.20
QUESTIONS = (
    "Which file defines the parser?", "How do I run the tests?", "What does the cache evict first?",
    "Where are settings stored?", "Can I change the port?", "Why is the first reply slow?",
    "How big may a prompt be?", "What happens on SIGTERM?", "Which models are supported?",
    "How do I pin a model?", "What is the warning threshold?", "Can two clients share a model?",
    "Where does the log go?", "How is memory measured?", "What does the API key protect?",
    "How do I list loaded models?", "Is streaming supported?", "What is a prompt cache?",
    "How do I clear the disk tier?", "Which Python version is needed?",
)
log = common.logger("prompt_reuse")


@dataclass(frozen=True)
class Plan:
    rounds: int  # independent multi-turn conversations
    turns: int
    turn_tokens: int
    system_tokens: int
    questions: int
    no_reuse: int

    @classmethod
    def for_mode(cls, quick: bool) -> "Plan":
        return cls(1, 4, 300, 2000, 6, 2) if quick else cls(3, 8, 700, 8000, 20, 6)


class _Texts:
    """Deterministic text of a given number of tokens (Python's help topics, the corpus this
    model's tokenizer was trained on), cut from one long token stream."""

    def __init__(self, folder: Path) -> None:
        from pydoc_data.topics import topics

        from tokenizers import Tokenizer

        self._tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        corpus = "\n\n".join(topics[k] for k in sorted(topics))
        self._ids = self._tokenizer.encode(corpus).ids
        self._at = 0

    def take(self, tokens: int) -> str:
        if self._at + tokens > len(self._ids):
            self._at = 0
        ids = self._ids[self._at:self._at + tokens]
        self._at += tokens
        return self._tokenizer.decode(ids)


def _ask(server: common.ServerProcess, messages: list[dict[str, str]]) -> common.StreamResult:
    import httpx

    with httpx.Client() as client:
        r = common.chat_request(client, server, messages, max_tokens=MAX_TOKENS, timeout=900)
    if not r.ok:
        raise RuntimeError(f"{server.name}: request failed: {r.error}\n{server.log_tail()}")
    return r


def _settings(work: Path, name: str, folder: Path, reuse: bool) -> Path:
    return common.write_settings(work / f"{name}.toml", {"model": str(folder)}, cache={"preload": ["model"]},
                                 prompt_cache={"enabled": reuse, "dir": str(work / f"{name}-prompt-cache")})


def _disk_tier(folder: Path) -> tuple[int, int]:
    files = [p for p in folder.rglob("*.safetensors")] if folder.exists() else []
    return len(files), sum(p.stat().st_size for p in files)


def run(quick: bool = False) -> str:
    """The Markdown section: multi-turn, restart-resume and agent trace TTFTs."""
    from mlx_tui.devtools.modelgen import write_random_model

    common.go_offline()
    plan = Plan.for_mode(quick)
    started = time.perf_counter()
    load_before = common.machine_load()
    facts: dict[str, Any] = {}
    with common.work_folder("mlx-tui-prompt-reuse-") as work, ExitStack() as stack:
        folder = write_random_model(work / "model", **SHAPE, dtype=DTYPE)
        desc = common.model_desc(folder, DTYPE)
        texts = _Texts(folder)
        reuse_settings = _settings(work, "reuse", folder, True)
        tui = stack.enter_context(common.mlx_tui_serve(reuse_settings, work / "reuse.db", "model",
                                                       work / "reuse.log"))
        bare = stack.enter_context(common.mlx_tui_serve(_settings(work, "no-reuse", folder, False),
                                                        work / "no-reuse.db", "model", work / "no-reuse.log"))
        lm = stack.enter_context(common.mlx_lm_server(folder, work / "mlx-lm.log"))
        for server in (tui, bare, lm):  # untimed: the model loaded, first allocations
            _ask(server, [{"role": "user", "content": "Hello."}])

        # 1. multi-turn chat, a few independent conversations (the machine's noise is large)
        log(f"multi-turn: {plan.rounds} conversation(s) of {plan.turns} turns of about {plan.turn_tokens} tokens")
        rounds: list[list[dict[str, common.StreamResult]]] = []
        for k in range(plan.rounds):
            chats: dict[str, list[dict[str, str]]] = {"tui": [], "lm": []}
            turns: list[dict[str, common.StreamResult]] = []
            for t in range(plan.turns):
                user = texts.take(plan.turn_tokens)
                results: dict[str, common.StreamResult] = {}
                order = [("tui", tui), ("lm", lm)] if (t + k) % 2 == 0 else [("lm", lm), ("tui", tui)]
                for key, server in order:
                    chats[key].append({"role": "user", "content": user})
                    results[key] = r = _ask(server, chats[key])
                    chats[key].append({"role": "assistant", "content": r.text})
                turns.append(results)
                log(f"conversation {k + 1}, turn {t + 1}: {results['tui'].prompt_tokens} tokens; TTFT mlx-tui "
                    f"{results['tui'].ttft:.3f} s, mlx_lm.server {results['lm'].ttft:.3f} s")
            rounds.append(turns)

        # 2. restart-resume
        log("restart-resume")
        question = {"role": "user", "content": "Please sum up what we said in one line."}
        stopped = time.perf_counter()
        stack.pop_all().close()  # every server stops (mlx-tui spills its prompt caches)...
        facts["stop_seconds"] = time.perf_counter() - stopped
        facts["disk_files"], facts["disk_bytes"] = _disk_tier(work / "reuse-prompt-cache")
        restarted = time.perf_counter()
        tui = stack.enter_context(common.mlx_tui_serve(reuse_settings, work / "reuse.db", "model",
                                                       work / "reuse-2.log"))
        facts["preload_seconds"] = common.wait_loaded(tui, "model")
        facts["restart_seconds"] = time.perf_counter() - restarted
        bare = stack.enter_context(common.mlx_tui_serve(_settings(work, "no-reuse", folder, False),
                                                        work / "no-reuse.db", "model", work / "no-reuse-2.log"))
        common.wait_loaded(bare, "model")
        resume = _ask(tui, chats["tui"] + [question])  # both the first request of a new process
        full = _ask(bare, chats["tui"] + [question])
        lm = stack.enter_context(common.mlx_lm_server(folder, work / "mlx-lm-2.log"))
        _ask(lm, [{"role": "user", "content": "Hello."}])
        log(f"resume after restart: TTFT {resume.ttft:.3f} s ({resume.cached_tokens} cached) against a "
            f"full prefill {full.ttft:.3f} s")

        # 3. agent trace
        log(f"agent trace: a {plan.system_tokens}-token system prompt, {plan.questions} questions")
        system = {"role": "system", "content": texts.take(plan.system_tokens)}
        agent: list[dict[str, common.StreamResult]] = []
        for i in range(plan.questions):
            messages = [system, {"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}]
            results = {}
            order = [("tui", tui), ("lm", lm)] if i % 2 == 0 else [("lm", lm), ("tui", tui)]
            if i < plan.no_reuse:
                order.append(("bare", bare))
            for key, server in order:
                results[key] = _ask(server, messages)
            agent.append(results)
            log(f"question {i + 1}: TTFT mlx-tui {results['tui'].ttft:.3f} s, mlx_lm.server "
                f"{results['lm'].ttft:.3f} s" + (f", no reuse {results['bare'].ttft:.3f} s" if "bare" in results else ""))
        facts["tracebacks"] = sum(p.read_text(errors="replace").count("Traceback")
                                  for p in work.glob("reuse*.log"))
    total = time.perf_counter() - started
    return _report(quick, plan, desc, total, load_before, rounds, resume, full, agent, facts)


# --------------------------------------------------------------------------- report


def _server_ttft(r: common.StreamResult) -> str:
    """mlx-tui's own time to first token (its ``timings``), or a dash."""
    value = (r.timings or {}).get("time_to_first_token")
    return f"{value:.3f}" if isinstance(value, (int, float)) else "-"


def _report(quick: bool, plan: Plan, desc: str, total: float, load_before: str,
            rounds: list[list[dict[str, common.StreamResult]]], resume: common.StreamResult,
            full: common.StreamResult, agent: list[dict[str, common.StreamResult]],
            facts: dict[str, Any]) -> str:
    turns = rounds[-1]  # the conversation restart-resume continues
    out = [
        "## Prompt reuse", "",
        f"{'Quick' if quick else 'Full'} run: {total:.0f} s in all. Machine load average before: "
        f"{load_before}, after: {common.machine_load()}. Model: {desc}, one attention head (on "
        "this CPU build of MLX a prefill of thousands of tokens takes seconds even so). Every "
        f"request streamed, greedy, `max_tokens` {MAX_TOKENS}; *TTFT* = request sent to the first "
        "reply text received, as the client sees it; *cached* = the server's "
        "`usage.prompt_tokens_details.cached_tokens`. mlx-tui runs its defaults "
        f"(`[engine].prefill_step` {EngineSettings().prefill_step}), `mlx_lm.server` its own (prompt cache of 10 entries, "
        "prefill step 2048).", "",
        f"### Multi-turn chat: {len(rounds)} conversation(s) of {plan.turns} turns of about "
        f"{plan.turn_tokens:,} new tokens", "",
        "Each conversation its own text; the two servers take turns to go first. Per turn: the "
        "median over the conversations (TTFT s, and of the per-conversation ratio, with its range); "
        "*cached* and *prompt tokens* of the last conversation.", "",
        "| turn | prompt tokens | mlx-tui TTFT s (cached) | mlx_lm.server TTFT s (cached) | "
        "mlx-tui / mlx_lm.server (range) | mlx-tui's own TTFT s |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    later = []
    for t in range(plan.turns):
        tui = [r[t]["tui"] for r in rounds]
        lm = [r[t]["lm"] for r in rounds]
        ratios = [a.ttft / b.ttft for a, b in zip(tui, lm)]
        ratio = statistics.median(ratios)
        if t > 0:
            later.append(ratio)
        own = [x.timings.get("time_to_first_token", 0.0) for x in tui if x.timings]
        out.append(f"| {t + 1} | {tui[-1].prompt_tokens:,} | "
                   f"{statistics.median(x.ttft for x in tui):.3f} ({tui[-1].cached_tokens:,}) | "
                   f"{statistics.median(x.ttft for x in lm):.3f} ({lm[-1].cached_tokens:,}) | "
                   f"{ratio:.2f}x ({common.spread(ratios, 2)}) | "
                   f"{statistics.median(own) if own else 0:.3f} |")
    worst = max(later) if later else 0.0
    every = [a["tui"].ttft / a["lm"].ttft for r in rounds for a in r[1:]]
    out += [
        "",
        f"* **Turns 2-{plan.turns}, mlx-tui TTFT against mlx_lm.server's (per-turn medians): median "
        f"{statistics.median(later):.2f}x, worst {worst:.2f}x; target every turn within "
        f"{TURN_TARGET:.1f}x: {common.verdict(worst <= TURN_TARGET)}** ({sum(x <= TURN_TARGET for x in later)} "
        f"of {len(later)} turns within it; of the {len(every)} single requests, "
        f"{sum(x <= TURN_TARGET for x in every)} within it, median {statistics.median(every):.2f}x). "
        "Turn 1 is a full prefill on both. *mlx-tui's own TTFT* is the engine's figure "
        "(`timings.time_to_first_token`: from the request reaching the chat engine, tokenizing "
        "included, to the first token); the rest of the client's TTFT is HTTP, parsing and the "
        "first piece's way out.",
        "",
        "### Restart-resume", "",
        f"mlx-tui stopped with SIGTERM after the last turn (all servers stopped in "
        f"{facts['stop_seconds']:.1f} s; the disk tier then held {facts['disk_files']} prompt "
        f"cache file(s), {facts['disk_bytes'] / 1e6:.1f} MB) and started again on the same "
        f"settings ({facts['restart_seconds']:.1f} s until its preload was done, nothing asked "
        f"before). Then one more question on the conversation (its last turn's prompt was "
        f"{turns[-1]['tui'].prompt_tokens:,} tokens); the baseline is the same request to "
        "mlx-tui without reuse (a full prefill), restarted too: each is the first request its "
        "process serves.", "",
        "| | prompt tokens | cached | TTFT s | server's own TTFT s |", "|---|---:|---:|---:|---:|",
        f"| mlx-tui after a restart | {resume.prompt_tokens:,} | {resume.cached_tokens:,} | {resume.ttft:.3f} | "
        f"{_server_ttft(resume)} |",
        f"| mlx-tui without reuse (full prefill) | {full.prompt_tokens:,} | {full.cached_tokens:,} | "
        f"{full.ttft:.3f} | {_server_ttft(full)} |",
        "",
        f"* **Resume after a restart against a full prefill: {resume.ttft / full.ttft:.3f}x; target at "
        f"most {RESUME_TARGET:.1f}x: {common.verdict(resume.ttft / full.ttft <= RESUME_TARGET)}.**",
        "",
        f"### Agent trace: a {plan.system_tokens:,}-token system prompt, {plan.questions} questions", "",
        "| question | prompt tokens | mlx-tui TTFT s (cached) | mlx_lm.server TTFT s (cached) | "
        "mlx-tui / mlx_lm.server | no reuse TTFT s |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    ratios = []
    for i, r in enumerate(agent, start=1):
        ratio = r["tui"].ttft / r["lm"].ttft
        ratios.append(ratio)
        no = f"{r['bare'].ttft:.3f}" if "bare" in r else ""
        out.append(f"| {i} | {r['tui'].prompt_tokens:,} | {r['tui'].ttft:.3f} ({r['tui'].cached_tokens:,}) | "
                   f"{r['lm'].ttft:.3f} ({r['lm'].cached_tokens:,}) | {ratio:.2f}x | {no} |")
    with_reuse = sum(r["tui"].ttft for r in agent)
    lm_total = sum(r["lm"].ttft for r in agent)
    no_reuse_each = [r["bare"].ttft for r in agent if "bare" in r]
    no_reuse = statistics.mean(no_reuse_each) * len(agent)
    server_side = [r["tui"].timings.get("time_to_first_token", 0.0) for r in agent if r["tui"].timings]
    out += [
        "",
        f"* **Total TTFT of the trace with reuse {with_reuse:.2f} s against {no_reuse:.2f} s without "
        f"({len(no_reuse_each)} of the {len(agent)} requests measured without reuse, mean "
        f"{statistics.mean(no_reuse_each):.2f} s each, times {len(agent)}): "
        f"{with_reuse / no_reuse:.3f}x; target at most {AGENT_TARGET:.1f}x: "
        f"{common.verdict(with_reuse / no_reuse <= AGENT_TARGET)}.** mlx-tui's own time to first "
        f"token (`timings`, server side) summed: {sum(server_side):.2f} s. mlx_lm.server's total: "
        f"{lm_total:.2f} s ({with_reuse / lm_total:.2f}x of it).",
        f"* Questions 2-{len(agent)}, mlx-tui TTFT against mlx_lm.server's: median "
        f"{statistics.median(ratios[1:]):.2f}x, worst {max(ratios[1:]):.2f}x (no target; for "
        "comparison with the multi-turn one).",
        f"* Tracebacks in mlx-tui's logs: {facts['tracebacks']}.",
        "",
    ]
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> None:
    common.main(__doc__, run, "shorter conversations and system prompt, fewer questions", argv)


if __name__ == "__main__":
    main()
