"""Saved chats: pick one to continue it, or delete it."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from ...core.store import Store
from ..format import clock_time

__all__ = ["ConversationsScreen"]


class ConversationsScreen(ModalScreen[int | None]):
    """Lists the store's conversations, newest first; dismisses with the chosen id."""

    BINDINGS = [
        Binding("escape", "dismiss(None)", "Close", id="chats-close", tooltip="Close the list"),
        Binding("delete,d", "delete", "Delete", id="chats-delete",
                tooltip="Delete the highlighted conversation"),
    ]

    def __init__(self, store: Store) -> None:
        super().__init__()
        self._store = store

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog") as dialog:
            dialog.border_title = "Saved chats · enter opens · d deletes · esc closes"
            yield OptionList(id="chats")
            yield Static("", id="chats-empty")

    def on_mount(self) -> None:
        self._fill()
        self.query_one(OptionList).focus()

    def _fill(self) -> None:
        options = self.query_one(OptionList)
        options.clear_options()
        rows = self._store.conversations()
        for row in rows:
            count = len(self._store.messages(row.id))
            options.add_option(Option(
                f"{row.title}  ·  {row.model}  ·  {count} messages  ·  {clock_time(row.updated_at)}",
                id=str(row.id)))
        if rows:
            options.highlighted = 0
        self.query_one("#chats-empty", Static).update("" if rows else "No saved chats yet.")

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(int(event.option.id or 0))

    def action_delete(self) -> None:
        options = self.query_one(OptionList)
        if options.highlighted is None:
            return
        option = options.get_option_at_index(options.highlighted)
        self._store.delete_conversation(int(option.id or 0))
        self._fill()
