"""The hostfile ``mlx.launch`` reads (and ``mlx.distributed_config`` writes), checked before use.

The format is MLX's own: a JSON list of hosts, or an object ``{"backend": ..., "envs": [...],
"hosts": [...]}``; each host has ``ssh`` (the name ``mlx.launch`` reaches it by), ``ips`` (the
addresses the ring backend connects over: Thunderbolt bridge or Ethernet) and, for JACCL,
``rdma`` (one RDMA device per peer, ``null`` for itself). Host ``i`` runs rank ``i``.

mlx-tui serves the API beside rank 0, so the first host must be this machine. :meth:`Hostfile.
for_launch` writes the copy handed to ``mlx.launch``: the same hosts, with rank 0's ``ssh`` set
to ``127.0.0.1`` so ``mlx.launch`` starts it here without ssh (the ranks still talk over the
addresses in ``ips``).
"""

from __future__ import annotations

import json
import shutil
import socket
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

__all__ = ["BACKENDS", "Host", "Hostfile", "HostfileError", "is_this_machine"]

BACKENDS = ("ring", "jaccl", "jaccl-ring", "mpi")
LOOPBACK_NAMES = {"127.0.0.1", "localhost", "::1"}


class HostfileError(ValueError):
    """A hostfile that ``mlx.launch`` cannot use, or that mlx-tui cannot serve from (rank 0
    must be this machine); the message says which host and which field."""


@dataclass(frozen=True)
class Host:
    """One host of a hostfile: how ``mlx.launch`` reaches it and how the ranks talk to it."""

    ssh: str
    ips: tuple[str, ...] = ()
    rdma: tuple[Any, ...] = ()

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"ssh": self.ssh, "ips": list(self.ips)}
        if self.rdma:
            data["rdma"] = list(self.rdma)
        return data


def _local_addresses() -> set[str]:
    import psutil

    found = set(LOOPBACK_NAMES)
    for addresses in psutil.net_if_addrs().values():
        found.update(a.address.split("%")[0] for a in addresses)
    return found


def _local_names() -> set[str]:
    name = socket.gethostname().lower()
    short = name.split(".")[0]
    return {name, short, f"{short}.local", socket.getfqdn().lower()}


def is_this_machine(host: Host) -> bool:
    """True when ``host`` names this machine: by loopback, host name or one of its addresses."""
    ssh = host.ssh.lower().split("@")[-1]  # "user@mac1.local"
    if ssh in LOOPBACK_NAMES or ssh in _local_names():
        return True
    addresses = _local_addresses()
    return ssh in addresses or any(ip in addresses for ip in host.ips)


def _host(index: int, raw: Any, where: str) -> Host:
    if not isinstance(raw, dict):
        raise HostfileError(f"{where}: host {index} is not an object like "
                            '{"ssh": "mac2.local", "ips": ["169.254.0.2"]}')
    ssh = raw.get("ssh")
    if not isinstance(ssh, str) or not ssh:
        raise HostfileError(f"{where}: host {index} has no \"ssh\" name (how mlx.launch reaches it)")
    ips = raw.get("ips", [])
    if not isinstance(ips, list) or not all(isinstance(ip, str) and ip for ip in ips):
        raise HostfileError(f"{where}: host {index} ({ssh}): \"ips\" must be a list of addresses")
    rdma = raw.get("rdma", [])
    if not isinstance(rdma, list):
        raise HostfileError(f"{where}: host {index} ({ssh}): \"rdma\" must be a list")
    return Host(ssh, tuple(ips), tuple(rdma))


@dataclass(frozen=True)
class Hostfile:
    """The hosts of one distributed model, in rank order, with the backend and environment
    ``mlx.launch`` is to use. Immutable; :meth:`load` checks a file, :meth:`for_launch` writes
    the copy ``mlx.launch`` runs from."""

    hosts: tuple[Host, ...]
    backend: str = ""
    envs: tuple[str, ...] = ()
    path: Path | None = field(default=None, compare=False)

    @classmethod
    def load(cls, path: Path | str) -> "Hostfile":
        """Read and check ``path``; raises :class:`HostfileError` saying what is wrong."""
        path = Path(path).expanduser()
        where = str(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise HostfileError(f"hostfile {where} does not exist (write one with "
                                "mlx.distributed_config, or see the README)") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise HostfileError(f"hostfile {where} cannot be read: {exc}") from None
        except (ValueError, RecursionError) as exc:
            raise HostfileError(f"hostfile {where} is not valid JSON: {exc}") from None
        return cls.from_json(data, where, path)

    @classmethod
    def from_json(cls, data: Any, where: str = "hostfile", path: Path | None = None) -> "Hostfile":
        backend, envs, hosts = "", [], data
        if isinstance(data, dict):
            backend = data.get("backend", "") or ""
            envs = data.get("envs", []) or []
            hosts = data.get("hosts")
        if not isinstance(hosts, list):
            raise HostfileError(f"{where}: expected a list of hosts, or an object with \"hosts\"")
        if not isinstance(backend, str) or (backend and backend not in BACKENDS):
            raise HostfileError(f"{where}: backend {backend!r} is not one of {', '.join(BACKENDS)}")
        if not isinstance(envs, list) or not all(isinstance(e, str) and "=" in e for e in envs):
            raise HostfileError(f"{where}: \"envs\" must be a list of \"NAME=value\" strings")
        parsed = tuple(_host(i, h, where) for i, h in enumerate(hosts))
        if len(parsed) < 2:
            raise HostfileError(f"{where}: a distributed model needs at least two hosts, "
                                f"found {len(parsed)}")
        return cls(parsed, backend, tuple(envs), path)

    @classmethod
    def loopback(cls, ranks: int = 2, backend: str = "ring") -> "Hostfile":
        """``ranks`` processes on this machine over 127.0.0.1 (tests, benchmarks, trying it)."""
        return cls(tuple(Host("127.0.0.1", ("127.0.0.1",)) for _ in range(ranks)), backend)

    @property
    def size(self) -> int:
        return len(self.hosts)

    def label(self, rank: int) -> str:
        """The name the dashboard shows for rank ``rank``'s host."""
        return self.hosts[rank].ssh

    def resolved_backend(self, asked: str | None = None) -> str:
        """The backend to launch: the one asked for, else the hostfile's, else ``ring``."""
        return asked or self.backend or "ring"

    def check(self, backend: str) -> None:
        """Raise :class:`HostfileError` when ``backend`` cannot run these hosts from here."""
        if backend not in BACKENDS:
            raise HostfileError(f"backend {backend!r} is not one of {', '.join(BACKENDS)}")
        where = str(self.path or "hostfile")
        if not is_this_machine(self.hosts[0]):
            raise HostfileError(
                f"{where}: the first host ({self.hosts[0].ssh}) is not this machine; mlx-tui runs "
                "rank 0 beside its API, so list this machine first")
        if backend != "mpi":
            missing = [h.ssh for h in self.hosts if not h.ips]
            if missing:
                raise HostfileError(f"{where}: the {backend} backend needs \"ips\" for every host; "
                                    f"missing for {', '.join(missing)}")
        if backend.startswith("jaccl"):
            for i, h in enumerate(self.hosts):
                if len(h.rdma) != self.size or h.rdma[i] is not None:
                    raise HostfileError(
                        f"{where}: for {backend}, host {h.ssh} needs \"rdma\" with one device per "
                        f"host ({self.size}) and null at its own place ({i}); "
                        f"mlx.distributed_config --backend {backend} writes it")
        if backend == "mpi" and shutil.which("mpirun") is None:
            raise HostfileError("the mpi backend needs mpirun on PATH (brew install open-mpi)")

    def to_json(self) -> dict[str, Any]:
        return {"backend": self.backend, "envs": list(self.envs),
                "hosts": [h.to_json() for h in self.hosts]}

    def for_launch(self, dest: Path, backend: str) -> Path:
        """Write the hostfile ``mlx.launch`` runs from into ``dest`` and return its path."""
        first = replace(self.hosts[0], ssh="127.0.0.1")
        launched = replace(self, hosts=(first, *self.hosts[1:]), backend=backend)
        dest.write_text(json.dumps(launched.to_json(), indent=2) + "\n", encoding="utf-8")
        return dest
