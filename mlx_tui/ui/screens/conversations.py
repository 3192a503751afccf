"""Saved chats: pick one to continue it, or delete it (after a question: it cannot be undone)."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Footer, OptionList, Static
from textual.widgets.option_list import Option

from ...core.store import Store
from ..format import date_time
from .confirm import ConfirmScreen

__all__ = ["ConversationsScreen"]


class ConversationsScreen(ModalScreen[int | None]):
    """Lists the store's conversations, newest first; dismisses with the chosen id."""

    BINDINGS = [
        Binding("escape", "dismiss(None)", "Close", id="chats-close", tooltip="Close the list"),
        Binding("delete,d", "delete", "Delete", id="chats-delete",
                tooltip="Delete the highlighted conversation (asks first)"),
    ]

    def __init__(self, store: Store) -> None:
        super().__init__()
        self._store = store

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide") as dialog:
            dialog.border_title = "Saved chats · enter opens · d deletes · esc closes"
            yield OptionList(id="chats")
            yield Static("", id="chats-empty")
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        self._fill()
        self.query_one(OptionList).focus()

    def _fill(self) -> None:
        options = self.query_one(OptionList)
        highlighted = options.highlighted
        options.clear_options()
        rows = self._store.conversations()
        for row in rows:
            count = len(self._store.messages(row.id))
            # Text, not markup: a title is what the user typed ("[draft] ...").
            prompt = Text(f"{date_time(row.updated_at)}  {row.title}  ·  {row.model}  ·  "
                          f"{count} messages", no_wrap=True, overflow="ellipsis")
            options.add_option(Option(prompt, id=str(row.id)))
        if rows:
            options.highlighted = min(highlighted or 0, len(rows) - 1)
        self.query_one("#chats-empty", Static).update("" if rows else "No saved chats yet.")

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(int(event.option.id or 0))

    def action_delete(self) -> None:
        options = self.query_one(OptionList)
        if options.highlighted is None:
            return
        option = options.get_option_at_index(options.highlighted)
        conversation_id = int(option.id or 0)
        title = next((c.title for c in self._store.conversations() if c.id == conversation_id), "")

        def answered(yes: bool | None) -> None:
            if yes:
                self._store.delete_conversation(conversation_id)
                self._fill()

        self.app.push_screen(ConfirmScreen(
            "Delete a saved chat", f"Delete “{title}” and its messages? This cannot be undone."),
            answered)
