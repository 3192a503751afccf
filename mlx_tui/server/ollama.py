"""The Ollama API on the same cache and port as the OpenAI one: :func:`ollama_routes`.

``GET /api/version``, ``GET /api/tags``, ``GET /api/ps``, ``POST /api/show``, ``POST /api/chat``
and ``POST /api/generate`` (newline-delimited JSON by default, one object with ``stream:
false``). Failures are Ollama's ``{"error": "..."}`` with the status that fits; what mlx-tui
does not do (``pull``, ``push``, ``create``, ``copy``, ``delete``, blobs, embeddings) answers
501 with the reason, and an unknown ``/api/...`` path 404.

``keep_alive`` acts on the cache: 0 unloads the model when the reply ends (later, if another
request still uses it), a duration sets the model's idle unload, a negative value pins it (a
pin made this way is lifted by a later ``keep_alive`` duration or 0; a pin someone set in the
app is never lifted here).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from functools import partial
from typing import Any, AsyncIterator, Callable

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ..core.cache import ModelCache
from ..core.chat import ChatStats
from .bodies import json_body, parsed
from .errors import ApiError
from .metrics import record_error, record_request
from .ollama_models import iso_time, ps_document, show_document, tags_document
from .ollama_requests import (
    KeepAlive,
    OllamaRequest,
    parse_chat,
    parse_generate,
    requested_model,
)
from .replies import (
    ReplyPieces,
    allow_paths,
    resolve_model,
    start_reply,
    tool_call_parts,
    tool_calls_of,
)
from .route_errors import Handler, answering_errors, request_failure

__all__ = ["OLLAMA_VERSION", "OllamaApi", "ollama_routes"]

log = logging.getLogger("mlx_tui.server")

OLLAMA_VERSION = "0.12.0"
"""The Ollama release whose API these routes follow (clients gate features on it)."""

KEEP_ALIVE_REASON = "keep_alive 0 from an Ollama client"

_UNSUPPORTED = {
    "/api/pull": "mlx-tui never downloads models: fetch one with `hf download REPO` and it "
                 "appears in /api/tags, or add its folder to [models] in settings.toml",
    "/api/push": "mlx-tui has no model registry to push to",
    "/api/create": "mlx-tui has no Modelfiles: add an alias or a folder to [models] in "
                   "settings.toml",
    "/api/copy": "mlx-tui has no Modelfiles: add a second alias to [models] in settings.toml",
    "/api/delete": "mlx-tui never deletes model files: remove the folder yourself",
    "/api/blobs/{digest}": "mlx-tui has no Modelfiles, so no blobs",
    "/api/embed": "no embedding model is loaded: mlx-tui serves text-generation models only",
    "/api/embeddings": "no embedding model is loaded: mlx-tui serves text-generation models only",
}

_ANY = ["GET", "POST", "PUT", "PATCH", "DELETE"]  # HEAD comes with GET

def _error_response(error: ApiError) -> JSONResponse:
    return JSONResponse({"error": error.message}, status_code=error.status, headers=error.headers)


def _ollama_errors(endpoint: str) -> Callable[[Handler], Handler]:
    """Answer any failure of the route as Ollama does: ``{"error": message}`` and its status."""
    return answering_errors(endpoint, _error_response)


def _line(doc: dict[str, Any]) -> str:
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")) + "\n"


def _durations(stats: ChatStats) -> dict[str, int]:
    """The final object's figures, in nanoseconds as Ollama gives them: the load, the prompt
    (up to the first token), then the rest of the reply; together at most the total."""
    def ns(seconds: float) -> int:
        return int(max(0.0, seconds) * 1e9)

    return {
        "total_duration": ns(stats.total_seconds),
        "load_duration": ns(stats.load_seconds),
        "prompt_eval_count": stats.prompt_tokens,
        "prompt_eval_duration": ns(stats.time_to_first_token),
        "eval_count": stats.tokens,
        "eval_duration": ns(stats.total_seconds - stats.load_seconds - stats.time_to_first_token),
    }


class _Shape:
    """How one endpoint writes its pieces: ``message`` objects (chat) or ``response`` text."""

    def __init__(self, endpoint: str, model: str) -> None:
        self.endpoint = endpoint
        self.model = model

    def piece(self, text: str, calls: tuple[Any, ...] = ()) -> dict[str, Any]:
        doc: dict[str, Any] = {"model": self.model, "created_at": iso_time(time.time())}
        if self.endpoint == "/api/chat":
            message: dict[str, Any] = {"role": "assistant", "content": text}
            if calls:
                message["tool_calls"] = [
                    {"function": {"name": name, "arguments": arguments}}
                    for _, name, arguments in map(tool_call_parts, calls)
                ]
            doc["message"] = message
        else:
            doc["response"] = text
        doc["done"] = False
        return doc

    def final(self, text: str, done_reason: str, stats: ChatStats | None = None,
              calls: tuple[Any, ...] = ()) -> dict[str, Any]:
        doc = self.piece(text, calls)
        doc["done"] = True
        doc["done_reason"] = done_reason
        if stats is not None:
            doc.update(_durations(stats))
        return doc


def _done_reason(stats: ChatStats) -> str:
    return "length" if stats.finish_reason == "length" else "stop"


class OllamaApi:
    """The Ollama routes of one app. Owns which models ``keep_alive`` pinned (so only those
    pins are lifted by a later ``keep_alive``); everything else it asks the cache."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pinned: set[str] = set()

    def routes(self) -> list[Route]:
        return [
            Route("/api/version", self.version, methods=["GET"]),
            Route("/api/tags", self.tags, methods=["GET"]),
            Route("/api/ps", self.ps, methods=["GET"]),
            Route("/api/show", self.show, methods=["POST"]),
            Route("/api/chat", self.chat, methods=["POST"]),
            Route("/api/generate", self.generate, methods=["POST"]),
            *(Route(path, partial(self.unsupported, why), methods=_ANY)
              for path, why in _UNSUPPORTED.items()),
            Route("/api/{rest:path}", self.unknown, methods=_ANY),
        ]

    # -- about models ------------------------------------------------------------------------
    async def version(self, request: Request) -> Response:
        return JSONResponse({"version": OLLAMA_VERSION})

    @_ollama_errors("/api/tags")
    async def tags(self, request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(tags_document, request.app.state.runtime.cache))

    @_ollama_errors("/api/ps")
    async def ps(self, request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(ps_document, request.app.state.runtime.cache))

    @_ollama_errors("/api/show")
    async def show(self, request: Request) -> Response:
        name = parsed(requested_model, await json_body(request))
        runtime = request.app.state.runtime
        name = await run_in_threadpool(resolve_model, runtime.cache, name, allow_paths(request))
        doc = await run_in_threadpool(show_document, runtime.cache, name)
        return JSONResponse(doc)

    async def unsupported(self, why: str, request: Request) -> Response:
        return _error_response(ApiError(501, "not_supported", why))

    async def unknown(self, request: Request) -> Response:
        return _error_response(ApiError(
            404, "not_found", f"no such Ollama endpoint {request.url.path} "
                              "(the README lists what mlx-tui serves)"))

    # -- replies -----------------------------------------------------------------------------
    @_ollama_errors("/api/chat")
    async def chat(self, request: Request) -> Response:
        limit = request.app.state.runtime.cache.settings.engine.max_tokens
        req = parsed(partial(parse_chat, max_tokens=limit), await json_body(request))
        return await self._reply(request, req, "/api/chat")

    @_ollama_errors("/api/generate")
    async def generate(self, request: Request) -> Response:
        limit = request.app.state.runtime.cache.settings.engine.max_tokens
        req = parsed(partial(parse_generate, max_tokens=limit), await json_body(request))
        return await self._reply(request, req, "/api/generate")

    async def _reply(self, request: Request, req: OllamaRequest, endpoint: str) -> Response:
        cache: ModelCache = request.app.state.runtime.cache
        name = await run_in_threadpool(resolve_model, cache, req.model, allow_paths(request))
        await run_in_threadpool(self._keep_alive_before, cache, name, req.keep_alive)
        shape = _Shape(endpoint, req.model)
        if not req.messages:
            return await self._load_or_unload(request, cache, name, req, shape)
        unload = req.keep_alive is not None and req.keep_alive.action == "unload"
        generation = start_reply(request, name, req.messages, req.params, req.tools)
        pieces = ReplyPieces(request, generation)
        if not req.stream:
            try:
                whole = await pieces.whole()
            finally:
                if unload:
                    await run_in_threadpool(cache.evict, name, KEEP_ALIVE_REASON)
            record_request(request, endpoint, whole.stats)
            return JSONResponse(shape.final(whole.text, _done_reason(whole.stats), whole.stats,
                                            tuple(whole.tool_calls)))
        try:
            await pieces.open()
        except BaseException:
            if unload:
                await run_in_threadpool(cache.evict, name, KEEP_ALIVE_REASON)
            raise
        return StreamingResponse(self._ndjson(request, pieces, shape, cache, name, unload),
                                 media_type="application/x-ndjson")

    async def _ndjson(self, request: Request, pieces: ReplyPieces, shape: _Shape,
                      cache: ModelCache, name: str, unload: bool) -> AsyncIterator[str]:
        """The reply as newline-delimited JSON; an error after the first line is one
        ``{"error": ...}`` line (what Ollama's clients raise)."""
        try:
            stats: ChatStats | None = None
            async for delta in pieces.pieces():
                calls = tool_calls_of(delta)
                if delta.text or calls:
                    yield _line(shape.piece(delta.text, calls))
                stats = delta.stats or stats
            assert stats is not None, "the engine ends every reply with its stats"
            record_request(request, shape.endpoint, stats)
            yield _line(shape.final("", _done_reason(stats), stats))
        except Exception as exc:  # noqa: BLE001 - the status line is sent; report in the stream
            error = request_failure(exc, cache)
            record_error(request, shape.endpoint, error.status)
            yield _line({"error": error.message})
        finally:
            if unload:  # not awaited: a client that went away cancels this generator
                loop = asyncio.get_running_loop()
                loop.run_in_executor(None, cache.evict, name, KEEP_ALIVE_REASON)

    async def _load_or_unload(self, request: Request, cache: ModelCache, name: str,
                              req: OllamaRequest, shape: _Shape) -> Response:
        """No messages: load the model (``done_reason: "load"``), or with ``keep_alive`` 0
        unload it (``"unload"``), as Ollama does for an empty request."""
        if req.keep_alive is not None and req.keep_alive.action == "unload":
            await run_in_threadpool(cache.evict, name, KEEP_ALIVE_REASON)
            doc = shape.final("", "unload")
        else:
            future = await run_in_threadpool(cache.load, name, "asked by an Ollama client")
            await asyncio.shield(asyncio.wrap_future(future))
            doc = shape.final("", "load")
        return Response(_line(doc) if req.stream else json.dumps(doc),
                        media_type="application/x-ndjson" if req.stream else "application/json")

    def _keep_alive_before(self, cache: ModelCache, name: str,
                           keep_alive: KeepAlive | None) -> None:
        """Apply ``keep_alive`` as the request starts (the unload itself waits for the reply)."""
        if keep_alive is None:
            return
        if keep_alive.action == "pin":
            with self._lock:
                pinned_here = name in self._pinned or not cache.get(name).pinned
                if pinned_here:
                    self._pinned.add(name)
            cache.pin(name, True)
            return
        with self._lock:
            lift = name in self._pinned
            self._pinned.discard(name)
        if lift:
            cache.pin(name, False)
        if keep_alive.action == "idle":
            cache.set_idle_unload(name, keep_alive.seconds)


def ollama_routes() -> list[Route]:
    """The Ollama API's routes, for ``create_app``'s route list."""
    return OllamaApi().routes()
