"""How the other protocols' routes answer a failure: in their own shape, counted in the metrics.

:func:`request_failure` is the server's one mapping of an exception to a status, type and
message (:func:`~.errors.as_api_error`), with a bug's traceback sent to the log;
:func:`answering_errors` makes a route method answer every failure with ``render(error)``.
"""

from __future__ import annotations

import logging
from functools import wraps
from typing import Any, Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response

from ..core.cache import ModelCache
from .errors import ApiError, as_api_error
from .metrics import record_error

__all__ = ["request_failure", "answering_errors"]

log = logging.getLogger("mlx_tui.server")

Handler = Callable[[Any, Request], Awaitable[Response]]


def request_failure(exc: BaseException, cache: ModelCache | None = None) -> ApiError:
    """The status, type and message of any failure met while answering a request; a bug is a
    500 whose traceback goes to the log, never to the client."""
    error = as_api_error(exc, cache)
    if error.type == "internal_error":
        log.error("request failed", exc_info=exc)
    return error


def answering_errors(endpoint: str,
                     render: Callable[[ApiError], Response]) -> Callable[[Handler], Handler]:
    """Decorate a route method so that any failure is answered with ``render(error)`` (the
    protocol's shape) and counted as an error of ``endpoint``."""

    def wrap(handler: Handler) -> Handler:
        @wraps(handler)
        async def run(self: Any, request: Request) -> Response:
            try:
                return await handler(self, request)
            except Exception as exc:  # noqa: BLE001 - every failure becomes an answer
                error = request_failure(exc, request.app.state.runtime.cache)
                record_error(request, endpoint, error.status)
                return render(error)

        return run

    return wrap
