"""Rank 0's end of its link to the API process on the same machine.

A ``multiprocessing.connection`` client over a Unix socket (in a folder only this user can
open, with an authentication key from the environment). A reader thread (it never touches MLX)
turns every :data:`~.protocol.Command` into an item of one queue that rank 0's MLX thread takes
from between steps; :meth:`RankLink.send` carries reports back. When the API process goes away
the link turns into a :class:`~.protocol.Shutdown`, so the ranks never outlive it.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from multiprocessing.connection import Client

from .protocol import Command, Report, Shutdown

__all__ = ["RankLink", "LINK_KEY_ENV"]

log = logging.getLogger("mlx_tui.distributed.rank")

LINK_KEY_ENV = "MLX_TUI_LINK_KEY"


class RankLink:
    """Commands in, reports out; owned by rank 0. ``take`` and ``send`` are called from rank
    0's MLX thread only; the reader thread only fills the queue."""

    def __init__(self, address: str, authkey: bytes) -> None:
        self._conn = Client(address, family="AF_UNIX", authkey=authkey)
        self._commands: queue.SimpleQueue[Command] = queue.SimpleQueue()
        self._send_lock = threading.Lock()
        self.closing = False
        threading.Thread(target=self._read, name="rank0-link", daemon=True).start()

    def _read(self) -> None:
        while True:
            try:
                command = self._conn.recv()
            except (EOFError, OSError):
                log.info("the API process closed the link; shutting the ranks down")
                self.closing = True
                self._commands.put(Shutdown())
                return
            self._commands.put(command)

    def take(self, timeout: float) -> list[Command]:
        """Every command waiting now; waits up to ``timeout`` seconds for the first one."""
        found: list[Command] = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                wait = max(0.0, deadline - time.monotonic()) if not found else 0.0
                found.append(self._commands.get(timeout=wait) if wait > 0 else
                             self._commands.get_nowait())
            except queue.Empty:
                return found

    def send(self, report: Report) -> None:
        """Send one report; a closed link is ignored (the ranks are shutting down)."""
        with self._send_lock:
            try:
                self._conn.send(report)
            except (OSError, ValueError):
                self.closing = True

    def close(self) -> None:
        try:
            self._conn.close()
        except OSError:
            pass
