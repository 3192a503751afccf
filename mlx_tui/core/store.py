"""SQLite storage for what survives a restart: lifetime model statistics and conversations.

The schema carries a version (``PRAGMA user_version``) and is upgraded in small steps. One
connection is shared by the threads of a process behind a lock; every write commits at once.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Store", "ModelUsage", "ConversationRow", "MessageRow", "default_db_path"]

_MIGRATIONS: list[str] = [
    # 1: lifetime usage statistics per model
    """
    CREATE TABLE model_usage (
        name TEXT PRIMARY KEY,
        use_count INTEGER NOT NULL DEFAULT 0,
        last_used REAL,
        loads INTEGER NOT NULL DEFAULT 0,
        last_load_seconds REAL,
        total_load_seconds REAL NOT NULL DEFAULT 0
    );
    """,
    # 2: conversations and their messages
    """
    CREATE TABLE conversation (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        title TEXT NOT NULL,
        model TEXT NOT NULL,
        system_prompt TEXT NOT NULL DEFAULT '',
        params TEXT NOT NULL DEFAULT '{}',
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE TABLE message (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        conversation_id INTEGER NOT NULL REFERENCES conversation(id) ON DELETE CASCADE,
        role TEXT NOT NULL,
        content TEXT NOT NULL,
        stats TEXT NOT NULL DEFAULT '{}',
        created_at REAL NOT NULL
    );
    """,
    # 3: the host a conversation was with (NULL: this machine; else a [[remotes]] name)
    """
    ALTER TABLE conversation ADD COLUMN host TEXT;
    """,
]


def default_db_path() -> Path:
    """``$XDG_DATA_HOME/mlx-tui/mlx-tui.db`` (``~/.local/share/...`` when unset)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "mlx-tui" / "mlx-tui.db"


@dataclass(frozen=True)
class ModelUsage:
    """Lifetime statistics of one model, across restarts."""

    name: str
    use_count: int
    last_used: float | None
    loads: int
    last_load_seconds: float | None
    total_load_seconds: float


@dataclass(frozen=True)
class ConversationRow:
    id: int
    title: str
    model: str
    system_prompt: str
    params: dict[str, Any]
    created_at: float
    updated_at: float
    host: str | None = None
    """The remote host the conversation was with (None: this machine)."""


@dataclass(frozen=True)
class MessageRow:
    id: int
    role: str
    content: str
    stats: dict[str, Any]
    created_at: float


class Store:
    """Owns the SQLite database file; safe to call from any thread."""

    def __init__(self, path: Path | str = ":memory:") -> None:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA foreign_keys = ON")
        # WAL without a sync per commit: a use or a load is recorded in microseconds instead of
        # an fsync (~15 ms) on every request; a power cut may lose the last few statistics.
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = NORMAL")
        self._migrate()

    def _migrate(self) -> None:
        with self._lock:
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            for number, script in enumerate(_MIGRATIONS[version:], start=version + 1):
                self._db.executescript(f"BEGIN; {script} PRAGMA user_version = {number}; COMMIT;")

    @property
    def schema_version(self) -> int:
        with self._lock:
            return self._db.execute("PRAGMA user_version").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- usage -------------------------------------------------------------------------------
    def record_use(self, name: str, at: float) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO model_usage(name, use_count, last_used) VALUES (?, 1, ?) "
                "ON CONFLICT(name) DO UPDATE SET use_count = use_count + 1, last_used = excluded.last_used",
                (name, at),
            )

    def record_load(self, name: str, seconds: float) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO model_usage(name, loads, last_load_seconds, total_load_seconds) "
                "VALUES (?, 1, ?, ?) ON CONFLICT(name) DO UPDATE SET loads = loads + 1, "
                "last_load_seconds = excluded.last_load_seconds, "
                "total_load_seconds = total_load_seconds + excluded.total_load_seconds",
                (name, seconds, seconds),
            )

    def usage(self) -> dict[str, ModelUsage]:
        with self._lock:
            rows = self._db.execute(
                "SELECT name, use_count, last_used, loads, last_load_seconds, total_load_seconds "
                "FROM model_usage"
            ).fetchall()
        return {row[0]: ModelUsage(*row) for row in rows}

    def most_used(self, limit: int) -> list[str]:
        """Names of the ``limit`` most used models of all time (for ``preload_popular``)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT name FROM model_usage WHERE use_count > 0 "
                "ORDER BY use_count DESC, last_used DESC LIMIT ?",
                (limit,),
            ).fetchall()
        return [r[0] for r in rows]

    # -- conversations ---------------------------------------------------------------------------
    def create_conversation(self, title: str, model: str, system_prompt: str = "",
                            params: dict[str, Any] | None = None, host: str | None = None) -> int:
        """A new conversation with ``model`` on ``host`` (None: this machine)."""
        now = time.time()
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO conversation(title, model, system_prompt, params, created_at, "
                "updated_at, host) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (title, model, system_prompt, json.dumps(params or {}), now, now, host),
            )
            return int(cur.lastrowid)

    def update_conversation(self, conversation_id: int, **fields: Any) -> None:
        allowed = {"title", "model", "system_prompt", "params", "host"}
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(f"cannot update {', '.join(sorted(unknown))}")
        if "params" in fields:
            fields["params"] = json.dumps(fields["params"])
        assignments = ", ".join(f"{k} = ?" for k in fields)
        with self._lock:
            self._db.execute(
                f"UPDATE conversation SET {assignments}, updated_at = ? WHERE id = ?",
                (*fields.values(), time.time(), conversation_id),
            )

    def add_message(self, conversation_id: int, role: str, content: str,
                    stats: dict[str, Any] | None = None) -> int:
        now = time.time()
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO message(conversation_id, role, content, stats, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (conversation_id, role, content, json.dumps(stats or {}), now),
            )
            self._db.execute("UPDATE conversation SET updated_at = ? WHERE id = ?",
                             (now, conversation_id))
            return int(cur.lastrowid)

    def conversations(self, limit: int = 200) -> list[ConversationRow]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, title, model, system_prompt, params, created_at, updated_at, host "
                "FROM conversation ORDER BY updated_at DESC LIMIT ?",
                (limit,),
            ).fetchall()
        return [ConversationRow(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5], r[6], r[7])
                for r in rows]

    def messages(self, conversation_id: int) -> list[MessageRow]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, role, content, stats, created_at FROM message "
                "WHERE conversation_id = ? ORDER BY id",
                (conversation_id,),
            ).fetchall()
        return [MessageRow(r[0], r[1], r[2], json.loads(r[3]), r[4]) for r in rows]

    def delete_conversation(self, conversation_id: int) -> None:
        with self._lock:
            self._db.execute("DELETE FROM conversation WHERE id = ?", (conversation_id,))
