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
import sys
import time
from pathlib import Path
from typing import Any

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
    """``mlx-tui serve --hostfile``: :func:`mlx_tui.server.serve.run_serve` with ``--model``
    served across the hostfile's hosts and loaded at start (the log says ``NAME ready on N hosts
    in S s``). A bad hostfile or an unknown model prints why and returns 2."""
    from ..core.catalog import UnknownModel
    from ..server.serve import run_serve
    from .group import GroupSettings
    from .loader import DistributedSpec

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
        backend=backend, python=args.rank_python or sys.executable, rank_timeout=args.rank_timeout))

    def load_it(runtime: Any) -> None:
        try:
            name = runtime.cache.get(args.model).name
        except UnknownModel as exc:
            log.error("%s", exc)
            return

        def on_loaded(future: Any) -> None:
            error = future.exception()
            if error is not None:
                log.error("%s: not loaded: %s", name, error)
            else:
                log.info("%s ready on %d hosts in %.2f s", name, hostfile.size, time.perf_counter() - started)

        runtime.cache.load(name, reason="serve --hostfile").add_done_callback(on_loaded)

    return run_serve(args, extra={args.model: spec}, on_started=load_it)


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
