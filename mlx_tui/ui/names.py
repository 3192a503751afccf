"""Which name the app shows for a model: one model, one name.

The cache knows a model by one name and may know others for it (``default`` is an alias of the
bundled ``demo``). The app shows the name the user typed or picked (``--model demo``) and lists
the others as aliases, in the table, the chat's title and the line under the table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..core.cache import ModelCache
from ..core.catalog import UnknownModel

__all__ = ["ShownNames", "first_model"]


class ShownNames:
    """Owned by the app; the models table and the chat pane read it on the event loop."""

    def __init__(self) -> None:
        self._chosen: dict[str, str] = {}  # the cache's name -> the one shown

    def choose(self, name: str, shown: str) -> None:
        """Show the model the cache calls ``name`` as ``shown`` (a name the user used for it)."""
        self._chosen[name] = shown

    def shown(self, name: str) -> str:
        return self._chosen.get(name, name)

    def message(self, name: str | None, text: str) -> str:
        """``text`` about model ``name`` (``default: loaded in 0.1 s``) with the shown name."""
        shown = self.shown(name) if name else None
        if name and shown != name and text.startswith(f"{name}: "):
            return f"{shown}: {text[len(name) + 2:]}"
        return text

    def aliases(self, view: Any) -> list[str]:
        """The model's other names: the cache's own and its aliases, without the one shown."""
        names = [view.name, *getattr(view, "aliases", ())]  # aliases: coming in the core
        shown = self.shown(view.name)
        return [n for n in dict.fromkeys(names) if n != shown]


def first_model(cache: ModelCache, wanted: str | None,
                names: ShownNames) -> tuple[str | None, str | None]:
    """The model a chat starts with, and a problem to tell: ``wanted`` (``--model``) by the name
    given, else ``default`` or ``demo`` when usable, else the first usable model. A folder
    given by path is shown by its own name, not the whole path."""
    problem = None
    if wanted:
        try:
            view = cache.get(wanted)
        except UnknownModel as exc:
            problem = str(exc)
        else:
            if Path(wanted).expanduser().exists():
                return view.name, None
            names.choose(view.name, wanted)
            return wanted, None
    for candidate in ("default", "demo"):
        try:
            view = cache.get(candidate)
        except UnknownModel:
            continue
        if not view.error:
            return view.name, problem
    views = cache.models()
    usable = [v for v in views if not v.error]
    return ((usable or views)[0].name if views else None), problem
