"""API errors: every failure a client can meet, as ``{"error": {"message", "type"}}`` JSON.

:func:`as_api_error` turns the core's exceptions into an :class:`ApiError` with the status a
client can act on (unknown model 404, cannot fit 507, failed load 500); anything unexpected
becomes a 500 whose body names no stack frame (the caller logs the traceback).
"""

from __future__ import annotations

from typing import Any

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse

from ..core.cache import ModelCache, ModelTooLarge
from ..core.catalog import UnknownModel
from ..core.loader import ModelLoadError
from .documents import memory_document

__all__ = ["ApiError", "as_api_error"]

_HTTP_TYPES = {401: "authentication_error", 404: "not_found", 405: "method_not_allowed"}


class ApiError(Exception):
    """A failure to answer with ``status`` and a JSON body; ``extra`` joins the error object."""

    def __init__(self, status: int, type_: str, message: str, headers: dict[str, str] | None = None,
                 **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.type = type_
        self.message = message
        self.headers = headers
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, **self.extra}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def bad_request(message: str) -> ApiError:
    return ApiError(400, "invalid_request_error", message)


def as_api_error(exc: BaseException, cache: ModelCache | None = None) -> ApiError:
    """The :class:`ApiError` for any exception met while answering a request."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, UnknownModel):
        return ApiError(404, "model_not_found", str(exc), model=exc.name)
    if isinstance(exc, ModelTooLarge):
        extra = {"memory": memory_document(cache.memory(), cache.thresholds)} if cache else {}
        return ApiError(507, "model_too_large", str(exc), **extra)
    if isinstance(exc, ModelLoadError):
        return ApiError(500, "model_load_failed", str(exc))
    if isinstance(exc, HTTPException):
        return ApiError(exc.status_code, _HTTP_TYPES.get(exc.status_code, "http_error"),
                        str(exc.detail), headers=dict(exc.headers or {}))
    return ApiError(500, "internal_error",
                    f"internal error ({type(exc).__name__}); the server log has the details")
