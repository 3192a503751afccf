"""Entry point: ``mlx-tui`` (the app), ``mlx-tui serve`` (headless API), ``mlx-tui status``.

Imports stay lazy: the app's first frame must not wait for ``mlx_lm`` or the server stack.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlx-tui",
        description="Keep the right MLX models loaded: a dashboard, a chat, and an HTTP API.",
    )
    parser.add_argument("--settings", type=Path, default=None,
                        help="settings file (default: ./settings.toml, then "
                             "$XDG_CONFIG_HOME/mlx-tui/settings.toml)")
    parser.add_argument("--db", type=Path, default=None,
                        help="SQLite file for conversations and usage statistics")
    parser.add_argument("--log-file", type=Path, default=None,
                        help="also write every load, eviction and refusal here")
    sub = parser.add_subparsers(dest="command")
    app = sub.add_parser("app", help="the terminal app (the default)")
    serve = sub.add_parser("serve", help="run the HTTP API without a terminal")
    for p in (parser, app):
        p.add_argument("--model", default=None, help="model to chat with first (name or folder)")
        p.add_argument("--no-api", action="store_true", help="do not start the HTTP API")
    for p in (serve,):
        p.add_argument("--host", default=None, help="bind address (default from settings)")
        p.add_argument("--port", type=int, default=None, help="port (default from settings)")
    status = sub.add_parser("status", help="models of a running instance, like `ollama ps`")
    status.add_argument("--json", action="store_true", help="print the JSON of GET /")
    status.add_argument("--url", default=None, help="instance address (default from settings)")
    return parser


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


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:  # Ctrl-C during start-up or a blocking call: no traceback
        print("mlx-tui: interrupted", file=sys.stderr)
        return 130


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    command = args.command or "app"
    if command == "status":
        from .status import run_status

        return run_status(args)
    _setup_logging(args.log_file, to_stderr=(command == "serve"))
    if command == "serve":
        from .server.serve import run_serve

        return run_serve(args)
    from .ui.app import run_app

    return run_app(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
