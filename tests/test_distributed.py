"""A model across two ranks on this machine, started by ``mlx.launch`` (ring backend on loopback,
mlx[cpu]): the ranks answer exactly as one process does, ``/health`` shows each rank, an
eviction frees both shards, a rank killed mid-reply fails that reply with the host's name while
the server stays up, a memory reading past the warning on one rank unloads the model and keeps
it from loading again, and the hostfile is checked before anything starts.

Every wait is bounded: the server and the ranks are real processes, and each test that waits on
them gives up after a timeout instead of hanging.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import openai
import psutil
import pytest

from mlx_tui.core.catalog import estimate_resident_bytes, inspect_model_folder
from mlx_tui.core.chat import prompt_tokens, render_prompt
from mlx_tui.core.chat_types import ChatMessage, GenerationParams
from mlx_tui.core.engine import Finished, GenerationRequest, GenerationWorker, Piece
from mlx_tui.core.mlx_threads import MlxThreadPool
from mlx_tui.core.settings import EngineSettings
from mlx_tui.devtools.modelgen import write_random_model
from mlx_tui.devtools.ports import free_port
from mlx_tui.devtools.settings_files import write_isolated_settings
from mlx_tui.distributed.errors import HostfileError
from mlx_tui.distributed.group import GroupSettings
from mlx_tui.distributed.hostfile import Host, Hostfile
from mlx_tui.distributed.loader import DistributedLoader, DistributedSpec
from mlx_tui.distributed.rank import FAKE_MEMORY_ENV
from mlx_tui.distributed.shards import pipeline_split, shard_bytes

QUESTIONS = ("Why is the sky blue?", "Name three rivers of Europe.")
MAX_TOKENS = 24
LONG_REPLY = 400
LONG_QUESTION = "Tell me a long story."  # both models answer it this long with no end of sequence
START_TIMEOUT = 180.0  # a group start imports mlx_lm in every rank: slow on a busy 2-core box


def wait_until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout:g} s waiting for {what}"
        time.sleep(0.1)


# -- models and what one process answers ---------------------------------------------------------
@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny llama (tensor parallel) and a tiny qwen2 (mlx-lm pipelines qwen2, not llama), with
    untied heads and scaled layers so every token depends on the context."""
    root = tmp_path_factory.mktemp("distributed-models")
    common: dict[str, Any] = {"tie_word_embeddings": False, "weight_scale": 3.0,
                              "max_shard_bytes": 200_000}
    return {"llama": write_random_model(root / "llama", **common),
            "qwen2": write_random_model(root / "qwen2", architecture="qwen2", **common)}


@dataclass(frozen=True)
class Greedy:
    """A greedy reply: its text as the worker streamed it, and how it ended (its tokens)."""

    text: str
    finished: Finished


def generate(worker: Any, tokens: list[int], max_tokens: int) -> Greedy:
    """A greedy reply through a worker's interface (the core's local worker or the remote one)."""
    handle = worker.submit(GenerationRequest(tokens, GenerationParams(temperature=0, max_tokens=max_tokens)))
    text: list[str] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        for item in handle.take(timeout=1.0):
            if isinstance(item, BaseException):
                raise item
            if isinstance(item, Piece):
                text.append(item.text)
            if isinstance(item, Finished):
                return Greedy("".join(text), item)
    raise AssertionError("no reply within 120 s")


def chat_tokens(tokenizer: Any, question: str) -> list[int]:
    return prompt_tokens(tokenizer, render_prompt(tokenizer, [ChatMessage("user", question)]))


@pytest.fixture(scope="module")
def one_process(folders: dict[str, Path]) -> dict[str, dict[str, Greedy]]:
    """Each model's greedy replies to each question, from the core's worker in this process."""
    from mlx_lm import load

    threads = MlxThreadPool("reference")
    replies: dict[str, dict[str, Greedy]] = {}
    for arch, folder in folders.items():
        model, tokenizer = load(str(folder))
        worker = GenerationWorker(arch, model, tokenizer, EngineSettings())
        worker.start(threads)
        replies[arch] = {q: generate(worker, chat_tokens(tokenizer, q), MAX_TOKENS) for q in QUESTIONS}
        replies[arch]["long"] = generate(worker, chat_tokens(tokenizer, LONG_QUESTION), LONG_REPLY)
        worker.stop()
        del model, worker
    return replies


# -- a server with the llama across two ranks ----------------------------------------------------
@dataclass
class Served:
    url: str
    process: subprocess.Popen[bytes]
    log: Path
    fake_memory: Path  # rank 1 reports the fraction written here as memory in use (when present)

    def health(self) -> dict[str, Any]:
        return httpx.get(f"{self.url}/health", timeout=10).json()

    def model(self) -> dict[str, Any]:
        return next(m for m in self.health()["models"] if m["name"] == "tiny")

    def ensure_loaded(self) -> dict[str, Any]:
        reply = httpx.post(f"{self.url}/models/load", json={"model": "tiny"}, timeout=START_TIMEOUT)
        assert reply.status_code == 200, reply.text
        return wait_until(lambda: (m := self.model())["state"] == "loaded" and m, 30, "the model loaded")

    def sdk(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key="unused", max_retries=0,
                             timeout=START_TIMEOUT)

    def rank_pids(self) -> list[int]:
        return [r["pid"] for r in self.model().get("ranks", []) if r["pid"]]


@pytest.fixture(scope="module")
def served(folders: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """``python -m mlx_tui.distributed.serve --hostfile`` (what ``mlx-tui serve --hostfile``
    runs) serving the tiny llama tensor parallel over two loopback ranks."""
    folder = tmp_path_factory.mktemp("distributed-serve")
    port = free_port()
    settings = write_isolated_settings(folder / "settings.toml", {"tiny": str(folders["llama"])},
                                       api={"port": port})
    hosts = folder / "hosts.json"
    hosts.write_text(json.dumps(Hostfile.loopback(2).to_json()))
    fake = folder / "rank1-memory"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "XDG_CONFIG_HOME": str(folder / "config"), "XDG_DATA_HOME": str(folder / "data"),
           FAKE_MEMORY_ENV: f"1={fake}"}
    log_path = folder / "serve.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "mlx_tui.distributed.serve", "--settings", str(settings),
             "--db", str(folder / "serve.db"), "--hostfile", str(hosts), "--model", "tiny",
             "--rank-timeout", "30"],
            stdout=log, stderr=subprocess.STDOUT, env=env)
    server = Served(f"http://127.0.0.1:{port}", process, log_path, fake)

    def loaded() -> bool:
        assert process.poll() is None, f"the server exited: {log_path.read_text()[-3000:]}"
        try:
            return server.model()["state"] == "loaded"
        except (httpx.HTTPError, StopIteration):
            return False

    try:
        wait_until(loaded, START_TIMEOUT, "serve --hostfile to be ready")
        yield server
    finally:
        pids = server.rank_pids() if process.poll() is None else []
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        wait_until(lambda: not any(psutil.pid_exists(p) for p in pids), 30, "the ranks to exit")


def test_two_ranks_tensor_parallel_answer_exactly_as_one_process(
        served: Served, one_process: dict[str, dict[str, Greedy]]) -> None:
    served.ensure_loaded()
    for question in QUESTIONS:
        reply = served.sdk().chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": question}], temperature=0,
            max_tokens=MAX_TOKENS)
        expected = one_process["llama"][question]
        assert reply.usage is not None
        assert reply.usage.completion_tokens == expected.finished.generation_tokens
        assert reply.usage.prompt_tokens == expected.finished.prompt_tokens
        assert reply.choices[0].message.content == expected.text


def test_health_shows_both_ranks_with_their_host_memory_and_shard(
        served: Served, folders: dict[str, Path]) -> None:
    model = served.ensure_loaded()
    ranks = model["ranks"]
    assert [(r["rank"], r["host"], r["state"]) for r in ranks] == [
        (0, "127.0.0.1", "loaded"), (1, "127.0.0.1", "loaded")]
    assert len({r["pid"] for r in ranks}) == 2 and all(psutil.pid_exists(r["pid"]) for r in ranks)
    expected = shard_bytes(folders["llama"], 2)
    assert [r["shard_bytes"] for r in ranks] == expected and all(r["measured"] for r in ranks)
    assert all(part < estimate_resident_bytes(folders["llama"]) for part in expected)
    for r in ranks:
        memory = r["memory"]
        assert memory["total_bytes"] > 0 and 0 < memory["used_fraction"] < 1
        assert memory["mlx_active_bytes"] >= r["shard_bytes"]
    assert model["resident_bytes"] == expected[0]  # what this machine holds: rank 0's part


def test_evicting_frees_the_shard_on_both_ranks(served: Served) -> None:
    held = [r["memory"]["mlx_active_bytes"] for r in served.ensure_loaded()["ranks"]]
    reply = httpx.post(f"{served.url}/models/evict", json={"model": "tiny"}, timeout=60)
    assert reply.status_code == 200 and reply.json()["evicted"] is True

    def freed() -> list[dict[str, Any]] | None:
        model = served.model()
        ranks = model["ranks"]
        done = (model["state"] == "not_loaded" and [r["state"] for r in ranks] == ["ready", "ready"]
                and all(r["memory"]["mlx_active_bytes"] < h / 100 for r, h in zip(ranks, held)))
        return ranks if done else None

    ranks = wait_until(freed, 30, "both ranks to report their shard freed")
    assert all(r["memory"]["mlx_cache_bytes"] < h / 100 for r, h in zip(ranks, held))  # pool drained


def test_a_rank_killed_mid_reply_fails_it_with_the_host_and_the_server_stays_up(
        served: Served, one_process: dict[str, dict[str, Greedy]]) -> None:
    assert one_process["llama"]["long"].finished.finish_reason == "length"  # no end of sequence before
    pids = [r["pid"] for r in served.ensure_loaded()["ranks"]]
    outcome: list[BaseException | Any] = []

    def ask() -> None:
        try:
            outcome.append(served.sdk().chat.completions.create(
                model="tiny", messages=[{"role": "user", "content": LONG_QUESTION}],
                temperature=0, max_tokens=LONG_REPLY))
        except BaseException as exc:  # noqa: BLE001 - the test thread looks at it
            outcome.append(exc)

    asker = threading.Thread(target=ask, daemon=True)
    asker.start()
    wait_until(lambda: served.model()["in_use"] == 1, 30, "the reply to start")
    os.kill(pids[1], signal.SIGKILL)
    asker.join(60)
    assert not asker.is_alive() and len(outcome) == 1
    error = outcome[0]
    assert isinstance(error, openai.APIStatusError) and error.status_code == 422
    assert "rank 1 on 127.0.0.1 was killed by SIGKILL" in error.message

    model = wait_until(lambda: (m := served.model())["state"] == "failed" and m, 30,
                       "the model to be marked failed")
    assert "rank 1 on 127.0.0.1" in (model["error"] or ""), "the model says which host failed"
    assert [r["state"] for r in model["ranks"]] == ["stopped", "failed"]
    assert "rank 1 on 127.0.0.1" in (model["ranks"][1]["error"] or "")
    wait_until(lambda: not any(psutil.pid_exists(p) for p in pids), 30, "the old ranks to exit")

    again = served.sdk().chat.completions.create(  # new ranks start for the next request
        model="tiny", messages=[{"role": "user", "content": QUESTIONS[1]}], temperature=0,
        max_tokens=MAX_TOKENS)
    assert again.usage is not None
    assert again.usage.completion_tokens == one_process["llama"][QUESTIONS[1]].finished.generation_tokens


def test_memory_past_the_warning_on_one_rank_unloads_the_model_and_refuses_it(served: Served) -> None:
    served.ensure_loaded()
    try:
        served.fake_memory.write_text("0.95")  # rank 1's host is at 95%; the warning is 85%
        model = wait_until(lambda: (m := served.model())["state"] == "not_loaded" and m, 30,
                           "the clean-up on rank 1's host")
        assert [r["state"] for r in model["ranks"]] == ["ready", "ready"]
        assert "warning clean-up on 127.0.0.1 (rank 1): memory 95% >= 85%" in served.log.read_text()

        refused = httpx.post(f"{served.url}/models/load", json={"model": "tiny"}, timeout=60)
        assert refused.status_code == 422
        message = refused.json()["error"]["message"]
        assert "127.0.0.1 (rank 1) needs" in message and "(rank 0)" not in message
    finally:
        served.fake_memory.unlink(missing_ok=True)
    served.ensure_loaded()  # the host has room again


# -- pipeline, driven from this process ---------------------------------------------------------
def test_two_ranks_pipeline_answer_token_for_token_as_one_process(
        folders: dict[str, Path], one_process: dict[str, dict[str, Greedy]]) -> None:
    folder = folders["qwen2"]
    info = inspect_model_folder("pipe", folder, "folder")
    loader = DistributedLoader({str(folder): DistributedSpec(
        Hostfile.loopback(2), pipeline=True, group=GroupSettings(start_timeout=START_TIMEOUT))})
    try:
        loaded = loader.load(info)
        ranks = loader.ranks("pipe")
        assert [r.state for r in ranks] == ["loaded", "loaded"]
        assert [r.shard_bytes for r in ranks] == shard_bytes(folder, 2, pipeline=True)
        worker = loaded.model.worker
        for question in QUESTIONS:
            got = generate(worker, chat_tokens(loaded.tokenizer, question), MAX_TOKENS)
            want = one_process["qwen2"][question]
            assert (got.finished.generated, got.text) == (want.finished.generated, want.text)

        # a cancel reaches every rank at the same step: the reply ends, the ranks stay in step
        params = GenerationParams(temperature=0, max_tokens=LONG_REPLY)
        assert one_process["qwen2"]["long"].finished.finish_reason == "length", \
            "the cancel below needs a reply that does not end by itself first"
        long = worker.submit(GenerationRequest(chat_tokens(loaded.tokenizer, LONG_QUESTION), params))
        wait_until(lambda: long.take(timeout=1.0), 60, "the first piece")
        long.cancel()
        ended = wait_until(lambda: [i for i in long.take(timeout=1.0) if isinstance(i, Finished)], 60,
                           "the cancelled reply to end")
        assert ended[0].finish_reason == "cancelled" and ended[0].generation_tokens < LONG_REPLY

        # two requests at once share the ranks' steps (batching) and answer as one process does
        both = [worker.submit(GenerationRequest(chat_tokens(loaded.tokenizer, q),
                                                GenerationParams(temperature=0, max_tokens=MAX_TOKENS)))
                for q in QUESTIONS]
        for question, handle in zip(QUESTIONS, both):
            done = wait_until(lambda h=handle: [i for i in h.take(timeout=1.0) if isinstance(i, Finished)],
                              60, "a batched reply")
            assert done[0].generated == one_process["qwen2"][question].finished.generated
        assert loader.unload("pipe")
        assert [r.state for r in loader.ranks("pipe")] == ["ready", "ready"]
    finally:
        loader.close()
    assert [r.state for r in loader.ranks("pipe")] == ["stopped", "stopped"]


# -- before anything starts ----------------------------------------------------------------------
def test_a_hostfile_that_cannot_serve_from_here_says_which_host_and_field(tmp_path: Path) -> None:
    elsewhere = Hostfile((Host("mac2.example", ("192.0.2.7",)), Host("127.0.0.1", ("127.0.0.1",))))
    with pytest.raises(HostfileError, match="first host .mac2.example. is not this machine"):
        elsewhere.check("ring")
    no_ips = Hostfile((Host("127.0.0.1", ("127.0.0.1",)), Host("mac2.example")))
    with pytest.raises(HostfileError, match="needs \"ips\" for every host; missing for mac2.example"):
        no_ips.check("ring")
    with pytest.raises(HostfileError, match="for jaccl, host 127.0.0.1 needs \"rdma\""):
        Hostfile.loopback(2).check("jaccl")
    one = tmp_path / "one.json"
    one.write_text(json.dumps([{"ssh": "127.0.0.1", "ips": ["127.0.0.1"]}]))
    with pytest.raises(HostfileError, match="needs at least two hosts, found 1"):
        Hostfile.load(one)
    with pytest.raises(HostfileError, match="does not exist"):
        Hostfile.load(tmp_path / "missing.json")


def test_a_settings_table_names_its_model_and_key_when_it_is_wrong(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts.json"
    hosts.write_text(json.dumps(Hostfile.loopback(2).to_json()))
    spec = DistributedSpec.from_table("big", {"path": "~/m", "hostfile": str(hosts), "pipeline": True,
                                              "rank_timeout": 5})
    assert (spec.hostfile.size, spec.pipeline, spec.group.backend, spec.group.rank_timeout) == (
        2, True, "ring", 5.0)
    with pytest.raises(HostfileError, match=r"\[models.big\]: pipeline must be true or false"):
        DistributedSpec.from_table("big", {"hostfile": str(hosts), "pipeline": "yes"})
    with pytest.raises(HostfileError, match=r"\[models.big\]: unknown key 'ranks'"):
        DistributedSpec.from_table("big", {"hostfile": str(hosts), "ranks": 2})


def test_the_pipeline_estimate_splits_layers_as_mlx_lm_does() -> None:
    from mlx_lm.models.pipeline import PipelineMixin

    class Group:
        def __init__(self, rank: int, size: int) -> None:
            self._rank, self._size = rank, size

        def rank(self) -> int:
            return self._rank

        def size(self) -> int:
            return self._size

    for layers, ranks in ((2, 2), (5, 2), (7, 3), (4, 4)):
        spans = []
        for r in range(ranks):
            stage = PipelineMixin()
            stage.layers = list(range(layers))  # type: ignore[attr-defined]
            stage.pipeline(Group(r, ranks))
            spans.append((stage.start_idx, stage.end_idx))
        assert pipeline_split(layers, ranks) == spans


def test_a_models_table_with_a_hostfile_serves_that_model_across_the_hosts(
        tmp_path: Path, folders: dict[str, Path]) -> None:
    from mlx_tui.core.settings import read_settings
    from mlx_tui.distributed.loader import DistributedLoader
    from mlx_tui.distributed.wiring import build_runtime_with_hosts

    hosts = tmp_path / "hosts.json"
    hosts.write_text(json.dumps(Hostfile.loopback(2).to_json()))
    settings = tmp_path / "settings.toml"
    settings.write_text(f'[models]\nsmall = "demo"\n\n[models.big]\npath = "{folders["llama"]}"\n'
                        f'hostfile = "{hosts}"\npipeline = false\n'
                        '[catalog]\ndirs = []\nhuggingface_cache = false\n[cache]\npreload = []\n')
    assert read_settings(settings).distributed["big"]["hostfile"] == str(hosts)
    runtime, stop = build_runtime_with_hosts(settings, db_path=tmp_path / "db")
    try:
        loader = runtime.cache._loader  # noqa: SLF001 - which loader the runtime was built with
        assert isinstance(loader, DistributedLoader)
        big = runtime.cache.get("big")
        assert loader.spec_for(big.info) is not None and loader.spec_for(runtime.cache.get("small").info) is None
        assert loader.local_estimate(big.info) < big.estimated_bytes, "this host holds only its shard"
    finally:
        runtime.close()
        stop()
    plain, stop_plain = build_runtime_with_hosts(None, db_path=tmp_path / "db2")
    try:
        assert not isinstance(plain.cache._loader, DistributedLoader), "nothing distributed: the usual loader"  # noqa: SLF001
    finally:
        plain.close()
        stop_plain()
