"""The small pieces the app rests on: theme files, the key tables in the README, formats."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from mlx_tui.ui.format import clock_time, duration, seconds
from mlx_tui.ui.keys import binding_groups, key_rows, keys_markdown
from mlx_tui.ui.screens.settings import parse_fraction
from mlx_tui.ui.themes import ThemeError, load_theme_file, scan_themes, theme_dirs

REPO = Path(__file__).resolve().parent.parent.parent

def test_shipped_themes_load_and_a_broken_file_is_named(tmp_path: Path) -> None:
    scan = scan_themes(theme_dirs(REPO / "settings.toml", cwd=REPO))
    assert {"mlx-dark", "mlx-light", "mlx-amber"} <= set(scan.themes)
    assert scan.themes["mlx-light"].dark is False
    broken = tmp_path / "bad.toml"
    broken.write_text('name = "bad"\nprimary = "not-a-colour"\n', encoding="utf-8")
    with pytest.raises(ThemeError, match=r"bad\.toml: primary: 'not-a-colour' is not a colour"):
        load_theme_file(broken)
    assert scan_themes([tmp_path]).errors and not scan_themes([tmp_path]).themes


def test_docs_list_every_key_as_the_help_screen_does() -> None:
    table = keys_markdown(key_rows(binding_groups()))
    docs = (REPO / "README.md").read_text(encoding="utf-8")
    assert table in docs, "README.md is out of date: paste keys_markdown(key_rows(binding_groups()))"
    ids = [row.id for row in key_rows(binding_groups())]
    assert len(ids) == len(set(ids)), "binding ids must be unique for [ui.keys]"


def test_formats_are_short_and_do_not_change_while_idle() -> None:
    assert clock_time(0) == "-"
    noon = time.mktime((2026, 1, 26, 12, 0, 0, 0, 0, -1))
    assert clock_time(noon, now=noon + 60) == "12:00:00"
    assert clock_time(noon, now=noon + 3 * 86400) == "Jan 26"
    assert (seconds(0), seconds(0.123), seconds(25.34)) == ("-", "0.12", "25.3")
    assert (duration(3.2), duration(125), duration(3720)) == ("3s", "2m05s", "1h02m")
    assert (parse_fraction("k", "85"), parse_fraction("k", "85%"), parse_fraction("k", "0.9")) == (
        0.85, 0.85, 0.9)
    with pytest.raises(ValueError, match="k: must be a percentage"):
        parse_fraction("k", "lots")

