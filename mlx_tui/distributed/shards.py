"""How many bytes each rank will hold, read from the ``*.safetensors`` headers before loading.

The split follows what ``mlx_lm.utils.sharded_load`` does:

* tensor parallel (``model.shard``): every matrix inside a transformer layer (attention and MLP
  projections, their quantization scales and biases) is cut in ``ranks`` equal parts; the
  embeddings, norms and head stay whole on every rank;
* pipeline (``model.model.pipeline``): each rank keeps whole layers, an even split with the
  extra layers on the low ranks, rank 0 holding the last ones; every rank keeps the embeddings,
  the final norm and the head.

The figures are estimates in the same sense as the catalogue's: exact tensor sizes, with small
1-D tensors of sharded layers (biases) counted whole.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path
from typing import Iterator

__all__ = ["shard_bytes", "pipeline_split"]

_DTYPE_BYTES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
    "U16": 2, "U32": 4, "U64": 8, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1,
}
_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")
_MAX_HEADER = 100_000_000


def _tensors(folder: Path) -> Iterator[tuple[str, int, int]]:
    """(name, bytes, number of dimensions) of every tensor the folder's headers declare."""
    for path in sorted(folder.glob("*.safetensors")):
        with path.open("rb") as fh:
            (length,) = struct.unpack("<Q", fh.read(8))
            if length > _MAX_HEADER:
                raise ValueError(f"{path.name} has an impossible header length")
            header = json.loads(fh.read(length))
        for name, meta in header.items():
            if name == "__metadata__":
                continue
            count = 1
            for dim in meta["shape"]:
                count *= int(dim)
            yield name, count * _DTYPE_BYTES.get(meta["dtype"], 4), len(meta["shape"])


def pipeline_split(layers: int, ranks: int) -> list[tuple[int, int]]:
    """``[start, end)`` of the layers each rank runs (mlx-lm's even split, low ranks get the
    extra layers, rank ``r`` runs the layers after those of ranks ``r+1 ... ranks-1``)."""
    base, extra = divmod(layers, ranks)
    sizes = [base + (1 if r < extra else 0) for r in range(ranks)]
    spans = []
    for r in range(ranks):
        start = sum(sizes[r + 1:])
        spans.append((start, start + sizes[r]))
    return spans


def shard_bytes(folder: Path, ranks: int, pipeline: bool = False) -> list[int]:
    """Bytes each of ``ranks`` ranks will hold once ``folder`` is loaded sharded."""
    shared = 0
    by_layer: dict[int, tuple[int, int]] = {}  # layer -> (matrix bytes, other bytes)
    for name, size, ndim in _tensors(folder):
        match = _LAYER.search(name)
        if match is None:
            shared += size
            continue
        layer = int(match.group(1))
        matrices, others = by_layer.get(layer, (0, 0))
        by_layer[layer] = (matrices + size, others) if ndim >= 2 else (matrices, others + size)
    if not pipeline:
        matrices = sum(m for m, _ in by_layer.values())
        others = sum(o for _, o in by_layer.values())
        return [shared + others + -(-matrices // ranks) for _ in range(ranks)]
    count = max(by_layer, default=-1) + 1
    result = []
    for start, end in pipeline_split(count, ranks):
        result.append(shared + sum(sum(by_layer.get(i, (0, 0))) for i in range(start, end)))
    return result
