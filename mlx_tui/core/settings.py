"""Typed settings read from ``settings.toml``: validated on read, written back atomically.

:class:`Settings` is an immutable value. :class:`SettingsStore` owns the one current, valid
``Settings`` of a running process and the file it came from: it reloads the file when it
changes on disk, keeps the previous settings when the new file is invalid, and writes changes
back atomically (temporary file, fsync, rename) under a documented header.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import threading
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import tomli_w

from .planner import CLEANUP_MODES
from .policy import DEFAULT_POLICY, POLICIES

__all__ = [
    "MemorySettings",
    "CacheSettings",
    "CatalogSettings",
    "UISettings",
    "ApiSettings",
    "Settings",
    "SettingsError",
    "SettingsStore",
    "find_settings_path",
    "parse_settings",
    "read_settings",
    "write_settings",
    "user_config_path",
]

HEADER = """\
# mlx-tui settings. Every key is explained in README.md ("settings.toml").
# The app rewrites this file when you change settings in it (comments other than this header
# are not kept). An invalid file is reported and the last valid settings stay in force.
"""


class SettingsError(ValueError):
    """A settings file that cannot be used; the message names the file and the key."""

    def __init__(self, path: Path | None, key: str, problem: str) -> None:
        self.path = path
        self.key = key
        self.problem = problem
        where = f"{path}: " if path else ""
        super().__init__(f"{where}{key}: {problem}" if key else f"{where}{problem}")


@dataclass(frozen=True)
class MemorySettings:
    """Memory thresholds (fractions of system memory in use) and the poll period."""

    warning_threshold: float = 0.85
    emergency_threshold: float = 0.98
    background_load_below: float = 0.70
    keep_on_cleanup: int = 1
    cleanup: str = "just_enough"
    poll_seconds: float = 1.0


@dataclass(frozen=True)
class CacheSettings:
    """How the cache chooses what to keep and what to load at start."""

    policy: str = DEFAULT_POLICY
    preload: tuple[str, ...] = ("default",)
    preload_popular: int = 0
    idle_unload_seconds: float = 0.0
    max_loaded: int = 0


@dataclass(frozen=True)
class CatalogSettings:
    """Where models are found besides the ``[models]`` aliases."""

    dirs: tuple[str, ...] = ("~/models",)
    huggingface_cache: bool = True


@dataclass(frozen=True)
class UISettings:
    """The app's look and keys: ``keys`` maps a binding id to a key (``"evict" = "x"``)."""

    theme: str = "mlx-dark"
    keys: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ApiSettings:
    """The HTTP API that serves the same cache (``mlx-tui serve`` and inside the app)."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 11435
    api_key: str = ""


@dataclass(frozen=True)
class Settings:
    """All settings of one process. Build with :func:`parse_settings`; never mutate."""

    memory: MemorySettings = field(default_factory=MemorySettings)
    cache: CacheSettings = field(default_factory=CacheSettings)
    models: Mapping[str, str] = field(default_factory=lambda: {"default": "demo"})
    catalog: CatalogSettings = field(default_factory=CatalogSettings)
    ui: UISettings = field(default_factory=UISettings)
    api: ApiSettings = field(default_factory=ApiSettings)

    def replace(self, section: str, **changes: Any) -> "Settings":
        """A copy with ``changes`` applied to one section, validated like a file would be."""
        data = self.to_toml_dict()
        if section == "models":
            data["models"] = dict(changes)
        else:
            data[section] = {**data[section], **changes}
        return parse_settings(data)

    def to_toml_dict(self) -> dict[str, Any]:
        """The settings as plain TOML-ready data (what :func:`write_settings` writes)."""

        def plain(obj: Any) -> Any:
            if dataclasses.is_dataclass(obj):
                return {f.name: plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
            if isinstance(obj, tuple):
                return [plain(v) for v in obj]
            if isinstance(obj, Mapping):
                return {k: plain(v) for k, v in obj.items()}
            return obj

        return plain(self)


_SECTIONS: dict[str, type] = {
    "memory": MemorySettings,
    "cache": CacheSettings,
    "catalog": CatalogSettings,
    "ui": UISettings,
    "api": ApiSettings,
}


def _fraction(key: str, value: Any, path: Path | None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SettingsError(path, key, f"must be a number between 0 and 1, got {value!r}")
    if not 0 < float(value) <= 1:
        raise SettingsError(path, key, f"must be in (0, 1], got {value}")
    return float(value)


def _coerce(key: str, expected: Any, value: Any, path: Path | None) -> Any:
    """Check ``value`` against the type of the default ``expected``."""
    if isinstance(expected, bool):
        if not isinstance(value, bool):
            raise SettingsError(path, key, f"must be true or false, got {value!r}")
        return value
    if isinstance(expected, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise SettingsError(path, key, f"must be a whole number, got {value!r}")
        if value < 0:
            raise SettingsError(path, key, f"must be 0 or more, got {value}")
        return value
    if isinstance(expected, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SettingsError(path, key, f"must be a number, got {value!r}")
        if value < 0:
            raise SettingsError(path, key, f"must be 0 or more, got {value}")
        return float(value)
    if isinstance(expected, str):
        if not isinstance(value, str):
            raise SettingsError(path, key, f"must be a string, got {value!r}")
        return value
    if isinstance(expected, tuple):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise SettingsError(path, key, f"must be a list of strings, got {value!r}")
        return tuple(value)
    if isinstance(expected, Mapping):
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise SettingsError(path, key, f"must be a table of strings, got {value!r}")
        return dict(value)
    raise AssertionError(f"no rule for {key}")


def _section(name: str, cls: type, raw: Any, path: Path | None) -> Any:
    if not isinstance(raw, dict):
        raise SettingsError(path, f"[{name}]", "must be a table")
    defaults = cls()
    known = {f.name for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in known:
            raise SettingsError(
                path, f"{name}.{key}", f"unknown key (known: {', '.join(sorted(known))})"
            )
    values = {
        key: _coerce(f"{name}.{key}", getattr(defaults, key), value, path)
        for key, value in raw.items()
    }
    return dataclasses.replace(defaults, **values)


def parse_settings(data: Mapping[str, Any], path: Path | None = None) -> Settings:
    """Validate parsed TOML into :class:`Settings`; raises :class:`SettingsError`."""
    for key in data:
        if key not in _SECTIONS and key != "models":
            known = ", ".join(sorted([*_SECTIONS, "models"]))
            raise SettingsError(path, f"[{key}]", f"unknown section (known: {known})")
    sections = {
        name: _section(name, cls, data.get(name, {}), path) for name, cls in _SECTIONS.items()
    }
    models_raw = data.get("models", {"default": "demo"})
    models = _coerce("models", {}, models_raw, path)
    settings = Settings(models=models, **sections)
    _check_ranges(settings, path)
    return settings


def _check_ranges(s: Settings, path: Path | None) -> None:
    m = s.memory
    _fraction("memory.warning_threshold", m.warning_threshold, path)
    _fraction("memory.emergency_threshold", m.emergency_threshold, path)
    _fraction("memory.background_load_below", m.background_load_below, path)
    if m.warning_threshold >= m.emergency_threshold:
        raise SettingsError(
            path,
            "memory.warning_threshold",
            f"must be below memory.emergency_threshold ({m.warning_threshold} >= "
            f"{m.emergency_threshold})",
        )
    if m.poll_seconds < 0.1:
        raise SettingsError(path, "memory.poll_seconds", f"must be at least 0.1, got {m.poll_seconds}")
    if m.cleanup not in CLEANUP_MODES:
        raise SettingsError(
            path, "memory.cleanup", f"must be one of {', '.join(CLEANUP_MODES)}, got {m.cleanup!r}"
        )
    if s.cache.policy not in POLICIES:
        raise SettingsError(
            path,
            "cache.policy",
            f"unknown policy {s.cache.policy!r} (known: {', '.join(sorted(POLICIES))})",
        )
    if not 0 < s.api.port < 65536:
        raise SettingsError(path, "api.port", f"must be 1-65535, got {s.api.port}")


def read_settings(path: Path) -> Settings:
    """Read and validate one file; raises :class:`SettingsError` with the file and key."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SettingsError(path, "", f"cannot read: {exc.strerror or exc}") from exc
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise SettingsError(path, "", f"not UTF-8 text: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(path, "", f"not valid TOML: {exc}") from exc
    return parse_settings(data, path)


def write_settings(settings: Settings, path: Path) -> None:
    """Write atomically: a temporary file beside ``path``, fsync, then rename over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = HEADER + "\n" + tomli_w.dumps(settings.to_toml_dict())
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def user_config_path() -> Path:
    """``$XDG_CONFIG_HOME/mlx-tui/settings.toml`` (``~/.config/...`` when unset)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "mlx-tui" / "settings.toml"


def find_settings_path(explicit: Path | None = None, cwd: Path | None = None) -> tuple[Path, str]:
    """Where settings come from: ``--settings``, ``./settings.toml``, the user config file.

    Returns the path and a word saying which rule chose it. When none exists, the user config
    path is returned (it is where the app will write changes).
    """
    if explicit is not None:
        return explicit.expanduser(), "--settings"
    local = (cwd or Path.cwd()) / "settings.toml"
    if local.is_file():
        return local, "current folder"
    user = user_config_path()
    if user.is_file():
        return user, "user config"
    return user, "defaults (no file yet)"


class SettingsStore:
    """Owns the current valid settings of a process and the file they live in.

    ``reload_if_changed()`` is cheap (a ``stat``) and meant to be polled; listeners are called
    with the new settings after a valid change, or with the error after an invalid one, from
    the thread that polled. ``update()`` validates, writes the file atomically and applies.
    """

    def __init__(self, path: Path, source: str = "") -> None:
        self.path = path
        self.source = source
        self._lock = threading.Lock()
        self._listeners: list[Callable[[Settings | None, SettingsError | None], None]] = []
        self._mtime: float | None = None
        self.error: SettingsError | None = None
        self._settings = Settings()
        if path.exists():
            try:
                self._settings = read_settings(path)
            except SettingsError as exc:
                self.error = exc
            self._mtime = self._stat()

    @property
    def settings(self) -> Settings:
        return self._settings

    def subscribe(self, listener: Callable[[Settings | None, SettingsError | None], None]) -> None:
        self._listeners.append(listener)

    def _stat(self) -> float | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return st.st_mtime_ns + st.st_size

    def _notify(self, settings: Settings | None, error: SettingsError | None) -> None:
        for listener in list(self._listeners):
            listener(settings, error)

    def reload_if_changed(self) -> bool:
        """Re-read the file when it changed on disk; returns whether it changed."""
        mtime = self._stat()
        with self._lock:
            if mtime == self._mtime:
                return False
            self._mtime = mtime
            if mtime is None:
                return False
            try:
                new = read_settings(self.path)
            except SettingsError as exc:
                self.error = exc
                settings, error = None, exc
            else:
                self._settings, self.error = new, None
                settings, error = new, None
        self._notify(settings, error)
        return True

    def update(self, section: str, **changes: Any) -> Settings:
        """Apply ``changes`` to ``section``, write the file, and tell listeners.

        Raises :class:`SettingsError` (and changes nothing) when the result is invalid. If the
        file on disk is currently invalid it is not overwritten: the user's text stays intact.
        """
        with self._lock:
            if self.error is not None and self.path.exists():
                raise SettingsError(
                    self.path, "", f"not saved: fix the file first ({self.error.problem})"
                )
            new = self._settings.replace(section, **changes)
            write_settings(new, self.path)
            self._settings = new
            self._mtime = self._stat()
        self._notify(new, None)
        return new
