"""Names and identities of the models the cache knows.

Each model is keyed by its identity (:attr:`ModelInfo.key`: its resolved folder), never by a
name a request sends. Its display name is unique: the first name found for it (an alias of
settings.toml before a folder's name); a name that is already another model's gets the parent
folder's name in front (``where/default``), so a request for ``/some/where/default`` can never
re-point the alias ``default``. Every other name of the same model is one of its aliases.

Not thread-safe on its own: :class:`~mlx_tui.core.cache.ModelCache` calls it under its lock.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Generic, Iterable, TypeVar

from .catalog import ModelInfo, safe_text

__all__ = ["ModelRegistry"]

T = TypeVar("T")


class ModelRegistry(Generic[T]):
    """Entries (of type ``T``) by key, and every name (display name or alias) to its key."""

    def __init__(self) -> None:
        self._entries: dict[str, T] = {}
        self._names: dict[str, str] = {}  # any name -> key
        self._display: dict[str, list[str]] = {}  # key -> names, display name first

    def entries(self) -> list[T]:
        return list(self._entries.values())

    def lookup(self, name: str) -> T | None:
        key = self._names.get(name)
        return self._entries.get(key) if key is not None else None

    def display_name(self, key: str) -> str:
        names = self._display.get(key)
        return names[0] if names else key

    def aliases(self, key: str) -> tuple[str, ...]:
        return tuple(self._display.get(key, ())[1:])

    def all_names(self) -> list[str]:
        return sorted(self._names)

    def add(self, info: ModelInfo, make: Callable[[ModelInfo], T], *, authoritative: bool = False) -> T:
        """The entry for ``info`` (``make(info)`` when its key is new), with ``info.name``
        claimed for it. An ``authoritative`` name (an alias of settings.toml) is taken back from
        another model; any other name already in use gets a unique variant instead."""
        key = info.key
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = make(info)
            self._display[key] = []
        wanted = safe_text(info.name)
        owner = self._names.get(wanted)
        if owner is None or owner == key:
            self._name(wanted, key)
        elif authoritative:
            self._display[owner] = [n for n in self._display[owner] if n != wanted]
            self._name(wanted, key)
            if not self._display[owner]:
                self._name(self._variant(wanted, None), owner)
        elif not self._display[key]:
            self._name(self._variant(wanted, info.path), key)
        return entry

    def add_alias(self, name: str, key: str) -> None:
        """Let ``name`` (a path a user typed, say) find the model ``key`` too."""
        if name not in self._names and key in self._entries:
            self._name(safe_text(name), key)

    def forget(self, key: str) -> None:
        """Drop a model the catalogue does not list (a requested path that failed to load)."""
        self._entries.pop(key, None)
        for name in self._display.pop(key, []):
            if self._names.get(name) == key:
                del self._names[name]

    def rebuild(self, found: Iterable[tuple[ModelInfo, bool]], keep: Callable[[T], bool],
                make: Callable[[ModelInfo], T]) -> list[tuple[T, ModelInfo]]:
        """Start the names over from a catalogue scan (``(info, authoritative)`` in scan order,
        aliases first). Entries the scan no longer lists are dropped unless ``keep(entry)``
        (loaded models stay, under their old names where still free). Returns each listed
        entry that existed before with its fresh info, for the caller to update."""
        old_entries, old_display = self._entries, self._display
        self._entries, self._display, self._names = {}, {}, {}
        refreshed: list[tuple[T, ModelInfo]] = []
        for info, authoritative in found:
            if info.key in old_entries and info.key not in self._entries:
                self._entries[info.key] = old_entries[info.key]
                self._display[info.key] = []
                refreshed.append((old_entries[info.key], info))
            self.add(info, make, authoritative=authoritative)
        for key, entry in old_entries.items():
            if key in self._entries or not keep(entry):
                continue
            self._entries[key] = entry
            self._display[key] = []
            for name in old_display.get(key, []):
                if name not in self._names:
                    self._name(name, key)
            if not self._display[key]:
                self._name(self._variant(old_display.get(key, ["model"])[0], None), key)
        return refreshed

    def _name(self, name: str, key: str) -> None:
        self._names[name] = key
        if name not in self._display[key]:
            self._display[key].append(name)

    def _variant(self, wanted: str, path: Path | None) -> str:
        """A free name for ``wanted``: parent folders in front, else a number after."""
        prefix = wanted
        for part in reversed(path.parent.parts if path else ()):
            if part in ("/", ""):
                continue
            prefix = f"{safe_text(part)}/{prefix}"
            if prefix not in self._names:
                return prefix
        n = 2
        while f"{wanted} ({n})" in self._names:
            n += 1
        return f"{wanted} ({n})"
