"""Starting the ranks with ``mlx.launch`` (never an ssh loop of our own) and reading its log.

The launcher runs as :mod:`.quiet_launch`: MLX's own ``mlx.launch`` code, with the wait of its
forwarding threads made not to spin (see there).

``mlx.launch`` starts one process per host (locally for ``127.0.0.1``, over ssh otherwise),
forwards their output, and when one exits with an error it stops the others and logs one line
per rank: ``Node with rank 1 exited with code -9`` or ``Node with rank 0 was killed``. The
first rank that exited on its own (not stopped by the launcher's SIGTERM) is the one that
failed; :class:`LauncherLog` keeps those lines so the API process can name the host.
"""

from __future__ import annotations

import re
import signal
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["launch_command", "free_port_range", "LauncherLog", "RankExit"]

_EXIT = re.compile(r"Node with rank (\d+) (?:exited with code (-?\d+)|(was killed))")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def free_port_range(count: int, host: str = "127.0.0.1") -> int:
    """A first port ``p`` with ``p .. p+count-1`` free here now (the ring backend listens on
    one port per rank, counting up from ``--starting-port``)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind((host, 0))
            first = probe.getsockname()[1]
        if first + count >= 65535:
            continue
        taken = []
        try:
            for port in range(first, first + count):
                s = socket.socket()
                taken.append(s)
                s.bind((host, port))
            return first
        except OSError:
            continue
        finally:
            for s in taken:
                s.close()
    raise OSError("no free range of ports for the ranks")


def launch_command(hostfile: Path, backend: str, rank_argv: list[str], env: dict[str, str],
                   starting_port: int | None = None) -> list[str]:
    """The ``mlx.launch`` command line that runs ``rank_argv`` on every host of ``hostfile``."""
    command = [sys.executable, "-m", "mlx_tui.distributed.quiet_launch", "--hostfile",
               str(hostfile), "--backend", backend]
    if starting_port is not None and backend != "mpi":
        command += ["--starting-port", str(starting_port)]
    for key, value in env.items():
        command += ["--env", f"{key}={value}"]
    return [*command, "--", *rank_argv]


@dataclass(frozen=True)
class RankExit:
    """How one rank ended, as the launcher logged it (``code`` None when it was killed)."""

    rank: int
    code: int | None

    @property
    def stopped_by_launcher(self) -> bool:
        return self.code is None or self.code == -signal.SIGTERM

    def describe(self) -> str:
        if self.code is None:
            return "was killed"
        if self.code < 0:
            try:
                return f"was killed by {signal.Signals(-self.code).name}"
            except ValueError:
                return f"ended by signal {-self.code}"
        return f"exited with status {self.code}"


class LauncherLog:
    """The rank exits ``mlx.launch`` logged, in order. Fed line by line by one reader thread."""

    def __init__(self) -> None:
        self.exits: list[RankExit] = []
        self.tail: list[str] = []

    def feed(self, line: str) -> None:
        line = _ANSI.sub("", line).rstrip()
        if not line:
            return
        self.tail = [*self.tail[-19:], line]
        match = _EXIT.search(line)
        if match:
            code = None if match.group(3) else int(match.group(2))
            self.exits.append(RankExit(int(match.group(1)), code))

    def culprit(self) -> RankExit | None:
        """The first rank that ended on its own, else the first that ended at all."""
        own = [e for e in self.exits if not e.stopped_by_launcher]
        return own[0] if own else (self.exits[0] if self.exits else None)
