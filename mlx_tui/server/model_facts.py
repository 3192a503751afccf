"""What a model's folder says about it, for clients that ask (Ollama's tags, show and ps).

:func:`model_facts` reads ``config.json`` and ``tokenizer_config.json`` (never the weights):
the context length, the chat template and the weights' number format; the parameter count
is estimated from the cache's size estimate and the bits per weight. Results are kept per
folder until its files change. Reads the disk: call it from a worker thread, never from the
event loop.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.cache import ModelView

__all__ = ["ModelFacts", "model_facts", "parameter_count", "parameter_size", "quantization_level"]

_CONTEXT_KEYS = ("max_position_embeddings", "max_sequence_length", "max_seq_len", "n_positions",
                 "seq_length", "n_ctx")
_DTYPE_BITS = {"float32": 32, "float16": 16, "bfloat16": 16, "float64": 64}


@dataclass(frozen=True)
class ModelFacts:
    """One model folder's description; every field may be unknown (None / empty)."""

    context_length: int | None = None
    chat_template: str | None = None
    dtype: str | None = None  # the unquantized weights' format ("bfloat16"), from config.json
    modified_at: float = 0.0  # the folder's last change, epoch seconds
    digest: str = ""  # sha256 of the folder's identity (path, size, change time)


_cache: dict[tuple[str, float, int], ModelFacts] = {}
_lock = threading.Lock()


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _context_length(config: dict[str, Any]) -> int | None:
    for section in (config, config.get("text_config") or {}):
        if isinstance(section, dict):
            for key in _CONTEXT_KEYS:
                value = section.get(key)
                if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                    return value
    return None


def _chat_template(folder: Path) -> str | None:
    """The template from ``tokenizer_config.json`` (a string, or named templates where the
    one called "default" wins), else from ``chat_template.jinja``."""
    template = _read_json(folder / "tokenizer_config.json").get("chat_template")
    if isinstance(template, list):
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default") or next(iter(named.values()), None)
    if isinstance(template, str) and template:
        return template
    try:
        return (folder / "chat_template.jinja").read_text(encoding="utf-8") or None
    except OSError:
        return None


def model_facts(view: ModelView) -> ModelFacts:
    """The facts of ``view``'s folder (empty facts for a model without one)."""
    if not view.path:
        return ModelFacts()
    folder = Path(view.path)
    try:
        stat = os.stat(folder)
    except OSError:
        return ModelFacts()
    key = (str(folder), stat.st_mtime, view.disk_bytes)
    with _lock:
        known = _cache.get(key)
    if known is not None:
        return known
    config = _read_json(folder / "config.json")
    dtype = config.get("torch_dtype") or config.get("dtype")
    identity = f"{folder}\0{view.disk_bytes}\0{stat.st_mtime_ns}".encode()
    facts = ModelFacts(
        context_length=_context_length(config),
        chat_template=_chat_template(folder),
        dtype=dtype if isinstance(dtype, str) else None,
        modified_at=stat.st_mtime,
        digest=hashlib.sha256(identity).hexdigest(),
    )
    with _lock:
        _cache[key] = facts
    return facts


def _bits_per_weight(view: ModelView, facts: ModelFacts) -> int:
    return view.quantization_bits or _DTYPE_BITS.get(facts.dtype or "", 16)


def parameter_count(view: ModelView, facts: ModelFacts) -> int:
    """About how many weights the model has: its estimated bytes over the bits per weight
    (quantization scales make a quantized model's figure a little high); 0 when unknown."""
    return round(view.estimated_bytes * 8 / _bits_per_weight(view, facts))


def parameter_size(view: ModelView, facts: ModelFacts) -> str:
    """:func:`parameter_count` as Ollama writes it (``"7.6B"``, ``"494M"``); ``""`` when unknown."""
    count = parameter_count(view, facts)
    if not count:
        return ""
    for unit, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if count >= size:
            return f"{count / size:.1f}{unit}" if count < 10 * size else f"{count / size:.0f}{unit}"
    return f"{count:.0f}"


def quantization_level(view: ModelView, facts: ModelFacts) -> str:
    """``"Q4"`` for 4-bit MLX quantization, else the weights' format (``"BF16"``, ``"F32"``)."""
    if view.quantization_bits:
        return f"Q{view.quantization_bits}"
    if facts.dtype:
        return facts.dtype.replace("bfloat", "BF").replace("float", "F").upper()
    return ""
