"""Chat options: the system prompt and sampling settings of the conversation on screen."""

from __future__ import annotations

from dataclasses import dataclass

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Footer, Input, Label, Static, TextArea

from ...core.chat import GenerationParams

__all__ = ["ChatOptions", "ChatOptionsScreen", "parse_chat_options"]


@dataclass(frozen=True)
class ChatOptions:
    system_prompt: str
    params: GenerationParams


def parse_chat_options(system_prompt: str, temperature: str, top_p: str, max_tokens: str,
                       seed: str) -> ChatOptions:
    """Check the fields; raises ValueError with a sentence naming the field."""
    def number(name: str, text: str, low: float, high: float) -> float:
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"{name} must be a number, got {text!r}") from None
        if not low <= value <= high:
            raise ValueError(f"{name} must be between {low:g} and {high:g}, got {value:g}")
        return value

    try:
        tokens = int(max_tokens)
    except ValueError:
        raise ValueError(f"max tokens must be a whole number, got {max_tokens!r}") from None
    if tokens < 1:
        raise ValueError(f"max tokens must be at least 1, got {tokens}")
    seed_value: int | None = None
    if seed.strip():
        try:
            seed_value = int(seed)
        except ValueError:
            raise ValueError(f"seed must be a whole number or empty, got {seed!r}") from None
    return ChatOptions(system_prompt.strip(), GenerationParams(
        temperature=number("temperature", temperature, 0, 5),
        top_p=number("top p", top_p, 0.01, 1),
        max_tokens=tokens, seed=seed_value))


class ChatOptionsScreen(ModalScreen[ChatOptions | None]):
    """Edits a copy of the options; dismisses with the new ones (ctrl+s) or None (esc)."""

    BINDINGS = [
        Binding("ctrl+s", "save", "Save", id="options-save",
                tooltip="Use these options for this chat"),
        Binding("escape", "dismiss(None)", "Cancel", id="options-cancel",
                tooltip="Close without changing anything"),
    ]

    def __init__(self, system_prompt: str, params: GenerationParams) -> None:
        super().__init__()
        self._prompt = system_prompt
        self._params = params

    def compose(self) -> ComposeResult:
        p = self._params
        with Vertical(classes="dialog") as dialog:
            dialog.border_title = "Chat options · ctrl+s saves · esc cancels"
            yield Label("System prompt")
            yield TextArea(self._prompt, id="system-prompt", soft_wrap=True, tab_behavior="focus")
            with Grid(classes="fields"):  # one line a field, as in the settings screen
                yield Label("Temperature")
                yield Input(f"{p.temperature:g}", id="temperature", compact=True)
                yield Label("Top p")
                yield Input(f"{p.top_p:g}", id="top-p", compact=True)
                yield Label("Max tokens")
                yield Input(str(p.max_tokens), id="max-tokens", type="integer", compact=True)
                yield Label("Seed (empty: random)")
                yield Input("" if p.seed is None else str(p.seed), id="seed", compact=True)
            yield Static("", id="options-error", classes="error", markup=False)
            with Horizontal(classes="buttons"):
                yield Button("Save (ctrl+s)", variant="primary", id="save")
                yield Button("Cancel (esc)", id="cancel")
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        area = self.query_one("#system-prompt", TextArea)
        area.cursor_blink = False
        for field in self.query(Input):
            field.cursor_blink = False
        area.focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "save":
            self.action_save()
        else:
            self.dismiss(None)

    def action_save(self) -> None:
        value = lambda wid: self.query_one(f"#{wid}", Input).value  # noqa: E731
        try:
            options = parse_chat_options(self.query_one("#system-prompt", TextArea).text,
                                         value("temperature"), value("top-p"),
                                         value("max-tokens"), value("seed"))
        except ValueError as exc:
            self.query_one("#options-error", Static).update(str(exc))
            return
        self.dismiss(options)
