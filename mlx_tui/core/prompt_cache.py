"""Prompt caches: the KV caches of earlier prompts, so no prompt is read (prefilled) twice.

One :class:`PromptCacheStore` per model identity. While the model is loaded its generation
worker asks it, for each new request, for the KV cache of the longest known prefix of the
request's tokens (:meth:`PromptCacheStore.fetch`), and gives it the cache of every finished
request (:meth:`PromptCacheStore.insert`). Matching follows mlx-lm's ``LRUPromptCache``
(``mlx_lm.models.cache``): an entry that is a prefix of the prompt is used as it is; one that
extends past where the prompt differs is copied and trimmed back (``trim_prompt_cache``), which
only caches that can be trimmed allow: rotating and state-space caches match a stored prefix
only.

Two tiers. In memory, entries are MLX arrays owned by the worker's thread, counted in the
cache manager's one memory budget (:meth:`items`, :meth:`drop`). On disk (``[prompt_cache]
dir``), entries are ``save_prompt_cache`` files written atomically, keyed by the model's
identity (resolved folder + config + weights' sizes and times) and a hash of the tokens; they
survive unloads and restarts, are read back when reading is cheaper than prefilling (measured
GB/s against the model's measured prefill tokens/s), and a damaged or stale file is deleted
with an event, never a failed request. ``max_memory_gb`` and ``max_disk_gb`` bound each tier.

Thread use: :meth:`fetch`, :meth:`insert`, :meth:`spill` and :meth:`close` run on the model's
worker thread (they touch MLX); :meth:`items`, :meth:`drop`, :meth:`figures` may be called
from any thread (a lock guards the bookkeeping).
"""

from __future__ import annotations

import copy
import hashlib
from array import array
import json
import logging
import os
import tempfile
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .catalog import ModelInfo
from .settings import PromptCacheSettings

__all__ = ["PromptCacheStore", "PromptCacheView", "PromptCacheItem", "model_fingerprint",
           "default_prompt_cache_dir", "Admit"]

log = logging.getLogger("mlx_tui.prompt_cache")

RECENT_HITS = 16
DEFAULT_READ_BYTES_PER_SECOND = 1e9  # until a read is measured: a plain SSD
FORMAT = 1

Announce = Callable[[str, str], None]  # (what happened: "dropped", "spilled"..., message)
Admit = Callable[["PromptCacheItem"], bool]
"""Asked after each insert, on the worker's thread: is the new cache worth its room in the one
memory budget? False: it is written to disk (when it can be) and its memory freed."""


def default_prompt_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/mlx-tui/prompt-cache`` (``~/.cache/...`` when unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mlx-tui" / "prompt-cache"


def model_fingerprint(info: ModelInfo) -> str:
    """The identity a disk entry belongs to: the resolved folder, its config.json, and the
    sizes and times of its weights. A model changed on disk (or another model that happens to
    have the same folder name) never reads another's caches."""
    digest = hashlib.sha256(info.key.encode("utf-8", "backslashreplace"))
    if info.path is not None:
        try:
            digest.update((info.path / "config.json").read_bytes())
            for f in sorted(info.path.glob("*.safetensors")):
                st = f.stat()
                digest.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
        except OSError:
            pass
    return digest.hexdigest()[:20]


def _tokens_id(tokens: array) -> str:
    return hashlib.sha256(tokens.tobytes()).hexdigest()[:24]


def _common_prefix(a: array, b: array) -> int:
    """How many leading tokens ``a`` and ``b`` share (slice comparisons run in C)."""
    low, high = 0, min(len(a), len(b))
    while low < high:  # the answer is in [low, high]
        mid = (low + high + 1) // 2
        if a[:mid] == b[:mid]:
            low = mid
        else:
            high = mid - 1
    return low


@dataclass(frozen=True)
class PromptCacheItem:
    """One prompt cache in memory as the budget prices it: the seconds of prefill it saves,
    its hits, when it was made and last read, and whether a request is reading it now."""

    id: str
    nbytes: int
    saves_seconds: float
    hits: tuple[float, ...]
    last_used: float
    created: float
    in_use: bool


@dataclass(frozen=True)
class PromptCacheView:
    """One kept prompt cache, as the app and the API show it."""

    id: str
    model: str
    label: str
    tokens: int
    memory_bytes: int
    disk_bytes: int
    last_used: float
    hits: int
    saves_seconds: float

    @property
    def tier(self) -> str:
        return "memory" if self.memory_bytes else "disk"


@dataclass(eq=False)
class _Entry:
    """One kept prompt cache. Its tokens are one compact array (not a Python int each): the
    disk tier of a long-running server holds many entries and the garbage collector walks
    every object."""

    id: str
    tokens: array
    label: str
    created: float
    cache: list[Any] | None = None  # in memory (owned by the worker's thread)
    nbytes: int = 0
    disk_bytes: int = 0
    hits: deque[float] = field(default_factory=lambda: deque(maxlen=RECENT_HITS))
    last_used: float = 0.0
    in_use: int = 0
    trimmable: bool = False  # the KV cache can be cut back (not rotating, not state-space)


class PromptCacheStore:
    """The prompt caches of one model. Owned by the :class:`~mlx_tui.core.cache.ModelCache`
    (one per model identity, kept across unloads); used by that model's worker."""

    def __init__(self, model: str, info: ModelInfo, settings: PromptCacheSettings,
                 clock: Callable[[], float] = time.time, announce: Announce | None = None,
                 admit: Admit | None = None) -> None:
        self.model = model
        self._admit = admit
        self._settings = settings
        self._clock = clock
        self._announce = announce or (lambda _what, message: log.info("%s", message))
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}
        from mlx_lm.models.cache import PromptTrie  # imported with the first prompt cache

        self._trie = PromptTrie()
        # The first tokens of every entry in the trie, counted: a prompt that starts like none of
        # them has no match worth using, and is not searched for (mlx-lm's search for the nearest
        # longer entry walks every branch past where the prompt leaves the trie, tens of ms on a
        # conversation of thousands of tokens, for a new chat that shares only the template).
        self._start_len = max(1, settings.min_tokens)
        self._starts: Counter[bytes] = Counter()
        self._prefill_tps: float | None = None  # this model's measured prefill tokens/s
        self._read_bps = DEFAULT_READ_BYTES_PER_SECOND
        self._trimmable: bool | None = None
        self._folder = (Path(settings.dir).expanduser() if settings.dir else default_prompt_cache_dir()) \
            / model_fingerprint(info)
        self._disk_ok = True
        self._scan_disk()

    # -- any thread ------------------------------------------------------------------------------
    def figures(self) -> tuple[int, int]:
        """Bytes held in memory and on disk."""
        with self._lock:
            return (sum(e.nbytes for e in self._entries.values() if e.cache is not None),
                    sum(e.disk_bytes for e in self._entries.values()))

    def views(self) -> list[PromptCacheView]:
        with self._lock:
            return [self._view(e) for e in self._entries.values()]

    def _view(self, e: _Entry) -> PromptCacheView:
        return PromptCacheView(e.id, self.model, e.label, len(e.tokens),
                               e.nbytes if e.cache is not None else 0, e.disk_bytes, e.last_used,
                               len(e.hits), self.saves_seconds(len(e.tokens)))

    def saves_seconds(self, tokens: int) -> float:
        """Prefill seconds that ``tokens`` cached tokens save (the model's own speed)."""
        tps = self._prefill_tps or 500.0  # a guess until the model has prefilled once
        return tokens / tps

    def observe_prefill(self, tokens: int, seconds: float) -> None:
        """A request read ``tokens`` prompt tokens in ``seconds``: learn the model's speed."""
        if tokens >= 16 and seconds > 0:
            speed = tokens / seconds
            with self._lock:
                self._prefill_tps = speed if self._prefill_tps is None else 0.7 * self._prefill_tps + 0.3 * speed

    def memory_items(self) -> list[PromptCacheItem]:
        """Each entry held in memory, priced for the cache manager's one budget."""
        with self._lock:
            return [self._item(e) for e in self._entries.values() if e.cache is not None]

    def _item(self, e: _Entry) -> PromptCacheItem:
        return PromptCacheItem(e.id, e.nbytes, self.saves_seconds(len(e.tokens)), tuple(e.hits),
                               e.last_used, e.created, e.in_use > 0)

    def delete(self, entry_id: str, reason: str) -> bool:
        """Forget one entry that is on disk only: its files are deleted. False when it is in
        memory (drop it first) or gone."""
        with self._lock:
            e = self._entries.get(entry_id)
            if e is None or e.cache is not None or not e.disk_bytes:
                return False
            self._remove(e)
        self._discard(self._folder / f"{entry_id}.json", reason)
        return True

    def discard_memory(self) -> int:
        """Let go of every entry's memory at once, without writing anything (an emergency);
        returns the bytes freed."""
        with self._lock:
            freed = 0
            for e in list(self._entries.values()):
                if e.cache is not None:
                    freed += e.nbytes
                    self._release_memory(e)
                    if not e.disk_bytes:
                        self._remove(e)
        return freed

    def spill_and_drop(self, entry_id: str, reason: str) -> int:
        """On the worker's thread: write one entry to disk (when it can be), then free its
        memory; returns the bytes freed."""
        self.spill(entry_id)
        return self.drop(entry_id, reason)

    def drop(self, entry_id: str, reason: str, keep_on_disk: bool = True) -> int:
        """Let go of one entry's memory (it stays on disk when it was spilled); returns the
        bytes freed. Dropping the references is enough: MLX frees the arrays."""
        with self._lock:
            e = self._entries.get(entry_id)
            if e is None or e.cache is None:
                return 0
            freed = e.nbytes
            self._release_memory(e)
            if not (keep_on_disk and e.disk_bytes):
                self._remove(e)
        self._announce("dropped", f"{self.model}: prompt cache of {len(e.tokens):,} tokens dropped from "
                                  f"memory ({reason})" + (", still on disk" if keep_on_disk and e.disk_bytes else ""))
        return freed

    # -- the worker's thread ----------------------------------------------------------------------
    def fetch(self, tokens: list[int], label: str) -> tuple[list[Any] | None, int]:
        """A KV cache holding the first ``n`` of ``tokens`` (n < len(tokens)) and ``n``, or
        ``(None, 0)``. The cache is a copy: the request extends it in place.

        The search is mlx-lm's ``PromptTrie``: the entry equal to the prompt, the longest entry
        the prompt extends, or the nearest entry sharing a prefix with it (trimmed back to it).
        At least the prompt's last token is always left to read: its logits start the reply. A
        match of fewer than ``[prompt_cache].min_tokens`` tokens is not used: copying a long
        entry to save a few tokens' prefill would make a new conversation slower.
        """
        if not self._settings.enabled or len(tokens) < 2:
            return None, 0
        key = array("i", tokens)
        with self._lock:
            found = self._best_match(key)
            if found is None:
                return None, 0
            best, best_n, need_trim = found
            best.in_use += 1
            best.hits.append(self._clock())
            best.last_used = self._clock()
            in_memory = best.cache
        try:
            if in_memory is not None:
                cache = copy.deepcopy(in_memory)
            else:
                cache = self._read(best, best_n)
                if cache is None:
                    return None, 0
            if need_trim:
                from mlx_lm.models.cache import trim_prompt_cache

                trim_prompt_cache(cache, need_trim)
            return cache, best_n
        finally:
            with self._lock:
                best.in_use -= 1

    def _best_match(self, key: array) -> tuple[_Entry, int, int] | None:
        """Under the lock: (entry, tokens usable, tokens to trim) of the best match: in memory
        through the trie, on disk by a scan of the compact index."""
        options: list[tuple[_Entry, int]] = []
        if len(key) > self._start_len and key[:self._start_len].tobytes() in self._starts:
            result = self._trie.search("m", key.tolist())
            if result.exact is not None:
                options.append((self._trie.get("m", result.exact), len(key) - 1))
            if result.shorter is not None:
                options.append((self._trie.get("m", result.shorter), len(result.shorter)))
            if result.longer is not None and result.common_prefix > 0:
                options.append((self._trie.get("m", result.longer), min(result.common_prefix, len(key) - 1)))
        for e in self._entries.values():
            if e.cache is None:
                options.append((e, min(_common_prefix(e.tokens, key), len(key) - 1)))
        best: tuple[_Entry, int, int] | None = None
        for entry, usable in options:
            trim = len(entry.tokens) - usable
            if usable < self._start_len:
                continue  # a few shared tokens (a chat template's start): copying the entry
                # (or reading it from disk) would cost more than reading them again
            if trim and not self._can_trim(entry):
                continue  # a cache that cannot be trimmed serves only as a whole prefix
            if best is None or usable > best[1]:
                best = (entry, usable, trim)
        return best

    def insert(self, tokens: list[int], cache: list[Any], label: str) -> None:
        """Keep the cache of a finished request (holding exactly ``tokens``)."""
        if not self._settings.enabled or len(tokens) < self._settings.min_tokens:
            return
        from mlx_lm.models.cache import can_trim_prompt_cache

        import mlx.core as mx

        key = array("i", tokens)
        # Evaluated here, on the worker's thread: a cache left lazy would tie its arrays to this
        # thread's stream, and the next worker (another thread) could not read it.
        mx.eval([c.state for c in cache])
        nbytes = sum(c.nbytes for c in cache)
        now = self._clock()
        with self._lock:
            if self._trimmable is None:
                self._trimmable = can_trim_prompt_cache(cache)
            entry = self._entries.get(_tokens_id(key))
            if entry is None:
                entry = self._add(_Entry(_tokens_id(key), key, label, now))
            was_in_memory = entry.cache is not None
            entry.cache, entry.nbytes, entry.last_used = cache, nbytes, now
            if not was_in_memory:
                self._trie.add("m", key.tolist(), entry)
                self._starts[key[:self._start_len].tobytes()] += 1
            entry.trimmable = bool(self._trimmable)
            if self._trimmable:  # a longer cache serves every prefix: shorter ones only take room
                for other in [o for o in self._entries.values()
                              if o is not entry and o.cache is not None and len(o.tokens) < len(key)
                              and key[:len(o.tokens)] == o.tokens and o.in_use == 0]:
                    entry.hits.extend(other.hits)
                    self._release_memory(other)
                    if not other.disk_bytes:
                        self._remove(other)
            item = self._item(entry)
        if self._admit is not None and not self._admit(item):
            if item.hits:  # reused before: worth a place on disk
                self.spill_and_drop(item.id, "not worth its room in memory now")
            else:  # a prompt no request has come back to yet: not worth a disk write either
                self.drop(item.id, "not worth its room in memory now", keep_on_disk=False)
            return
        self._bound_memory()

    def _bound_memory(self) -> None:
        limit = self._settings.max_memory_gb * 1e9
        if limit <= 0:
            return
        while True:
            with self._lock:
                held = [e for e in self._entries.values() if e.cache is not None and e.in_use == 0]
                if sum(e.nbytes for e in held) <= limit or not held:
                    return
                victim = min(held, key=lambda e: (len(e.hits), e.last_used))
            self.spill(victim.id)
            self.drop(victim.id, f"over [prompt_cache].max_memory_gb = {self._settings.max_memory_gb:g}")

    def spill(self, entry_id: str) -> bool:
        """Write one in-memory entry to the disk tier (atomically); False when it cannot be."""
        with self._lock:
            e = self._entries.get(entry_id)
            cache = e.cache if e is not None else None
        if e is None or cache is None or e.disk_bytes or not self._disk_ok:
            return bool(e is not None and e.disk_bytes)
        try:
            nbytes = self._write(e, cache)
        except OSError as exc:
            self._disk_ok = False
            self._announce("disk_failed", f"{self.model}: prompt caches stay in memory only: cannot write "
                                          f"to {self._folder} ({exc.strerror or exc}); fix the folder or "
                                          "[prompt_cache].dir")
            return False
        with self._lock:
            e.disk_bytes = nbytes
        self._announce("spilled", f"{self.model}: prompt cache of {len(e.tokens):,} tokens saved to disk "
                                  f"({nbytes / 1e6:.1f} MB)")
        self._bound_disk()
        return True

    def close(self) -> None:
        """The model is being unloaded (on its worker's thread): save what is worth keeping to
        disk, most valuable first, then let go of every array."""
        with self._lock:
            held = sorted((e for e in self._entries.values() if e.cache is not None),
                          key=lambda e: (-len(e.hits), -e.last_used))
        for e in held:
            try:
                self.spill(e.id)
            except Exception:  # noqa: BLE001 - one entry that cannot be written: the others go on
                log.exception("%s: a prompt cache could not be written to disk", self.model)
        with self._lock:
            for e in list(self._entries.values()):
                if e.cache is not None:
                    self._release_memory(e)
                if not e.disk_bytes:
                    self._remove(e)

    # -- disk ------------------------------------------------------------------------------------
    def _scan_disk(self) -> None:
        """Index the disk tier (tokens and sizes from each entry's small sidecar file)."""
        try:
            sidecars = sorted(self._folder.glob("*.json"))
        except OSError:
            return
        for side in sidecars:
            data = self._sidecar(side)
            if data is None:
                continue
            tokens = array("i", data["tokens"])
            weights = side.with_suffix(".safetensors")
            try:
                size = weights.stat().st_size
            except OSError:
                self._discard(side, "its weights file is missing")
                continue
            self._add(_Entry(side.stem, tokens, str(data.get("label", "")), float(data.get("created", 0.0)),
                             disk_bytes=size, last_used=float(data.get("last_used", 0.0)),
                             trimmable=data.get("trimmable") is True))

    def _sidecar(self, side: Path) -> dict[str, Any] | None:
        try:
            data = json.loads(side.read_text(encoding="utf-8"))
            ok = (isinstance(data, dict) and data.get("format") == FORMAT
                  and isinstance(data.get("tokens"), list)
                  and all(isinstance(t, int) for t in data["tokens"]))
        except (OSError, ValueError, RecursionError):
            ok = False
        if not ok:
            self._discard(side, "it is damaged or from another version")
            return None
        return data

    def _discard(self, side: Path, why: str) -> None:
        for path in (side, side.with_suffix(".safetensors")):
            try:
                path.unlink(missing_ok=True)
            except OSError:
                pass
        self._announce("discarded", f"{self.model}: a prompt cache file was deleted: {why} ({side.name})")

    def _write(self, e: _Entry, cache: list[Any]) -> int:
        from mlx_lm.models.cache import save_prompt_cache

        self._folder.mkdir(parents=True, exist_ok=True)
        target = self._folder / f"{e.id}.safetensors"
        fd, tmp = tempfile.mkstemp(prefix=".pc-", suffix=".safetensors", dir=self._folder)
        os.close(fd)
        try:
            save_prompt_cache(tmp, cache, {"model": self.model, "tokens": str(len(e.tokens))})
            os.replace(tmp, target)
            side_tmp = self._folder / f".{e.id}.json.tmp"
            side_tmp.write_text(json.dumps({"format": FORMAT, "tokens": list(e.tokens), "label": e.label,
                                            "created": e.created, "last_used": e.last_used,
                                            "trimmable": e.trimmable}))
            os.replace(side_tmp, self._folder / f"{e.id}.json")
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return target.stat().st_size

    def _read(self, e: _Entry, n: int) -> list[Any] | None:
        """Read a disk entry back when that is cheaper than prefilling ``n`` tokens; None
        (and a full prefill) when not, or when the file is damaged."""
        read_seconds = e.disk_bytes / self._read_bps
        if read_seconds >= self.saves_seconds(n):  # the default speed until one is measured
            return None
        from mlx_lm.models.cache import load_prompt_cache

        path = self._folder / f"{e.id}.safetensors"
        started = time.perf_counter()
        try:
            cache, meta = load_prompt_cache(str(path), return_metadata=True)
            import mlx.core as mx

            mx.eval([c.state for c in cache])
            if meta.get("tokens") != str(len(e.tokens)):
                raise ValueError("it holds another number of tokens than its index says")
        except Exception as exc:  # noqa: BLE001 - a bad file costs a prefill, never the request
            with self._lock:
                self._remove(e)
            self._discard(self._folder / f"{e.id}.json", f"it could not be read ({type(exc).__name__}: {exc})")
            return None
        seconds = time.perf_counter() - started
        if seconds > 0:
            self._read_bps = 0.5 * self._read_bps + 0.5 * (e.disk_bytes / seconds)
        self._announce("restored", f"{self.model}: prompt cache of {len(e.tokens):,} tokens read from disk "
                                   f"in {seconds:.2f} s instead of a prefill")
        return cache

    def _bound_disk(self) -> None:
        limit = self._settings.max_disk_gb * 1e9
        most = self._settings.max_disk_entries
        while True:
            with self._lock:
                on_disk = [e for e in self._entries.values() if e.disk_bytes]
                if (sum(e.disk_bytes for e in on_disk) <= limit and len(on_disk) <= most) or not on_disk:
                    return
                victim = min(on_disk, key=lambda e: (len(e.hits), e.last_used))
                victim.disk_bytes = 0
                if victim.cache is None:
                    self._remove(victim)
            self._discard(self._folder / f"{victim.id}.json",
                          f"over [prompt_cache].max_disk_gb = {self._settings.max_disk_gb:g} or "
                          f"max_disk_entries = {most}")

    def _add(self, e: _Entry) -> _Entry:
        """Under the lock: index a new entry by id (the trie holds entries in memory only)."""
        self._entries[e.id] = e
        return e

    def _release_memory(self, e: _Entry) -> None:
        """Under the lock: let go of an entry's arrays and take it out of the memory trie."""
        e.cache = None
        try:
            self._trie.pop("m", e.tokens.tolist())
        except KeyError:
            return
        start = e.tokens[:self._start_len].tobytes()
        self._starts[start] -= 1
        if self._starts[start] <= 0:
            del self._starts[start]

    def _remove(self, e: _Entry) -> None:
        """Under the lock: forget an entry entirely."""
        if self._entries.pop(e.id, None) is not None and e.cache is not None:
            self._release_memory(e)

    @staticmethod
    def _can_trim(e: _Entry) -> bool:
        return e.trimmable
