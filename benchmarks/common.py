"""What the benchmark modules share: logging, the offline environment, work folders and the
model folders built in them, settings files, the machine's load, ratio and verdict formatting,
and the ``main()`` that runs one module on its own (``python -m benchmarks.NAME [--quick]``).
For the benchmarks that talk to real servers: server processes (``mlx-tui serve``,
``mlx_lm.server``, an ``ApiServer`` in a child process) with their threads, RSS and CPU time, an
OpenAI chat client that records time to first token and usage, percentiles, ``/metrics`` sums.

Nothing here measures anything; each module keeps its own method and its own report.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from mlx_tui.devtools.settings_files import write_isolated_settings as write_settings

__all__ = [
    "OFFLINE", "go_offline", "offline_env", "logger", "machine_load", "verdict", "ratio",
    "ratio_summary", "spread", "work_folder", "weight_files", "read_files", "warm_page_cache",
    "model_desc", "write_settings", "main",
    "MLX_TUI", "ServerProcess", "server_process", "mlx_tui_serve", "mlx_lm_server", "api_child",
    "serve_child", "StreamResult", "chat_request", "percentile", "metric_totals", "wait_loaded",
]

ROOT = Path(__file__).resolve().parent.parent
"""The repository (the working directory of the child processes a benchmark starts)."""

OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
"""Benchmarks never touch the network."""


def go_offline() -> None:
    """Make this process (and what it starts) offline, unless told otherwise already."""
    for key, value in OFFLINE.items():
        os.environ.setdefault(key, value)


def offline_env(**extra: str) -> dict[str, str]:
    """This process's environment for a child process, forced offline."""
    return dict(os.environ, **OFFLINE, **extra)


def logger(name: str) -> Callable[[str], None]:
    """``log(message)`` writing ``[name] message`` to stderr (stdout is the report's)."""

    def log(message: str) -> None:
        print(f"[{name}] {message}", file=sys.stderr, flush=True)

    return log


def machine_load() -> str:
    """The load average, for the report next to figures that other jobs can move."""
    try:
        one, five, _ = os.getloadavg()
    except OSError:
        return "n/a"
    return f"{one:.2f} (1 min) / {five:.2f} (5 min)"


# --------------------------------------------------------------------------- formatting


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def ratio(value: float, base: float, digits: int = 2) -> str:
    """``value / base`` as ``1.23x``; ``-`` when there is no base."""
    return f"{value / base:.{digits}f}x" if base > 0 else "-"


def ratio_summary(ratios: Sequence[float]) -> str:
    """Median of per-repeat ratios and their range (not the ratio of the two medians)."""
    return (f"{statistics.median(ratios):.3f}x (median of per-repeat ratios, range "
            f"{min(ratios):.3f}-{max(ratios):.3f})")


def spread(values: Sequence[float], digits: int = 3) -> str:
    """``min-max``."""
    return f"{min(values):.{digits}f}-{max(values):.{digits}f}"


# --------------------------------------------------------------------------- folders and models


@contextmanager
def work_folder(prefix: str) -> Iterator[Path]:
    """A temporary folder for a run's models, settings and databases, removed at the end."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def weight_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("model*.safetensors"))


def read_files(files: Sequence[Path]) -> int:
    """Read every file into a fresh buffer (as a load must allocate); returns bytes read."""
    total = 0
    for path in files:
        data = path.read_bytes()
        total += len(data)
        del data
    return total


def warm_page_cache(folder: Path) -> None:
    """Read every file of ``folder`` once: the software is measured, not the disk."""
    read_files([p for p in folder.iterdir() if p.is_file()])


def model_desc(folder: Path, dtype: str, *, vocab: bool = True) -> str:
    """``0.07 GB float32 llama (hidden 512, 4 layers, vocab 1024), random weights``."""
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    size = sum(p.stat().st_size for p in weight_files(folder))
    shape = f"hidden {config['hidden_size']}, {config['num_hidden_layers']} layers"
    if vocab:
        shape += f", vocab {config['vocab_size']}"
    return f"{size / 1e9:.2f} GB {dtype} llama ({shape}), random weights"


# --------------------------------------------------------------------------- standalone


def main(doc: str | None, run: Callable[..., str], quick_help: str,
         argv: Sequence[str] | None = None,
         child: Callable[[dict[str, Any]], None] | None = None) -> None:
    """Run one benchmark module on its own and print its section.

    ``doc`` is the module's docstring (its first line is the help's description); a module
    that runs part of itself in a child process passes ``child``, which ``--child JSON`` calls.
    """
    parser = argparse.ArgumentParser(description=(doc or "").splitlines()[0] if doc else None)
    parser.add_argument("--quick", action="store_true", help=quick_help)
    if child is not None:
        parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if child is not None and args.child:
        child(json.loads(args.child))
        return
    go_offline()
    print(run(quick=args.quick))


# --------------------------------------------------------------------------- servers and clients
# Used by the benchmarks that talk to real servers over loopback (soak, batching, prompt_reuse):
# `mlx-tui serve` (or an ApiServer in a child process of the benchmark), and `mlx_lm.server`
# started on the same model folder as the baseline.

MLX_TUI = Path(sys.executable).with_name("mlx-tui")
"""The ``mlx-tui`` command of this interpreter's environment."""

SERVER_START_SECONDS = 180.0
"""How long a server may take to answer its first request (imports on a busy machine)."""


@dataclass(eq=False)
class ServerProcess:
    """A server process this benchmark started: where it listens, the model name requests
    use, and where its output goes. Owned by the ``with`` block that started it."""

    name: str
    proc: "subprocess.Popen[bytes]"
    url: str
    model: str
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def threads(self) -> int:
        """OS threads of the process now (``/proc/PID/task``; psutil elsewhere)."""
        try:
            return len(os.listdir(f"/proc/{self.pid}/task"))
        except OSError:
            import psutil

            return psutil.Process(self.pid).num_threads()

    def rss_bytes(self) -> int:
        import psutil

        return int(psutil.Process(self.pid).memory_info().rss)

    def cpu_seconds(self) -> float:
        """User + system CPU time of the process so far (every thread)."""
        import psutil

        t = psutil.Process(self.pid).cpu_times()
        return float(t.user + t.system)

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def _answers(url: str) -> bool:
    import httpx

    try:
        return httpx.get(url, timeout=2).status_code < 500
    except httpx.HTTPError:
        return False


@contextmanager
def server_process(name: str, argv: Sequence[str], url: str, model: str, log_path: Path, *,
                   ready_path: str = "/health", timeout: float = SERVER_START_SECONDS,
                   env: dict[str, str] | None = None) -> Iterator[ServerProcess]:
    """Start ``argv`` (output to ``log_path``), wait until ``url + ready_path`` answers, yield
    it; at the end SIGTERM, then SIGKILL after 30 s. Raises with the log's tail when the
    process exits or does not answer in time."""
    import signal
    import time

    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        proc = subprocess.Popen(list(argv), stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                                env=env if env is not None else offline_env())
    server = ServerProcess(name, proc, url, model, log_path)
    try:
        deadline = time.monotonic() + timeout
        while not _answers(url + ready_path):
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited ({proc.returncode}) before serving:\n"
                                   f"{server.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not answer {ready_path} in {timeout:.0f} s:\n"
                                   f"{server.log_tail()}")
            time.sleep(0.1)
        try:
            yield server
        except BaseException as exc:
            if proc.poll() is not None:  # it died under us: say how, not just "connection refused"
                raise RuntimeError(f"{name} exited ({proc.returncode}) while in use:\n"
                                   f"{server.log_tail(60)}") from exc
            raise
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def mlx_tui_serve(settings: Path, db: Path, model: str, log_path: Path,
                  port: int | None = None) -> AbstractContextManager[ServerProcess]:
    """``mlx-tui --settings S --db D serve --port P`` as a user runs it."""
    from mlx_tui.devtools.ports import free_port

    port = port or free_port()
    argv = [str(MLX_TUI), "--settings", str(settings), "--db", str(db), "serve", "--port", str(port)]
    return server_process("mlx-tui serve", argv, f"http://127.0.0.1:{port}", model, log_path)


def mlx_lm_server(model_path: Path, log_path: Path, *extra: str,
                  port: int | None = None) -> AbstractContextManager[ServerProcess]:
    """``python -m mlx_lm.server --model PATH`` on loopback (requests name the model by its
    path, as mlx_lm.server expects)."""
    from mlx_tui.devtools.ports import free_port

    port = port or free_port()
    argv = [sys.executable, "-m", "mlx_lm.server", "--model", str(model_path),
            "--host", "127.0.0.1", "--port", str(port), *extra]
    return server_process("mlx_lm.server", argv, f"http://127.0.0.1:{port}", str(model_path),
                          log_path, ready_path="/health")


def api_child(module: str, config: dict[str, Any], model: str,
              log_path: Path) -> AbstractContextManager[ServerProcess]:
    """An :class:`~mlx_tui.server.serve.ApiServer` over ``build_runtime`` in a child process
    (``python -m benchmarks.MODULE --child JSON``, which must pass :func:`serve_child` as
    ``child`` to :func:`main`): for a run that needs what the command line does not offer, such
    as a memory probe with a small fake total (``config["probe"]``)."""
    from mlx_tui.devtools.ports import free_port

    config = dict(config)
    config.setdefault("port", free_port())
    argv = [sys.executable, "-m", f"benchmarks.{module}", "--child", json.dumps(config)]
    return server_process(f"ApiServer ({module} child)", argv,
                          f"http://127.0.0.1:{config['port']}", model, log_path)


def serve_child(config: dict[str, Any]) -> None:
    """The child of :func:`api_child`: ``build_runtime(config["settings"], db_path=...)``
    (with ``FixedMemoryProbe(**config["probe"])`` when given), an ``ApiServer`` on
    ``config["port"]``, the runtime started, until SIGTERM or SIGINT; then the server stops
    and the runtime closes, as ``mlx-tui serve`` does."""
    import signal
    import threading

    import mlx.core  # noqa: F401 - before any thread, as run_serve does

    from mlx_tui.core.memory import FixedMemoryProbe
    from mlx_tui.core.runtime import build_runtime
    from mlx_tui.server.serve import ApiServer

    go_offline()
    probe = FixedMemoryProbe(**config["probe"]) if config.get("probe") else None
    runtime = build_runtime(Path(config["settings"]), db_path=Path(config["db"]), probe=probe)
    server = ApiServer(runtime, "127.0.0.1", int(config["port"]))
    server.start()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        runtime.start(preload=True)
        while not stop.wait(0.5) and server.running:
            pass
    finally:
        server.stop()
        runtime.close()


@dataclass
class StreamResult:
    """One chat request as its client saw it (``time.perf_counter`` stamps)."""

    started: float
    ended: float = 0.0
    first_token: float | None = None
    status: int = 0
    error: str = ""
    text: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    timings: dict[str, Any] | None = None  # mlx-tui's own figures of the reply, when sent

    @property
    def ok(self) -> bool:
        return not self.error and self.status == 200

    @property
    def ttft(self) -> float:
        """Request sent to the first piece of reply text received."""
        return (self.first_token if self.first_token is not None else self.ended) - self.started

    @property
    def seconds(self) -> float:
        return self.ended - self.started


def _usage_into(result: StreamResult, usage: Any) -> None:
    if isinstance(usage, dict):
        result.prompt_tokens = int(usage.get("prompt_tokens") or 0)
        result.completion_tokens = int(usage.get("completion_tokens") or 0)
        details = usage.get("prompt_tokens_details") or {}
        result.cached_tokens = int(details.get("cached_tokens") or 0) if isinstance(details, dict) else 0


def chat_request(client: Any, server: ServerProcess, messages: Sequence[dict[str, Any]], *,
                 max_tokens: int, stream: bool = True, temperature: float = 0.0,
                 timeout: float = 600.0, tools: Sequence[dict[str, Any]] = ()) -> StreamResult:
    """``POST /v1/chat/completions`` (OpenAI's format; streamed as SSE with usage by default)
    with an ``httpx.Client``; never raises: a failure is in ``error``. With ``stream`` the
    first token is the first chunk carrying reply text (or, with ``tools``, a tool call);
    without, the whole reply."""
    import time

    import httpx

    body: dict[str, Any] = {"model": server.model, "messages": list(messages),
                            "max_tokens": max_tokens, "temperature": temperature, "stream": stream}
    if tools:
        body["tools"] = list(tools)
    if stream:
        body["stream_options"] = {"include_usage": True}
    result = StreamResult(time.perf_counter())
    try:
        if not stream:
            reply = client.post(f"{server.url}/v1/chat/completions", json=body, timeout=timeout)
            result.status = reply.status_code
            result.ended = result.first_token = time.perf_counter()
            data = reply.json()
            if reply.status_code != 200:
                result.error = f"HTTP {reply.status_code}: {str(data)[:200]}"
                return result
            result.text = data["choices"][0]["message"].get("content") or ""
            _usage_into(result, data.get("usage"))
            if isinstance(data.get("timings"), dict):
                result.timings = data["timings"]
            return result
        parts: list[str] = []
        with client.stream("POST", f"{server.url}/v1/chat/completions", json=body,
                           timeout=timeout) as reply:
            result.status = reply.status_code
            if reply.status_code != 200:
                reply.read()
                result.error = f"HTTP {reply.status_code}: {reply.text[:200]}"
                return result
            for line in reply.iter_lines():
                if not line.startswith("data:"):
                    continue  # blank lines, ": keepalive" comments
                payload = line[5:].strip()
                if payload == "[DONE]":
                    break
                chunk = json.loads(payload)
                if "error" in chunk:
                    result.error = f"error in stream: {str(chunk['error'])[:200]}"
                for choice in chunk.get("choices") or ():
                    delta = choice.get("delta") or {}
                    piece = delta.get("content") or ""
                    if (piece or delta.get("tool_calls")) and result.first_token is None:
                        result.first_token = time.perf_counter()
                    parts.append(piece)
                if chunk.get("usage"):
                    _usage_into(result, chunk["usage"])
                if isinstance(chunk.get("timings"), dict):
                    result.timings = chunk["timings"]
        result.text = "".join(parts)
    except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"[:300]
    finally:
        result.ended = time.perf_counter()
    return result


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by the nearest-rank method; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


def metric_totals(server: ServerProcess, names: Sequence[str]) -> dict[str, float]:
    """Sums over every label of the Prometheus counters or gauges ``names`` (counters named
    without ``_total``) from the server's ``GET /metrics``; a metric not exported reads 0."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    totals = dict.fromkeys(names, 0.0)
    text = httpx.get(f"{server.url}/metrics", timeout=30).text
    for family in text_string_to_metric_families(text):
        if family.name in totals:
            totals[family.name] += sum(s.value for s in family.samples
                                       if s.name in (family.name, family.name + "_total"))
    return totals


def wait_loaded(server: ServerProcess, model: str, timeout: float = SERVER_START_SECONDS) -> float:
    """Wait until mlx-tui's ``GET /health`` lists ``model`` as loaded (a preload finishing),
    without sending it a request; returns the seconds waited."""
    import time

    import httpx

    started = time.monotonic()
    while True:
        try:
            cached = httpx.get(f"{server.url}/health", timeout=5).json().get("cached_models", [])
        except (httpx.HTTPError, ValueError):
            cached = []
        if any(m.get("name") == model and m.get("state") == "loaded" for m in cached):
            return time.monotonic() - started
        if server.proc.poll() is not None or time.monotonic() - started > timeout:
            raise RuntimeError(f"{model} was not loaded by {server.name} in {timeout:.0f} s:\n"
                               f"{server.log_tail()}")
        time.sleep(0.1)
