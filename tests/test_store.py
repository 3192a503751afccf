"""What survives a restart: usage statistics and conversations, in a versioned SQLite file."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from mlx_tui.core.store import Store


def test_a_new_database_is_created_at_the_latest_schema(tmp_path: Path) -> None:
    store = Store(tmp_path / "deep" / "db.sqlite")
    assert store.schema_version == 3
    store.close()
    assert sqlite3.connect(tmp_path / "deep" / "db.sqlite").execute("PRAGMA user_version").fetchone()[0] == 3


def test_an_old_database_is_upgraded_in_steps_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE model_usage (name TEXT PRIMARY KEY, use_count INTEGER NOT NULL DEFAULT 0,"
        " last_used REAL, loads INTEGER NOT NULL DEFAULT 0, last_load_seconds REAL,"
        " total_load_seconds REAL NOT NULL DEFAULT 0);"
        "INSERT INTO model_usage(name, use_count) VALUES ('qwen', 50); PRAGMA user_version = 1;"
    )
    old.commit()
    old.close()
    store = Store(path)
    assert store.schema_version == 3
    assert store.usage()["qwen"].use_count == 50
    assert store.conversations() == []


def test_usage_counts_uses_and_loads(tmp_path: Path) -> None:
    store = Store(tmp_path / "db.sqlite")
    for at in (1.0, 2.0, 3.0):
        store.record_use("qwen", at)
    store.record_use("phi", 5.0)
    store.record_load("qwen", 25.3)
    store.record_load("qwen", 20.0)
    qwen = store.usage()["qwen"]
    assert (qwen.use_count, qwen.last_used, qwen.loads) == (3, 3.0, 2)
    assert qwen.last_load_seconds == 20.0 and qwen.total_load_seconds == 45.3
    assert store.most_used(1) == ["qwen"]
    assert store.most_used(5) == ["qwen", "phi"]


def test_a_conversation_is_kept_with_its_messages_and_figures(tmp_path: Path) -> None:
    store = Store(tmp_path / "db.sqlite")
    cid = store.create_conversation("First chat", "demo", "Be brief.", {"temperature": 0.2})
    store.add_message(cid, "user", "What is a for loop?")
    store.add_message(cid, "assistant", "A loop.", {"tokens": 3, "tokens_per_second": 40.0})
    store.update_conversation(cid, title="Loops")
    store.close()

    again = Store(tmp_path / "db.sqlite")
    [conv] = again.conversations()
    assert (conv.title, conv.model, conv.system_prompt, conv.params) == (
        "Loops", "demo", "Be brief.", {"temperature": 0.2})
    messages = again.messages(cid)
    assert [(m.role, m.content) for m in messages] == [
        ("user", "What is a for loop?"), ("assistant", "A loop.")]
    assert messages[1].stats["tokens"] == 3
    again.delete_conversation(cid)
    assert again.conversations() == [] and again.messages(cid) == []


def test_a_conversation_remembers_the_host_it_was_with(tmp_path: Path) -> None:
    store = Store(tmp_path / "db.sqlite")
    here = store.create_conversation("Here", "demo")
    there = store.create_conversation("On the studio", "qwen", host="studio")
    store.close()

    again = Store(tmp_path / "db.sqlite")
    hosts = {c.id: (c.model, c.host) for c in again.conversations()}
    assert hosts == {here: ("demo", None), there: ("qwen", "studio")}
    again.update_conversation(here, host="laptop", model="phi")
    assert {c.id: (c.model, c.host) for c in again.conversations()}[here] == ("phi", "laptop")


def test_conversations_saved_before_hosts_existed_are_from_this_machine(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    old = Store(path)
    cid = old.create_conversation("Old chat", "demo", "Be brief.")
    old.add_message(cid, "user", "hello")
    old.close()
    db = sqlite3.connect(path)  # back to the schema of version 2: no host column
    db.executescript("ALTER TABLE conversation DROP COLUMN host; PRAGMA user_version = 2;")
    db.close()

    store = Store(path)
    assert store.schema_version == 3
    [conv] = store.conversations()
    assert (conv.title, conv.model, conv.host) == ("Old chat", "demo", None)
    assert [m.content for m in store.messages(cid)] == ["hello"]
