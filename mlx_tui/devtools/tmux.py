"""Drive programs in real terminals: a private tmux server, its sessions, keys in, screens out.

Tests (``tests/test_tmux.py``) and benchmarks (``benchmarks/costs_of_being_open.py``) run the app
in tmux through :class:`TmuxServer`; :class:`Terminal` is one session on its own server with
the waiting a test needs. A private server (``tmux -L SOCKET -f /dev/null``) keeps them away
from any tmux the user runs and from the user's ``.tmux.conf``.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import time
from pathlib import Path
from typing import Callable, Mapping

__all__ = ["TmuxServer", "Terminal", "TmuxError"]


class TmuxError(RuntimeError):
    """A tmux command failed; the message has tmux's own words."""


class TmuxServer:
    """A private tmux server; :meth:`close` kills it with every session on it.

    ``keeper=True`` starts a session that only sleeps, so the server lives on between
    sessions that end (a benchmark starts and kills many). ``env`` is set in every session.
    """

    def __init__(self, env: Mapping[str, str] | None = None, size: tuple[int, int] = (120, 40),
                 *, keeper: bool = False, stem: str = "mlx-tui") -> None:
        self.socket = f"{stem}-{os.getpid()}-{time.monotonic_ns() % 1_000_000}"
        self.env = dict(env or {})
        self.size = size
        self._names = 0
        self.socket_path = ""
        if keeper:
            self.start("keeper", "sleep 86400")
            self.socket_path = self.run("display-message", "-p", "-t", "keeper",
                                        "#{socket_path}").strip()

    def run(self, *args: str, check: bool = True) -> str:
        """One tmux command on this server; its stdout."""
        done = subprocess.run(["tmux", "-L", self.socket, "-f", "/dev/null", *args],
                              capture_output=True, text=True, timeout=15)
        if check and done.returncode != 0:
            raise TmuxError(f"tmux {' '.join(args[:2])} failed: {done.stderr.strip()}")
        return done.stdout

    def unique(self, stem: str) -> str:
        """A session name not used before on this server."""
        self._names += 1
        return f"{stem}-{self._names}"

    def start(self, name: str, command: str, size: tuple[int, int] | None = None) -> None:
        width, height = size or self.size
        env_args = [a for k, v in self.env.items() for a in ("-e", f"{k}={v}")]
        self.run("new-session", "-d", "-s", name, "-x", str(width), "-y", str(height),
                 *env_args, command)

    def keys(self, name: str, *keys: str) -> None:
        """``send-keys``: tmux key names (``Enter``, ``C-q``, ``BTab``) or text."""
        self.run("send-keys", "-t", name, *keys, check=False)

    def screen(self, name: str) -> str:
        """What the pane shows now, as text (``capture-pane -p``)."""
        return self.run("capture-pane", "-p", "-t", name, check=False)

    def resize(self, name: str, width: int, height: int) -> None:
        self.run("resize-window", "-t", name, "-x", str(width), "-y", str(height), check=False)

    def pane_pid(self, name: str) -> int:
        return int(self.run("display-message", "-p", "-t", name, "#{pane_pid}").strip())

    def server_pid(self) -> int:
        target = ["-t", "keeper"] if self.socket_path else []
        return int(self.run("display-message", "-p", *target, "#{pid}").strip())

    def pipe(self, name: str, path: Path) -> None:
        """Append everything the pane's program writes from now on to ``path``."""
        self.run("pipe-pane", "-o", "-t", name, f"cat >> {shlex.quote(str(path))}")

    def unpipe(self, name: str) -> None:
        self.run("pipe-pane", "-t", name, check=False)

    def kill(self, name: str) -> None:
        self.run("kill-session", "-t", name, check=False)

    def close(self) -> None:
        self.run("kill-server", check=False)
        if self.socket_path:  # tmux may leave its socket file behind
            Path(self.socket_path).unlink(missing_ok=True)


class Terminal:
    """One program in one tmux session of ``size`` on a private server, for a test."""

    NAME = "app"

    def __init__(self, command: str, size: tuple[int, int] = (120, 40),
                 env: Mapping[str, str] | None = None) -> None:
        self.server = TmuxServer(env, size, stem="mlx-tui-test")
        self.width = size[0]
        self.server.start(self.NAME, command)

    def keys(self, *keys: str) -> None:
        self.server.keys(self.NAME, *keys)

    def screen(self) -> str:
        return self.server.screen(self.NAME)

    def resize(self, width: int, height: int) -> None:
        self.width = width
        self.server.resize(self.NAME, width, height)

    def wait_for(self, text: str, timeout: float = 20.0, until_gone: str | None = None) -> str:
        """The screen, once ``text`` is on it (and ``until_gone`` is not), drawn at the full
        width (tmux may start a pane at 80x24 and resize it a moment later)."""
        return self.wait_until(lambda screen: text in screen and (
            until_gone is None or until_gone not in screen), timeout, repr(text))

    def wait_until(self, ready: Callable[[str], bool], timeout: float = 20.0,
                   what: str = "the expected screen") -> str:
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            lines = screen.splitlines()
            full_width = not lines or not lines[0].strip() or len(lines[0]) == self.width
            if ready(screen) and (full_width or "EXIT=" in screen):
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} never appeared; the screen:\n{screen}")
            time.sleep(0.05)

    def bytes_written(self, seconds: float, out: Path) -> int:
        """What the program writes to the terminal in ``seconds`` (tmux pipe-pane)."""
        self.server.pipe(self.NAME, out)
        time.sleep(seconds)
        self.server.unpipe(self.NAME)
        return out.stat().st_size if out.exists() else 0

    def close(self) -> None:
        self.server.close()
