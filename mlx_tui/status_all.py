"""``mlx-tui status --all``: every configured host at once, like ``ollama ps`` across machines.

The hosts are this machine's instance (``[api]``, named ``local``) and each ``[[remotes]]``
table, asked at the same time (each with its own key and a 3 s timeout). It prints one line
per host (whether it answers, or why not; memory against its thresholds; models in memory;
requests in flight), then the models in memory on every host, and exits 1 when any host does
not answer. ``--json`` prints ``{"hosts": [...]}`` with each host's ``/health`` document or
its error. Keys are sent, never printed.
"""

from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Sequence

from .core.settings import SettingsStore, find_settings_path
from .core.units import format_bytes
from .remote.address import RemoteAddress, addresses_from_settings
from .remote.client import RemoteClient
from .remote.errors import RemoteError
from .remote.permissions import key_file_warning
from .status import _ago, _notes, _state, _table, instance_url

__all__ = ["run_status_all", "HostStatus", "ask_hosts", "render_hosts"]

LOCAL_NAME = "local"


@dataclass(frozen=True)
class HostStatus:
    """One host's answer to ``GET /health``, or why there is none."""

    address: RemoteAddress
    document: dict[str, Any] | None
    problem: str | None = None


def _ask(address: RemoteAddress) -> HostStatus:
    client = RemoteClient(address)
    try:
        return HostStatus(address, client.health_document())
    except RemoteError as exc:
        problem = str(exc)
        prefix = f"{address.name} ({address.url}): "
        return HostStatus(address, None, problem[len(prefix):] if problem.startswith(prefix)
                          else problem)
    finally:
        client.close()


def ask_hosts(addresses: Sequence[RemoteAddress]) -> list[HostStatus]:
    """Every host's status, asked in parallel, in the order given."""
    with ThreadPoolExecutor(max_workers=max(1, len(addresses))) as pool:
        return list(pool.map(_ask, addresses))


def _memory(doc: dict[str, Any]) -> str:
    m = doc["memory"]
    return (f"{m['used_fraction']:.0%} of {format_bytes(m['total_bytes'])} {m['zone']} "
            f"(warning {m['warning_threshold']:.0%}, emergency {m['emergency_threshold']:.0%})")


def render_hosts(statuses: Sequence[HostStatus], now: datetime | None = None) -> str:
    """The hosts table, then every host's models in memory (most used first)."""
    now = now or datetime.now()
    rows = []
    for s in statuses:
        doc = s.document
        if doc is None:
            rows.append([s.address.name, s.address.url, "unreachable", s.problem or "", "", ""])
            continue
        cached = doc["cached_models"]
        rows.append([s.address.name, s.address.url, "up", _memory(doc), str(len(cached)),
                     str(sum(int(m.get("in_use") or 0) for m in cached))])
    lines = [_table(["HOST", "ADDRESS", "STATE", "MEMORY", "MODELS", "IN FLIGHT"], rows,
                    right=(4, 5))]
    models = []
    for s in statuses:
        cached = (s.document or {}).get("cached_models", [])
        for m in sorted(cached, key=lambda m: (m["use_count"], m["last_used"] or ""), reverse=True):
            models.append([
                s.address.name, m["name"], _state(m), str(m["use_count"]), _ago(m["last_used"], now),
                _ago(m["loaded_at"], now),
                f"{m['load_time_seconds']:.2f} s" if m["load_time_seconds"] is not None else "-",
                format_bytes(m["size_bytes"]), _notes(m)])
    lines.append("")
    if models:
        lines.append(_table(["HOST", "NAME", "STATE", "USES", "LAST USED", "LOADED", "LOAD TIME",
                             "SIZE", ""], models, right=(3, 6, 7)))
    else:
        lines.append("no models in memory on any host")
    notes = [f"{s.address.name}: {s.address.security_note}" for s in statuses
             if s.address.security_note]
    if notes:
        lines += ["", *notes]
    return "\n".join(lines)


def run_status_all(args: argparse.Namespace) -> int:
    """Print every host; exit 1 when one of them does not answer."""
    path, source = find_settings_path(getattr(args, "settings", None))
    store = SettingsStore(path, source)
    if store.error is not None:
        print(f"mlx-tui status: {store.error}; using defaults", file=sys.stderr)
    settings = store.settings
    warning = key_file_warning(path, settings)
    if warning:
        print(f"mlx-tui status: {warning}", file=sys.stderr)
    local = RemoteAddress(LOCAL_NAME, instance_url(settings.api, getattr(args, "port", None)),
                          settings.api.api_key)
    statuses = ask_hosts([local, *addresses_from_settings(settings.remotes)])
    if getattr(args, "json", False):
        print(json.dumps({"hosts": [
            {"name": s.address.name, "url": s.address.url, "reachable": s.document is not None,
             "error": s.problem, "document": s.document} for s in statuses]}, indent=2))
    else:
        print(render_hosts(statuses))
    down = [s.address.name for s in statuses if s.document is None]
    if down:
        print(f"mlx-tui status: {len(down)} of {len(statuses)} hosts do not answer: "
              f"{', '.join(down)}", file=sys.stderr)
        return 1
    return 0
