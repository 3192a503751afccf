"""Running the API: :func:`start_api` is the one way to start it (the app does, and
:func:`run_serve`, ``mlx-tui serve``, which keeps it in the foreground until SIGTERM/SIGINT);
:class:`ApiServer` is uvicorn in a daemon thread; :func:`api_url` is how an address is
written (``mlx-tui status`` uses it too).

The socket is bound before uvicorn starts, so a taken port is a :class:`PortInUse` raised by
:meth:`ApiServer.start` in the caller's thread, not a log line in a background thread.
uvicorn and Starlette are imported when a server is built, not with this module, so
``mlx-tui status`` can use :func:`api_url` without loading the server stack.
"""

from __future__ import annotations

import argparse
import errno
import ipaddress
import logging
import signal
import socket
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Mapping

from ..core.runtime import Runtime
from .ollama_listener import listening_sockets

if TYPE_CHECKING:
    import uvicorn

__all__ = ["ApiServerError", "PortInUse", "UnsafeBind", "ApiServer", "start_api", "run_serve",
           "is_loopback", "api_url"]

log = logging.getLogger("mlx_tui.server")

START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0


class ApiServerError(RuntimeError):
    """The API cannot start; the message says what to change."""


class PortInUse(ApiServerError):
    """Another process listens on the port (often a second mlx-tui, or Ollama)."""


class UnsafeBind(ApiServerError):
    """A bind address other than loopback without ``[api].api_key``."""


def is_loopback(host: str) -> bool:
    """True for ``localhost``, ``127.x.x.x`` and ``::1``: addresses only this machine reaches."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


_WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


def api_url(host: str, port: int, *, connectable: bool = False) -> str:
    """``http://HOST:PORT`` (``[HOST]`` for IPv6). With ``connectable``, a wildcard bind
    (``0.0.0.0``, ``::``) becomes the loopback address a client on this machine connects to."""
    if connectable:
        host = _WILDCARDS.get(host, host)
    host = f"[{host.strip('[]')}]" if ":" in host else host
    return f"http://{host}:{port}"


def _bind(host: str, port: int) -> socket.socket:
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as exc:
        raise ApiServerError(f"cannot listen on {host!r}: {exc.strerror}; check [api].host") from exc
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortInUse(
                f"port {port} on {host} is in use (another mlx-tui or Ollama?); "
                "choose another with --port or [api].port"
            ) from exc
        raise ApiServerError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    return sock


class ApiServer:
    """The HTTP API over one runtime's cache, served by uvicorn in a daemon thread.

    ``start()`` binds (raising :class:`PortInUse` or :class:`UnsafeBind` at once) and returns
    when the server accepts requests; ``stop()`` cancels replies under way and waits for the
    thread; ``with ApiServer(...) as server:`` does both. It neither starts nor closes the
    runtime: its owner does.
    """

    def __init__(self, runtime: Runtime, host: str, port: int, api_key: str = "") -> None:
        from .app import create_app  # the server stack loads with the first server

        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ApiServerError(f"port must be a port number 1-65535, got {port}; "
                                 "check --port or [api].port")
        self.runtime = runtime
        self.host = host
        self.port = port
        self.api_key = api_key
        self.app = create_app(runtime, api_key)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        """Where it listens, as bound (``http://0.0.0.0:11435`` for every interface)."""
        return api_url(self.host, self.port)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        import uvicorn

        if self._thread is not None:
            return
        if not self.api_key and not is_loopback(self.host):
            raise UnsafeBind(
                f"refusing to serve the API on {self.host} without an API key: anyone on the "
                "network could use it; set [api].api_key in settings.toml (clients then send "
                "'Authorization: Bearer KEY') or bind to 127.0.0.1"
            )
        sock = _bind(self.host, self.port)
        self.port = sock.getsockname()[1]  # the real one when asked for port 0
        socks = listening_sockets(sock, self.host, self.runtime.settings_store.settings.api.ollama_port, _bind)
        config = uvicorn.Config(
            self.app, log_config=None, access_log=False, lifespan="off", http="h11",
            ws="none", loop="asyncio", timeout_graceful_shutdown=3,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._serve, args=(socks,), name="api-server",
                                        daemon=True)
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT
        while not self._server.started and self._thread.is_alive() and time.monotonic() < deadline:
            self._thread.join(0.01)
        if not self._server.started:
            self._server.should_exit = True
            self._thread = None
            why = self._error or f"not serving after {START_TIMEOUT:g} s"
            raise ApiServerError(f"the API did not start on {self.url}: {why}")
        log.info("API listening on %s%s", self.url, " (API key required)" if self.api_key else "")

    def _serve(self, socks: list[socket.socket]) -> None:
        assert self._server is not None
        try:
            self._server.run(sockets=socks)
        except BaseException as exc:  # noqa: BLE001 - reported by start() or in the log
            self._error = exc
            log.exception("the API server stopped")
        finally:
            for sock in socks:
                sock.close()

    def stop(self) -> None:
        """Cancel the replies under way, stop serving, and wait for the server thread."""
        if self._server is None or self._thread is None:
            return
        self.app.state.generations.cancel_all()
        self._server.should_exit = True
        self._thread.join(STOP_TIMEOUT)
        self._thread = None
        log.info("API on %s stopped", self.url)

    def __enter__(self) -> "ApiServer":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_api(runtime: Runtime, host: str | None = None, port: int | None = None) -> ApiServer:
    """Build and start the API over ``runtime`` with its ``[api]`` settings (``host`` and
    ``port`` override them); returns it serving. Raises :class:`ApiServerError`
    (:class:`PortInUse`, :class:`UnsafeBind`) with what to change."""
    api = runtime.settings_store.settings.api
    server = ApiServer(runtime, host or api.host, api.port if port is None else port,
                       api_key=api.api_key)
    server.start()
    return server


def run_serve(args: argparse.Namespace, extra: Mapping[str, Any] | None = None,
              on_started: Callable[[Runtime], None] | None = None) -> int:
    """``mlx-tui serve``: the API in the foreground until SIGTERM or SIGINT; exit code 0.

    A taken port or an unsafe bind prints why on stderr and returns 2. Models that settings.toml
    (``[models.NAME]`` with a hostfile) or ``extra`` (``--hostfile``) serve across machines
    load through their ranks; ``on_started`` runs once the API answers.
    """
    # Imported here, before any thread: a memory probe that runs while a load thread is
    # still importing mlx.core meets a half-initialised module (core/memory.py, reported).
    import mlx.core  # noqa: F401

    from ..distributed.wiring import build_runtime_with_hosts

    runtime, stop_hosts = build_runtime_with_hosts(args.settings, db_path=args.db, extra=extra)
    try:
        server = start_api(runtime, args.host, args.port)
    except ApiServerError as exc:
        runtime.close()
        stop_hosts()
        print(f"mlx-tui serve: {exc}", file=sys.stderr)
        return 2
    for problem in runtime.problems:
        print(f"mlx-tui serve: {problem}", file=sys.stderr)
    store = runtime.settings_store
    log.info("settings: %s (%s); preloading %s", store.path, store.source,
             ", ".join(runtime.monitor.preload_names()) or "nothing")
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("%s received, shutting down", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    code = 0
    try:
        runtime.start(preload=True)
        if on_started is not None:
            on_started(runtime)
        while not stop.wait(0.5):
            if not server.running:
                log.error("the API server thread ended; exiting")
                code = 1
                break
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        server.stop()
        runtime.close()
        stop_hosts()
    return code
