"""Whether a settings file holding API keys can be read by other users of the machine."""

from __future__ import annotations

import stat
from pathlib import Path

from ..core.settings import Settings

__all__ = ["key_file_warning"]


def key_file_warning(path: Path, settings: Settings) -> str | None:
    """A sentence to show when ``path`` holds an API key (``[api].api_key`` or a remote's) and
    its group or everyone may read it; None when it holds none, is private, or is missing."""
    holds = bool(settings.api.api_key) or any(r.api_key for r in settings.remotes)
    if not holds:
        return None
    try:
        mode = path.stat().st_mode
    except OSError:
        return None
    readers = [who for who, bit in (("its group", stat.S_IRGRP), ("every user", stat.S_IROTH))
               if mode & bit]
    if not readers:
        return None
    return (f"{path} holds API keys and {' and '.join(readers)} on this machine can read it "
            f"(mode {stat.filemode(mode)}): run chmod 600 {path}")
