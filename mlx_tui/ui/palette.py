"""The command palette (``ctrl+p``): every action of the app and of the models table by name.

Textual's own entries that do what one of ours does ("Keys" beside our Help, "Maximize" and
"Minimize" beside our Zoom) are left out, so each action is listed once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

from textual.app import SystemCommand
from textual.binding import Binding, BindingType

from .keys import display_key

__all__ = ["PaletteCommand", "palette_commands", "without_duplicates"]

DUPLICATED = frozenset({"Keys", "Maximize", "Minimize"})
"""Titles of Textual's system commands that the app's own Help and Zoom replace."""


@dataclass(frozen=True)
class PaletteCommand:
    """One palette entry: what it is called, the key that does the same, the action it runs."""

    title: str
    help: str
    action: str


def palette_commands(app_bindings: Sequence[BindingType],
                     table_bindings: Sequence[BindingType]) -> list[PaletteCommand]:
    """The app's actions (not quit and the palette itself: Textual lists those), the models
    table's (run with the table focused, as its keys are), and stopping a reply."""
    commands = [PaletteCommand(b.tooltip, f"{b.description} · {display_key(b.key)}", b.action)
                for b in app_bindings if isinstance(b, Binding) and b.id not in ("quit", "palette")]
    commands += [PaletteCommand(f"Models: {b.tooltip}",
                                f"{b.description} · {display_key(b.key)} in the table",
                                f"focus_and_run('models', '{b.action}')")
                 for b in table_bindings if isinstance(b, Binding) and b.show]
    commands.append(PaletteCommand("Stop the reply being generated", "Stop · esc", "stop_reply"))
    return commands


def without_duplicates(commands: Iterable[SystemCommand]) -> Iterable[SystemCommand]:
    """Textual's system commands minus those the app has its own entry for."""
    return (command for command in commands if command.title not in DUPLICATED)
