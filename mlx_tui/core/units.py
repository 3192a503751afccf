"""Small formatting helpers shared by the core, the app and the server."""

from __future__ import annotations

from datetime import datetime

__all__ = ["format_bytes", "iso_seconds", "GB"]

GB = 1024**3


def format_bytes(n: float) -> str:
    """``1536 -> '1.5 KB'``; binary units, one decimal, as people read memory."""
    value = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(value) < 1024 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def iso_seconds(ts: float | None) -> str | None:
    """Epoch seconds -> local ISO 8601 to the second (the seed's ``2026-01-26T15:30:00``)."""
    if not ts:
        return None
    return datetime.fromtimestamp(ts).isoformat(timespec="seconds")
