"""The only place that calls ``mlx_lm`` to load weights and that returns memory to the system.

``mlx_lm`` is imported on first use (it costs about a second), so the app's first frame does not
wait for it. A loaded model is fully evaluated on the loading thread (``mx.eval(model)`` covers
the underscore attributes that ``model.parameters()`` skips), so any other thread can generate
with it: MLX >= 0.31 keeps streams per thread and a lazy array evaluated elsewhere would fail.

Tokenizers are kept after their weights are evicted (the seed document's "cache the tokenizer
separately"), so a reload reads only weights; the two times are measured separately.
"""

from __future__ import annotations

import ctypes
import gc
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from .catalog import ModelInfo

__all__ = ["LoadedModel", "ModelLoadError", "ModelLoader", "MlxLoader", "release_pool"]


class ModelLoadError(RuntimeError):
    """A load that failed, with a message a person can act on."""


@dataclass
class LoadedModel:
    """A model in memory: the MLX module, its tokenizer and what the load cost."""

    model: Any
    tokenizer: Any
    resident_bytes: int
    weights_seconds: float
    tokenizer_seconds: float
    tokenizer_reused: bool = False
    worker: Any = None
    """A ready generation worker the model brings (a model served by several processes drives
    its ranks through one); None: the cache gives it a local one."""

    @property
    def load_seconds(self) -> float:
        return self.weights_seconds + self.tokenizer_seconds


class ModelLoader(Protocol):
    """Loads models and frees memory; :class:`MlxLoader` is the real one."""

    def load(self, info: ModelInfo) -> LoadedModel: ...

    def free(self) -> None: ...


def _explain(info: ModelInfo, exc: BaseException) -> str:
    """Turn mlx_lm's exceptions into a sentence that says what to do."""
    text = str(exc)
    where = info.path
    if isinstance(exc, FileNotFoundError):
        return f"{info.name}: files missing in {where}: {text}"
    if "not supported" in text and "Model type" in text:
        return (f"{info.name}: unsupported architecture {info.architecture!r} for this mlx-lm "
                f"version ({text}); upgrade mlx-lm or pick another model")
    if "Missing" in text and "parameters" in text:
        return f"{info.name}: weights do not match config.json ({text[:200]}); the download may be incomplete"
    if "safetensors" in text.lower() or "header" in text.lower() or isinstance(exc, (OSError,)):
        return f"{info.name}: a weights file in {where} is damaged or unreadable ({text[:200]}); re-download it"
    return f"{info.name}: load failed: {type(exc).__name__}: {text[:300]}"


class MlxLoader:
    """Loads MLX models with ``mlx_lm`` from local folders; thread-safe. The cache calls
    :meth:`load` on its loader pool (long-lived MLX threads), never on a thread of its own.

    Owns the tokenizer cache (by folder). Call :meth:`free` after dropping every reference to a
    model: it runs ``gc.collect()``, ``mx.clear_cache()`` (MLX's buffer pool) and, on Linux,
    ``malloc_trim`` so memory really returns.
    """

    def __init__(self) -> None:
        self._tokenizers: dict[Path, Any] = {}
        self._lock = threading.Lock()

    def load(self, info: ModelInfo) -> LoadedModel:
        if not info.loadable:
            raise ModelLoadError(f"{info.name}: {info.problem}")
        assert info.path is not None
        try:
            str(info.path).encode("utf-8")
        except UnicodeEncodeError:
            raise ModelLoadError(f"{info.name}: the folder's name is not valid UTF-8, which MLX "
                                 "cannot open; rename the folder") from None
        import mlx.core as mx
        from mlx.utils import tree_flatten
        from mlx_lm.utils import load_model, load_tokenizer

        _freeze_long_lived_objects()

        error: str | None = None
        try:
            started = time.perf_counter()
            model, config = load_model(info.path, lazy=True)
            mx.eval(model)  # everything, underscore attributes included, on this thread
            weights_seconds = time.perf_counter() - started
            resident = sum(v.nbytes for _, v in tree_flatten(model.parameters()))
            started = time.perf_counter()
            with self._lock:
                tokenizer = self._tokenizers.get(info.path)
            reused = tokenizer is not None
            if tokenizer is None:
                tokenizer = load_tokenizer(info.path, eos_token_ids=config.get("eos_token_id"))
                with self._lock:
                    self._tokenizers[info.path] = tokenizer
            tokenizer_seconds = time.perf_counter() - started
        except Exception as exc:  # noqa: BLE001 - every failure becomes a message for the user
            error = _explain(info, exc)
        if error is not None:
            # The exception (and its frames holding half-loaded arrays) is gone here, so
            # collecting now really returns the partial load's memory.
            model = None
            self.free()
            raise ModelLoadError(error)
        return LoadedModel(model, tokenizer, resident, weights_seconds, tokenizer_seconds, reused)

    def free(self) -> None:
        gc.collect()  # a model's modules hold reference cycles: only a collection frees them
        release_pool()


def release_pool() -> None:
    """Give MLX's buffer pool and glibc's free pages back to the system, without a garbage
    collection: enough for arrays freed by reference count (a dropped prompt cache), and a
    full ``gc.collect`` costs more the longer a server has run."""
    mx = sys.modules.get("mlx.core")
    if mx is not None:
        mx.clear_cache()
    _trim_malloc_arenas()


_frozen = False


def _freeze_long_lived_objects() -> None:
    """Once, when mlx_lm is first needed: collect, then move every object alive now (modules,
    the app's widgets, mlx_lm and transformers) out of the collector's sight.

    ``free()`` must run ``gc.collect()`` for a dropped model's memory to come back; a full
    collection walks the whole heap and held the GIL 60-180 ms here, freezing the app's event
    loop on every eviction. After the freeze it walks only what was made since (models,
    conversations): microseconds.
    """
    global _frozen
    if not _frozen:
        _frozen = True
        gc.collect()
        gc.freeze()


def _trim_malloc_arenas() -> None:
    """On Linux, give freed heap pages back to the OS.

    MLX's CPU allocator uses malloc; buffers allocated on a loader thread live in glibc's
    per-thread arenas, which keep freed pages until ``malloc_trim``. Without this the system
    figure (what thresholds are compared with) never drops after an eviction and clean-ups
    would loop. macOS's allocator (and Metal) return memory without help.
    """
    global _malloc_trim
    if not sys.platform.startswith("linux"):
        return
    if _malloc_trim is None:
        try:
            _malloc_trim = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):  # not glibc (e.g. musl): nothing to trim
            _malloc_trim = False
    if _malloc_trim:
        _malloc_trim(0)


_malloc_trim: Any = None
