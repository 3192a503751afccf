"""The settings screen: thresholds, clean-up, policy, polling and theme, saved to settings.toml.

Saving checks every field first (the same validation a file gets), then writes each changed
section with one :meth:`SettingsStore.update` (one atomic write) in a worker thread; the cache
applies the new settings at once and reports them, and the app moves the gauge's markers.
"""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Footer, Input, Label, Select, Static

from ...core.planner import CLEANUP_MODES
from ...core.policy import POLICIES
from ...core.settings import Settings, SettingsError, SettingsStore

__all__ = ["SettingsScreen", "parse_fraction", "collect_changes"]


def parse_fraction(key: str, text: str) -> float:
    """``"85"``, ``"85%"`` or ``"0.85"`` -> 0.85 (with ``%``, always a percentage: ``"1%"`` is
    0.01); raises ValueError naming ``key``."""
    raw = text.strip()
    percent = raw.endswith("%")
    try:
        value = float(raw.rstrip("%").strip())
    except ValueError:
        raise ValueError(f"{key}: must be a percentage like 85, got {text!r}") from None
    return value / 100 if percent or value > 1 else value


def _number(key: str, text: str, kind: type) -> Any:
    try:
        return kind(text.strip())
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise ValueError(f"{key}: must be {what}, got {text!r}") from None


def collect_changes(current: Settings, fields: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Turn the form's text into per-section changes (only what differs), validated.

    Raises ValueError (or :class:`SettingsError`) with a message naming the key.
    """
    wanted: dict[str, dict[str, Any]] = {
        "memory": {
            "warning_threshold": parse_fraction("memory.warning_threshold", fields["warning"]),
            "emergency_threshold": parse_fraction("memory.emergency_threshold", fields["emergency"]),
            "background_load_below": parse_fraction("memory.background_load_below",
                                                    fields["background"]),
            "keep_on_cleanup": _number("memory.keep_on_cleanup", fields["keep"], int),
            "cleanup": fields["cleanup"],
            "poll_seconds": _number("memory.poll_seconds", fields["poll"], float),
        },
        "cache": {
            "policy": fields["policy"],
            "idle_unload_seconds": _number("cache.idle_unload_seconds", fields["idle"], float),
            "max_loaded": _number("cache.max_loaded", fields["max_loaded"], int),
        },
        "ui": {"theme": fields["theme"]},
    }
    data = current.to_toml_dict()
    changes = {section: {k: v for k, v in values.items() if data[section][k] != v}
               for section, values in wanted.items()}
    changes = {section: values for section, values in changes.items() if values}
    current.with_changes(changes)  # raises SettingsError when invalid
    return changes


class SettingsScreen(ModalScreen[bool]):
    """Edits the settings file the app runs with; dismisses True after a save."""

    BINDINGS = [
        Binding("ctrl+s", "save", "Save", id="settings-save",
                tooltip="Check and save to settings.toml (applied at once)"),
        Binding("escape", "dismiss(False)", "Cancel", id="settings-cancel",
                tooltip="Close without saving"),
    ]

    def __init__(self, settings_store: SettingsStore, themes: list[str]) -> None:
        super().__init__()
        self._store = settings_store
        self._themes = themes

    def compose(self) -> ComposeResult:
        s = self._store.settings
        m, c = s.memory, s.cache
        with Vertical(classes="dialog wide") as dialog:
            dialog.border_title = "Settings · ctrl+s saves · esc cancels"
            yield Static(f"File: {self._store.path}  (found by: {self._store.source})",
                         id="settings-file", markup=False)
            if self._store.error is not None:
                yield Static(f"The file has a problem, the last valid settings are in force: "
                             f"{self._store.error}", classes="error", markup=False)
            with VerticalScroll():
                with Grid(classes="fields"):
                    yield from self._field("Warning threshold %", Input(f"{m.warning_threshold * 100:g}",
                                                                      id="warning", compact=True))
                    yield from self._field("Emergency threshold %", Input(
                        f"{m.emergency_threshold * 100:g}", id="emergency", compact=True))
                    yield from self._field("Preload only below %", Input(
                        f"{m.background_load_below * 100:g}", id="background", compact=True))
                    yield from self._field("Keep on clean-up", Input(str(m.keep_on_cleanup), id="keep",
                                                                     compact=True))
                    yield from self._field("Clean-up mode", Select(
                        [(mode, mode) for mode in CLEANUP_MODES], value=m.cleanup, id="cleanup",
                        allow_blank=False, compact=True))
                    yield from self._field("Poll every (s)", Input(f"{m.poll_seconds:g}", id="poll",
                                                                   compact=True))
                    yield from self._field("Policy", Select(
                        [(name, name) for name in sorted(POLICIES)], value=c.policy, id="policy",
                        allow_blank=False, compact=True))
                    yield from self._field("Unload idle after (s, 0 never)", Input(
                        f"{c.idle_unload_seconds:g}", id="idle", compact=True))
                    yield from self._field("Max loaded (0 no limit)", Input(
                        str(c.max_loaded), id="max_loaded", compact=True))
                    themes = sorted(set(self._themes) | {s.ui.theme})
                    yield from self._field("Theme", Select(
                        [(t, t) for t in themes], value=s.ui.theme, id="theme", allow_blank=False,
                        compact=True))
            yield Static("", id="settings-error", classes="error", markup=False)
            with Horizontal(classes="buttons"):
                yield Button("Save (ctrl+s)", variant="primary", id="save")
                yield Button("Cancel (esc)", id="cancel")
        yield Footer(compact=True, show_command_palette=False)

    @staticmethod
    def _field(label: str, widget: Input | Select) -> ComposeResult:
        yield Label(label)
        yield widget

    def on_mount(self) -> None:
        for field in self.query(Input):
            field.cursor_blink = False
        self.query_one("#warning", Input).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "save":
            self.action_save()
        else:
            self.dismiss(False)

    def _fields(self) -> dict[str, str]:
        values = {field.id or "": field.value for field in self.query(Input)}
        for select in self.query(Select):
            values[select.id or ""] = str(select.value)
        return values

    def action_save(self) -> None:
        error = self.query_one("#settings-error", Static)
        try:
            changes = collect_changes(self._store.settings, self._fields())
        except (ValueError, SettingsError) as exc:
            error.update(str(exc))
            return
        if not changes:
            self.dismiss(False)
            return
        error.update("saving…")
        self.run_worker(lambda: self._save(changes), thread=True, exit_on_error=False,
                        name="save settings")

    def _save(self, changes: dict[str, dict[str, Any]]) -> None:
        """In a worker thread: one atomic write of every changed section."""
        try:
            self._store.update(changes)
        except (SettingsError, OSError) as exc:
            self.app.call_from_thread(self.query_one("#settings-error", Static).update, str(exc))
            return
        self.app.call_from_thread(self.app.notify, f"Saved to {self._store.path}", title="Settings")
        self.app.call_from_thread(self.dismiss, True)
