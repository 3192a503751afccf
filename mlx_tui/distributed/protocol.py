"""The messages of a distributed model, as plain picklable values.

Two channels carry them:

* between the API process and rank 0 (the same machine): a ``multiprocessing.connection`` over
  a Unix socket in a private folder, with an authentication key. The API process sends
  :data:`Command` values; rank 0 sends :data:`Report` values.
* between rank 0 and the other ranks: MLX's collectives (:mod:`.collectives`). Rank 0 shares a
  :class:`Step` at every turn of the loop; every rank gathers a :class:`RankReport` when a step
  asks for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union

from ..core.engine.request import Finished, Piece
from ..core.memory import MemorySnapshot
from ..core.settings import EngineSettings

__all__ = [
    "Load", "Evict", "Submit", "Cancel", "Shutdown", "Command",
    "RankReport", "Hello", "Loaded", "LoadRefused", "LoadFailed", "Evicted", "Item", "Memory",
    "Lost", "Report", "RemoteError", "Step", "RankCommand",
]


# -- API process -> rank 0 -----------------------------------------------------------------------
@dataclass(frozen=True)
class Load:
    """Load ``path`` sharded on every rank; refuse first if a host cannot fit ``need_bytes[r]``
    under ``limit_fraction`` of its memory."""

    name: str
    path: str
    pipeline: bool
    need_bytes: tuple[int, ...]
    limit_fraction: float
    engine: EngineSettings
    seed: int


@dataclass(frozen=True)
class Evict:
    """Stop generating, free every shard and MLX's buffer pool on every rank."""


@dataclass(frozen=True)
class Submit:
    """One generation request (token ids and parameters, see
    :class:`~mlx_tui.core.engine.request.GenerationRequest`), numbered by the API process."""

    seq: int
    prompt: tuple[int, ...]
    params: Any  # mlx_tui.core.chat_types.GenerationParams
    label: str = "request"


@dataclass(frozen=True)
class Cancel:
    seq: int


@dataclass(frozen=True)
class Shutdown:
    """Every rank exits (status 0)."""


Command = Union[Load, Evict, Submit, Cancel, Shutdown]


# -- rank 0 -> API process ------------------------------------------------------------------------
@dataclass(frozen=True)
class RankReport:
    """What one rank says about itself: where it runs, its memory, the bytes of its shard."""

    rank: int
    hostname: str
    pid: int
    memory: MemorySnapshot
    shard_bytes: int = 0
    error: str | None = None
    seconds: float = 0.0


@dataclass(frozen=True)
class Hello:
    """The group is up: one report per rank."""

    ranks: tuple[RankReport, ...]


@dataclass(frozen=True)
class Loaded:
    """Every rank holds its shard (``RankReport.shard_bytes``, measured)."""

    ranks: tuple[RankReport, ...]


@dataclass(frozen=True)
class LoadRefused:
    """A host could not fit its part; nothing was loaded."""

    ranks: tuple[RankReport, ...]


@dataclass(frozen=True)
class LoadFailed:
    """At least one rank failed (``RankReport.error``); every rank freed what it had read."""

    ranks: tuple[RankReport, ...]


@dataclass(frozen=True)
class Evicted:
    ranks: tuple[RankReport, ...]


@dataclass(frozen=True)
class RemoteError:
    """An exception raised on rank 0 for one request, as text (exceptions may not pickle)."""

    kind: str
    message: str


@dataclass(frozen=True)
class Item:
    """Output of request ``seq``: a :class:`Piece`, a :class:`Finished` or a :class:`RemoteError`."""

    seq: int
    item: Union[Piece, Finished, RemoteError]


@dataclass(frozen=True)
class Memory:
    """The periodic memory reading of every rank (also the group's heartbeat)."""

    ranks: tuple[RankReport, ...]


@dataclass(frozen=True)
class Lost:
    """Rank 0's collective failed: a peer died or left. Rank 0 waits to be stopped."""

    error: str


Report = Union[Hello, Loaded, LoadRefused, LoadFailed, Evicted, Item, Memory, Lost]


# -- rank 0 -> every rank, over the collectives -----------------------------------------------
@dataclass(frozen=True)
class Step:
    """One turn of every rank's loop, decided by rank 0: requests to start, requests cancelled,
    whether to stop the model (and then the ranks), whether to report memory, and how long
    rank 0 waits for work before the next turn (``idle`` seconds, 0 when busy: the other ranks
    sleep that long instead of spinning in the next collective)."""

    submits: tuple[Submit, ...] = ()
    cancels: tuple[int, ...] = ()
    stop: bool = False
    shutdown: bool = False
    probe: bool = False
    idle: float = 0.0


@dataclass(frozen=True)
class RankCommand:
    """A turn of the loop while no model is loaded: a load, a shutdown, or a tick (``command``
    None) that may ask for a memory report."""

    command: Union[Load, Shutdown, None] = None
    probe: bool = False
    idle: float = 0.0
