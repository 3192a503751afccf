"""Errors a request can meet in the core, each with a message a person can act on.

The server maps them to HTTP statuses (``mlx_tui.server.errors``); the app shows the message.
Load errors live beside what raises them: :class:`~mlx_tui.core.catalog.UnknownModel`,
:class:`~mlx_tui.core.loader.ModelLoadError` and :class:`~mlx_tui.core.cache.ModelTooLarge`.
"""

from __future__ import annotations

__all__ = ["RequestRejected", "RequestTooLarge", "ModelBusy", "UnsupportedRequest"]


class RequestRejected(ValueError):
    """A request the engine will not run as asked; nothing was generated."""


class RequestTooLarge(RequestRejected):
    """A request over a configured cap (prompt tokens, messages, ``max_tokens``).

    ``what`` names the cap (``"prompt tokens"``), ``limit`` and ``actual`` give the figures and
    ``setting`` the settings key that raises it (``"engine.max_prompt_tokens"``).
    """

    def __init__(self, what: str, actual: int, limit: int, setting: str) -> None:
        super().__init__(f"{what}: {actual:,} is over the limit of {limit:,} (settings.toml {setting})")
        self.what = what
        self.actual = actual
        self.limit = limit
        self.setting = setting


class UnsupportedRequest(RequestRejected):
    """A field the model or the engine cannot honour (tools on a model whose chat template has
    no tool support, say): refused instead of silently ignored."""


class ModelBusy(RuntimeError):
    """A model's request queue is full; try again after ``retry_after`` seconds."""

    def __init__(self, model: str, queued: int, retry_after: float = 1.0) -> None:
        super().__init__(f"{model} is busy: {queued} requests are waiting (settings.toml "
                         f"engine.queue_size); try again in {retry_after:g} s")
        self.model = model
        self.queued = queued
        self.retry_after = retry_after
