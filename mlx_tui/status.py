"""``mlx-tui status``: the cached models of a running instance, like ``ollama ps``.

Reads ``GET /`` of the instance (the address from ``--url``, or ``[api]`` of the settings with
``--port`` instead of its port when given; ``--url 127.0.0.1:9999`` needs no ``http://``) and
prints the loaded models with their use counts and load times, and memory against the
thresholds; ``--json`` prints the document as it came. When no instance answers it says so,
with the address tried, exits 1, and still shows what this machine has: the models the local
catalog finds (nothing is loaded) and memory in use now.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from typing import Any, Sequence

import httpx

from .core.catalog import Catalog
from .core.memory import SystemMemoryProbe
from .core.planner import Thresholds
from .core.settings import ApiSettings, Settings, SettingsStore, find_settings_path
from .core.units import format_bytes
from .server.documents import memory_document
from .server.serve import api_url

__all__ = ["run_status", "instance_url", "normalise_url"]

TIMEOUT_SECONDS = 3.0


def instance_url(api: ApiSettings, port: int | None = None) -> str:
    """Where an instance started with these settings answers (a wildcard bind: loopback);
    ``port`` instead of ``[api].port`` when given."""
    return api_url(api.host, api.port if port is None else port, connectable=True)


def normalise_url(url: str) -> str:
    """``127.0.0.1:9999`` -> ``http://127.0.0.1:9999``; no trailing ``/``."""
    url = url.strip()
    if "://" not in url:
        url = f"http://{url}"
    return url.rstrip("/")


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = ()) -> str:
    """Columns padded to their widest cell; columns listed in ``right`` are right-aligned."""
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(str(c).rjust(w) if i in right else str(c).ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return "\n".join(line(r) for r in [headers, *rows])


def _ago(iso: str | None, now: datetime) -> str:
    if not iso:
        return "-"
    seconds = max(0, int((now - datetime.fromisoformat(iso)).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"


def _state(model: dict[str, Any]) -> str:
    progress = model.get("progress")
    return f"{model['state']} {progress:.0%}" if progress is not None else model["state"]


def _notes(model: dict[str, Any]) -> str:
    notes = ["pinned"] if model["pinned"] else []
    if model.get("in_use"):
        notes.append(f"{model['in_use']} in use")
    return ", ".join(notes)


def _memory_line(memory: dict[str, Any], mlx: bool = True) -> str:
    """Memory in use against the thresholds; with ``mlx``, what the instance's MLX holds."""
    line = (f"memory {memory['used_fraction']:.0%} of {format_bytes(memory['total_bytes'])} in use "
            f"({memory['zone']}; warning {memory['warning_threshold']:.0%}, emergency "
            f"{memory['emergency_threshold']:.0%})")
    if mlx:
        line += (f", MLX {format_bytes(memory['mlx_active_bytes'])} active + "
                 f"{format_bytes(memory['mlx_cache_bytes'])} cache")
    return line


def render_instance(doc: dict[str, Any], url: str, now: datetime | None = None) -> str:
    """The human view of ``GET /``: cached models by use count, memory, the others known."""
    now = now or datetime.now()
    cached = sorted(doc["cached_models"], key=lambda m: (m["use_count"], m["last_used"] or ""),
                    reverse=True)
    lines = [f"mlx-tui {doc.get('version', '?')} at {url}: {doc['status']}",
             _memory_line(doc["memory"]), ""]
    if cached:
        rows = [[
            m["name"], _state(m), str(m["use_count"]), _ago(m["last_used"], now),
            _ago(m["loaded_at"], now),
            f"{m['load_time_seconds']:.2f} s" if m["load_time_seconds"] is not None else "-",
            format_bytes(m["size_bytes"]), _notes(m),
        ] for m in cached]
        lines.append(_table(["NAME", "STATE", "USES", "LAST USED", "LOADED", "LOAD TIME", "SIZE", ""],
                            rows, right=(2, 5, 6)))
    else:
        lines.append("no models loaded")
    cached_names = {m["name"] for m in cached}
    others = [m["name"] for m in doc.get("models", []) if m["name"] not in cached_names]
    if others:
        lines += ["", f"also known, not loaded ({len(others)}): {', '.join(others)}"]
    return "\n".join(lines)


def _local_document(settings: Settings) -> dict[str, Any]:
    """What this machine has without an instance: the catalog scan and memory now."""
    found = Catalog(settings).scan()
    thresholds = Thresholds(settings.memory.warning_threshold, settings.memory.emergency_threshold)
    return {
        "models": [{"name": i.name, "source": i.source, "estimated_bytes": i.estimated_bytes,
                    "path": str(i.path) if i.path else None, "problem": i.problem}
                   for i in found.values()],
        "memory": memory_document(SystemMemoryProbe().snapshot(), thresholds),
    }


def render_local(local: dict[str, Any]) -> str:
    rows = [[m["name"], m["source"],
             format_bytes(m["estimated_bytes"]) if m["estimated_bytes"] else "-",
             m["problem"] or "ready to load"] for m in local["models"]]
    return "\n".join([
        "models on this machine (none loaded):",
        _table(["NAME", "SOURCE", "SIZE", "NOTE"], rows, right=(2,)) if rows else "none found",
        "",
        _memory_line(local["memory"], mlx=False),
    ])


def run_status(args: argparse.Namespace) -> int:
    """Print a running instance's cached models; exit 1 (with local facts) if none answers.
    With ``--all``, every configured host (:mod:`mlx_tui.status_all`)."""
    if getattr(args, "all", False):
        from .status_all import run_status_all

        return run_status_all(args)
    path, source = find_settings_path(getattr(args, "settings", None))
    store = SettingsStore(path, source)
    if store.error is not None:
        print(f"mlx-tui status: {store.error}; using defaults", file=sys.stderr)
    settings = store.settings
    url = normalise_url(args.url) if args.url else instance_url(settings.api, getattr(args, "port", None))
    headers = {"Authorization": f"Bearer {settings.api.api_key}"} if settings.api.api_key else {}
    try:
        # trust_env=False: a proxy from the environment must not stand between us and localhost
        response = httpx.get(f"{url}/", headers=headers, timeout=TIMEOUT_SECONDS, trust_env=False)
    except httpx.HTTPError as exc:
        problem = (f"no mlx-tui instance answers at {url} ({exc or type(exc).__name__}); "
                   "start one with `mlx-tui serve` or the app")
    else:
        doc = _document(response)
        if doc is not None:
            print(json.dumps(doc, indent=2) if args.json else render_instance(doc, url))
            return 0
        problem = f"{url} answered {response.status_code}: {_error_message(response)}"
    print(f"mlx-tui status: {problem}", file=sys.stderr)
    local = _local_document(settings)
    if args.json:
        print(json.dumps({"error": problem, "url": url, **local}, indent=2))
    else:
        print(render_local(local))
    return 1


def _document(response: httpx.Response) -> dict[str, Any] | None:
    """The ``GET /`` document of an mlx-tui instance, or None (an error, or another server)."""
    try:
        doc = response.json()
    except ValueError:
        return None
    ok = response.status_code == 200 and isinstance(doc, dict) and "cached_models" in doc
    return doc if ok else None


def _error_message(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return f"not an mlx-tui instance ({response.text[:120]!r})"
