"""The app's themes while it runs: registered from the theme files, checked before use, and
read again when a file changes (a broken file is reported and the theme it replaced stays).

:class:`AppThemes` belongs to the app, which asks it at start (:meth:`AppThemes.load`), which
theme a setting names (:meth:`AppThemes.choose`), before every theme switch
(:meth:`AppThemes.guard`, from ``App._validate_theme``) and on a timer (:meth:`AppThemes.poll`).
Everything runs on the event loop.
"""

from __future__ import annotations

from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from rich.text import Text
from textual.css.stylesheet import StylesheetParseError
from textual.theme import BUILTIN_THEMES, Theme

from .themes import DEFAULT_THEME, PACKAGE_THEMES, ThemeError, load_theme_file

if TYPE_CHECKING:
    from textual.app import App

__all__ = ["AppThemes", "ThemeFolders"]


class ThemeFolders:
    """Which ``*.toml`` files of the theme folders are new or changed since the last look."""

    def __init__(self, folders: list[Path]) -> None:
        self.folders = folders
        self._seen: dict[Path, int] = {}

    def _signatures(self) -> dict[Path, int]:
        found: dict[Path, int] = {}
        for folder in self.folders:
            if not folder.is_dir():
                continue
            for path in sorted(folder.glob("*.toml")):
                try:
                    st = path.stat()
                except OSError:
                    continue
                found[path] = st.st_mtime_ns + st.st_size
        return found

    def changed(self) -> list[Path]:
        """Files new or changed since the last call, in reading order (a later one wins)."""
        now = self._signatures()
        changed = [path for path, sig in now.items() if self._seen.get(path) != sig]
        self._seen = now
        return changed


def _stylesheet_problem(error: StylesheetParseError) -> str:
    rules = getattr(error.errors, "rules", [])
    for _token, message in dict.fromkeys(chain.from_iterable(rule.errors for rule in rules)):
        text = message.plain if isinstance(message, Text) else str(message)
        return text.strip().splitlines()[0] if text.strip() else "invalid CSS"
    return "invalid CSS"


class AppThemes:
    """Registers theme files with ``app`` and says whether a theme can be drawn; tells the user
    (``notify(message, title)``) about a file or a theme that cannot be used."""

    def __init__(self, app: "App[object]", folders: list[Path],
                 notify: Callable[[str, str], None]) -> None:
        self._app = app
        self._folders = ThemeFolders(folders)
        self._notify = notify
        # Verdicts by theme object: parsing the stylesheet costs a frame or more, so each theme
        # is checked once; Textual's own and the package's are tested by the test suite.
        self._verdicts: dict[int, str | None] = {id(t): None for t in BUILTIN_THEMES.values()}
        self._keep: list[Theme] = []  # the objects whose ids the verdicts hold

    def load(self) -> None:
        """Register every theme file (a broken one is reported and skipped)."""
        self.poll()

    def poll(self) -> bool:
        """Read the files that changed; returns whether the theme in use was replaced."""
        in_use = False
        for path in self._folders.changed():
            try:
                theme = load_theme_file(path)
            except ThemeError as exc:
                self._notify(str(exc), "Theme file ignored")
                continue
            if path.parent == PACKAGE_THEMES:
                self._remember(theme, None)
            problem = self.problem(theme)
            if problem is not None:
                self._notify(f"{path}: {problem}", "Theme file ignored")
                continue
            self._app.register_theme(theme)
            in_use = in_use or theme.name == self._app.theme
        if in_use:  # the same name, new colours: redraw with them
            self._app.refresh_css(animate=False)
            self._app.theme_changed_signal.publish(self._app.current_theme)
        return in_use

    def choose(self, name: str) -> str:
        """The theme to use when the settings name ``name``: the default, with a word, when
        ``name`` is unknown or cannot be drawn."""
        if name not in self._app.available_themes:
            known = ", ".join(sorted(self._app.available_themes))
            self._notify(f"theme {name!r} not found (known: {known}); using {DEFAULT_THEME}", "Theme")
            return DEFAULT_THEME
        problem = self.problem(name)
        if problem is not None:
            self._notify(f"{problem}; using {DEFAULT_THEME}", "Theme")
            return DEFAULT_THEME
        return name

    def guard(self, name: str) -> str:
        """``name`` if it can be drawn, else the theme in use (or the default), with a word."""
        problem = self.problem(name)
        if problem is None:
            return name
        keep = self._app.theme if self.problem(self._app.theme) is None else DEFAULT_THEME
        self._notify(f"{problem}; keeping {keep}", "Theme")
        return keep

    def problem(self, theme: Theme | str) -> str | None:
        """Why ``theme`` cannot be drawn (its variables are not valid CSS...), or None.

        Textual checks a theme's CSS only when it is applied, and then a mistake ends the app;
        here the app's stylesheet is parsed with the theme's variables first, on a copy.
        """
        if isinstance(theme, str):
            found = self._app.get_theme(theme)
            if found is None:
                return f"theme {theme!r} is not known"
            theme = found
        if id(theme) in self._verdicts:
            return self._verdicts[id(theme)]
        return self._remember(theme, self._check(theme))

    def _remember(self, theme: Theme, problem: str | None) -> str | None:
        self._keep.append(theme)
        self._verdicts[id(theme)] = problem
        return problem

    def _check(self, theme: Theme) -> str | None:
        app = self._app
        try:
            variables = {**app.get_theme_variable_defaults(), **theme.to_color_system().generate(),
                         **theme.variables}
            if theme.variables:  # colours are parsed when the file is read; variables only here
                sheet = app.stylesheet.copy()
                sheet.set_variables(variables)
                sheet.reparse()
        except StylesheetParseError as exc:
            return f"theme {theme.name!r} cannot be used: {_stylesheet_problem(exc)}"
        except Exception as exc:  # noqa: BLE001 - whatever a theme breaks, the app stays up
            return f"theme {theme.name!r} cannot be used: {exc}"
        return None
