"""A model across two ranks on this machine (``mlx.launch``, ring over loopback) against one process.

Run alone with ``python -m benchmarks.distributed [--quick]``; ``python -m benchmarks`` runs it
with the others. Two figures, each beside its baseline measured in the same run:

1. **Tokens per second** of greedy replies (prompt of the chat template plus a question), one at
   a time and four at once, through the same generation worker code: the core's
   ``GenerationWorker`` in this process (baseline) and the ranks' (``RemoteWorker`` here, the
   core's worker in step on every rank), tensor parallel (llama) and pipeline (qwen2). On one
   machine two ranks share its cores and every step adds collectives over loopback, so the
   distributed figure is lower: it is recorded, not a target (across two Macs the point is a
   model that fits neither alone).
2. **Time to ready**: from starting ``python -m mlx_tui.distributed.serve --hostfile`` (what
   ``mlx-tui serve --hostfile`` runs) until ``/health`` shows the model loaded, against
   ``mlx-tui serve`` preloading the same model in one process.
"""

from __future__ import annotations

import json
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks.common import ROOT, logger, machine_load, main, offline_env, work_folder, write_settings

log = logger("distributed")

QUESTION = "Tell me about the rivers and mountains of Europe."
MLX_TUI = str(Path(sys.executable).with_name("mlx-tui"))


def _models(work: Path, quick: bool) -> list[tuple[str, Path, Path]]:
    """(label, llama folder, qwen2 folder) for each size measured."""
    from mlx_tui.devtools.modelgen import write_random_model

    shapes: list[dict[str, Any]] = [{"hidden_size": 64, "num_hidden_layers": 2, "intermediate_size": 128,
                                     "num_attention_heads": 4, "num_key_value_heads": 2}]
    if not quick:
        shapes.append({"hidden_size": 512, "num_hidden_layers": 8, "intermediate_size": 1408,
                       "num_attention_heads": 8, "num_key_value_heads": 4})
    found = []
    for shape in shapes:
        # several weight files: mlx-lm's pipeline loading reads model.safetensors.index.json
        shard = 200_000 if shape["hidden_size"] < 128 else 32 * 1024**2
        common = {**shape, "tie_word_embeddings": False, "max_shard_bytes": shard}
        tag = f"h{shape['hidden_size']}x{shape['num_hidden_layers']}"
        llama = write_random_model(work / f"llama-{tag}", **common)
        qwen2 = write_random_model(work / f"qwen2-{tag}", architecture="qwen2", **common)
        size = sum(p.stat().st_size for p in llama.glob("*.safetensors"))
        label = (f"{size / 1e6:.1f} MB float32 (hidden {shape['hidden_size']}, "
                 f"{shape['num_hidden_layers']} layers)")
        found.append((label, llama, qwen2))
    return found


def _replies(worker: Any, tokens: list[int], max_tokens: int, at_once: int) -> tuple[float, int]:
    """Wall seconds for ``at_once`` greedy replies submitted together, and tokens generated."""
    from mlx_tui.core.chat_types import GenerationParams
    from mlx_tui.core.engine import Finished, GenerationRequest

    started = time.perf_counter()
    handles = [worker.submit(GenerationRequest(list(tokens), GenerationParams(temperature=0, max_tokens=max_tokens)))
               for _ in range(at_once)]
    generated = 0
    for handle in handles:
        while True:
            items = handle.take(timeout=300)
            assert items, "no reply within 300 s"
            finished = [i for i in items if isinstance(i, Finished)]
            errors = [i for i in items if isinstance(i, BaseException)]
            if errors:
                raise errors[0]
            if finished:
                generated += finished[0].generation_tokens
                break
    return time.perf_counter() - started, generated


def _interleaved(workers: dict[str, tuple[Any, list[int]]], max_tokens: int,
                 repeats: int) -> dict[str, dict[int, list[float]]]:
    """Tokens per second of each worker, 1 and 4 replies at once, the workers taking turns in
    every repeat (so both see the same load on a shared machine)."""
    for worker, tokens in workers.values():
        _replies(worker, tokens, 8, 1)  # warm-up: first-step compilation, caches
    rates: dict[str, dict[int, list[float]]] = {name: {1: [], 4: []} for name in workers}
    for _ in range(repeats):
        for at_once in (1, 4):
            for name, (worker, tokens) in workers.items():
                seconds, generated = _replies(worker, tokens, max_tokens, at_once)
                rates[name][at_once].append(generated / seconds)
    return rates


def _measure(folder: Path, pipeline: bool, max_tokens: int,
             repeats: int) -> tuple[dict[str, dict[int, list[float]]], float, list[int]]:
    """One process against two ranks on ``folder``; also the ranks' start-and-load seconds and
    their shard bytes."""
    from mlx_lm import load

    from mlx_tui.core.catalog import inspect_model_folder
    from mlx_tui.core.chat import prompt_tokens, render_prompt
    from mlx_tui.core.chat_types import ChatMessage
    from mlx_tui.core.engine import GenerationWorker
    from mlx_tui.core.loader import MlxLoader
    from mlx_tui.core.mlx_threads import MlxThreadPool
    from mlx_tui.core.settings import EngineSettings
    from mlx_tui.distributed.group import GroupSettings
    from mlx_tui.distributed.hostfile import Hostfile
    from mlx_tui.distributed.loader import DistributedLoader, DistributedSpec

    model, tokenizer = load(str(folder))
    local = GenerationWorker("local", model, tokenizer, EngineSettings())
    local.start(_POOL.setdefault("pool", MlxThreadPool("benchmark")))
    del model
    tokens = prompt_tokens(tokenizer, render_prompt(tokenizer, [ChatMessage("user", QUESTION)]))
    loader = DistributedLoader({str(folder): DistributedSpec(
        Hostfile.loopback(2), pipeline=pipeline, group=GroupSettings(start_timeout=300))})
    try:
        started = time.perf_counter()
        loaded = loader.load(inspect_model_folder("bench", folder, "folder"))
        ready = time.perf_counter() - started
        shards = [r.shard_bytes for r in loader.ranks("bench")]
        rates = _interleaved({"one": (local, tokens), "two": (loaded.model.worker, tokens)},
                             max_tokens, repeats)
        return rates, ready, shards
    finally:
        loader.close()
        local.stop()
        del local
        MlxLoader().free()


_POOL: dict[str, Any] = {}


def _time_to_ready(command: list[str], url: str, log_path: Path, timeout: float = 300) -> float:
    """Seconds from starting ``command`` until ``/health`` shows a model loaded."""
    started = time.perf_counter()
    with log_path.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                                   env=offline_env())
    try:
        while True:
            assert process.poll() is None, f"exited early: {log_path.read_text()[-2000:]}"
            assert time.perf_counter() - started < timeout, "not ready in time"
            try:
                models = httpx.get(f"{url}/health", timeout=2).json()["cached_models"]
                if any(m["state"] == "loaded" for m in models):
                    return time.perf_counter() - started
            except (httpx.HTTPError, KeyError, ValueError):
                pass
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def _ready_figures(work: Path, folder: Path, repeats: int) -> dict[str, Any]:
    from mlx_tui.devtools.ports import free_port
    from mlx_tui.distributed.hostfile import Hostfile

    hosts = work / "hosts.json"
    hosts.write_text(json.dumps(Hostfile.loopback(2).to_json()))
    single: list[float] = []
    both: list[float] = []
    phases: list[tuple[float, float]] = []
    for i in range(repeats):
        port = free_port()
        settings = write_settings(work / f"ready-{i}.toml", {"tiny": str(folder)}, api={"port": port},
                                  cache={"preload": ["tiny"]})
        url = f"http://127.0.0.1:{port}"
        single.append(_time_to_ready([MLX_TUI, "--settings", str(settings), "--db", str(work / f"s{i}.db"),
                                      "serve"], url, work / f"single-{i}.log"))
        port = free_port()
        settings = write_settings(work / f"ready-d{i}.toml", {"tiny": str(folder)}, api={"port": port})
        url = f"http://127.0.0.1:{port}"
        log_path = work / f"distributed-{i}.log"
        both.append(_time_to_ready([sys.executable, "-m", "mlx_tui.distributed.serve", "--settings",
                                    str(settings), "--db", str(work / f"d{i}.db"), "--hostfile",
                                    str(hosts), "--model", "tiny"], url, log_path))
        phases.append(_phases(log_path.read_text(errors="replace")))
    return {"single": single, "distributed": both, "phases": phases}


_STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


def _phases(text: str) -> tuple[float, float]:
    """(seconds to start the ranks, seconds to load the shards) from a serve log's stamps."""
    import datetime as dt

    def at(marker: str) -> float:
        line = next(line for line in text.splitlines() if marker in line)
        match = _STAMP.match(line)
        assert match, line
        return dt.datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()

    start, up, loaded = at("starting 2 ranks"), at("ranks up"), at("loaded on 2 hosts")
    return up - start, loaded - up


def _median(values: list[float]) -> float:
    return statistics.median(values)


def run(quick: bool = False) -> str:
    repeats = 2 if quick else 3
    max_tokens = 48 if quick else 96
    rows: list[str] = []
    notes: list[str] = []
    with work_folder("mlx-tui-bench-distributed-") as work:
        models = _models(work, quick)
        for label, llama, qwen2 in models:
            for arch, folder, pipeline in (("llama", llama, False), ("qwen2", qwen2, True)):
                mode = "pipeline" if pipeline else "tensor parallel"
                log(f"{label} {arch}: one process and two ranks, {mode}")
                rates, ready, shards = _measure(folder, pipeline, max_tokens, repeats)
                for at_once in (1, 4):
                    one, two = _median(rates["one"][at_once]), _median(rates["two"][at_once])
                    rows.append(f"| {label} | {arch}, {mode} | {at_once} | {one:.1f} | {two:.1f} | "
                                f"{two / one:.2f}x |")
                total = sum(p.stat().st_size for p in folder.glob("*.safetensors"))
                notes.append(f"- {label} {arch} ({mode}): shards {', '.join(f'{s / 1e6:.2f}' for s in shards)} MB "
                             f"of {total / 1e6:.2f} MB; group start and load from this process "
                             f"{ready:.1f} s.")
        log("time to ready")
        ready = _ready_figures(work, models[0][1], 1 if quick else 3)
    single, both = _median(ready["single"]), _median(ready["distributed"])
    starts = [p[0] for p in ready["phases"]]
    loads = [p[1] for p in ready["phases"]]
    lines = [
        "## A model across two ranks (MLX distributed, loopback)", "",
        f"Two ranks started by `mlx.launch` on this machine (ring backend over 127.0.0.1, "
        f"mlx[cpu]); load average at the end {machine_load()}. Greedy replies of up to "
        f"{max_tokens} tokens to one question, {repeats} repeats (median), after one warm-up; "
        "tokens per second are wall-clock, submit to last token, summed over the replies at once. "
        "Baseline: the core's generation worker in one process on the same folder, same run, "
        "taking turns with the ranks in every repeat.", "",
        "| model | split | at once | one process tok/s | two ranks tok/s | ratio |",
        "|---|---|---:|---:|---:|---:|",
        *rows, "",
        *notes, "",
        "| time to ready | median s | runs |", "|---|---:|---|",
        f"| `mlx-tui serve`, preloading the tiny model (baseline) | {single:.2f} | "
        f"{', '.join(f'{v:.2f}' for v in ready['single'])} |",
        f"| `serve --hostfile` (2 ranks), the same model | {both:.2f} | "
        f"{', '.join(f'{v:.2f}' for v in ready['distributed'])} |",
        f"| of which: ranks started (mlx.launch to every rank's hello) | {_median(starts):.2f} | "
        f"{', '.join(f'{v:.2f}' for v in starts)} |",
        f"| of which: shards loaded (sharded_load on both, tokenizer here) | {_median(loads):.2f} | "
        f"{', '.join(f'{v:.2f}' for v in loads)} |",
        "",
        f"`serve --hostfile` takes {both / single:.2f}x the single process's time to ready.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main(__doc__, run, "the tiny model only, fewer tokens and repeats")
