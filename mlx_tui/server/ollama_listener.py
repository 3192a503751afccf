"""``[api].ollama_port``: the same app also listening where Ollama's clients look by default.

Clients that cannot be told a port (or a user who would rather not) find Ollama on 11434.
With ``ollama_port`` set, :func:`listening_sockets` adds a second socket there, on the API's
own host; uvicorn serves every socket it is given with the one app, so everything (routes,
key, limits, metrics, the replies a stop cancels) is shared, and every path answers on both.
"""

from __future__ import annotations

import socket
from typing import Callable

__all__ = ["listening_sockets"]


def listening_sockets(sock: socket.socket, host: str, ollama_port: int,
                      bind: Callable[[str, int], socket.socket]) -> list[socket.socket]:
    """``[sock]`` (the API's bound socket), plus one bound with ``bind`` (the server's own
    binder) on ``ollama_port`` unless that is 0 or ``sock``'s own port.

    A taken port raises the binder's error again, with a message naming ``[api].ollama_port``
    (it is most often Ollama itself), and closes ``sock``.
    """
    if not ollama_port or ollama_port == sock.getsockname()[1]:
        return [sock]
    try:
        return [sock, bind(host, ollama_port)]
    except Exception as exc:  # noqa: BLE001 - re-raised as its own type, with the setting named
        sock.close()
        raise type(exc)(
            f"[api].ollama_port: {exc}; is Ollama itself running? Stop it, or set "
            "[api].ollama_port = 0 to serve the Ollama API only on [api].port") from exc
