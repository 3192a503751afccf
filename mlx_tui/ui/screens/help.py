"""The help screen: every key (as remapped in settings.toml) and what the screen shows."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Footer, Markdown

__all__ = ["HelpScreen", "SCREEN_GUIDE"]

SCREEN_GUIDE = """\
**Memory** (top): the bar is the memory the weights live in (unified memory on a Mac, the
GPU's device memory with MLX's CUDA build, system memory on a CPU); `┃` marks the warning and
emergency thresholds, labelled below it. Green, yellow, red: normal, warning (a normal clean-up
runs), emergency (every model is unloaded). Then MLX's active memory and buffer pool, a Mac's
wired memory against its ceiling (or system memory beside a GPU's), swap, the macOS memory
pressure when known, and a history: one column per change of the percentage, `▼` where a
clean-up fired.

**Models**: every model mlx-tui knows, loaded ones first in the policy's keep order (the one a
clean-up keeps longest on top). `~` before a size means an estimate (not loaded yet). Prompt
cache: bytes of its prompt caches in memory / on disk (ctrl+g lists them). A model served
across hosts has a line per rank. The line under the table describes the selected model, or
says why it failed.

**Chat**: the conversation with the model named in its title; figures under each reply:
tokens, tokens per second, time to first token, whether the model had to load first, and the
prompt's tokens, how many came from the prompt cache, and the prefill seconds.

**Events**: every load, eviction, refusal and clean-up, with its reason and time.
"""


class HelpScreen(ModalScreen[None]):
    """Shows the key tables and the guide; any of esc, f1, ? or q closes it."""

    BINDINGS = [
        Binding("escape,f1,question_mark,q", "dismiss", "Close", id="help-close",
                tooltip="Close the help"),
    ]

    def __init__(self, keys_markdown: str) -> None:
        super().__init__()
        self._keys = keys_markdown

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide") as dialog:
            dialog.border_title = "mlx-tui help · esc closes"
            with VerticalScroll(id="help-scroll"):
                yield Markdown(f"## Keys\n\n{self._keys}\n## The screen\n\n{SCREEN_GUIDE}",
                               id="help-text")
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        self.query_one("#help-scroll").focus()
