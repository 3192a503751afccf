"""The API process's side of one distributed model's ranks: :class:`RankGroup`.

It starts the ranks with ``mlx.launch`` (in a process group of their own, so they can always be
stopped together), listens on a private Unix socket for rank 0, and from then on:

* sends rank 0 its commands (load, evict, requests, cancels, shutdown) and delivers what comes
  back: request output to ``on_item``, memory readings (every rank's) to ``on_memory``;
* watches for a lost group, three ways: rank 0 says a collective failed (a peer died), the link
  closes (rank 0 died), or nothing arrives for ``rank_timeout`` seconds (``load_timeout``
  during a load; a peer that hangs leaves MLX's collectives waiting forever). Then it stops the
  launcher's process group, reads from ``mlx.launch``'s log which rank ended first, and calls
  ``on_lost`` with a :class:`~.errors.RankLost` naming that host.

One reader thread per group (never touching MLX) does all the listening; callers' threads only
send and wait on replies, each wait bounded.
"""

from __future__ import annotations

import logging
import os
import queue
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection, Listener
from pathlib import Path
from typing import Any, Callable

from .errors import DistributedLoadError, RankLost
from .hostfile import Hostfile
from .launcher import LauncherLog, free_port_range, launch_command
from .link import LINK_KEY_ENV
from .protocol import (Cancel, Evict, Evicted, Hello, Item, Load, Loaded, LoadFailed, LoadRefused,
                       Lost, Memory, RankReport, Shutdown, Submit)
from .views import RankView

__all__ = ["GroupSettings", "RankGroup"]

log = logging.getLogger("mlx_tui.distributed")

_REPLIES = (Loaded, LoadRefused, LoadFailed, Evicted)


@dataclass(frozen=True)
class GroupSettings:
    """How a group is started and watched (seconds)."""

    backend: str = "ring"
    python: str = sys.executable
    tick: float = 0.1
    idle_tick: float = 0.5
    probe_seconds: float = 1.0
    start_timeout: float = 120.0
    load_timeout: float = 1800.0
    rank_timeout: float = 60.0
    stop_timeout: float = 10.0
    lost_grace: float = 5.0
    env: dict[str, str] = field(default_factory=dict)


class RankGroup:
    """The ranks of one distributed model, seen from the API process. Thread-safe: any thread
    may call :meth:`load`, :meth:`evict`, :meth:`send`, :meth:`ranks` and :meth:`stop`."""

    def __init__(self, name: str, hostfile: Hostfile, settings: GroupSettings) -> None:
        self.name = name
        self.hostfile = hostfile
        self.settings = settings
        self.bind()
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._replies: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._views = [RankView(r, hostfile.label(r), "stopped") for r in range(hostfile.size)]
        self.state = "stopped"
        self.error: RankLost | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None
        self._folder: Path | None = None
        self._log = LauncherLog()
        self._output: threading.Thread | None = None
        self._heard = time.monotonic()
        self._stopping = False
        self._settled = threading.Event()

    def bind(self, *, on_item: Callable[[Item], None] = lambda item: None,
             on_memory: Callable[[list[RankView]], None] = lambda views: None,
             on_lost: Callable[[RankLost], None] = lambda error: None,
             on_tick: Callable[[], None] = lambda: None) -> None:
        """Who hears from the group (called on its reader thread): each request's output, every
        memory reading, the loss of the group, and a tick every tenth of a second."""
        self._on_item, self._on_memory, self._on_lost, self._on_tick = on_item, on_memory, on_lost, on_tick

    # -- views ---------------------------------------------------------------------------------
    def ranks(self) -> list[RankView]:
        with self._lock:
            return list(self._views)

    @property
    def alive(self) -> bool:
        return self.error is None and self.state in ("ready", "loading", "loaded")

    def wait_settled(self, timeout: float) -> bool:
        """Wait until a lost group is fully stopped and ``on_lost`` has run; True if so."""
        return self._settled.wait(timeout)

    def _set_views(self, reports: tuple[RankReport, ...], state: str, *, keep_shard: bool = True,
                   errors: bool = False) -> None:
        with self._lock:
            views = list(self._views)
            for r in reports:
                old = views[r.rank]
                views[r.rank] = replace(
                    old, state=state, memory=r.memory, hostname=r.hostname, pid=r.pid,
                    shard_bytes=r.shard_bytes if keep_shard else 0,
                    error=r.error if errors else None)
            self._views = views

    def _set_state(self, state: str) -> None:
        with self._lock:
            self.state = state
            self._views = [replace(v, state=state) if v.state not in ("failed",) else v
                           for v in self._views]

    # -- start ---------------------------------------------------------------------------------
    def start(self) -> None:
        """Launch the ranks and wait until every one has said hello (``start_timeout``)."""
        s = self.settings
        self._folder = Path(tempfile.mkdtemp(prefix="mlx-tui-ranks-"))
        os.chmod(self._folder, 0o700)
        address = str(self._folder / "link")
        key = secrets.token_bytes(32)
        listener = Listener(address, family="AF_UNIX", authkey=key)
        hostfile = self.hostfile.for_launch(self._folder / "hosts.json", s.backend)
        rank_argv = [s.python, "-m", "mlx_tui.distributed.rank", "--link", address,
                     "--backend", s.backend, "--tick", str(s.tick), "--idle-tick",
                     str(s.idle_tick), "--probe-seconds", str(s.probe_seconds)]
        env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **s.env,
               LINK_KEY_ENV: key.hex()}
        port = free_port_range(self.hostfile.size) if s.backend != "mpi" else None
        command = launch_command(hostfile, s.backend, rank_argv, env, port)
        self._log = LauncherLog()
        self._set_state("starting")
        self.error = None
        self._stopping = False
        log.info("%s: starting %d ranks with mlx.launch (%s backend)", self.name,
                 self.hostfile.size, s.backend)
        self._process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            start_new_session=True)  # its own process group: stopped together, never orphaned
        self._output = threading.Thread(target=self._read_output, name=f"{self.name}-launcher",
                                        daemon=True)
        self._output.start()
        try:
            self._conn = self._accept(listener, s.start_timeout)
            hello = self._wait_for(Hello, s.start_timeout)
        except DistributedLoadError:
            self._kill()
            raise
        finally:
            listener.close()
        self._set_views(hello.ranks, "ready")
        self._set_state("ready")
        self._heard = time.monotonic()
        threading.Thread(target=self._read_link, name=f"{self.name}-link", daemon=True).start()
        log.info("%s: ranks up: %s", self.name, ", ".join(
            f"{v.rank}={v.host} (pid {v.pid})" for v in self.ranks()))

    def _startup_failure(self, what: str) -> DistributedLoadError:
        tail = "; ".join(self._log.tail[-6:]) or "no output"
        return DistributedLoadError(f"{self.name}: the ranks did not start ({what}); mlx.launch "
                                    f"said: {tail}")

    def _accept(self, listener: Listener, timeout: float) -> Connection:
        accepted: list[Connection] = []
        failed: list[BaseException] = []

        def accept() -> None:
            try:
                accepted.append(listener.accept())
            except BaseException as exc:  # noqa: BLE001 - closed on timeout, or a bad key
                failed.append(exc)

        waiter = threading.Thread(target=accept, name=f"{self.name}-accept", daemon=True)
        waiter.start()
        deadline = time.monotonic() + timeout
        while waiter.is_alive() and time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                break
            waiter.join(0.05)
        if not accepted:
            listener.close()
            waiter.join(1.0)
        if accepted:
            return accepted[0]
        if self._process is not None and self._process.poll() is not None:
            self._output and self._output.join(2.0)
            raise self._startup_failure("mlx.launch exited")
        raise self._startup_failure(f"rank 0 did not connect within {timeout:g} s")

    def _wait_for(self, kind: type, timeout: float) -> Any:
        assert self._conn is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self._conn.poll(0.1):
                    message = self._conn.recv()
                    if isinstance(message, kind):
                        return message
                    continue
            except (EOFError, OSError):
                break
            if self._process is not None and self._process.poll() is not None:
                break
        self._output and self._output.join(2.0)
        raise self._startup_failure(f"no {kind.__name__} from rank 0 within {timeout:g} s")

    # -- the launcher's output -------------------------------------------------------------------
    def _read_output(self) -> None:
        process = self._process
        assert process is not None and process.stdout is not None and process.stderr is not None
        selector = selectors.DefaultSelector()
        buffers: dict[int, bytes] = {}
        for stream in (process.stdout, process.stderr):
            selector.register(stream, selectors.EVENT_READ)
            buffers[stream.fileno()] = b""
        open_streams = 2
        while open_streams:
            for key, _ in selector.select(timeout=1.0):
                fd = key.fileobj.fileno()  # type: ignore[union-attr]
                chunk = os.read(fd, 65536)
                if not chunk:
                    selector.unregister(key.fileobj)
                    open_streams -= 1
                    lines = [buffers.pop(fd)]
                else:
                    *lines, buffers[fd] = (buffers[fd] + chunk).split(b"\n")
                for raw in lines:
                    line = raw.decode("utf-8", "replace")
                    self._log.feed(line)
                    if line.strip():
                        log.info("%s | %s", self.name, line.rstrip())
        selector.close()

    # -- the link --------------------------------------------------------------------------------
    def _read_link(self) -> None:
        conn = self._conn
        assert conn is not None
        while not self._stopping:
            try:
                ready = conn.poll(0.1)
                message = conn.recv() if ready else None
            except (EOFError, OSError):
                if not self._stopping:
                    self._lose("the link to rank 0 closed")
                return
            now = time.monotonic()
            if message is not None:
                self._heard = now
                self._dispatch(message)
                if isinstance(message, Lost):
                    return
            else:
                limit = self.settings.load_timeout if self.state == "loading" else self.settings.rank_timeout
                if self.alive and now - self._heard > limit:
                    self._lose(f"no word from the ranks for {limit:g} s (a host may be frozen or "
                               "unreachable)", hung=True)
                    return
            try:
                self._on_tick()
            except Exception:  # noqa: BLE001 - a listener must not stop the link
                log.exception("%s: tick listener failed", self.name)

    def _dispatch(self, message: Any) -> None:
        if isinstance(message, Item):
            self._on_item(message)
        elif isinstance(message, Memory):
            self._set_views(message.ranks, self.state if self.state != "starting" else "ready")
            self._on_memory(self.ranks())
        elif isinstance(message, Lost):
            self._lose(f"rank 0 reports: {message.error}")
        elif isinstance(message, _REPLIES):
            self._replies.put(message)

    # -- requests ------------------------------------------------------------------------------
    def send(self, command: Submit | Cancel) -> None:
        """Hand rank 0 a request or a cancel; raises :class:`RankLost` when the group is gone."""
        self._send(command)

    def _send(self, command: Any) -> None:
        conn = self._conn
        if self.error is not None:
            raise self.error
        if conn is None or not self.alive:
            raise RankLost(f"{self.name}: the ranks are not running")
        with self._send_lock:
            try:
                conn.send(command)
            except (OSError, ValueError) as exc:
                raise RankLost(f"{self.name}: the link to rank 0 is closed ({exc})") from None

    def _reply(self, timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            try:
                reply = self._replies.get(timeout=0.1)
            except queue.Empty:
                reply = None
            if isinstance(reply, RankLost):
                raise reply
            if reply is not None:
                return reply
            if self.error is not None:
                raise self.error
            if time.monotonic() > deadline:
                self._lose(f"{what} took longer than {timeout:g} s", hung=True)
                raise self.error or RankLost(f"{self.name}: {what} timed out")

    def load(self, command: Load) -> Loaded | LoadRefused | LoadFailed:
        """Load on every rank; the reply says which rank refused or failed, and why."""
        self._set_state("loading")
        self._heard = time.monotonic()
        try:
            self._send(command)
            reply = self._reply(self.settings.load_timeout, "loading")
        except RankLost:
            raise
        if isinstance(reply, Loaded):
            self._set_views(reply.ranks, "loaded")
            self._set_state("loaded")
        else:
            self._set_views(reply.ranks, "ready", keep_shard=False, errors=True)
            self._set_state("ready")
        return reply

    def evict(self) -> Evicted | None:
        """Free every rank's shard; None when the group was not loaded or is gone."""
        if self.state != "loaded":
            return None
        self._send(Evict())
        try:
            reply = self._reply(self.settings.stop_timeout + self.settings.rank_timeout, "unloading")
        except RankLost:
            return None
        self._set_views(reply.ranks, "ready", keep_shard=False)
        self._set_state("ready")
        return reply

    # -- ending --------------------------------------------------------------------------------
    def _lose(self, why: str, hung: bool = False) -> None:
        with self._lock:
            if self.error is not None or self._stopping:
                return
            self.error = RankLost(f"{self.name}: {why}")
        process = self._process
        if process is not None and not hung:
            try:  # mlx.launch stops the other ranks itself and logs which rank ended first
                process.wait(self.settings.lost_grace)
            except subprocess.TimeoutExpired:
                pass
        self._kill()
        culprit = None if hung else self._log.culprit()
        if culprit is not None:
            host = self.hostfile.label(culprit.rank)
            error = RankLost(f"{self.name}: rank {culprit.rank} on {host} {culprit.describe()}; "
                             "the model was unloaded on every host", host)
        else:
            hosts = ", ".join(self.hostfile.label(r) for r in range(self.hostfile.size))
            error = RankLost(f"{self.name}: the ranks on {hosts} were stopped: {why}")
        with self._lock:
            self.error = error
            self.state = "failed"
            self._views = [replace(v, state="failed" if culprit and v.rank == culprit.rank else "stopped",
                                   shard_bytes=0, error=error.args[0] if culprit and v.rank == culprit.rank else None)
                           for v in self._views]
        log.error("%s", error)
        self._replies.put(error)
        try:
            self._on_lost(error)
        except Exception:  # noqa: BLE001
            log.exception("%s: lost listener failed", self.name)
        finally:
            self._settled.set()

    def _kill(self) -> None:
        process = self._process
        if process is None:
            return
        for sig, wait in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 3.0)):
            if process.poll() is not None:
                break
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                break
            try:
                process.wait(wait)
            except subprocess.TimeoutExpired:
                continue
        try:  # the launcher's session may still hold ranks that outlived it
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self._output is not None:
            self._output.join(3.0)
        if process.stdin is not None:
            process.stdin.close()

    def stop(self) -> None:
        """Shut the ranks down (they exit 0), or stop them after ``stop_timeout``."""
        process = self._process
        if process is None:
            return
        alive = self.alive
        self._stopping = True  # the link closing now is the shutdown, not a lost rank
        if alive:
            try:
                self._send(Shutdown())
            except RankLost:
                pass
        try:
            process.wait(self.settings.stop_timeout)
        except subprocess.TimeoutExpired:
            log.warning("%s: ranks did not shut down in %g s; stopping them", self.name,
                        self.settings.stop_timeout)
        self._kill()
        if self._conn is not None:
            self._conn.close()
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
        with self._lock:
            if self.state != "failed":
                self.state = "stopped"
                self._views = [replace(v, state="stopped", shard_bytes=0) for v in self._views]
        self._process = None
        self._settled.set()
