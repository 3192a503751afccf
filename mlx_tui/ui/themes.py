"""Theme files: TOML files that become Textual themes.

A theme file holds a ``name``, ``dark = true|false``, the colours Textual's :class:`Theme` takes
(``primary`` is required; ``secondary``, ``accent``, ``warning``, ``error``, ``success``,
``foreground``, ``background``, ``surface``, ``panel``, ``boost`` are optional) and an optional
``[variables]`` table of extra Textual theme variables. The memory gauge colours its zones with
``success`` (normal), ``warning`` and ``error`` (emergency).

Themes are read, in this order (a later file with the same name wins), from the themes shipped
in the package (``mlx_tui/themes``), ``$XDG_CONFIG_HOME/mlx-tui/themes``, the ``themes`` folder
beside the settings file, and ``./themes``. A broken file is reported and skipped. While the
app runs, :mod:`mlx_tui.ui.theming` reads changed files again.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from textual.color import Color, ColorParseError
from textual.theme import Theme

from ..core.settings import user_config_path

__all__ = [
    "DEFAULT_THEME",
    "PACKAGE_THEMES",
    "ThemeError",
    "ThemeScan",
    "load_theme_file",
    "scan_themes",
    "theme_dirs",
]

DEFAULT_THEME = "mlx-dark"
PACKAGE_THEMES = Path(__file__).resolve().parent.parent / "themes"

_COLOURS = ("primary", "secondary", "accent", "warning", "error", "success", "foreground",
            "background", "surface", "panel", "boost")
_OTHER_KEYS = ("name", "dark", "variables", "luminosity_spread", "text_alpha")


class ThemeError(ValueError):
    """A theme file that cannot be used; the message names the file and the problem."""


def _colour(path: Path, key: str, value: object) -> str:
    if not isinstance(value, str):
        raise ThemeError(f"{path}: {key}: must be a colour string, got {value!r}")
    try:
        Color.parse(value)
    except ColorParseError:
        raise ThemeError(f"{path}: {key}: {value!r} is not a colour") from None
    return value


def load_theme_file(path: Path) -> Theme:
    """Read one theme file; raises :class:`ThemeError` naming the file and the key."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ThemeError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ThemeError(f"{path}: not valid TOML: {exc}") from exc
    unknown = sorted(set(data) - set(_COLOURS) - set(_OTHER_KEYS))
    if unknown:
        raise ThemeError(f"{path}: unknown key {unknown[0]!r} (known: "
                         f"{', '.join(_OTHER_KEYS + _COLOURS)})")
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ThemeError(f"{path}: name: a theme needs a name")
    if "primary" not in data:
        raise ThemeError(f"{path}: primary: a theme needs a primary colour")
    dark = data.get("dark", True)
    if not isinstance(dark, bool):
        raise ThemeError(f"{path}: dark: must be true or false, got {dark!r}")
    variables = data.get("variables", {})
    if not isinstance(variables, dict):
        raise ThemeError(f"{path}: variables: must be a table")
    colours = {key: _colour(path, key, data[key]) for key in _COLOURS if key in data}
    extra: dict[str, float] = {}
    for key in ("luminosity_spread", "text_alpha"):
        if key in data:
            if isinstance(data[key], bool) or not isinstance(data[key], (int, float)):
                raise ThemeError(f"{path}: {key}: must be a number, got {data[key]!r}")
            extra[key] = float(data[key])
    return Theme(name=name.strip(), dark=dark, variables={k: str(v) for k, v in variables.items()},
                 **colours, **extra)


def theme_dirs(settings_path: Path | None = None, cwd: Path | None = None) -> list[Path]:
    """The folders themes are read from, package first; each listed once."""
    config = user_config_path().parent / "themes"  # beside the user's settings.toml
    candidates = [PACKAGE_THEMES, config]
    if settings_path is not None:
        candidates.append(settings_path.expanduser().parent / "themes")
    candidates.append((cwd or Path.cwd()) / "themes")
    seen: list[Path] = []
    for folder in candidates:
        resolved = folder.resolve()
        if resolved not in seen:
            seen.append(resolved)
    return seen


@dataclass
class ThemeScan:
    """What :func:`scan_themes` found: usable themes by name, and one message per bad file."""

    themes: dict[str, Theme] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def scan_themes(folders: list[Path]) -> ThemeScan:
    """Load every ``*.toml`` in ``folders``; later folders override earlier ones by name."""
    scan = ThemeScan()
    for folder in folders:
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.toml")):
            try:
                theme = load_theme_file(path)
            except ThemeError as exc:
                scan.errors.append(str(exc))
                continue
            scan.themes[theme.name] = theme
    return scan
