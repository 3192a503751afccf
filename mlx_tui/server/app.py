"""The Starlette application: routes over one :class:`~mlx_tui.core.runtime.Runtime`.

The event loop never blocks: ``/`` and ``/health`` read the cache's lock-protected views (fast),
cache actions (load, evict, pin, clean-up, catalog scan) run in the thread pool, loads are
awaited through their futures without holding a thread, and each chat reply is generated in
its own thread (:mod:`.streaming`).

Routes: ``GET /`` and ``GET /health`` (the seed's ``cached_models``), ``GET /v1/models``,
``POST /v1/chat/completions``, and ``POST /models/load|evict|pin|cleanup`` for scripts. Every
request first passes :class:`~.security.ApiGuard` (Host, Origin and CORS, the key, body type
and size, ``Connection: close`` on 5xx).
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
import logging
import os
from concurrent.futures import Future
from functools import partial
from typing import Any, AsyncIterator

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ..core.cache import ModelCache, ModelView
from ..core.catalog import UnknownModel
from ..core.errors import ModelBusy, RequestRejected
from ..core.loader import ModelLoadError
from ..core.runtime import Runtime
from .bodies import check_model_name, flag, json_body, model_name, parsed
from .documents import health_document, model_document
from .errors import ApiError, as_api_error, bad_request
from .anthropic import anthropic_routes
from .metrics import ApiMetrics, metrics_routes, record_error, record_request
from .ollama import ollama_routes
from .completions import completion_routes
from .openai import BoundEngine, ChatRequest, Reply, model_object, sse_event
from .security import ApiGuard
from .streaming import Generation, Generations, cancel_on_disconnect

__all__ = ["create_app"]

log = logging.getLogger("mlx_tui.server")


def _cache(request: Request) -> ModelCache:
    return request.app.state.runtime.cache


async def _await_load(future: "Future[ModelView]") -> ModelView:
    """Wait for a load without a thread; never cancel it (other requests share the load)."""
    return await asyncio.shield(asyncio.wrap_future(future))


# -- routes -------------------------------------------------------------------------------------
async def health(request: Request) -> Response:
    cache = _cache(request)
    doc = health_document(cache)
    if not request.scope.get("state", {}).get("authorized", True):
        doc = {"status": doc["status"]}
    return JSONResponse(doc)


def _created(view: ModelView) -> int:
    """OpenAI's ``created``: when the model's folder last changed (0 when unknown)."""
    try:
        return int(os.stat(view.path).st_mtime) if view.path else 0
    except OSError:
        return 0


def _model_list(cache: ModelCache) -> dict[str, Any]:
    cache.refresh_catalog()  # folders and downloads that appeared since the start
    return {"object": "list", "data": [model_object(v, _created(v)) for v in cache.models()]}


def _one_model(cache: ModelCache, name: str) -> dict[str, Any]:
    view = cache.get(name)
    return model_object(view, _created(view))


async def list_models(request: Request) -> Response:
    return JSONResponse(await run_in_threadpool(_model_list, _cache(request)))


async def get_model(request: Request) -> Response:
    name = check_model_name(request.path_params["name"], "the model in the path")
    return JSONResponse(await run_in_threadpool(_one_model, _cache(request), name))


CHAT_PATH = "/v1/chat/completions"


async def chat_completions(request: Request) -> Response:
    chat = parsed(ChatRequest.parse, await json_body(request))
    chat = replace(chat, allow_paths=request.app.state.runtime.settings_store.settings.api.allow_model_paths)
    engine = request.app.state.runtime.chat
    bound = BoundEngine(engine.cache, partial(engine.start, tool_choice=chat.tool_choice))
    generation = Generation(bound, chat, request.app.state.generations)
    reply = Reply(chat.model, logprobs=chat.params.logprobs)
    try:
        async with cancel_on_disconnect(request.receive, generation.cancel):
            # The first piece (or the error) comes after the load: a model that cannot load
            # answers with its HTTP status, not with a stream that fails.
            first = await generation.next()
            if not chat.stream:
                parts, logprobs, calls, stats, delta = [], [], [], None, first
                while delta is not None:
                    parts.append(delta.text)
                    logprobs.extend(delta.logprobs)
                    calls.extend(delta.tool_calls)
                    stats = delta.stats or stats
                    delta = await generation.next()
                assert stats is not None
                calls = calls if chat.parallel_tool_calls else calls[:1]
                record_request(request, CHAT_PATH, stats)
                return JSONResponse(reply.completion("".join(parts), stats, calls, logprobs))
    except BaseException:
        generation.cancel.set()
        raise
    return StreamingResponse(
        _sse(generation, first, chat, reply, _cache(request)),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _sse(generation: Generation, first: Any, chat: ChatRequest, reply: Reply,
               cache: ModelCache) -> AsyncIterator[str]:
    """The reply as server-sent events: role, content pieces (with their log-probabilities),
    the tool calls, finish (and usage), ``[DONE]``.

    If the client goes away, Starlette cancels this generator and ``finally`` stops the
    generation; an error after the stream began is sent as one ``{"error": ...}`` event.
    """
    try:
        yield sse_event(reply.chunk({"role": "assistant", "content": ""}))
        stats, delta, calls = None, first, []
        while delta is not None:
            if delta.text or delta.logprobs:
                yield sse_event(reply.chunk({"content": delta.text}, logprobs=delta.logprobs))
            calls.extend(delta.tool_calls)
            stats = delta.stats or stats
            delta = await generation.next()
        assert stats is not None
        ApiMetrics.of(cache).record_request(CHAT_PATH, stats)
        if calls:
            yield sse_event(reply.tool_calls_chunk(calls if chat.parallel_tool_calls else calls[:1]))
        yield sse_event(reply.final_chunk(stats))
        if chat.include_usage:
            yield sse_event(reply.usage_chunk(stats))
    except Exception as exc:  # noqa: BLE001 - the status line is sent; report in the stream
        error = as_api_error(exc, cache)
        if error.type == "internal_error":
            log.error("chat stream failed", exc_info=exc)
        yield sse_event(error.body())
    finally:
        generation.cancel.set()
    yield "data: [DONE]\n\n"


async def load_model(request: Request) -> Response:
    """``{"model": N, "wait": true}``: load N (evicting by policy), answer when it is loaded."""
    body = await json_body(request)
    name, wait = model_name(body), flag(body, "wait", True)
    cache = _cache(request)
    future = await run_in_threadpool(cache.load, name, "asked via the API")
    if not wait:
        view = await run_in_threadpool(cache.get, name)
        return JSONResponse({"model": model_document(view)}, status_code=202)
    view = await _await_load(future)
    return JSONResponse({"model": model_document(view)})


async def evict_model(request: Request) -> Response:
    """``{"model": N}``: unload N now, or when its last request ends if it is in use."""
    name = model_name(await json_body(request))
    cache = _cache(request)
    evicted = await run_in_threadpool(cache.evict, name, "asked via the API")
    view = await run_in_threadpool(cache.get, name)
    return JSONResponse({"model": model_document(view), "evicted": evicted,
                         "deferred": view.evict_when_idle})


async def pin_model(request: Request) -> Response:
    """``{"model": N, "pinned": true}``: keep N through normal clean-ups (false unpins)."""
    body = await json_body(request)
    name, pinned = model_name(body), flag(body, "pinned", True)
    cache = _cache(request)
    await run_in_threadpool(cache.pin, name, pinned)
    view = await run_in_threadpool(cache.get, name)
    return JSONResponse({"model": model_document(view)})


async def cleanup(request: Request) -> Response:
    """``{"level": "normal" | "emergency"}``: run a clean-up now, as at that threshold."""
    body = await json_body(request)
    level = body.get("level", "normal")
    if level not in ("normal", "emergency"):
        raise bad_request(f'level must be "normal" or "emergency", got {level!r}')
    plan = await run_in_threadpool(_cache(request).cleanup, level, "asked via the API")
    return JSONResponse({"level": plan.level, "evicted": list(plan.evict),
                         "deferred": list(plan.deferred), "kept": list(plan.kept),
                         "reason": plan.reason})


async def _error(request: Request, exc: Exception) -> Response:
    if isinstance(exc, HTTPException) and exc.status_code in (404, 405):
        what = "no such endpoint" if exc.status_code == 404 else f"{request.method} is not allowed on"
        exc = HTTPException(exc.status_code, f"{what} {request.url.path} (the README lists the API)",
                            exc.headers)
    error = as_api_error(exc, _cache(request))
    if request.url.path == CHAT_PATH:
        record_error(request, CHAT_PATH, error.status)
    return error.response()


def create_app(runtime: Runtime, api_key: str = "") -> Starlette:
    """The API over ``runtime``; with ``api_key`` (or ``[api].api_key``) every route but
    ``/health`` needs it. ``[api]`` is read on each request (:mod:`.security`)."""
    app = Starlette(
        routes=[
            Route("/", health, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
            Route("/v1/models", list_models, methods=["GET"]),
            Route("/v1/models/{name:path}", get_model, methods=["GET"]),
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            *completion_routes(),
            Route("/models/load", load_model, methods=["POST"]),
            Route("/models/evict", evict_model, methods=["POST"]),
            Route("/models/pin", pin_model, methods=["POST"]),
            Route("/models/cleanup", cleanup, methods=["POST"]),
            *ollama_routes(), *anthropic_routes(), *metrics_routes(runtime),
        ],
        exception_handlers={
            ApiError: _error,
            HTTPException: _error,
            UnknownModel: _error,
            ModelLoadError: _error,  # ModelTooLarge too: a subclass
            RequestRejected: _error,  # too large, unsupported
            ModelBusy: _error,
            # Anything else reaches ApiGuard: a JSON 500 with Connection: close, traceback logged.
        },
    )
    app.state.runtime = runtime
    app.state.generations = Generations()
    app.add_middleware(ApiGuard, settings=lambda: runtime.settings_store.settings.api,
                       api_key=api_key)
    return app
