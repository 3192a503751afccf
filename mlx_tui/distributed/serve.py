"""``mlx-tui serve --hostfile hosts.json --model NAME``: the API, with NAME served across hosts.

The same server as ``mlx-tui serve`` (cache, API, statistics), built with a
:class:`~.loader.DistributedLoader`: NAME loads across the hostfile's hosts (tensor parallel, or
``--pipeline``), every other model loads here as usual. NAME is loaded at start; the log says
``NAME ready on N hosts in S s`` once it can answer.

``cli.py`` wires it with two calls: :func:`add_distributed_arguments` on the ``serve`` parser
(this module imports only the standard library and :mod:`.hostfile` until it runs, so the app's
start stays fast), and :func:`run_distributed_serve` when ``--hostfile`` is given. ``python -m
mlx_tui.distributed.serve`` runs it alone (tests, benchmarks).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from pathlib import Path

from .hostfile import BACKENDS, Hostfile, HostfileError

__all__ = ["add_distributed_arguments", "run_distributed_serve", "main"]

log = logging.getLogger("mlx_tui.distributed")


def add_distributed_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``serve`` options for a model bigger than one machine."""
    group = parser.add_argument_group("a model across machines (MLX distributed)")
    group.add_argument("--hostfile", type=Path, default=None,
                       help="hosts to serve --model across, as mlx.launch reads them (this "
                            "machine first); see mlx.distributed_config")
    group.add_argument("--backend", choices=BACKENDS, default=None,
                       help="MLX distributed backend (default: the hostfile's, else ring)")
    group.add_argument("--pipeline", action="store_true",
                       help="split the model by layers instead of tensor parallel")
    group.add_argument("--rank-timeout", type=float, default=60.0,
                       help="seconds without word from the ranks before they count as lost")
    group.add_argument("--rank-python", default=None,
                       help="python of mlx-tui on every host (default: this one's path)")
    if "--model" not in parser._option_string_actions:  # the app's parser has its own
        # SUPPRESS: a --model given before the command (`mlx-tui --model X serve`) stays
        group.add_argument("--model", default=argparse.SUPPRESS,
                           help="the model to serve across the hosts")


def _fail(message: str) -> int:
    print(f"mlx-tui serve: {message}", file=sys.stderr)
    return 2


def run_distributed_serve(args: argparse.Namespace) -> int:
    """Serve until SIGTERM or SIGINT (exit 0); a bad hostfile, an unknown model or a taken
    port prints why and returns 2."""
    import mlx.core  # noqa: F401 - before any thread (see server.serve.run_serve)

    from ..core.catalog import UnknownModel
    from ..server.serve import ApiServerError, start_api
    from .group import GroupSettings
    from .loader import DistributedSpec
    from .wiring import build_runtime_with_hosts

    started = time.perf_counter()
    if not getattr(args, "model", None):
        return _fail("--hostfile needs --model NAME (the model to serve across the hosts)")
    try:
        hostfile = Hostfile.load(args.hostfile)
        backend = hostfile.resolved_backend(args.backend)
        hostfile.check(backend)
    except HostfileError as exc:
        return _fail(str(exc))
    spec = DistributedSpec(hostfile, args.pipeline, GroupSettings(
        backend=backend, python=args.rank_python or sys.executable,
        rank_timeout=args.rank_timeout))
    runtime, stop_hosts = build_runtime_with_hosts(args.settings, db_path=args.db,
                                                   extra={args.model: spec})
    cache = runtime.cache
    try:
        view = cache.get(args.model)
    except UnknownModel as exc:
        runtime.close()
        stop_hosts()
        return _fail(str(exc))
    try:
        server = start_api(runtime, args.host, args.port)
    except ApiServerError as exc:
        runtime.close()
        stop_hosts()
        return _fail(str(exc))
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("%s received, shutting down", signal.Signals(signum).name)
        stop.set()

    def on_loaded(future: object) -> None:
        error = future.exception()  # type: ignore[attr-defined]
        if error is not None:
            log.error("%s: not loaded: %s", view.name, error)
        else:
            log.info("%s ready on %d hosts in %.2f s", view.name, hostfile.size,
                     time.perf_counter() - started)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    code = 0
    try:
        runtime.start(preload=True)
        cache.load(view.name, reason="serve --hostfile").add_done_callback(on_loaded)
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


def main(argv: list[str] | None = None) -> int:
    """``python -m mlx_tui.distributed.serve``: the serve command's options, alone."""
    parser = argparse.ArgumentParser(prog="python -m mlx_tui.distributed.serve",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--settings", type=Path, default=None)
    parser.add_argument("--db", type=Path, default=None)
    parser.add_argument("--host", default=None)
    parser.add_argument("--port", type=int, default=None)
    add_distributed_arguments(parser)
    args = parser.parse_args(argv)
    if args.hostfile is None:
        parser.error("--hostfile is required")
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run_distributed_serve(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
