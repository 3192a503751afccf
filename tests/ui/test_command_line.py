"""The command line as a newcomer types it: options before or after the command, a version,
a clear word when there is no terminal, and a package that installs without warnings."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from mlx_tui import __version__
from mlx_tui.cli import main, parse_args
from mlx_tui.devtools.settings_files import write_isolated_settings

MLX_TUI = str(Path(sys.executable).with_name("mlx-tui"))
REPO = Path(__file__).resolve().parent.parent.parent


@pytest.mark.parametrize("before, after", [
    (["--settings", "s.toml", "--db", "d.db", "--log-file", "l.log", "serve"],
     ["serve", "--settings", "s.toml", "--db", "d.db", "--log-file", "l.log"]),
    (["--settings", "s.toml", "status", "--url", "127.0.0.1:9"],
     ["status", "--url", "127.0.0.1:9", "--settings", "s.toml"]),
    (["--model", "demo", "--no-api", "--settings", "s.toml", "app"],
     ["app", "--model", "demo", "--no-api", "--settings", "s.toml"]),
])
def test_common_options_work_before_or_after_the_command(before: list[str], after: list[str]) -> None:
    first, second = parse_args(before), parse_args(after)
    assert vars(first) == vars(second)
    assert first.settings == Path("s.toml")


def test_the_app_options_without_a_command_are_the_app_and_defaults_are_filled() -> None:
    args = parse_args(["--model", "demo"])
    assert (args.command, args.model, args.no_api, args.settings, args.db) == (
        None, "demo", False, None, None)


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"mlx-tui {__version__}"


@pytest.mark.parametrize("port", ["99999", "-1", "0", "http"])
def test_a_port_that_is_not_one_is_refused_as_the_settings_refuse_it(
        port: str, capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("serve", "status"):
        with pytest.raises(SystemExit) as done:
            parse_args([command, "--port", port])
        assert done.value.code == 2
        err = capsys.readouterr().err
        assert "argument --port: must be a port number 1-65535" in err, err
        assert "host" not in err.split("error:")[1]


def test_the_app_without_a_terminal_says_so_at_once(tmp_path: Path) -> None:
    settings = write_isolated_settings(tmp_path / "settings.toml", {})
    # A terminal for input, a pipe for output: `mlx-tui | less` by mistake.
    controller, terminal = os.openpty()
    try:
        done = subprocess.run([MLX_TUI, "--settings", str(settings), "--no-api"], stdin=terminal,
                              capture_output=True, text=True, timeout=60)
    finally:
        os.close(controller)
        os.close(terminal)
    assert done.returncode == 2
    assert "the app needs a terminal, and standard output is not one" in done.stderr
    assert "mlx-tui serve" in done.stderr


def test_the_package_metadata_has_no_deprecated_license_table() -> None:
    """`make run` installs the package; setuptools warns at length about a TOML-table license."""
    from setuptools.config.pyprojecttoml import apply_configuration
    from setuptools.dist import Distribution

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dist = apply_configuration(Distribution(), REPO / "pyproject.toml")
    assert [str(w.message) for w in caught] == []
    assert dist.metadata.license_expression == "MIT"


def test_mlx_without_a_backend_says_which_extra_to_install(monkeypatch, capsys) -> None:
    import mlx_tui.cli as cli

    def no_backend(_argv):
        raise ImportError("libmlx.so: cannot open shared object file: No such file or directory")

    monkeypatch.setattr(cli, "_main", no_backend)
    assert cli.main(["serve"]) == 2
    err = capsys.readouterr().err
    assert "mlx-tui[cpu]" in err and "mlx-tui[cuda13]" in err and "libmlx.so" in err
