"""Entry point: ``mlx-tui`` (the app), ``mlx-tui serve`` (headless API), ``mlx-tui status``.

The options every command takes (``--settings``, ``--db``, ``--log-file``) and the app's own
(``--model``, ``--no-api``) are accepted before or after the command: ``mlx-tui --settings X
serve`` and ``mlx-tui serve --settings X`` are the same. Imports stay lazy: the app's first
frame must not wait for ``mlx_lm`` or the server stack.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from . import __version__

__all__ = ["main", "build_parser", "port_number"]

NEEDS_A_TERMINAL = (
    "mlx-tui: the app needs a terminal, and {what} is not one; run it in a terminal, or "
    "run `mlx-tui serve` for the HTTP API alone"
)


def port_number(text: str) -> int:
    """An argparse type: a TCP port 1-65535, checked as ``[api].port`` is."""
    from .core.settings import SettingsError, check_port

    try:
        return check_port("--port", int(text))
    except SettingsError as exc:
        raise argparse.ArgumentTypeError(exc.problem) from None
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a port number 1-65535, got {text!r}") from None


def _common_options(app: bool) -> argparse.ArgumentParser:
    """The options of every command (and, with ``app``, the app's), for use before or after
    the command. Defaults are set once in :func:`_defaults`, so a value given before the
    command is not reset by the command's parser."""
    common = argparse.ArgumentParser(add_help=False)
    quiet = argparse.SUPPRESS
    common.add_argument("--settings", type=Path, default=quiet,
                        help="settings file (default: ./settings.toml, then "
                             "$XDG_CONFIG_HOME/mlx-tui/settings.toml)")
    common.add_argument("--db", type=Path, default=quiet,
                        help="SQLite file for conversations and usage statistics")
    common.add_argument("--log-file", type=Path, default=quiet,
                        help="also write every load, eviction and refusal here")
    if app:
        common.add_argument("--model", default=quiet,
                            help="model to chat with first (alias, folder name or path)")
        common.add_argument("--no-api", action="store_true", default=quiet,
                            help="do not start the HTTP API from the app")
        common.add_argument("--remote", action="append", default=quiet, metavar="NAME|URL",
                            help="also show this mlx-tui instance (a [[remotes]] name or a URL) "
                                 "for this run, and open on it; may be given again")
    return common


_DEFAULTS = {"settings": None, "db": None, "log_file": None, "model": None, "no_api": False,
             "remote": (), "command": None}


def build_parser() -> argparse.ArgumentParser:
    with_app, without_app = _common_options(app=True), _common_options(app=False)
    parser = argparse.ArgumentParser(
        prog="mlx-tui", parents=[with_app],
        description="Keep the right MLX models loaded: a dashboard, a chat, and an HTTP API.",
    )
    parser.add_argument("--version", action="version", version=f"mlx-tui {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="{app,serve,status}")
    sub.add_parser("app", parents=[with_app], help="the terminal app (the default)")
    serve = sub.add_parser("serve", parents=[without_app],
                           help="run the HTTP API without a terminal")
    serve.add_argument("--host", default=None, help="bind address (default from settings)")
    serve.add_argument("--port", type=port_number, default=None,
                       help="port (default from settings)")
    from .distributed.serve import add_distributed_arguments  # standard library only

    add_distributed_arguments(serve)
    status = sub.add_parser("status", parents=[without_app],
                            help="models of a running instance, like `ollama ps`")
    status.add_argument("--json", action="store_true", help="print the JSON of GET /")
    status.add_argument("--all", action="store_true",
                        help="every host: this machine's instance and each [[remotes]] table; "
                             "exit 1 when one does not answer")
    status.add_argument("--url", default=None,
                        help="instance address, e.g. 127.0.0.1:11435 (default from settings)")
    status.add_argument("--port", type=port_number, default=None,
                        help="port of an instance on [api].host (default [api].port)")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line as a namespace with every option present (defaults filled in)."""
    args = build_parser().parse_args(argv)
    for key, value in _DEFAULTS.items():
        if not hasattr(args, key):
            setattr(args, key, value)
    return args


def _setup_logging(log_file: Path | None, to_stderr: bool) -> None:
    handlers: list[logging.Handler] = []
    if to_stderr:
        handlers.append(logging.StreamHandler(sys.stderr))
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, encoding="utf-8"))
    if handlers:
        logging.basicConfig(level=logging.INFO, handlers=handlers,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")


NO_MLX_BACKEND = (
    "mlx-tui: MLX has no backend installed here ({error}). On Linux pick one: "
    "pip install 'mlx-tui[cpu]' (any machine), 'mlx-tui[cuda13]' or 'mlx-tui[cuda12]' (NVIDIA); "
    "on a Mac plain `pip install mlx-tui` brings Metal."
)


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:  # Ctrl-C during start-up or a blocking call: no traceback
        print("mlx-tui: interrupted", file=sys.stderr)
        return 130
    except ImportError as exc:  # `pip install mlx-tui` on Linux gives MLX without a backend
        if "libmlx" not in str(exc) and getattr(exc, "name", "") not in ("mlx.core", "mlx"):
            raise
        print(NO_MLX_BACKEND.format(error=exc), file=sys.stderr)
        return 2


def _main(argv: list[str] | None) -> int:
    args = parse_args(argv)
    command = args.command or "app"
    if command == "status":
        from .status import run_status

        return run_status(args)
    if command == "app":
        for what, stream in (("standard input", sys.stdin), ("standard output", sys.stdout)):
            if stream is None or not stream.isatty():
                print(NEEDS_A_TERMINAL.format(what=what), file=sys.stderr)
                return 2
    _setup_logging(args.log_file, to_stderr=(command == "serve"))
    if command == "serve" and getattr(args, "hostfile", None):
        from .distributed.serve import run_distributed_serve

        return run_distributed_serve(args)
    if command == "serve":
        from .server.serve import run_serve

        return run_serve(args)
    from .ui.app import run_app

    return run_app(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
