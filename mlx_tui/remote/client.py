"""HTTP to one remote instance: its ``/health``, the model actions and the chat stream.

Every request carries the remote's key (``Authorization: Bearer``) and a timeout; a failure
becomes one of :mod:`.errors` with a sentence naming the host, never an ``httpx`` exception,
and never the key. Blocking: call it from a worker thread, never from an event loop.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import httpx

from .address import RemoteAddress
from .documents import HealthReading, reading_from_health
from .errors import NotAnInstance, RemoteError, RemoteNeedsKey, RemoteRefused, RemoteUnreachable

__all__ = ["RemoteClient", "DEFAULT_TIMEOUT", "CHAT_TIMEOUT"]

DEFAULT_TIMEOUT = httpx.Timeout(3.0, connect=2.0)
"""``/health`` and the actions: a host that says nothing for 3 s counts as unreachable."""
CHAT_TIMEOUT = httpx.Timeout(3.0, connect=2.0, read=600.0)
"""A chat: its first piece comes after the model loaded, which may take minutes."""


def _why(exc: httpx.HTTPError, timeout: httpx.Timeout) -> str:
    """``connection refused``, ``no answer within 3 s``... for a failed request."""
    if isinstance(exc, httpx.ConnectTimeout):
        return f"no connection within {timeout.connect:g} s"
    if isinstance(exc, httpx.TimeoutException):
        return f"no answer within {timeout.read:g} s"
    text = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.ConnectError):
        lowered = text.lower()
        if "refused" in lowered:
            return "connection refused (is mlx-tui running there?)"
        if "name or service" in lowered or "nodename" in lowered or "getaddrinfo" in lowered:
            return "the host name does not resolve"
    return text


class RemoteClient:
    """Requests to one :class:`RemoteAddress`. Thread-safe (one ``httpx.Client``, which is);
    owned by the remote's :class:`~.host.RemoteHost`, which closes it."""

    def __init__(self, address: RemoteAddress, *, timeout: httpx.Timeout = DEFAULT_TIMEOUT,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.address = address
        self._timeout = timeout
        # trust_env=False: a proxy from the environment must not stand between us and a host
        # on the LAN (nor see its key).
        self._http = httpx.Client(base_url=address.url, headers=address.headers(),
                                  timeout=timeout, trust_env=False, transport=transport)

    def close(self) -> None:
        self._http.close()

    @property
    def _host(self) -> str:
        return self.address.name

    @property
    def _where(self) -> str:
        """``studio (http://studio.local:11435)``: how every message names the host."""
        return f"{self.address.name} ({self.address.url})"

    # -- answers -------------------------------------------------------------------------------
    def _failed(self, response: httpx.Response) -> RemoteError:
        try:
            message = str(response.json()["error"]["message"])
        except (ValueError, KeyError, TypeError):
            return NotAnInstance(self._host, f"{self._where}: answered {response.status_code}, "
                                 "not as an mlx-tui instance does")
        if response.status_code == 401:
            return self._needs_key(401)
        return RemoteRefused(self._host, message, response.status_code)

    def _needs_key(self, status: int) -> RemoteNeedsKey:
        if self.address.api_key:
            what = (f"{self._host} does not take the api_key given for it: set the api_key of "
                    f"its [[remotes]] table to the [api].api_key of {self._host}'s settings.toml")
        else:
            what = (f"{self._host} needs an API key: add api_key to its [[remotes]] table "
                    f"(the [api].api_key of {self._host}'s settings.toml)")
        return RemoteNeedsKey(self._host, what, status)

    def _json(self, response: httpx.Response) -> dict[str, Any]:
        if response.status_code >= 400:
            raise self._failed(response)
        try:
            doc = response.json()
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            raise NotAnInstance(self._host, f"{self._where}: answered, but not as an mlx-tui "
                                "instance does (no JSON)")
        return doc

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        try:
            response = self._http.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise RemoteUnreachable(self._host, f"{self._where}: {_why(exc, self._timeout)}") from None
        return self._json(response)

    # -- what the app asks ---------------------------------------------------------------------
    def health_document(self) -> dict[str, Any]:
        """``GET /health`` as it came; raises :class:`RemoteError` (a remote with a key that
        we lack answers its status alone: :class:`RemoteNeedsKey`)."""
        doc = self._request("GET", "/health")
        if "memory" not in doc and "status" in doc:
            raise self._needs_key(200)
        if "cached_models" not in doc:
            raise NotAnInstance(self._host, f"{self._where}: answered /health without the fields "
                                "of an mlx-tui instance")
        return doc

    def health(self) -> HealthReading:
        """``GET /health`` as a reading (see :meth:`health_document`)."""
        doc = self.health_document()
        try:
            return reading_from_health(doc)
        except (KeyError, TypeError, ValueError):
            raise NotAnInstance(self._host, f"{self._where}: answered /health without the fields "
                                "of an mlx-tui instance") from None

    def load(self, name: str, wait: bool = False) -> dict[str, Any]:
        """Start loading ``name`` there (with ``wait``: until it is loaded); the model's entry."""
        return self._request("POST", "/models/load", {"model": name, "wait": wait})["model"]

    def evict(self, name: str) -> dict[str, Any]:
        """``{"model": ..., "evicted": bool, "deferred": bool}``."""
        return self._request("POST", "/models/evict", {"model": name})

    def pin(self, name: str, pinned: bool) -> dict[str, Any]:
        return self._request("POST", "/models/pin", {"model": name, "pinned": pinned})["model"]

    def cleanup(self, level: str) -> dict[str, Any]:
        """``{"level", "evicted", "deferred", "kept", "reason"}`` of the clean-up it ran."""
        return self._request("POST", "/models/cleanup", {"level": level})

    @contextmanager
    def chat_events(self, body: dict[str, Any]) -> Iterator[Iterator[str]]:
        """``POST /v1/chat/completions`` streamed: yields the ``data:`` payloads as they come.
        An error answer (unknown model, too large) raises before anything is yielded."""
        try:
            with self._http.stream("POST", "/v1/chat/completions", json=body,
                                   timeout=CHAT_TIMEOUT) as response:
                if response.status_code >= 400:
                    response.read()
                    raise self._failed(response)
                yield (line[5:].strip() for line in response.iter_lines()
                       if line.startswith("data:"))
        except httpx.HTTPError as exc:
            raise RemoteUnreachable(self._host, f"{self._where}: {_why(exc, CHAT_TIMEOUT)}") from None
