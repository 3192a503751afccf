"""Tokenizers read from model folders, for what the server answers without the model's weights:
Anthropic's ``count_tokens`` and Ollama's ``capabilities``.

:data:`folder_tokenizers` loads a folder's tokenizer the way mlx-lm does for a load (so its
chat template and tool-call markers are the engine's), keeps the last few, and lets one thread
use each at a time. Loading reads the disk and imports mlx-lm: call it from a worker thread.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Sequence

from ..core.chat import ChatMessage, prompt_tokens, render_prompt
from ..core.errors import UnsupportedRequest
from ..core.loader import ModelLoadError

__all__ = ["FolderTokenizers", "folder_tokenizers"]


class FolderTokenizers:
    """The tokenizers of the last :attr:`KEEP` model folders asked about (a folder that
    changed on disk is read again). Thread-safe."""

    KEEP = 4

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._kept: OrderedDict[tuple[str, float], tuple[Any, threading.Lock]] = OrderedDict()

    def _tokenizer(self, name: str, path: str) -> tuple[Any, threading.Lock]:
        """The folder's tokenizer; a :class:`ModelLoadError` when it cannot be read."""
        try:
            key = (path, os.stat(path).st_mtime)
        except OSError as exc:
            raise ModelLoadError(f"{name}: cannot read its folder {path}: {exc.strerror}") from exc
        with self._lock:
            if key in self._kept:
                self._kept.move_to_end(key)
                return self._kept[key]
        from mlx_lm.tokenizer_utils import load  # lazy: importing mlx_lm costs about a second

        try:
            loaded = (load(Path(path)), threading.Lock())
        except Exception as exc:  # noqa: BLE001 - any unreadable tokenizer is the folder's fault
            raise ModelLoadError(f"{name}: cannot read its tokenizer in {path}: "
                                 f"{type(exc).__name__}: {exc}") from exc
        with self._lock:
            loaded = self._kept.setdefault(key, loaded)
            while len(self._kept) > self.KEEP:
                self._kept.popitem(last=False)
        return loaded

    def takes_tools(self, name: str, path: str) -> bool:
        """Whether the model's template and vocabulary can call tools (what the engine asks);
        False when its tokenizer cannot be read (the model cannot run at all then)."""
        try:
            tokenizer, _ = self._tokenizer(name, path)
        except ModelLoadError:
            return False
        return bool(getattr(tokenizer, "has_tool_calling", False))

    def count(self, name: str, path: str, messages: Sequence[ChatMessage],
              tools: Sequence[dict[str, Any]] | None = None) -> int:
        """Prompt tokens of ``messages`` (and ``tools``) as the engine feeds them to the model."""
        tokenizer, lock = self._tokenizer(name, path)
        if tools and not getattr(tokenizer, "has_tool_calling", False):
            raise UnsupportedRequest(f"{name} cannot call tools: its chat template has no "
                                     "tool-calling support")
        with lock:
            return len(prompt_tokens(tokenizer, render_prompt(tokenizer, messages, tools)))


folder_tokenizers = FolderTokenizers()
"""The server's one set of folder tokenizers (shared by every app in the process)."""
