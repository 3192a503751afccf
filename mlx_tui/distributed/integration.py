"""Where a distributed model meets the cache and the server, until the core has the seams.

Two small hooks, each a wrapper around the core's own code, installed once by :func:`install`
(``mlx-tui serve --hostfile`` does it; nothing else imports this module):

* the cache makes a :class:`GenerationWorker` for every model it loads; for a
  :class:`~.loader.DistributedModel` it is given the model's own :class:`RemoteWorker` instead.
  Seam that replaces it: ``LoadedModel.worker`` (a ready worker), used by
  ``ModelCache._install`` when set.
* ``GET /`` and ``GET /health`` describe each model with ``model_document``; a distributed
  model's document gets ``"ranks"`` (host, state, shard bytes, memory of each rank). Seam that
  replaces it: ``ModelView.ranks`` filled from the loader, written by ``ModelView.to_dict``.

Both wrappers leave local models exactly as they were.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

from .loader import DistributedLoader, DistributedModel

__all__ = ["install", "register"]

_lock = threading.Lock()
_installed = False
_loaders: "weakref.WeakSet[DistributedLoader]" = weakref.WeakSet()


def register(loader: DistributedLoader) -> None:
    """Let ``/health`` show the ranks of ``loader``'s models."""
    with _lock:
        _loaders.add(loader)


def _ranks(name: str) -> list[dict[str, Any]]:
    with _lock:
        loaders = list(_loaders)
    for loader in loaders:
        ranks = loader.ranks(name)
        if ranks:
            return [r.to_dict() for r in ranks]
    return []


def install() -> None:
    """Install both hooks (idempotent)."""
    global _installed
    with _lock:
        if _installed:
            return
        _installed = True
    from ..core import cache as cache_module
    from ..server import documents

    local_worker = cache_module.GenerationWorker

    def worker_for(name: str, model: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(model, DistributedModel):
            return model.worker
        return local_worker(name, model, *args, **kwargs)

    cache_module.GenerationWorker = worker_for  # type: ignore[assignment,misc]

    model_document = documents.model_document

    def with_ranks(view: Any) -> dict[str, Any]:
        doc = model_document(view)
        ranks = _ranks(view.name)
        if ranks:
            doc["ranks"] = ranks
        return doc

    documents.model_document = with_ranks  # type: ignore[assignment]
