"""The HTTP API inside the app: started as ``mlx-tui serve`` starts it, or the reason it is off.

Later front ends of the same app (a fleet view of remote hosts) show their own hosts' APIs; this
one is the local instance's.
"""

from __future__ import annotations

from typing import Any

from ..core.runtime import Runtime
from .messages import ApiStatus

__all__ = ["start_app_api"]


def start_app_api(runtime: Runtime) -> tuple[Any, ApiStatus]:
    """In a worker thread: the running server (or None) and what the app shows about it."""
    api = runtime.settings_store.settings.api
    if not api.enabled:
        return None, ApiStatus("API off (settings)")
    try:
        from ..server.serve import PortInUse, start_api
    except ImportError as exc:
        return None, ApiStatus("API unavailable", f"API unavailable: {exc}")
    try:
        server = start_api(runtime)
    except PortInUse:
        return None, ApiStatus(
            f"API off: port {api.port} in use",
            f"port {api.port} on {api.host} is in use (another mlx-tui or Ollama?); the app goes "
            "on without its API; set [api].port to serve on another port")
    except Exception as exc:  # noqa: BLE001 - the app works without its API
        return None, ApiStatus("API failed", f"API failed to start: {exc}")
    return server, ApiStatus(f"API {server.url}")
