"""One generation worker per loaded model: a long-lived MLX thread running ``BatchGenerator``.

The worker owns the model while it is loaded: its weights, tokenizer, the thread's MLX stream
and an mlx-lm ``BatchGenerator`` (continuous batching: every request in flight shares each
decode step, and a new request's prompt is read in chunks between them). Request threads only
:meth:`GenerationWorker.submit`; everything else happens on the worker's thread, in order:

* requests wait in a bounded queue (``[engine].max_batch`` decoding, ``queue_size`` waiting;
  more raise :class:`~mlx_tui.core.errors.ModelBusy`);
* each request has its own sampler, logits processors, stop strings, ``max_tokens``,
  log-probabilities and cancel event; cancel is seen between steps, so a client that leaves
  costs at most one prefill chunk;
* a prompt cache (``prompt_cache``, optional) gives each new request the KV cache of its
  longest known prefix and keeps the cache of every finished request;
* :meth:`stop` ends the worker: the model, the generator and the caches are dropped on the
  worker's own thread, and the thread goes back to its pool for the next model.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from ..errors import ModelBusy
from ..mlx_threads import MlxThread, MlxThreadPool
from ..settings import EngineSettings
from .request import Finished, GenerationHandle, GenerationRequest, Piece, TokenLogprob
from .sampling import logits_processors_for, sampler_for
from .stops import StopMatcher

__all__ = ["GenerationWorker", "PromptCacheBank", "WorkerStopped"]

log = logging.getLogger("mlx_tui.engine")

IDLE_POLL_SECONDS = 1.0


class WorkerStopped(RuntimeError):
    """A request reached a worker whose model was unloaded (the caller's lease had ended)."""


class PromptCacheBank(Protocol):
    """Where a worker finds and keeps KV caches of earlier prompts (see
    :mod:`mlx_tui.core.prompt_cache`). Called only on the worker's thread."""

    def fetch(self, tokens: list[int], label: str) -> tuple[list[Any] | None, int]:
        """A KV cache holding the first ``n`` tokens of ``tokens`` (n < len(tokens)), or
        ``(None, 0)``; the cache is the caller's to extend."""

    def insert(self, tokens: list[int], cache: list[Any], label: str) -> None:
        """Keep ``cache`` (holding ``tokens``) for later requests."""

    def close(self) -> None:
        """The model is going: spill to disk or drop, on this thread."""


@dataclass(eq=False)
class _Active:
    """A request being served: its handle and its per-request state."""

    handle: GenerationHandle
    detokenizer: Any
    stops: StopMatcher
    cached: int
    started_at: float
    prefilled: int = 0  # prompt tokens this request had processed (beyond the cached ones)
    first_token_at: float | None = None
    generated: list[int] = field(default_factory=list)
    done: bool = False

    @property
    def request(self) -> GenerationRequest:
        return self.handle.request


def _keep_leading_space(detokenizer: Any) -> None:
    """Make one of mlx-lm's streaming detokenizers keep the space that begins its text."""
    if hasattr(detokenizer, "trim_space"):  # SentencePiece
        detokenizer.trim_space = False
    if hasattr(detokenizer, "_maybe_trim_space"):  # byte-level BPE: this instance only
        detokenizer._maybe_trim_space = lambda text: text


def _check_sampler(sampler: Any, vocab: int) -> None:
    """Run a request's sampler once on a dummy row, on this thread, before it joins a batch:
    one that raises fails this request alone instead of every request's next step."""
    import mlx.core as mx

    mx.eval(sampler(mx.zeros((1, vocab), dtype=mx.float32)))


class GenerationWorker:
    """Generates every reply of one loaded model. Thread-safe :meth:`submit` and :meth:`stop`;
    everything else runs on the worker's own MLX thread."""

    def __init__(self, name: str, model: Any, tokenizer: Any, settings: EngineSettings,
                 prompt_cache: PromptCacheBank | None = None) -> None:
        self.name = name
        self.tokenizer = tokenizer
        self._model = model
        self._settings = settings
        self._prompt_cache = prompt_cache
        self._inbox: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._in_flight = 0
        self._stopping = False
        self._thread: MlxThread | None = None
        self._done: Future[None] | None = None
        self._eos = tuple(sorted(getattr(tokenizer, "eos_token_ids", ()) or ()))
        self._peak_batch = 0

    # -- any thread ------------------------------------------------------------------------------
    def start(self, threads: MlxThreadPool) -> None:
        """Run the worker on a thread of ``threads`` (a reused one when one is idle)."""
        self._thread, self._done = threads.run(self._run)

    @property
    def peak_batch(self) -> int:
        """The most requests this worker has had in one batch (for tests and figures)."""
        return self._peak_batch

    @property
    def in_flight(self) -> int:
        """Requests submitted and not finished (decoding or waiting)."""
        with self._lock:
            return self._in_flight

    def submit(self, request: GenerationRequest,
               on_done: Callable[[object], None] | None = None) -> GenerationHandle:
        """Queue ``request``; raises :class:`ModelBusy` when the queue is full. ``on_done`` is
        called on the worker's thread when the request ends, however it ends."""
        capacity = self._settings.max_batch + self._settings.queue_size
        with self._lock:
            if self._stopping:
                raise WorkerStopped(f"{self.name} was unloaded")
            if self._in_flight >= capacity:
                raise ModelBusy(self.name, self._in_flight - self._settings.max_batch)
            self._in_flight += 1
        handle = GenerationHandle(request)
        handle.on_done = on_done
        self._inbox.put(("request", handle))
        return handle

    def call(self, fn: Callable[[], Any]) -> "Future[Any]":
        """Run ``fn`` on the worker's thread between two steps (prompt-cache upkeep)."""
        future: Future[Any] = Future()
        self._inbox.put(("call", (fn, future)))
        return future

    def stop(self, timeout: float = 60.0) -> None:
        """End the worker once no request is in flight (the cache stops only idle models):
        the model and every MLX object of it are dropped on the worker's thread."""
        with self._lock:
            if self._stopping:
                return
            self._stopping = True
        self._inbox.put(("stop", None))
        if self._done is not None and not (self._thread and self._thread.is_current()):
            try:
                self._done.result(timeout)
            except Exception:  # noqa: BLE001 - logged where it happened
                pass

    # -- the worker's thread -----------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._serve()
        except BaseException:  # noqa: BLE001 - the thread goes back to its pool regardless
            log.exception("%s: generation worker failed", self.name)
        finally:
            self._model = None
            self.tokenizer = None
            if self._prompt_cache is not None:
                try:
                    self._prompt_cache.close()
                except Exception:  # noqa: BLE001
                    log.exception("%s: prompt cache close failed", self.name)
                self._prompt_cache = None

    def _serve(self) -> None:
        import mlx.core as mx
        from mlx_lm.generate import BatchGenerator

        stream = mx.default_stream(mx.default_device())
        generator = self._new_generator(BatchGenerator, stream)
        waiting: deque[GenerationHandle] = deque()
        active: dict[int, _Active] = {}
        try:
            while True:
                idle = not active and not waiting
                if not self._drain_inbox(waiting, block=idle):
                    break
                self._admit(generator, waiting, active)
                self._drop_cancelled(generator, waiting, active)
                if not active:
                    continue
                try:
                    progress, responses = generator.next()
                except Exception as exc:  # noqa: BLE001 - fail these requests, keep serving
                    log.exception("%s: generation step failed", self.name)
                    for item in list(active.values()):
                        self._end(item, error=exc)
                    active.clear()
                    generator.close()
                    generator = self._new_generator(BatchGenerator, stream)
                    continue
                for p in progress:
                    item = active.get(p.uid)
                    if item is not None:
                        item.prefilled = max(item.prefilled, p.progress[0])
                self._peak_batch = max(self._peak_batch, len(active))
                self._on_responses(generator, responses, active)
        finally:
            for item in list(active.values()):
                self._end(item, reason="cancelled")
            for handle in waiting:
                self._finish_unstarted(handle, "cancelled")
            generator.close()
            del generator

    def _new_generator(self, cls: Any, stream: Any) -> Any:
        s = self._settings
        return cls(self._model, max_tokens=256, stop_tokens=[[t] for t in self._eos],
                   completion_batch_size=s.max_batch, prefill_batch_size=min(s.max_batch, 8),
                   prefill_step_size=s.prefill_step, stream=stream)

    def _drain_inbox(self, waiting: deque[GenerationHandle], block: bool) -> bool:
        """Take every message; False when told to stop."""
        while True:
            try:
                kind, payload = self._inbox.get(timeout=IDLE_POLL_SECONDS) if block else \
                    self._inbox.get_nowait()
            except queue.Empty:
                return True
            block = False
            if kind == "stop":
                return False
            if kind == "request":
                waiting.append(payload)
            elif kind == "call":
                fn, future = payload
                try:
                    future.set_result(fn())
                except Exception as exc:  # noqa: BLE001 - the caller gets it
                    future.set_exception(exc)

    def _admit(self, generator: Any, waiting: deque[GenerationHandle], active: dict[int, _Active]) -> None:
        """Move waiting requests into the batch while it has room."""
        while waiting and len(active) < self._settings.max_batch:
            handle = waiting.popleft()
            request = handle.request
            if request.cancel.is_set():
                self._finish_unstarted(handle, "cancelled")
                continue
            try:
                self._insert(generator, handle, active)
            except Exception as exc:  # noqa: BLE001 - this request fails, the others go on
                log.exception("%s: could not start a request", self.name)
                self._finish_unstarted(handle, error=exc)

    def _insert(self, generator: Any, handle: GenerationHandle, active: dict[int, _Active]) -> None:
        request = handle.request
        prompt = request.prompt
        cache, cached = (None, 0)
        if self._prompt_cache is not None:
            cache, cached = self._prompt_cache.fetch(prompt, request.label)
        params = request.params
        sampler = sampler_for(params)
        _check_sampler(sampler, len(self.tokenizer))  # a bad one would fail the whole batch's step
        (uid,) = generator.insert_segments(
            segments=[[prompt[cached:]]],
            max_tokens=[params.max_tokens],
            caches=[cache],
            all_tokens=[list(prompt[:cached])],
            samplers=[sampler],
            logits_processors=[logits_processors_for(params)],
        )
        detokenizer = self.tokenizer.detokenizer
        if request.keep_leading_space:
            _keep_leading_space(detokenizer)
        active[uid] = _Active(handle, detokenizer, StopMatcher(params.stop), cached, time.perf_counter())

    def _drop_cancelled(self, generator: Any, waiting: deque[GenerationHandle],
                        active: dict[int, _Active]) -> None:
        for handle in [h for h in waiting if h.request.cancel.is_set()]:
            waiting.remove(handle)
            self._finish_unstarted(handle, "cancelled")
        gone = [uid for uid, item in active.items() if item.request.cancel.is_set()]
        if gone:
            self._remove(generator, gone, active, "cancelled")

    def _remove(self, generator: Any, uids: list[int], active: dict[int, _Active], reason: str) -> None:
        keep = self._prompt_cache is not None
        caches = generator.remove(uids, return_prompt_caches=keep)
        for uid in uids:
            item = active.pop(uid)
            if keep and uid in caches:
                cache, tokens = caches[uid]
                self._keep(list(tokens), cache, item)
            self._end(item, reason=reason)

    def _keep(self, tokens: list[int], cache: Any, item: _Active) -> None:
        if self._prompt_cache is None or not tokens or cache is None:
            return
        try:
            self._prompt_cache.insert(tokens, cache, item.request.label)
        except Exception:  # noqa: BLE001 - a cache that cannot be kept is only a lost speed-up
            log.exception("%s: could not keep a prompt cache", self.name)

    def _on_responses(self, generator: Any, responses: list[Any], active: dict[int, _Active]) -> None:
        now = time.perf_counter()
        stopped: list[int] = []
        for r in responses:
            item = active.get(r.uid)
            if item is None:
                continue
            if item.first_token_at is None:
                item.first_token_at = now
            params = item.request.params
            detok = item.detokenizer
            logprobs: tuple[TokenLogprob, ...] = ()
            if r.finish_reason == "stop":  # an end-of-sequence token: not part of the reply
                detok.finalize()
                text = detok.last_segment
            else:
                item.generated.append(r.token)
                detok.add_token(r.token)
                if r.finish_reason is not None:
                    detok.finalize()
                text = detok.last_segment
                if params.logprobs:
                    logprobs = (self._logprob(r, params.top_logprobs),)
            shown = item.stops.feed(text)
            if r.finish_reason is not None and not item.stops.stopped:
                shown += item.stops.flush()
            token = (r.token,) if r.finish_reason != "stop" else ()
            if shown or logprobs or token:  # a token whose text is held back still counts
                item.handle.put(Piece(shown, token, logprobs))
            if r.finish_reason is not None:
                active.pop(r.uid)
                self._keep(list(r.all_tokens or []), r.prompt_cache, item)
                self._end(item, reason="stop" if item.stops.stopped else r.finish_reason)
            elif item.stops.stopped:
                stopped.append(r.uid)
        if stopped:
            self._remove(generator, stopped, active, "stop")

    def _logprob(self, r: Any, top: int) -> TokenLogprob:
        import mlx.core as mx

        vector = r.logprobs
        chosen = float(vector[r.token].item())
        alternatives: tuple[tuple[int, str, float], ...] = ()
        if top > 0:
            top = min(top, vector.shape[-1])
            ids = mx.argpartition(-vector, kth=top - 1)[:top]
            values = vector[ids]
            order = mx.argsort(-values)
            ids, values = ids[order].tolist(), values[order].tolist()
            alternatives = tuple((i, self.tokenizer.decode([i]), float(v)) for i, v in zip(ids, values))
        return TokenLogprob(r.token, self.tokenizer.decode([r.token]), chosen, alternatives)

    def _end(self, item: _Active, reason: str = "stop", error: BaseException | None = None) -> None:
        if item.done:
            return
        item.done = True
        if error is not None:
            item.handle.put(error)
        else:
            now = time.perf_counter()
            request = item.request
            first = item.first_token_at
            if self._prompt_cache is not None and first is not None and item.prefilled:
                self._prompt_cache.observe_prefill(item.prefilled, first - item.started_at)
            item.handle.put(Finished(
                finish_reason=reason,
                prompt_tokens=len(request.prompt),
                cached_tokens=item.cached,
                generation_tokens=len(item.generated),
                prefill_seconds=(first or now) - item.started_at,
                first_token_at=first,
                decode_seconds=now - first if first is not None else 0.0,
                queued_seconds=item.started_at - request.submitted_at,
                generated=tuple(item.generated),
                prefilled_tokens=item.prefilled,
                stop_sequence=item.stops.matched,
            ))
        with self._lock:
            self._in_flight -= 1

    def _finish_unstarted(self, handle: GenerationHandle, reason: str = "cancelled",
                          error: BaseException | None = None) -> None:
        now = time.perf_counter()
        item = _Active(handle, None, StopMatcher(()), 0, now)
        self._end(item, reason=reason, error=error)
