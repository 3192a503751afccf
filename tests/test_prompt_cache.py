"""Never pay twice for the same prompt: a conversation's second turn reads only its new tokens,
a restart reads the history back from disk, and prompt caches share the memory budget.

Real tiny MLX models; a fake probe only where a threshold must be crossed exactly.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

import pytest

from mlx_tui.core.chat import ChatMessage, ChatStats, GenerationParams
from mlx_tui.core.events import CacheEvent, EventKind
from mlx_tui.core.memory import FixedMemoryProbe
from mlx_tui.core.runtime import Runtime, build_runtime
from mlx_tui.core.settings import write_settings

from .conftest import ManualClock, SteadyLoader, make_settings

GREEDY = GenerationParams(max_tokens=12, temperature=0)
SYSTEM = ChatMessage("system", "You answer questions about Python statements. " * 20)


def turns(runtime: Runtime, model: str, questions: list[str]) -> list[tuple[str, ChatStats]]:
    """A conversation: each question after the replies so far; the replies and their figures."""
    conversation = [SYSTEM]
    out = []
    for question in questions:
        conversation.append(ChatMessage("user", question))
        text, stats = runtime.chat.complete(model, conversation, GREEDY)
        conversation.append(ChatMessage("assistant", text))
        out.append((text, stats))
    return out


def prompt_events(runtime: Runtime) -> list[CacheEvent]:
    events: list[CacheEvent] = []
    runtime.cache.subscribe(lambda e: events.append(e) if e.kind is EventKind.PROMPT_CACHE else None)
    return events


QUESTIONS = ["What is the for statement?", "And the while statement?", "What does break do?"]


def test_reuse_gives_token_for_token_the_replies_of_a_full_prefill(
        runtime_factory: Callable[..., Runtime], model_factory: Callable[..., Path]) -> None:
    model = {"m": str(model_factory("m"))}
    with_reuse = turns(runtime_factory(model), "m", QUESTIONS)
    without = turns(runtime_factory(model, prompt_cache={"enabled": False}), "m", QUESTIONS)
    assert [t for t, _ in with_reuse] == [t for t, _ in without]
    assert all(s.cached_tokens == 0 for _, s in without)
    assert all(s.cached_tokens > 0 for _, s in with_reuse[1:])


def test_the_second_turn_reads_only_its_new_tokens(
        runtime_factory: Callable[..., Runtime], model_factory: Callable[..., Path]) -> None:
    runtime = runtime_factory({"m": str(model_factory("m"))})
    (_, first), (_, second), _ = turns(runtime, "m", QUESTIONS)
    assert first.cached_tokens == 0 and first.prefilled_tokens == first.prompt_tokens
    assert second.cached_tokens >= first.prompt_tokens - 1, "the whole first turn came from the cache"
    assert second.prefilled_tokens == second.prompt_tokens - second.cached_tokens
    assert second.prefilled_tokens < 40, "only the new question (and its template) was read"
    view = runtime.cache.get("m")
    assert view.prompt_cache_bytes > 0 and view.to_dict()["prompt_cache_bytes"] == view.prompt_cache_bytes


def test_an_agents_long_system_prompt_is_read_once_for_many_questions(
        runtime_factory: Callable[..., Runtime], model_factory: Callable[..., Path]) -> None:
    runtime = runtime_factory({"m": str(model_factory("m"))})
    stats = [runtime.chat.complete("m", [SYSTEM, ChatMessage("user", f"Question {i}: what is pass?")],
                                   GREEDY)[1] for i in range(5)]
    assert stats[0].cached_tokens == 0
    shared = stats[0].prompt_tokens - 20
    assert all(s.cached_tokens >= shared for s in stats[1:]), [s.cached_tokens for s in stats]
    assert sum(s.prefilled_tokens for s in stats[1:]) < 0.2 * sum(s.prompt_tokens for s in stats[1:])


def test_a_new_conversation_sharing_only_the_templates_start_is_read_whole(
        runtime_factory: Callable[..., Runtime], model_factory: Callable[..., Path]) -> None:
    """Copying a long kept cache to save a few tokens would make every new chat slower."""
    runtime = runtime_factory({"m": str(model_factory("m"))})
    turns(runtime, "m", QUESTIONS)  # a long conversation kept, beginning with the template's start
    _, other = runtime.chat.complete("m", [ChatMessage("user", "Tell me about the with statement.")],
                                     GREEDY)
    assert other.cached_tokens == 0 and other.prefilled_tokens == other.prompt_tokens
    again = runtime.chat.complete("m", [SYSTEM, ChatMessage("user", QUESTIONS[0])], GREEDY)[1]
    assert again.cached_tokens >= 64, "a long shared start is still reused"


def test_after_a_restart_the_conversation_continues_from_the_disk_tier(
        tmp_path: Path, model_factory: Callable[..., Path]) -> None:
    settings_path = tmp_path / "s.toml"
    write_settings(make_settings({"m": str(model_factory("m"))}), settings_path)
    first = build_runtime(settings_path, db_path=tmp_path / "db")
    conversation = turns(first, "m", QUESTIONS[:2])
    first.close()  # the model unloads: its prompt caches go to disk

    second = build_runtime(settings_path, db_path=tmp_path / "db")
    try:
        events = prompt_events(second)
        history = [SYSTEM]
        for question, (reply, _) in zip(QUESTIONS[:2], conversation):
            history += [ChatMessage("user", question), ChatMessage("assistant", reply)]
        history.append(ChatMessage("user", QUESTIONS[2]))
        _, stats = second.chat.complete("m", history, GREEDY)
        assert stats.cached_tokens > 0.9 * stats.prompt_tokens, "no full prefill of the history"
        assert any(e.data.get("what") == "restored" and "read from disk" in e.message for e in events)
    finally:
        second.close()


def folder_of_caches(tmp_path: Path) -> Path:
    [folder] = (tmp_path / "cache" / "mlx-tui" / "prompt-cache").iterdir()
    return folder


@pytest.mark.parametrize("damage", ["truncated", "garbage sidecar", "missing weights"])
def test_a_damaged_cache_file_costs_a_prefill_and_an_event_never_a_failure(
        tmp_path: Path, model_factory: Callable[..., Path], damage: str) -> None:
    settings_path = tmp_path / "s.toml"
    write_settings(make_settings({"m": str(model_factory("m"))}), settings_path)
    first = build_runtime(settings_path, db_path=tmp_path / "db")
    (reply, _), = turns(first, "m", QUESTIONS[:1])
    first.close()
    folder = folder_of_caches(tmp_path)
    weights = next(folder.glob("*.safetensors"))
    if damage == "truncated":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif damage == "garbage sidecar":
        weights.with_suffix(".json").write_text("{not json")
    else:
        weights.unlink()

    second = build_runtime(settings_path, db_path=tmp_path / "db")
    try:
        events = prompt_events(second)
        history = [SYSTEM, ChatMessage("user", QUESTIONS[0]), ChatMessage("assistant", reply),
                   ChatMessage("user", QUESTIONS[1])]
        text, stats = second.chat.complete("m", history, GREEDY)
        assert stats.tokens > 0 and stats.cached_tokens == 0, "a normal full prefill"
        assert any("prompt cache file was deleted" in e.message for e in events), damage
        assert not list(folder.glob(f"{weights.stem}.*")), "the bad entry is gone from the disk"
    finally:
        second.close()


def test_another_model_with_the_same_folder_name_never_reads_these_caches(
        tmp_path: Path, model_factory: Callable[..., Path]) -> None:
    one = tmp_path / "a" / "llama"
    two = tmp_path / "b" / "llama"
    shutil.copytree(model_factory("m"), one)
    shutil.copytree(model_factory("other", seed=3), two)
    settings_path = tmp_path / "s.toml"
    write_settings(make_settings({"llama": str(one)}), settings_path)
    first = build_runtime(settings_path, db_path=tmp_path / "db")
    (reply, _), = turns(first, "llama", QUESTIONS[:1])
    first.close()
    write_settings(make_settings({"llama": str(two)}), settings_path)  # same name, other weights
    second = build_runtime(settings_path, db_path=tmp_path / "db")
    try:
        history = [SYSTEM, ChatMessage("user", QUESTIONS[0]), ChatMessage("assistant", reply),
                   ChatMessage("user", QUESTIONS[1])]
        _, stats = second.chat.complete("llama", history, GREEDY)
        assert stats.cached_tokens == 0
    finally:
        second.close()


def test_a_cache_folder_that_cannot_be_written_keeps_caches_in_memory_with_an_event(
        tmp_path: Path, model_factory: Callable[..., Path]) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    settings_path = tmp_path / "s.toml"
    write_settings(make_settings({"m": str(model_factory("m"))}, prompt_cache={"dir": str(blocker)}),
                   settings_path)
    runtime = build_runtime(settings_path, db_path=tmp_path / "db")
    events = prompt_events(runtime)
    try:
        stats = [s for _, s in turns(runtime, "m", QUESTIONS[:2])]
        assert stats[1].cached_tokens > 0, "the memory tier still works"
        runtime.cache.evict("m")  # spilling fails: said, not raised
        assert any(e.data.get("what") == "disk_failed" and "cannot write" in e.message for e in events)
        _, again = runtime.chat.complete("m", [SYSTEM, ChatMessage("user", "hi")], GREEDY)
        assert again.tokens > 0
    finally:
        runtime.close()
    assert blocker.read_text() == "a file where the cache folder should be"


def just_past_the_warning(probe: FixedMemoryProbe, by: int) -> None:
    """Move the fake probe so memory in use is ``by`` bytes past the warning threshold."""
    probe.base_used += int(0.85 * probe.total_bytes) + by - probe.snapshot().used_bytes


@pytest.mark.parametrize("colder", ["prompt cache", "model"])
def test_past_the_warning_the_item_worth_less_per_byte_goes_first(
        runtime_factory: Callable[..., Runtime], model_factory: Callable[..., Path], colder: str) -> None:
    probe = FixedMemoryProbe(used_fraction=0.5, track_mlx=True)
    clock = ManualClock()
    runtime = runtime_factory({"m": str(model_factory("m")), "n": str(model_factory("n", seed=1))},
                              probe=probe, loader=SteadyLoader(), clock=clock)
    cache = runtime.cache
    ask = [SYSTEM, ChatMessage("user", QUESTIONS[0])]
    if colder == "prompt cache":
        runtime.chat.complete("m", ask, GREEDY)  # m's cache is made once, never read again
        for _ in range(6):  # both models are wanted every ten seconds
            clock.advance(10)
            cache.acquire("m").release()
            cache.acquire("n").release()
    else:
        cache.acquire("n").release()  # n was wanted once, long ago
        clock.advance(1000)
        for _ in range(4):  # m's cache is read again and again
            clock.advance(2)
            runtime.chat.complete("m", ask, GREEDY)
    [pc] = [v for v in cache.prompt_caches() if v.memory_bytes]
    just_past_the_warning(probe, by=min(pc.memory_bytes, cache.get("n").resident_bytes) // 4)
    cache.check_memory()
    held = [v for v in cache.prompt_caches() if v.memory_bytes]
    if colder == "prompt cache":
        assert sorted(cache.loaded_names()) == ["m", "n"] and held == [], "the cold cache went"
    else:
        assert cache.loaded_names() == ["m"] and [v.id for v in held] == [pc.id], "the idle model went"


def test_an_emergency_frees_every_model_and_every_prompt_cache(
        runtime_factory: Callable[..., Runtime], model_factory: Callable[..., Path]) -> None:
    probe = FixedMemoryProbe(used_fraction=0.5, track_mlx=True)
    runtime = runtime_factory({"m": str(model_factory("m")), "n": str(model_factory("n", seed=1))},
                              probe=probe)
    turns(runtime, "m", QUESTIONS[:2])
    turns(runtime, "n", QUESTIONS[:1])
    assert sum(v.memory_bytes for v in runtime.cache.prompt_caches()) > 0
    probe.set_fraction(0.99)
    runtime.cache.check_memory()
    assert runtime.cache.loaded_names() == []
    assert sum(v.memory_bytes for v in runtime.cache.prompt_caches()) == 0


def test_a_prompt_cache_read_by_a_request_is_never_freed_under_it(
        runtime_factory: Callable[..., Runtime], model_factory: Callable[..., Path]) -> None:
    import threading

    probe = FixedMemoryProbe(used_fraction=0.5, track_mlx=True)
    runtime = runtime_factory({"m": str(model_factory("m"))}, probe=probe)
    cache = runtime.cache
    (first, _), = turns(runtime, "m", QUESTIONS[:1])
    history = [SYSTEM, ChatMessage("user", QUESTIONS[0]), ChatMessage("assistant", first),
               ChatMessage("user", QUESTIONS[1])]
    gate = threading.Event()
    reply = runtime.chat.start("m", history, GenerationParams(max_tokens=30, temperature=0))
    with reply:
        first_piece = reply.take(timeout=30)  # the request has its cache and is generating
        with cache.acquire("m") as lease:
            lease.worker.call(lambda: gate.wait(30))  # hold it between two steps
        probe.set_fraction(0.99)
        cache.check_memory()  # an emergency while it is mid-reply
        assert sum(v.memory_bytes for v in cache.prompt_caches()) == 0, "the kept caches went"
        assert cache.get("m").evict_when_idle, "the model goes when its request ends"
        gate.set()
        rest = [d for _ in range(100) if not reply.done for d in reply.take(timeout=30)]
    assert first_piece and rest
    assert reply.stats is not None and reply.stats.cached_tokens > 0
    assert reply.stats.finish_reason in ("length", "stop"), "the reply ran to its end"
    assert cache.loaded_names() == []


def test_a_new_prompt_cache_not_worth_its_room_is_not_kept(
        runtime_factory: Callable[..., Runtime], model_factory: Callable[..., Path]) -> None:
    probe = FixedMemoryProbe(used_fraction=0.5, track_mlx=True)
    clock = ManualClock()
    runtime = runtime_factory({"m": str(model_factory("m"))}, probe=probe, loader=SteadyLoader(),
                              clock=clock)
    cache = runtime.cache
    events = prompt_events(runtime)
    for _ in range(5):  # m is wanted all the time
        clock.advance(5)
        cache.acquire("m").release()
    just_past_the_warning(probe, by=-1000)  # a hair under: any new cache would cross it
    runtime.chat.complete("m", [SYSTEM, ChatMessage("user", QUESTIONS[0])], GREEDY)
    assert cache.prompt_caches() == [], "no request came back to it: not in memory, not on disk"
    assert cache.loaded_names() == ["m"], "no model goes to keep a prompt cache"
    assert any("not worth its room" in e.message for e in events)


def test_a_load_asked_for_during_an_unload_waits_for_the_old_worker_to_let_go(
        runtime_factory: Callable[..., Runtime], model_factory: Callable[..., Path],
        monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    from mlx_tui.core.cache import ModelState
    from mlx_tui.core.prompt_cache import PromptCacheStore

    runtime = runtime_factory({"m": str(model_factory("m"))})
    cache = runtime.cache
    turns(runtime, "m", QUESTIONS[:1])  # a prompt cache the unload will write to disk
    kinds: list[EventKind] = []
    cache.subscribe(lambda e: kinds.append(e.kind) if e.kind in (EventKind.EVICTED, EventKind.LOAD_STARTED) else None)
    gate, writing = threading.Event(), threading.Event()
    real_spill = PromptCacheStore.spill

    def slow_spill(self: PromptCacheStore, entry_id: str) -> bool:
        writing.set()
        assert gate.wait(30)
        return real_spill(self, entry_id)

    monkeypatch.setattr(PromptCacheStore, "spill", slow_spill)
    unloading = threading.Thread(target=cache.evict, args=("m",))
    unloading.start()
    assert writing.wait(30) and cache.get("m").state is ModelState.EVICTING
    again = cache.load("m")  # asked while the old worker still writes its caches
    gate.set()
    unloading.join(30)
    assert again.result(timeout=60).state is ModelState.LOADED
    assert kinds == [EventKind.EVICTED, EventKind.LOAD_STARTED], "the new load began after the unload"
    _, stats = runtime.chat.complete("m", [SYSTEM, ChatMessage("user", QUESTIONS[0])], GREEDY)
    assert stats.tokens > 0


def test_a_prompt_cache_on_disk_only_can_be_deleted_and_its_files_go(
        tmp_path: Path, model_factory: Callable[..., Path]) -> None:
    settings_path = tmp_path / "s.toml"
    write_settings(make_settings({"m": str(model_factory("m"))}), settings_path)
    first = build_runtime(settings_path, db_path=tmp_path / "db")
    turns(first, "m", QUESTIONS[:1])
    first.close()
    second = build_runtime(settings_path, db_path=tmp_path / "db")
    try:
        second.cache.load("m").result(timeout=60)  # its prompt caches are found on disk
        [on_disk] = second.cache.prompt_caches()
        assert on_disk.tier == "disk"
        assert not second.cache.drop_prompt_cache("m", on_disk.id), "nothing in memory to drop"
        assert second.cache.delete_prompt_cache("m", on_disk.id)
        assert second.cache.prompt_caches() == []
        assert not list(folder_of_caches(tmp_path).glob(f"{on_disk.id}.*"))
    finally:
        second.close()
