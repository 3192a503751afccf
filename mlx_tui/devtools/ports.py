"""Free TCP ports on loopback, for servers that tests and benchmarks start."""

from __future__ import annotations

import socket

__all__ = ["free_port"]


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now (the system picks it; another process may take it later,
    so bind it soon)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])
