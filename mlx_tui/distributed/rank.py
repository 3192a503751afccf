"""One rank of a distributed model: ``python -m mlx_tui.distributed.rank``, started by ``mlx.launch``.

Every rank runs the same loop on its main thread (the only thread that runs MLX here):

* between models, rank 0 shares a :class:`~.protocol.RankCommand` each turn (a load, a
  shutdown, or nothing; when idle the other ranks sleep as long as rank 0 waits for work,
  :mod:`.pace`, rather than spin inside a collective);
* a :class:`~.protocol.Load` is checked on every rank first (its part must fit under the limit,
  its folder must exist on that host), then each rank reads its shard with
  ``mlx_lm.utils.sharded_load`` (tensor parallel, or pipeline), and every rank's result is
  gathered, so one host's failure fails the load everywhere and every rank frees what it read;
* while loaded, every rank runs the core's generation worker in step (:mod:`.rank_worker`);
  an evict stops it, each rank drops its shard and drains MLX's buffer pool
  (``gc.collect``, ``mx.clear_cache``, ``malloc_trim``: :meth:`MlxLoader.free`);
* every ``--probe-seconds`` each rank's memory reading is gathered and rank 0 sends it on.

A collective that fails means a peer is gone: rank 0 says so to the API process and waits to be
stopped by ``mlx.launch``; the others exit at once. Nothing here has a timeout of its own: the
API process watches the group and stops it when it stops answering.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from ..core.loader import MlxLoader
from ..core.memory import FixedMemoryProbe, MemoryProbe, MemorySnapshot, SystemMemoryProbe
from .collectives import Collective
from .link import LINK_KEY_ENV, RankLink
from .protocol import (Evicted, Hello, Load, Loaded, LoadFailed, LoadRefused, Lost, Memory,
                       RankCommand, RankReport, Shutdown)
from .pace import Pace
from .rank_worker import RankWorker, run_inline

__all__ = ["main", "FAKE_MEMORY_ENV"]

log = logging.getLogger("mlx_tui.distributed.rank")

FAKE_MEMORY_ENV = "MLX_TUI_FAKE_MEMORY"
"""Test-only: ``RANK=PATH``: that rank reports the fraction written in PATH as memory in use."""

LOST_WAIT_SECONDS = 30.0


class _FileFractionProbe:
    """Test-only probe: the real total, and the used fraction a test writes into a file."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._real = SystemMemoryProbe()

    def snapshot(self) -> MemorySnapshot:
        real = self._real.snapshot()
        try:
            fraction = float(self._path.read_text().strip())
        except (OSError, ValueError):
            return real
        fixed = FixedMemoryProbe(total_bytes=real.total_bytes, used_fraction=fraction)
        return fixed.snapshot()


def _probe_for(rank: int) -> MemoryProbe:
    spec = os.environ.get(FAKE_MEMORY_ENV, "")
    wanted, _, path = spec.partition("=")
    if path and wanted.strip() == str(rank):
        log.warning("rank %d: memory figures come from %s (%s, tests only)", rank, path,
                    FAKE_MEMORY_ENV)
        return _FileFractionProbe(Path(path))
    return SystemMemoryProbe()


def _explain(exc: BaseException, path: str, pipeline: bool) -> str:
    text = str(exc)
    if "does not support pipelining" in text:
        return "mlx-lm cannot split this architecture by layers; serve it without --pipeline"
    if "does not support tensor parallelism" in text:
        return "mlx-lm cannot split this architecture's matrices; serve it with --pipeline"
    if pipeline and isinstance(exc, FileNotFoundError) and "index" in text:
        return (f"pipeline loading needs {path}/model.safetensors.index.json (models saved in one "
                "file have none); serve it tensor parallel")
    return f"{type(exc).__name__}: {text[:300]}"


class Rank:
    """This process's part of the group: its collectives, probe, shard and (on rank 0) the
    link to the API process. Used only from the main thread."""

    def __init__(self, group: Any, link: RankLink | None, pace: Pace) -> None:
        self.group = group
        self.comm = Collective(group)
        self.rank = self.comm.rank
        self.link = link
        self.pace = pace
        self.probe = _probe_for(self.rank)
        self.hostname = socket.gethostname()
        self.shard_bytes = 0

    def report(self, error: str | None = None, seconds: float = 0.0) -> RankReport:
        return RankReport(self.rank, self.hostname, os.getpid(), self.probe.snapshot(),
                          self.shard_bytes, error, seconds)

    def send(self, message: Any) -> None:
        if self.link is not None:
            self.link.send(message)

    def _next_command(self) -> RankCommand:
        assert self.link is not None
        wait = self.pace.idle_wait()
        commands = self.link.take(wait)
        if commands:
            self.pace.busy()
        chosen = next((c for c in commands if isinstance(c, Shutdown)), None)
        chosen = chosen or next((c for c in commands if isinstance(c, Load)), None)
        return RankCommand(chosen, probe=self.pace.probe_due(), idle=0.0 if commands else wait)

    # -- the loop ------------------------------------------------------------------------------
    def serve(self) -> None:
        self.send(Hello(tuple(self.comm.gather(self.report()))))
        while True:
            step: RankCommand = self.comm.share(self._next_command() if self.rank == 0 else None)
            if step.probe:
                self.send(Memory(tuple(self.comm.gather(self.report()))))
            if isinstance(step.command, Shutdown):
                return
            if isinstance(step.command, Load):
                if self.serve_model(step.command):
                    return
            elif step.idle and self.rank != 0:
                time.sleep(step.idle)

    def serve_model(self, load: Load) -> bool:
        """Load, generate until told to stop, free. True when the ranks are to shut down."""
        snap = self.probe.snapshot()
        need = load.need_bytes[self.rank] if self.rank < len(load.need_bytes) else 0
        room = int(load.limit_fraction * snap.total_bytes) - snap.used_bytes
        refusal = None if need <= room else "no room"
        reports = self.comm.gather(self.report(refusal))
        if any(r.error for r in reports):
            self.send(LoadRefused(tuple(reports)))
            return False
        started = time.perf_counter()
        model, tokenizer, error = self._load_shard(load)
        seconds = time.perf_counter() - started
        reports = self.comm.gather(self.report(error, seconds))
        if any(r.error for r in reports):
            model = tokenizer = None
            self._free()
            self.send(LoadFailed(tuple(reports)))
            return False
        self.send(Loaded(tuple(reports)))
        import mlx.core as mx

        mx.random.seed(load.seed)  # the same samples on every rank
        worker = RankWorker(load.name, model, tokenizer, load.engine, comm=self.comm,
                            link=self.link, report=self.report, pace=self.pace)
        del model, tokenizer
        run_inline(worker)
        lost, shutdown = worker.lost, worker.shutdown
        del worker
        self._free()
        if lost is not None:
            raise lost
        self.send(Evicted(tuple(self.comm.gather(self.report()))))
        return shutdown

    def _load_shard(self, load: Load) -> tuple[Any, Any, str | None]:
        """This rank's shard (model, tokenizer), or the reason it could not be read."""
        import mlx.core as mx
        from mlx.utils import tree_flatten
        from mlx_lm.utils import sharded_load

        folder = Path(load.path)
        if not (folder / "config.json").is_file():
            error = f"no model at {folder} on this host (copy the folder to the same path)"
        else:
            try:
                model, tokenizer = sharded_load(
                    str(folder),
                    pipeline_group=self.group if load.pipeline else None,
                    tensor_group=None if load.pipeline else self.group,
                )
                self.shard_bytes = sum(v.nbytes for _, v in tree_flatten(model.parameters()))
                return model, tokenizer, None
            except Exception as exc:  # noqa: BLE001 - reported with the host's name
                error = _explain(exc, load.path, load.pipeline)
        # sharded_load ends with one all_sum that the ranks that read their shard are in now;
        # match it so they go on to the gather that tells them this rank failed.
        mx.eval(mx.distributed.all_sum(mx.array(0.0), group=self.group, stream=mx.cpu))
        return None, None, error

    def _free(self) -> None:
        self.shard_bytes = 0
        gc.collect()
        MlxLoader().free()


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m mlx_tui.distributed.rank",
                                     description="One rank of a distributed mlx-tui model "
                                                 "(started by mlx.launch).")
    parser.add_argument("--link", required=True, help="rank 0: the API process's Unix socket")
    parser.add_argument("--backend", default="any", help="MLX distributed backend")
    parser.add_argument("--tick", type=float, default=0.1,
                        help="seconds rank 0 waits for work in the first second of idleness")
    parser.add_argument("--idle-tick", type=float, default=0.5,
                        help="seconds rank 0 waits for work once idle longer")
    parser.add_argument("--probe-seconds", type=float, default=1.0,
                        help="seconds between memory reports")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    rank_env = os.environ.get("MLX_RANK", "?")
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"rank {rank_env} %(levelname)s %(name)s: %(message)s")
    started = time.perf_counter()
    import mlx.core as mx

    backend = "jaccl" if args.backend.startswith("jaccl") else args.backend  # jaccl-ring too
    group = mx.distributed.init(strict=True, backend=backend)
    joined = time.perf_counter()
    link = None
    if group.rank() == 0:
        link = RankLink(args.link, bytes.fromhex(os.environ.pop(LINK_KEY_ENV, "")))
    import mlx_lm.utils  # noqa: F401 - before the first load, while nothing waits on us

    rank = Rank(group, link, Pace(args.tick, args.idle_tick, args.probe_seconds))
    log.info("rank %d of %d on %s: ready in %.2f s (group %.2f s, mlx_lm %.2f s)", rank.rank,
             group.size(), rank.hostname, time.perf_counter() - started, joined - started,
             time.perf_counter() - joined)
    try:
        rank.serve()
    except Exception as exc:  # noqa: BLE001 - a collective failed: a peer is gone
        log.error("rank %d: the group is lost: %s", rank.rank, exc)
        if link is not None:
            link.send(Lost(f"{type(exc).__name__}: {exc}"))
            time.sleep(LOST_WAIT_SECONDS)  # mlx.launch stops us; its log then names the dead rank
        sys.stderr.flush()
        os._exit(1)
    log.info("rank %d: shut down", rank.rank)
    sys.stderr.flush()
    os._exit(0)  # MLX's threads may still hold streams; leave without static destructors


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
