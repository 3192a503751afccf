"""The app in a real terminal: tmux runs ``mlx-tui``, keys go in, the screen comes out as text.

A private tmux server (its own socket) keeps the test away from any tmux the user runs; the
app gets the test's isolated config, data and Hugging Face folders on its command line.
"""

from __future__ import annotations

import re
import shlex
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

from mlx_tui.devtools.settings_files import write_isolated_settings
from mlx_tui.devtools.tmux import Terminal

pytestmark = pytest.mark.tmux


@pytest.fixture
def terminal() -> Iterator[Callable[..., Terminal]]:
    made: list[Terminal] = []

    def start(command: str, size: tuple[int, int] = (120, 40)) -> Terminal:
        made.append(Terminal(command, size))
        return made[-1]

    yield start
    for term in made:
        term.close()


def test_chat_clean_up_and_quit_in_a_real_terminal(tmp_path: Path, terminal: Callable[..., Terminal],
                                                   model_factory: Callable[..., Path]) -> None:
    settings = tmp_path / "settings.toml"
    write_isolated_settings(settings, {"tiny-a": str(model_factory("tiny-a", seed=1))},
                            cache={"policy": "frequency"})
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
    unloaded = re.compile(r"│ tiny-a +not loaded")
    deadline = time.monotonic() + 10
    while not unloaded.search(term.screen()):
        assert time.monotonic() < deadline, term.screen()
        time.sleep(0.05)

    time.sleep(1.5)  # the memory readings that follow the clean-up
    idle = term.bytes_written(3.0, tmp_path / "idle.out")
    assert idle < 1500, f"{idle} bytes written in 3 s of idling: {(tmp_path / 'idle.out').read_bytes()!r}"

    term.keys("C-q")
    term.wait_for("EXIT=0")


def test_a_live_resize_redraws_the_gauge_and_keeps_the_chat(tmp_path: Path,
                                                           terminal: Callable[..., Terminal],
                                                           model_factory: Callable[..., Path]) -> None:
    settings = tmp_path / "settings.toml"
    write_isolated_settings(settings, {"tiny-a": str(model_factory("tiny-a", seed=1))})
    env = {"XDG_CONFIG_HOME": tmp_path / "config", "XDG_DATA_HOME": tmp_path / "data",
           "HF_HOME": tmp_path / "hf", "HF_HUB_OFFLINE": "1", "TERM": "xterm-256color"}
    app = " ".join([sys.executable, "-m", "mlx_tui.cli", "--settings", str(settings), "--db",
                    str(tmp_path / "chat.db"), "--no-api", "--model", "tiny-a"])
    term = terminal(f"env -u COLUMNS -u LINES "
                    f"{' '.join(f'{k}={shlex.quote(str(v))}' for k, v in env.items())} {app}; "
                    "echo EXIT=$?; sleep 60")
    term.wait_for("Chat · tiny-a")

    def gauge_is_whole(screen: str) -> bool:
        bar, labels = screen.splitlines()[1:3]
        return (bar.count("▕") == 1 and bar.count("▏") == 1 and bar.count("┃") == 2
                and labels.find("┛") == bar.find("┃"))

    for width, height in ((200, 50), (80, 24), (120, 40)):
        term.resize(width, height)
        screen = term.wait_until(lambda s, w=width: len(s.splitlines()[0]) == w and gauge_is_whole(s),
                                 what=f"a whole gauge at {width}x{height}")
        assert "Chat · tiny-a" in screen, f"the chat is on screen at {width}x{height}"
        if height == 24:
            lines = screen.splitlines()
            top = next(i for i, line in enumerate(lines) if "Chat · tiny-a" in line)
            bottom = next(i for i, line in enumerate(lines) if "Message tiny-a" in line)
            assert bottom - top - 2 >= 8, f"8 lines for the reply at 80x24:\n{screen}"
    term.keys("C-q")
    term.wait_for("EXIT=0")
