"""Ollama's documents about models: ``/api/tags``, ``/api/ps`` and ``/api/show`` from the cache.

Plain functions of the cache's views and :mod:`.model_facts` (which reads small files from
each model's folder): call them from a worker thread, never from the event loop.

- ``size`` in ``/api/tags`` is the bytes on disk; in ``/api/ps`` the bytes in memory
  (measured once loaded). On Apple silicon all of it is reachable by the GPU, so
  ``size_vram`` equals ``size``.
- ``expires_at`` follows the idle-unload rule: last use plus the model's idle seconds
  (the settings' ``[cache].idle_unload_seconds`` unless ``keep_alive`` set its own); a pinned
  model, or one with no idle unload, never expires (:data:`FOREVER`, as Ollama's -1).
- ``digest`` identifies the folder's state (path, size, change time), not its content.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any

from ..core.cache import ModelCache, ModelState, ModelView
from .model_facts import (
    ModelFacts,
    model_facts,
    parameter_count,
    parameter_size,
    quantization_level,
)
from .tokenizers import folder_tokenizers

__all__ = ["FOREVER", "iso_time", "tags_document", "ps_document", "show_document", "expires_at"]

FOREVER = "2318-01-01T00:00:00+00:00"
"""``expires_at`` of a model that stays loaded (Ollama shows about 292 years ahead for -1)."""


def iso_time(ts: float) -> str:
    """Epoch seconds as RFC 3339 with the zone, as Ollama writes times."""
    return datetime.fromtimestamp(ts, timezone.utc).isoformat()


def _details(view: ModelView, facts: ModelFacts) -> dict[str, Any]:
    family = view.architecture or ""
    return {
        "parent_model": "",
        "format": "safetensors",
        "family": family,
        "families": [family] if family else None,
        "parameter_size": parameter_size(view, facts),
        "quantization_level": quantization_level(view, facts),
    }


def _tag(view: ModelView, facts: ModelFacts) -> dict[str, Any]:
    return {
        "name": view.name,
        "model": view.name,
        "modified_at": iso_time(facts.modified_at),
        "size": view.disk_bytes,
        "digest": facts.digest,
        "details": _details(view, facts),
    }


def tags_document(cache: ModelCache) -> dict[str, Any]:
    """``GET /api/tags``: every model on this machine (a repo id not downloaded is left out)."""
    cache.refresh_catalog()  # folders and downloads that appeared since the start
    return {"models": [_tag(v, model_facts(v)) for v in cache.models() if v.path]}


def expires_at(view: ModelView, default_idle_seconds: float, now: float) -> str:
    """When the idle-unload rule will unload ``view`` if nothing uses it again."""
    idle = getattr(view, "idle_unload_seconds", None)  # per model, once the cache exposes it
    idle = default_idle_seconds if idle is None else idle
    if view.pinned or not idle or idle <= 0:
        return FOREVER
    since = now if view.leases else max(view.last_used, view.loaded_at, 0.0) or now
    return iso_time(since + idle)


def ps_document(cache: ModelCache) -> dict[str, Any]:
    """``GET /api/ps``: the models in memory (and loading), as the seed's ``cached_models``."""
    now = time.time()
    idle = cache.settings.cache.idle_unload_seconds
    models = []
    for view in cache.models():
        if view.state not in (ModelState.LOADED, ModelState.LOADING):
            continue
        facts = model_facts(view)
        models.append({
            **_tag(view, facts),
            "size": view.size_bytes,
            "size_vram": view.size_bytes,
            "expires_at": expires_at(view, idle, now),
            "context_length": facts.context_length,
        })
    return {"models": models}


def _parameters(view: ModelView) -> str:
    """The model's own sampling defaults (``generation_config.json``), one ``key value`` a line."""
    defaults = getattr(view, "generation_defaults", None) or {}
    return "\n".join(f"{key:<30} {value}" for key, value in sorted(defaults.items()))


def show_document(cache: ModelCache, name: str) -> dict[str, Any]:
    """``POST /api/show``: template, parameters, details, model_info with the context length,
    and ``tools`` among the capabilities when the engine can give the model tools."""
    view = cache.get(name)
    facts = model_facts(view)
    arch = view.architecture or "unknown"
    info: dict[str, Any] = {"general.architecture": arch,
                            "general.parameter_count": parameter_count(view, facts)}
    if facts.context_length:
        info[f"{arch}.context_length"] = facts.context_length
    takes_tools = view.path is not None and folder_tokenizers.takes_tools(name, view.path)
    capabilities = ["completion"] + (["tools"] if takes_tools else [])
    return {
        "modelfile": f"# mlx-tui serves {name} from its folder; there is no Modelfile\n"
                     f"FROM {view.path or name}\n",
        "parameters": _parameters(view),
        "template": facts.chat_template or "",
        "details": _details(view, facts),
        "model_info": info,
        "capabilities": capabilities,
        "modified_at": iso_time(facts.modified_at),
    }
