"""API errors: every failure a client can meet, as ``{"error": {"message", "type"}}`` JSON.

:func:`as_api_error` turns the core's exceptions into an :class:`ApiError` whose status tells a
client whether trying again can help. The official OpenAI SDKs retry 408, 409, 429 and every
5xx (twice by default), so only a state that passes is a 5xx: a full queue (503 with
``Retry-After``). A model that cannot load or cannot fit is a 4xx (422): the same request
would fail the same way, and each retry would cost a load attempt. 500 means a bug; its body
names no stack frame (the caller logs the traceback).

| status | type | retry? |
| --- | --- | --- |
| 400 | ``invalid_request_error`` | no: fix the field the message names |
| 401 | ``authentication_error`` | no: send the key |
| 403 | ``host_not_allowed`` / ``origin_not_allowed`` | no: see the README's Security part |
| 404 | ``model_not_found`` / ``not_found`` | no |
| 405 | ``method_not_allowed`` | no |
| 413 | ``request_too_large`` | no: send less, or raise the setting the message names |
| 415 | ``unsupported_media_type`` | no: send ``Content-Type: application/json`` |
| 422 | ``model_load_failed`` / ``model_too_large`` | no: fix the folder or free memory first |
| 500 | ``internal_error`` | a bug; retrying rarely helps |
| 503 | ``model_busy`` | yes, after ``Retry-After`` seconds |
"""

from __future__ import annotations

import math
from typing import Any

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse

from ..core.cache import ModelCache, ModelTooLarge
from ..core.catalog import UnknownModel
from ..core.errors import ModelBusy, RequestRejected, RequestTooLarge, UnsupportedRequest
from ..core.loader import ModelLoadError
from .documents import memory_document

__all__ = ["ApiError", "as_api_error", "bad_request", "retry_headers"]

_HTTP_TYPES = {401: "authentication_error", 404: "not_found", 405: "method_not_allowed",
               413: "request_too_large", 415: "unsupported_media_type"}


class ApiError(Exception):
    """A failure to answer with ``status`` and a JSON body; ``extra`` joins the error object.

    Raised by route handlers and :mod:`.bodies`, built by :func:`as_api_error` and by the
    guard of :mod:`.security`; :meth:`response` is the one way an error reaches a client.
    """

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


def retry_headers(seconds: float) -> dict[str, str]:
    """``Retry-After`` (whole seconds, as HTTP wants) and ``retry-after-ms`` (which the OpenAI
    and Anthropic SDKs read for a shorter wait)."""
    seconds = max(0.0, seconds)
    return {"Retry-After": str(max(1, math.ceil(seconds))),
            "retry-after-ms": str(round(seconds * 1000))}


def as_api_error(exc: BaseException, cache: ModelCache | None = None) -> ApiError:
    """The :class:`ApiError` for any exception met while answering a request."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, UnknownModel):
        return ApiError(404, "model_not_found", str(exc), model=exc.name)
    if isinstance(exc, ModelTooLarge):
        # 422, not 507: every 5xx is retried by the SDKs, and memory does not free itself in
        # the seconds they wait. 409 (a conflict with the pins and loads of the moment) would
        # say it as well, but the OpenAI SDKs retry 409 too.
        extra = {"memory": memory_document(cache.memory(), cache.thresholds)} if cache else {}
        return ApiError(422, "model_too_large", str(exc), **extra)
    if isinstance(exc, ModelLoadError):
        # The folder is broken: the next attempt fails the same way, after another load.
        return ApiError(422, "model_load_failed", str(exc))
    if isinstance(exc, ModelBusy):
        return ApiError(503, "model_busy", str(exc), headers=retry_headers(exc.retry_after),
                        model=exc.model, queued=exc.queued)
    if isinstance(exc, RequestTooLarge):
        return ApiError(413, "request_too_large", str(exc), limit=exc.limit, actual=exc.actual,
                        setting=exc.setting)
    if isinstance(exc, UnsupportedRequest):
        return ApiError(400, "invalid_request_error", str(exc), code="unsupported")
    if isinstance(exc, RequestRejected):
        return bad_request(str(exc))
    if isinstance(exc, HTTPException):
        return ApiError(exc.status_code, _HTTP_TYPES.get(exc.status_code, "http_error"),
                        str(exc.detail), headers=dict(exc.headers or {}))
    return ApiError(500, "internal_error",
                    f"internal error ({type(exc).__name__}); the server log has the details")
