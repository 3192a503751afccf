"""Every key of the app in one table: the help screen, the docs and remapping read it from here.

Each :class:`~textual.binding.Binding` in the app has an ``id``; ``[ui].keys`` in settings.toml
maps ids to keys (``evict = "d"``) and the app passes it to Textual's ``set_keymap``. The help
screen and the README's key tables (checked by ``tests/ui/test_small_pieces.py``) list the
bindings from the classes themselves, with the remapped keys, so what they say is what the
keys do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

from textual.binding import Binding

__all__ = ["KeyHelp", "binding_groups", "key_rows", "keys_markdown", "unknown_binding_ids",
           "display_key"]

_KEY_NAMES = {
    "question_mark": "?",
    "escape": "esc",
    "exclamation_mark": "!",
    "full_stop": ".",
    "comma": ",",
    "slash": "/",
}


@dataclass(frozen=True)
class KeyHelp:
    """One binding as people read it: where it works, its keys, what it does."""

    group: str
    id: str
    keys: str
    description: str


def display_key(keys: str) -> str:
    """``"f1,question_mark"`` -> ``"f1 / ?"``."""
    return " / ".join(_KEY_NAMES.get(k.strip(), k.strip()) for k in keys.split(","))


def _bindings(cls: type) -> list[Binding]:
    return [b for b in getattr(cls, "BINDINGS", []) if isinstance(b, Binding) and b.id]


def key_rows(groups: Sequence[tuple[str, type]], keymap: Mapping[str, str] | None = None) -> list[KeyHelp]:
    """The bindings of each class in ``groups`` (only those with an id), remapped by ``keymap``."""
    keymap = keymap or {}
    rows: list[KeyHelp] = []
    for group, cls in groups:
        for binding in _bindings(cls):
            assert binding.id is not None
            keys = keymap.get(binding.id, binding.key)
            rows.append(KeyHelp(group, binding.id, display_key(keys),
                                binding.tooltip or binding.description))
    return rows


def keys_markdown(rows: Iterable[KeyHelp]) -> str:
    """A Markdown table per group: ``| Key | Does | Id |``."""
    out: list[str] = []
    group = None
    for row in rows:
        if row.group != group:
            group = row.group
            out += ["", f"**{group}**", "", "| Key | Does | Id (for `[ui.keys]`) |", "|---|---|---|"]
        out.append(f"| `{row.keys}` | {row.description} | `{row.id}` |")
    return "\n".join(out).strip() + "\n"


def unknown_binding_ids(keymap: Mapping[str, str], groups: Sequence[tuple[str, type]]) -> list[str]:
    """Ids in ``keymap`` that no binding has (a typo in ``[ui.keys]``)."""
    known = {b.id for _, cls in groups for b in _bindings(cls)}
    return sorted(set(keymap) - known)


def binding_groups() -> list[tuple[str, type]]:
    """Where each binding works, in the order the help screen and the README list them (the
    classes are imported here, when asked: they import this module)."""
    from .app import MlxTuiApp
    from .screens.chat_options import ChatOptionsScreen
    from .screens.confirm import ConfirmScreen
    from .screens.conversations import ConversationsScreen
    from .screens.fleet import FleetScreen
    from .screens.help import HelpScreen
    from .screens.prompt_caches import PromptCachesScreen
    from .screens.settings import SettingsScreen
    from .widgets.chat import ChatInput, ChatPane
    from .widgets.models_table import ModelsTable

    return [
        ("Everywhere", MlxTuiApp),
        ("Writing a message", ChatInput),
        ("Chat", ChatPane),
        ("Models table (tab to reach it)", ModelsTable),
        ("Settings screen", SettingsScreen),
        ("Chat options screen", ChatOptionsScreen),
        ("Saved chats screen", ConversationsScreen),
        ("Fleet overview (f2, with [[remotes]])", FleetScreen),
        ("Prompt caches screen", PromptCachesScreen),
        ("Questions", ConfirmScreen),
        ("Help screen", HelpScreen),
    ]
