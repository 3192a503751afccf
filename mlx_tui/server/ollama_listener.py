"""``[api].ollama_port``: the same app also listening where Ollama's clients look by default.

Clients that cannot be told a port (or a user who would rather not) find Ollama on 11434.
With ``ollama_port`` set, :func:`ollama_socket` binds a second socket there, on the API's own
host; uvicorn serves both sockets with the one app, so everything (routes, key, limits,
metrics, the replies a stop cancels) is shared. Every path answers on both ports.
"""

from __future__ import annotations

import socket
from typing import Callable

__all__ = ["ollama_socket"]


def ollama_socket(host: str, main_port: int, ollama_port: int,
                  bind: Callable[[str, int], socket.socket]) -> socket.socket | None:
    """The listening socket ``ollama_port`` asks for, bound with ``bind`` (the server's own
    binder, so failures are its errors), or None when it is 0 or the main port itself.

    A taken port raises the binder's error again, with a message naming ``[api].ollama_port``
    (it is most often Ollama itself).
    """
    if not ollama_port or ollama_port == main_port:
        return None
    try:
        return bind(host, ollama_port)
    except Exception as exc:  # noqa: BLE001 - re-raised as its own type, with the setting named
        raise type(exc)(
            f"[api].ollama_port: {exc}; is Ollama itself running? Stop it, or set "
            "[api].ollama_port = 0 to serve the Ollama API only on [api].port") from exc
