"""Per-request samplers and logits processors, built with mlx-lm's own pieces.

``make_sampler`` and ``make_logits_processors`` come from ``mlx_lm.sample_utils``. Requests
with the same sampling settings share one sampler object, so a batch whose requests agree is
sampled in one call (``BatchGenerator`` batches the call when every row has the same sampler).
A request with a ``seed`` gets its own random key, split at every step, so its reply does not
depend on what else is in the batch (MLX's global generator is shared by everything).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Callable

from ..chat_types import GenerationParams

__all__ = ["sampler_for", "logits_processors_for"]

Sampler = Callable[[Any], Any]


@lru_cache(maxsize=256)
def _shared_sampler(temp: float, top_p: float, min_p: float, top_k: int) -> Sampler:
    from mlx_lm.sample_utils import make_sampler

    return make_sampler(temp=temp, top_p=top_p, min_p=min_p, top_k=top_k)


def _seeded_sampler(params: GenerationParams) -> Sampler:
    import mlx.core as mx
    from mlx_lm.sample_utils import apply_min_p, apply_top_k, apply_top_p

    key = mx.random.key(params.seed or 0)
    temp = params.temperature

    def sample(logprobs: Any) -> Any:
        nonlocal key
        if 0 < params.top_p < 1.0:
            logprobs = apply_top_p(logprobs, params.top_p)
        if params.min_p:
            logprobs = apply_min_p(logprobs, params.min_p)
        if params.top_k > 0:
            logprobs = apply_top_k(logprobs, params.top_k)
        key, step = mx.random.split(key)
        return mx.random.categorical(logprobs * (1.0 / temp), key=step)

    return sample


def sampler_for(params: GenerationParams) -> Sampler:
    """The sampler of one request (temperature 0: the argmax, whatever the seed)."""
    if params.temperature == 0:
        return _shared_sampler(0.0, 0.0, 0.0, 0)
    if params.seed is not None:
        return _seeded_sampler(params)
    return _shared_sampler(float(params.temperature), float(params.top_p), float(params.min_p),
                           int(params.top_k))


def logits_processors_for(params: GenerationParams) -> list[Any]:
    """Repetition, presence and frequency penalties as mlx-lm's logits processors."""
    if not (params.repetition_penalty or params.presence_penalty or params.frequency_penalty):
        return []
    from mlx_lm.sample_utils import make_logits_processors

    return make_logits_processors(
        repetition_penalty=params.repetition_penalty or None,
        presence_penalty=params.presence_penalty or None,
        frequency_penalty=params.frequency_penalty or None,
    )
