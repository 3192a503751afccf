"""The app in a real terminal: tmux runs ``mlx-tui``, keys go in, the screen comes out as text.

A private tmux server (its own socket) keeps the test away from any tmux the user runs; the
app gets the test's isolated config, data and Hugging Face folders on its command line.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

from mlx_tui.core.settings import write_settings

from .conftest import make_settings

pytestmark = pytest.mark.tmux


class Terminal:
    """One tmux session of a given size on a private server."""

    def __init__(self, tmp_path: Path, command: str, size: tuple[int, int] = (120, 40)) -> None:
        self.socket = f"mlx-tui-test-{os.getpid()}"
        self.width = size[0]
        self._tmux("new-session", "-d", "-s", "app", "-x", str(size[0]), "-y", str(size[1]), command)

    def _tmux(self, *args: str) -> str:
        done = subprocess.run(["tmux", "-L", self.socket, "-f", "/dev/null", *args],
                              capture_output=True, text=True, timeout=10)
        return done.stdout

    def keys(self, *keys: str) -> None:
        self._tmux("send-keys", "-t", "app", *keys)

    def screen(self) -> str:
        return self._tmux("capture-pane", "-p", "-t", "app")

    def wait_for(self, text: str, timeout: float = 20.0, until_gone: str | None = None) -> str:
        """The screen, once ``text`` is on it (and ``until_gone`` is not), drawn at the full
        width (tmux may start a pane at 80x24 and resize it a moment later)."""
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            lines = screen.splitlines()
            if (text in screen and (until_gone is None or until_gone not in screen)
                    and (not lines[0].strip() or len(lines[0]) == self.width or "EXIT=" in screen)):
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} never appeared; the screen:\n{screen}")
            time.sleep(0.05)

    def bytes_written(self, seconds: float, out: Path) -> int:
        """What the app writes to the terminal in ``seconds`` (tmux pipe-pane)."""
        self._tmux("pipe-pane", "-o", "-t", "app", f"cat >> {shlex.quote(str(out))}")
        time.sleep(seconds)
        self._tmux("pipe-pane", "-t", "app")
        return out.stat().st_size if out.exists() else 0

    def close(self) -> None:
        self._tmux("kill-server")


@pytest.fixture
def terminal(tmp_path: Path) -> Iterator[Callable[[str], Terminal]]:
    made: list[Terminal] = []

    def start(command: str) -> Terminal:
        made.append(Terminal(tmp_path, command))
        return made[-1]

    yield start
    for term in made:
        term.close()


def test_chat_clean_up_and_quit_in_a_real_terminal(tmp_path: Path, terminal: Callable[[str], Terminal],
                                                   model_factory: Callable[..., Path]) -> None:
    settings = tmp_path / "settings.toml"
    write_settings(make_settings({"tiny-a": str(model_factory("tiny-a", seed=1))},
                                 cache={"policy": "frequency"}), settings)
    env = {"XDG_CONFIG_HOME": tmp_path / "config", "XDG_DATA_HOME": tmp_path / "data",
           "HF_HOME": tmp_path / "hf", "HF_HUB_OFFLINE": "1", "TERM": "xterm-256color"}
    app = " ".join([sys.executable, "-m", "mlx_tui.cli", "--settings", str(settings), "--db",
                    str(tmp_path / "chat.db"), "--no-api", "--model", "tiny-a"])
    # -u COLUMNS/LINES: tmux started from pytest exports 80x24 ones, and Textual believes them.
    command = (f"env -u COLUMNS -u LINES "
               f"{' '.join(f'{k}={shlex.quote(str(v))}' for k, v in env.items())} {app}; "
               "echo EXIT=$?; sleep 60")
    term = terminal(command)

    screen = term.wait_for("Chat · tiny-a")
    assert "Memory" in screen and "warning 85% ━┛" in screen and "┗━ emergency 98%" in screen
    assert "Models · sorted by keep order (frequency)" in screen
    assert "tiny-a" in screen and "not loaded" in screen

    # The message and its enter arrive in one piece, as over SSH.
    term.keys("hello", "Enter")
    screen = term.wait_for(" tok/s · TTFT ")
    assert "loaded first in" in screen
    row = next(line for line in screen.splitlines() if line.startswith("│ tiny-a "))
    assert "loaded" in row or "in use" in row
    term.keys("C-o")
    term.wait_for("hello  ·  tiny-a  ·  2 messages")
    term.keys("Escape")
    term.wait_for("Chat · tiny-a", until_gone="Saved chats")

    term.keys("BTab", "BTab")  # from the message box back to the models table
    term.wait_for("U Unload all")  # the footer shows the table's keys: it has the focus
    term.keys("U")
    screen = term.wait_for("Unload every model now?")
    term.keys("y")
    deadline = time.monotonic() + 10
    while "│ tiny-a                  not loaded" not in term.screen():
        assert time.monotonic() < deadline, term.screen()
        time.sleep(0.05)

    time.sleep(1.5)  # the memory readings that follow the clean-up
    idle = term.bytes_written(3.0, tmp_path / "idle.out")
    assert idle < 1500, f"{idle} bytes written in 3 s of idling: {(tmp_path / 'idle.out').read_bytes()!r}"

    term.keys("C-q")
    term.wait_for("EXIT=0")
