"""Who may use the API, and with what: Host, Origin and CORS, the API key, body type and size.

:class:`ApiGuard` wraps the routes and decides, in this order:

1. **Host** (DNS rebinding). A request that reached the server on a loopback address must name
   a loopback host (``localhost``, ``127.0.0.1``, ``[::1]``, any port) or one of
   ``[api].allowed_hosts`` (``"*"``: any); otherwise 403. A page that rebinds its own name to
   127.0.0.1 still sends its own name. Requests that reached a LAN address (bound to
   ``0.0.0.0`` or a LAN address, which needs an API key) are not checked, as Ollama does:
   clients there use many names, and the key is what guards them.
2. **Origin** (web pages). A request with an ``Origin`` header must come from a loopback origin
   (``http(s)://localhost|127.0.0.1|[::1]``, any port), a local app (``app://``, ``tauri://``,
   ``vscode-webview://``, ``vscode-file://``: no web page can claim those) or
   ``[api].allowed_origins`` (exact, or ``"*"``); otherwise 403. ``null`` (sandboxed frames,
   any site can send it) only if listed. Allowed origins get CORS headers, and their
   preflights a 204.
3. **Key**. With an API key, every path but ``/health`` needs ``Authorization: Bearer KEY``
   (or ``x-api-key: KEY``, as the Anthropic SDK sends it); ``/health`` then answers the
   status alone.
4. **Body**. POST, PUT, PATCH and DELETE need ``Content-Type: application/json`` (415: the
   types a browser sends cross-site without asking are ``text/plain``, forms and multipart)
   and at most ``[api].max_body_bytes`` bytes (413), counted as they arrive, with or without
   ``Content-Length``.
5. **Failures**. Every 5xx says ``Connection: close``, and an exception no handler took is a
   JSON 500 (the traceback goes to the log), so a keep-alive client never meets a reset.

``[api]`` is read on every request from the settings store, so an edited settings.toml applies
at once. The key is the one exception: a new key applies at once, but removing it needs a
restart (a running API never opens up; its bind address was checked with the key).
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import re
from functools import lru_cache
from hmac import compare_digest
from typing import Callable, Iterable
from urllib.parse import urlsplit

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..core.settings import ApiSettings
from .errors import ApiError, as_api_error

__all__ = ["ApiGuard", "OPEN_PATHS", "LOCAL_APP_SCHEMES", "host_allowed", "origin_allowed",
           "key_matches"]

log = logging.getLogger("mlx_tui.server")

OPEN_PATHS = frozenset({"/health"})
"""Paths that answer without the API key (with the status only, no model names)."""

LOCAL_APP_SCHEMES = frozenset({"app", "tauri", "vscode-webview", "vscode-file"})
"""Origin schemes of desktop apps (Electron, Tauri, VS Code webviews): browsers give web pages
only http(s) origins, so a request with one of these comes from a program on this machine."""

BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
CORS_METHODS = "GET, HEAD, POST, PUT, DELETE, OPTIONS"
CORS_HEADERS = ("Authorization", "Content-Type", "X-Api-Key")
CORS_MAX_AGE = 600  # seconds a browser may reuse a preflight; each request is still checked
DRAIN_BYTES = 1024 * 1024  # read and dropped past the body limit, so the 413 is read, not reset
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an HTTP header name


# -- the rules, as plain functions ---------------------------------------------------------------
def _loopback(name: str) -> bool:
    """``localhost`` or a loopback address (127.0.0.0/8, ::1, ::ffff:127.x)."""
    name = name.lower().removesuffix(".")
    if name == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(name)
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return ip.is_loopback or (mapped is not None and mapped.is_loopback)


def _host_name(value: str) -> str | None:
    """The name in a ``Host`` value (``name``, ``name:port``, ``[v6]:port``), lower-case, or
    None when the value is not one."""
    if not value or any(c in value for c in "/@?#\\ \t"):
        return None
    try:
        parts = urlsplit(f"//{value}")
        parts.port  # noqa: B018 - raises ValueError for a port that is not one
    except ValueError:
        return None
    return (parts.hostname or "").removesuffix(".") or None


def _arrived_on_loopback(server: object) -> bool:
    """Whether a connection reached the server on a loopback address (ASGI's ``server``)."""
    if not isinstance(server, (tuple, list)) or not server:
        return True  # unknown: check as if bound to loopback
    try:
        ipaddress.ip_address(str(server[0]).strip("[]"))
    except ValueError:
        return True  # not an address (a socket path, a test transport): check
    return _loopback(str(server[0]).strip("[]"))


def host_allowed(host: str | None, on_loopback: bool, allowed: Iterable[str]) -> bool:
    """Whether a request naming ``Host: host`` may go on. ``on_loopback``: it reached the server
    on a loopback address; elsewhere every name is accepted (the API key guards those)."""
    if not on_loopback or host is None:  # no Host at all: HTTP/1.0 scripts, never a browser
        return True
    name = _host_name(host)
    if name is None:
        return False
    if _loopback(name):
        return True
    names = {_host_name(entry) or entry.strip().lower() for entry in allowed}
    return "*" in names or name in names


def _normal_origin(origin: str) -> str:
    return origin.strip().rstrip("/").lower()


def origin_allowed(origin: str, allowed: Iterable[str]) -> bool:
    """Whether a page or app from ``origin`` may call the API (the rules of the module doc)."""
    entries = {_normal_origin(entry) for entry in allowed}
    normal = _normal_origin(origin)
    if "*" in entries or normal in entries:
        return True
    try:
        parts = urlsplit(normal)
        parts.port  # noqa: B018 - raises ValueError for a port that is not one
    except ValueError:
        return False
    if parts.scheme in LOCAL_APP_SCHEMES:
        return True
    return (parts.scheme in ("http", "https") and bool(parts.hostname)
            and not (parts.path or parts.query or parts.fragment or parts.username)
            and _loopback(parts.hostname or ""))


@lru_cache(maxsize=8)
def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


def key_matches(presented: bytes, key: str) -> bool:
    """Whether ``presented`` is ``key``, in a time that depends on neither.

    ``compare_digest`` runs in constant time only for operands of one length (it returns at
    once when the lengths differ), so both sides are SHA-256 digests: always 32 bytes.
    """
    return compare_digest(hashlib.sha256(presented).digest(), _digest(key))


def _presented_key(headers: dict[bytes, bytes]) -> bytes:
    """The key a request sends: ``Authorization: Bearer KEY``, else ``x-api-key: KEY``."""
    scheme, _, token = headers.get(b"authorization", b"").strip().partition(b" ")
    if scheme.lower() == b"bearer" and token.strip():
        return token.strip()
    return headers.get(b"x-api-key", b"").strip()


def _is_json(content_type: bytes | None) -> bool:
    if not content_type:
        return False
    media = content_type.split(b";", 1)[0].strip().lower()
    return media == b"application/json" or (media.startswith(b"application/")
                                             and media.endswith(b"+json"))


def _shown(value: str, limit: int = 100) -> str:
    return value if len(value) <= limit else value[:limit] + "..."


# -- the middleware --------------------------------------------------------------------------------
class ApiGuard:
    """ASGI middleware that decides whether a request reaches the routes (the module doc says
    how), adds CORS headers for allowed origins and ``Connection: close`` to every 5xx.

    Holds only the key the API started with; reads the rest of ``[api]`` from ``settings()``
    on each request. Installed by :func:`mlx_tui.server.app.create_app` around every route.
    """

    def __init__(self, app: ASGIApp, settings: Callable[[], ApiSettings], api_key: str = "") -> None:
        self.app = app
        self._settings = settings
        self._start_key = api_key

    def key(self, api: ApiSettings) -> str:
        """The key requests need: the settings' one, or the one the API started with."""
        return api.api_key or self._start_key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        api = self._settings()
        headers = dict(scope["headers"])  # lower-case names; a repeated header: its last value
        origin = headers[b"origin"].decode("latin-1") if b"origin" in headers else None
        cors = origin if origin is not None and origin_allowed(origin, api.allowed_origins) else None
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message = _finish_headers(message, cors)
            await send(message)

        try:
            await self._guard(scope, receive, send_with_headers, api, headers, origin, cors)
        except Exception as exc:
            if started:
                raise  # the status line is out: the server can only close the connection
            error = as_api_error(exc)
            if error.status >= 500:
                log.error("%s %s failed", scope.get("method"), scope.get("path"), exc_info=exc)
            await error.response()(scope, receive, send_with_headers)

    async def _guard(self, scope: Scope, receive: Receive, send: Send, api: ApiSettings,
                     headers: dict[bytes, bytes], origin: str | None, cors: str | None) -> None:
        host = headers[b"host"].decode("latin-1") if b"host" in headers else None
        if not host_allowed(host, _arrived_on_loopback(scope.get("server")), api.allowed_hosts):
            raise ApiError(403, "host_not_allowed", (
                f"Host {_shown(host or '')!r} is not a name of this machine: the API answers "
                "localhost, 127.0.0.1 and [::1] (a web page that points its own name at this "
                "machine sends its own name); if you reach the API through that name, add it "
                "to [api].allowed_hosts in settings.toml"))
        if origin is not None and cors is None:
            raise ApiError(403, "origin_not_allowed", (
                f"Origin {_shown(origin)!r} may not use this API: web pages may call it only "
                "from localhost, 127.0.0.1 or [::1]; to allow this one, add it exactly as the "
                "browser sends it (scheme://host:port) to [api].allowed_origins in settings.toml"))
        method = scope["method"]
        if method == "OPTIONS" and cors is not None and b"access-control-request-method" in headers:
            await _preflight(headers)(scope, receive, send)
            return
        key = self.key(api)
        authorized = not key or key_matches(_presented_key(headers), key)
        scope.setdefault("state", {})["authorized"] = authorized
        # HEAD / carries no body: Ollama's clients probe it as a heartbeat, key or not.
        heartbeat = method == "HEAD" and scope["path"] == "/"
        if not authorized and scope["path"] not in OPEN_PATHS and not heartbeat:
            raise ApiError(401, "authentication_error", (
                "this mlx-tui API needs a key: send 'Authorization: Bearer KEY' with the "
                "[api].api_key of its settings.toml"), headers={"WWW-Authenticate": "Bearer"})
        if method in BODY_METHODS:
            if not _is_json(headers.get(b"content-type")):
                got = headers.get(b"content-type", b"").decode("latin-1") or "none"
                raise ApiError(415, "unsupported_media_type", (
                    f"send the body as JSON with 'Content-Type: application/json' (got "
                    f"{_shown(got)!r}): the types a browser may send from any site without "
                    "asking (text/plain, forms) are refused"))
            body = await _read_body(receive, headers, api.max_body_bytes)
            if body is None:
                return  # the client went away while sending
            receive = _replay(body, receive)
        await self.app(scope, receive, send)


def _finish_headers(message: Message, cors: str | None) -> Message:
    """A response's headers with CORS for an allowed origin, and ``Connection: close`` on a
    5xx (after a failure the connection may be in any state; say so instead of resetting it)."""
    headers = list(message.get("headers", []))
    if cors is not None:
        headers += [(b"access-control-allow-origin", cors.encode("latin-1")),
                    (b"access-control-expose-headers", b"Retry-After, retry-after-ms"),
                    (b"vary", b"Origin")]
    if message["status"] >= 500:
        headers = [(k, v) for k, v in headers if k.lower() != b"connection"]
        headers.append((b"connection", b"close"))
    return {**message, "headers": headers}


def _preflight(headers: dict[bytes, bytes]) -> Response:
    """The 204 answer to an allowed origin's preflight (its CORS origin is added on the way
    out): every method the API has, the headers it reads and those the page asks for."""
    asked = headers.get(b"access-control-request-headers", b"").decode("latin-1")
    names = list(CORS_HEADERS)
    for name in (n.strip() for n in asked.split(",")):
        if _TOKEN.match(name) and name.lower() not in {n.lower() for n in names}:
            names.append(name)
    answer = {
        "Access-Control-Allow-Methods": CORS_METHODS,
        "Access-Control-Allow-Headers": ", ".join(names),
        "Access-Control-Max-Age": str(CORS_MAX_AGE),
        "Vary": "Access-Control-Request-Method, Access-Control-Request-Headers",
    }
    if headers.get(b"access-control-request-private-network", b"").lower() == b"true":
        answer["Access-Control-Allow-Private-Network"] = "true"  # Chrome's local-network check
    return Response(status_code=204, headers=answer)


def _too_large(limit: int, size: str) -> ApiError:
    return ApiError(413, "request_too_large", (
        f"the request body is {size} bytes, over the limit of {limit:,} bytes (settings.toml "
        "api.max_body_bytes)"), headers={"Connection": "close"}, limit=limit)


async def _read_body(receive: Receive, headers: dict[bytes, bytes], limit: int) -> bytes | None:
    """The whole body, or None when the client left; a 413 when it passes ``limit``.

    Nothing past the limit is kept. A body up to :data:`DRAIN_BYTES` past it is still read
    (and dropped) before the 413, so the client, which is still sending, reads the answer
    instead of a reset; a longer one (declared, or counted as chunks arrive) is answered at
    once. The 413 closes the connection.
    """
    declared = headers.get(b"content-length", b"")
    if declared.isdigit() and int(declared) > limit + DRAIN_BYTES:
        raise _too_large(limit, f"{int(declared):,}")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size <= limit:
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
        if size > limit + DRAIN_BYTES:
            raise _too_large(limit, f"more than {size:,}")
    if size > limit:
        raise _too_large(limit, f"{size:,}")
    return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives the body once, then what the client sends next (a disconnect)."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replay() -> Message:
        return pending.pop() if pending else await receive()

    return replay
