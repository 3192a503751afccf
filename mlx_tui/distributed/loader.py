"""Loading a model across machines behind the core's ``ModelLoader`` protocol.

:class:`DistributedLoader` is the loader the cache is built with when some models are
distributed: it loads those through their :class:`~.group.RankGroup` and every other model with
the local loader it wraps. For a distributed model, :meth:`DistributedLoader.load`

1. starts the group if it is not running (again after a failure),
2. estimates each rank's shard from the safetensors headers (:func:`~.shards.shard_bytes`),
3. has every rank check its part fits under the warning threshold of its host's memory (a host
   that cannot is a :class:`~.errors.HostTooSmall` naming it, with its figures), then load it,
4. loads the tokenizer here (the chat template is applied in this process),

and returns a :class:`LoadedModel` whose ``model`` is a :class:`DistributedModel`: the handle
of the shards (its ``worker`` is the :class:`~.remote_worker.RemoteWorker` requests go
through) and whose ``resident_bytes`` is rank 0's shard, the part that lives on this machine.

Unloading: the cache stops a model's worker when it unloads it; the remote worker's stop frees
every rank's shard (:meth:`DistributedLoader.unload` does the same when called directly).
"""

from __future__ import annotations

import logging
import random
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping

from ..core.catalog import ModelInfo
from ..core.loader import LoadedModel, MlxLoader, ModelLoader
from ..core.planner import Thresholds
from ..core.settings import EngineSettings
from ..core.units import format_bytes
from .errors import DistributedLoadError, HostTooSmall, RankLost
from .group import GroupSettings, RankGroup
from .hostfile import Hostfile, HostfileError
from .protocol import Item, Load, Loaded, LoadRefused, RankReport
from .remote_worker import RemoteWorker
from .shards import shard_bytes
from .views import RankView

__all__ = ["DistributedSpec", "DistributedModel", "DistributedLoader", "HostPressure"]

log = logging.getLogger("mlx_tui.distributed")


@dataclass(frozen=True)
class DistributedSpec:
    """One model served across the hosts of ``hostfile``: tensor parallel, or ``pipeline``."""

    hostfile: Hostfile
    pipeline: bool = False
    group: GroupSettings = field(default_factory=GroupSettings)

    KEYS = ("hostfile", "backend", "pipeline", "rank_timeout", "rank_python")

    @classmethod
    def from_table(cls, name: str, table: Mapping[str, Any]) -> "DistributedSpec":
        """The spec a ``[models.NAME]`` table of settings.toml describes (``hostfile``, and
        optionally ``backend``, ``pipeline``, ``rank_timeout``, ``rank_python``); raises
        :class:`HostfileError` naming the table and the key."""
        where = f"settings.toml [models.{name}]"
        unknown = sorted(set(table) - set(cls.KEYS) - {"path", "repo"})
        if unknown:
            raise HostfileError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(cls.KEYS)})")
        raw = table.get("hostfile")
        if not isinstance(raw, str) or not raw:
            raise HostfileError(f"{where}: hostfile must be the path of a hostfile")
        hostfile = Hostfile.load(raw)
        backend = table.get("backend")
        if backend is not None and not isinstance(backend, str):
            raise HostfileError(f"{where}: backend must be a string")
        backend = hostfile.resolved_backend(backend)
        hostfile.check(backend)
        pipeline = table.get("pipeline", False)
        timeout = table.get("rank_timeout", 60.0)
        python = table.get("rank_python", sys.executable)
        if not isinstance(pipeline, bool):
            raise HostfileError(f"{where}: pipeline must be true or false")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise HostfileError(f"{where}: rank_timeout must be a number of seconds above 0")
        if not isinstance(python, str) or not python:
            raise HostfileError(f"{where}: rank_python must be the path of a python")
        return cls(hostfile, pipeline, GroupSettings(backend=backend, python=python,
                                                     rank_timeout=float(timeout)))


@dataclass(frozen=True)
class HostPressure:
    """A follower host past a threshold: what the clean-up of that host has to act on."""

    model: str
    rank: RankView
    zone: str  # "warning" or "emergency"
    thresholds: Thresholds

    @property
    def reason(self) -> str:
        limit = self.thresholds.emergency if self.zone == "emergency" else self.thresholds.warning
        fraction = self.rank.used_fraction or 0.0
        return (f"{self.zone} clean-up on {self.rank.host} (rank {self.rank.rank}): memory "
                f"{fraction:.0%} >= {limit:.0%}")


class DistributedModel:
    """The shards of one loaded distributed model: what the cache holds as ``LoadedModel.model``.

    ``worker`` takes the model's requests; stopping it unloads every rank's shard.
    """

    def __init__(self, name: str, group: RankGroup, worker: RemoteWorker) -> None:
        self.name = name
        self.group = group
        self.worker = worker


def _key(path: Path | str | None) -> str:
    if path is None:
        return ""
    try:
        return str(Path(path).expanduser().resolve())
    except (OSError, RuntimeError):
        return str(path)


def _by_error(ranks: tuple[RankReport, ...], hostfile: Hostfile) -> str:
    """``host (rank 1): why; host (ranks 0, 2): why``: ranks that failed alike, together."""
    groups: dict[str, list[RankReport]] = {}
    for r in ranks:
        if r.error:
            groups.setdefault(r.error, []).append(r)
    parts = []
    for error, failed in groups.items():
        hosts = ", ".join(dict.fromkeys(hostfile.label(r.rank) for r in failed))
        which = ", ".join(str(r.rank) for r in failed)
        parts.append(f"{hosts} (rank{'s' if len(failed) > 1 else ''} {which}): {error}")
    return "; ".join(parts)


class _Served:
    """A distributed model's group, worker and last error; guarded by the loader's lock."""

    def __init__(self, name: str, spec: DistributedSpec) -> None:
        self.name = name
        self.spec = spec
        self.group: RankGroup | None = None
        self.worker: RemoteWorker | None = None
        self.estimates: list[int] = []
        self.error: RankLost | None = None


class DistributedLoader:
    """A ``ModelLoader``: distributed models through their ranks, the rest with ``local``.

    ``specs`` maps a model's folder (or its catalogue name) to how it is distributed (more with
    :meth:`add`). ``engine`` and ``thresholds`` give the settings in force at each load (the
    cache's, once it exists). ``on_pressure`` is told when a follower host passes a threshold and ``on_lost`` when a
    model's ranks are lost; the serve command wires both to the cache. Thread-safe.
    """

    def __init__(self, specs: dict[str, DistributedSpec] | None = None, *,
                 local: ModelLoader | None = None,
                 engine: Callable[[], EngineSettings] = EngineSettings,
                 thresholds: Callable[[], Thresholds] = Thresholds,
                 on_pressure: Callable[[HostPressure], None] = lambda pressure: None,
                 on_lost: Callable[[str, RankLost], None] = lambda name, error: None) -> None:
        self._specs: dict[str, DistributedSpec] = {}
        for key, spec in (specs or {}).items():
            self.add(key, spec)
        self._local = local or MlxLoader()
        self.engine = engine
        self.thresholds = thresholds
        self._on_pressure = on_pressure
        self._on_lost = on_lost
        self._lock = threading.Lock()
        self._served: dict[str, _Served] = {}
        self._tokenizers: dict[str, Any] = {}

    # -- which models --------------------------------------------------------------------------
    def add(self, model: str | Path, spec: DistributedSpec) -> None:
        """Serve ``model`` (a folder, or a catalogue name) across ``spec``'s hosts from its next load."""
        text = str(model)
        self._specs[_key(text) if ("/" in text or text.startswith("~")) else text] = spec

    def spec_for(self, info: ModelInfo) -> DistributedSpec | None:
        return self._specs.get(_key(info.path)) or self._specs.get(info.name)

    def _served_for(self, info: ModelInfo, spec: DistributedSpec) -> _Served:
        with self._lock:
            served = self._served.get(info.name)
            if served is None:
                served = self._served[info.name] = _Served(info.name, spec)
            return served

    def ranks(self, name: str) -> tuple[RankView, ...]:
        """Every rank of model ``name`` as last seen (empty for a local model)."""
        with self._lock:
            served = self._served.get(name)
        if served is None:
            return ()
        if served.group is None:
            return tuple(RankView(r, served.spec.hostfile.label(r), "stopped",
                                  estimated_shard_bytes=e) for r, e in enumerate(served.estimates))
        estimates = served.estimates
        return tuple(replace(v, estimated_shard_bytes=estimates[r]) if r < len(estimates) else v
                     for r, v in enumerate(served.group.ranks()))

    def error(self, name: str) -> RankLost | None:
        with self._lock:
            served = self._served.get(name)
        return served.error if served else None

    # -- ModelLoader ------------------------------------------------------------------------------
    def load(self, info: ModelInfo) -> LoadedModel:
        spec = self.spec_for(info)
        if spec is None:
            return self._local.load(info)
        if not info.loadable or info.path is None:
            raise DistributedLoadError(f"{info.name}: {info.problem or 'no folder'}")
        served = self._served_for(info, spec)
        size = spec.hostfile.size
        try:
            served.estimates = shard_bytes(info.path, size, spec.pipeline)
        except (OSError, ValueError, KeyError) as exc:
            raise DistributedLoadError(f"{info.name}: cannot read the weights' headers: {exc}") from exc
        group = self._running_group(served)
        tokenizer, tokenizer_seconds = self._tokenizer(info)
        engine = self.engine()
        command = Load(info.name, str(info.path), spec.pipeline, tuple(served.estimates),
                       self.thresholds().warning, engine, random.getrandbits(62))
        reply = group.load(command)
        if isinstance(reply, LoadRefused):
            raise self._refusal(info.name, reply.ranks, served.estimates, spec.hostfile)
        if not isinstance(reply, Loaded):
            raise DistributedLoadError(f"{info.name}: the ranks could not load it: "
                                       f"{_by_error(reply.ranks, spec.hostfile)}")
        worker = RemoteWorker(info.name, tokenizer, engine, group.send,
                              on_stop=lambda: self._free_shards(served), lost_grace=spec.group.lost_grace)
        model = DistributedModel(info.name, group, worker)
        with self._lock:
            served.worker = worker
            served.error = None
        local = reply.ranks[0].shard_bytes
        log.info("%s: loaded on %d hosts: %s", info.name, size, ", ".join(
            f"{spec.hostfile.label(r.rank)} {format_bytes(r.shard_bytes)}" for r in reply.ranks))
        return LoadedModel(model, tokenizer, local, max(r.seconds for r in reply.ranks),
                           tokenizer_seconds, worker=worker)

    def local_estimate(self, info: ModelInfo) -> int:
        """What loading ``info`` adds to this machine's memory (the cache's admission asks):
        the whole model for a local one, rank 0's shard for one served across hosts (the other
        hosts' shards are checked by the ranks themselves before they load)."""
        spec = self.spec_for(info)
        if spec is None or info.path is None:
            return info.estimated_bytes
        try:
            return shard_bytes(info.path, spec.hostfile.size, spec.pipeline)[0]
        except (OSError, ValueError, KeyError):
            return info.estimated_bytes

    def free(self) -> None:
        """Return this process's memory (the cache calls it after every eviction)."""
        self._local.free()

    def unload(self, name: str) -> bool:
        """Free every rank's shard of ``name`` now (as the cache's eviction does, by stopping
        its worker); True if it was loaded."""
        with self._lock:
            served = self._served.get(name)
            worker = served.worker if served is not None else None
        if worker is None:
            return False
        worker.stop()
        return True

    def _free_shards(self, served: _Served) -> None:
        """The model's worker stopped: evict on every rank."""
        with self._lock:
            group = served.group
            served.worker = None
        evicted = group.evict() if group is not None else None
        if evicted is not None:
            log.info("%s: unloaded on every host (%s)", served.name, ", ".join(
                f"{served.spec.hostfile.label(r.rank)}: MLX holds "
                f"{format_bytes(r.memory.mlx_active_bytes)}" for r in evicted.ranks))

    def close(self) -> None:
        """Stop every group (the ranks exit)."""
        with self._lock:
            groups = [s.group for s in self._served.values() if s.group is not None]
        for group in groups:
            group.stop()

    # -- pieces ------------------------------------------------------------------------------------
    def _running_group(self, served: _Served) -> RankGroup:
        with self._lock:
            group = served.group
        if group is not None and group.alive:
            return group
        if group is not None:
            if group.error is not None:  # let the lost group finish failing its requests
                group.wait_settled(served.spec.group.lost_grace + 15.0)
            group.stop()
        group = RankGroup(served.name, served.spec.hostfile, served.spec.group)
        group.bind(
            on_item=lambda item, g=group: self._deliver(served, g, item),
            on_memory=lambda views, g=group: self._check_memory(served, g, views),
            on_lost=lambda error, g=group: self._lost(served, g, error),
            on_tick=lambda g=group: self._tick(served, g),
        )
        with self._lock:
            served.group = group
        group.start()
        return group

    def _tokenizer(self, info: ModelInfo) -> tuple[Any, float]:
        started = time.perf_counter()
        key = _key(info.path)
        tokenizer = self._tokenizers.get(key)
        if tokenizer is None:
            import json

            from mlx_lm.utils import load_tokenizer

            assert info.path is not None
            config = json.loads((Path(info.path) / "config.json").read_text(encoding="utf-8"))
            tokenizer = load_tokenizer(Path(info.path), eos_token_ids=config.get("eos_token_id"))
            self._tokenizers[key] = tokenizer
        return tokenizer, time.perf_counter() - started

    def _refusal(self, name: str, ranks: tuple[RankReport, ...], need: list[int],
                 hostfile: Hostfile) -> HostTooSmall:
        limit = self.thresholds().warning
        hosts, parts = [], []
        for r in ranks:
            if not r.error:
                continue
            host = hostfile.label(r.rank)
            m = r.memory
            hosts.append((host, need[r.rank], m.used_bytes, m.total_bytes))
            room = max(0, int(limit * m.total_bytes) - m.used_bytes)
            parts.append(f"{host} (rank {r.rank}) needs {format_bytes(need[r.rank])} but has "
                         f"{format_bytes(m.used_bytes)} of {format_bytes(m.total_bytes)} in use, "
                         f"{format_bytes(room)} under the warning threshold ({limit:.0%})")
        return HostTooSmall(f"{name}: does not fit: " + "; ".join(parts) +
                            "; free memory on that host or add a host to the hostfile", hosts)

    # -- the group's reader thread ------------------------------------------------------------------
    def _worker_of(self, served: _Served, group: RankGroup) -> RemoteWorker | None:
        """The worker of ``group``'s model, if ``group`` is still the model's group."""
        with self._lock:
            return served.worker if served.group is group else None

    def _deliver(self, served: _Served, group: RankGroup, item: Item) -> None:
        worker = self._worker_of(served, group)
        if worker is not None:
            worker.deliver(item)

    def _tick(self, served: _Served, group: RankGroup) -> None:
        worker = self._worker_of(served, group)
        if worker is not None:
            worker.tick()

    def _check_memory(self, served: _Served, group: RankGroup, views: list[RankView]) -> None:
        if self._worker_of(served, group) is None:
            return
        thresholds = self.thresholds()
        for view in views[1:]:  # rank 0's host is this one: the cache's own monitor watches it
            fraction = view.used_fraction
            zone = thresholds.zone(fraction) if fraction is not None else "normal"
            if zone != "normal":
                self._on_pressure(HostPressure(served.name, view, zone, thresholds))
                return

    def _lost(self, served: _Served, group: RankGroup, error: RankLost) -> None:
        with self._lock:
            if served.group is not group:
                return
            worker = served.worker
            served.error = error
            served.worker = None
        if worker is not None:
            worker.fail_all(error)
        self._on_lost(served.name, error)
