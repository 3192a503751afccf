"""The generation engine: one long-lived worker per loaded model, batching its requests.

:class:`~.worker.GenerationWorker` owns a loaded model's MLX stream and an mlx-lm
``BatchGenerator``; requests (:class:`~.request.GenerationRequest`) reach it through a bounded
queue and their output comes back through a :class:`~.request.GenerationHandle`, so no request
thread ever runs MLX. Sampling (:mod:`.sampling`) and stop strings (:mod:`.stops`) hold per
request inside a batch.
"""

from .request import GenerationHandle, GenerationRequest, Piece, Finished, TokenLogprob
from .worker import GenerationWorker

__all__ = ["GenerationHandle", "GenerationRequest", "GenerationWorker", "Piece", "Finished",
           "TokenLogprob"]
