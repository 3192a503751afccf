"""What can go wrong talking to a remote instance, as types with a sentence a person can act on.

No message carries the remote's API key: they name the host, its URL and what it answered.
"""

from __future__ import annotations

__all__ = ["RemoteError", "RemoteUnreachable", "RemoteRefused", "RemoteNeedsKey", "NotAnInstance"]


class RemoteError(Exception):
    """Any failure of a request to a remote; ``host`` is the remote's name."""

    def __init__(self, host: str, message: str) -> None:
        super().__init__(message)
        self.host = host


class RemoteUnreachable(RemoteError):
    """Nothing answered in time: the host is down, asleep, off the network, or its mlx-tui is
    not running (connection refused, a timeout, a name that does not resolve)."""


class RemoteRefused(RemoteError):
    """The remote answered with an error (``status``): an unknown model, one too large..."""

    def __init__(self, host: str, message: str, status: int) -> None:
        super().__init__(host, message)
        self.status = status


class RemoteNeedsKey(RemoteRefused):
    """The remote wants an API key that was not sent, or another one."""


class NotAnInstance(RemoteError):
    """Something answered at the address, but not an mlx-tui instance (another server)."""
