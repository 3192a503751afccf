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

from .planner import CLEANUP_MODES, CleanupMode, Thresholds
from .listeners import Listeners
from .policy import DEFAULT_POLICY, get_policy

__all__ = [
    "MemorySettings",
    "CacheSettings",
    "EngineSettings",
    "PromptCacheSettings",
    "RemoteSettings",
    "SettingsChange",
    "SettingsListener",
    "check_port",
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
# The app saves changes into this file and keeps your comments. An invalid file is reported
# and the last valid settings stay in force.
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
    """Memory thresholds (fractions of the memory weights occupy) and the poll period."""

    warning_threshold: float = 0.85
    emergency_threshold: float = 0.98
    background_load_below: float = 0.70
    keep_on_cleanup: int = 1
    cleanup: CleanupMode = "just_enough"
    poll_seconds: float = 1.0
    manage_wired_limit: bool = True

    @property
    def thresholds(self) -> Thresholds:
        """The warning and emergency fractions, as the planner, gauge and API use them."""
        return Thresholds(self.warning_threshold, self.emergency_threshold)


@dataclass(frozen=True)
class CacheSettings:
    """How the cache chooses what to keep and what to load at start."""

    policy: str = DEFAULT_POLICY
    preload: tuple[str, ...] = ("default",)
    preload_popular: int = 0
    idle_unload_seconds: float = 0.0
    max_loaded: int = 0


@dataclass(frozen=True)
class EngineSettings:
    """The generation workers: one per loaded model, batching the requests it serves."""

    max_batch: int = 32
    prefill_step: int = 2048
    queue_size: int = 64
    max_prompt_tokens: int = 32768
    max_tokens: int = 8192
    max_messages: int = 1000
    loader_threads: int = 2


@dataclass(frozen=True)
class PromptCacheSettings:
    """Prompt (KV) caches kept between requests, in memory and on disk."""

    enabled: bool = True
    dir: str = ""
    max_memory_gb: float = 0.0
    max_disk_gb: float = 10.0
    max_disk_entries: int = 256
    min_tokens: int = 64


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
    allowed_hosts: tuple[str, ...] = ()
    allowed_origins: tuple[str, ...] = ()
    allow_model_paths: bool = False
    max_body_bytes: int = 8 * 1024 * 1024
    ollama_port: int = 0


@dataclass(frozen=True)
class RemoteSettings:
    """One other mlx-tui instance, from a ``[[remotes]]`` table."""

    name: str = ""
    url: str = ""
    api_key: str = ""


@dataclass(frozen=True)
class Settings:
    """All settings of one process. Build with :func:`parse_settings`; never mutate."""

    memory: MemorySettings = field(default_factory=MemorySettings)
    cache: CacheSettings = field(default_factory=CacheSettings)
    engine: EngineSettings = field(default_factory=EngineSettings)
    prompt_cache: PromptCacheSettings = field(default_factory=PromptCacheSettings)
    models: Mapping[str, str] = field(default_factory=lambda: {"default": "demo"})
    catalog: CatalogSettings = field(default_factory=CatalogSettings)
    ui: UISettings = field(default_factory=UISettings)
    api: ApiSettings = field(default_factory=ApiSettings)
    remotes: tuple[RemoteSettings, ...] = ()
    distributed: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """``[models.NAME]`` tables with a ``hostfile``: how NAME is served across machines (the
    keys besides ``path``/``repo``, read by :mod:`mlx_tui.distributed`)."""

    def replace(self, section: str, **changes: Any) -> "Settings":
        """A copy with ``changes`` applied to one section, validated like a file would be."""
        return self.with_changes({section: changes})

    def with_changes(self, changes: Mapping[str, Mapping[str, Any]]) -> "Settings":
        """A copy with several sections changed at once (``{"memory": {...}, "ui": {...}}``),
        validated like a file would be. ``models`` is replaced whole."""
        data = self.to_toml_dict()
        for section, values in changes.items():
            if section == "models":
                data["models"] = dict(values)
            elif section == "remotes":
                data["remotes"] = list(values)  # type: ignore[arg-type]
            else:
                data[section] = {**data.get(section, {}), **values}
        return parse_settings(data)

    def changed_sections(self, other: "Settings") -> frozenset[str]:
        """Names of the sections whose values differ between ``self`` and ``other``
        (``distributed`` counts as ``models``: it is written there)."""
        changed = {f.name for f in dataclasses.fields(self) if getattr(self, f.name) != getattr(other, f.name)}
        if "distributed" in changed:
            changed = (changed - {"distributed"}) | {"models"}
        return frozenset(changed)

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

        data = plain(self)
        distributed = data.pop("distributed")
        for name, table in distributed.items():  # a distributed model is written as its table
            target = data["models"].get(name, "")
            key = "repo" if target and not _looks_like_folder(target) and target != "demo" else "path"
            data["models"][name] = {key: target, **table}
        return data


def _looks_like_folder(target: str) -> bool:
    return target.startswith(("/", "~", ".")) or target.count("/") != 1


DISTRIBUTED_KEYS: dict[str, type | tuple[type, ...]] = {
    "hostfile": str, "backend": str, "pipeline": bool, "rank_timeout": (int, float), "rank_python": str,
}
"""The keys of a ``[models.NAME]`` table besides ``path`` / ``repo`` (the distributed runner
checks their values in depth: the hostfile exists and parses, the backend is known)."""


def _models(raw: Any, path: Path | None) -> tuple[dict[str, str], dict[str, dict[str, Any]]]:
    """``[models]``: ``NAME = "target"``, or a ``[models.NAME]`` table (``path`` or ``repo``,
    plus how to serve it across machines)."""
    if not isinstance(raw, dict):
        raise SettingsError(path, "[models]", "must be a table of names")
    models: dict[str, str] = {}
    distributed: dict[str, dict[str, Any]] = {}
    for name, value in raw.items():
        where = f"models.{name}"
        if isinstance(value, str):
            models[name] = value
            continue
        if not isinstance(value, dict):
            raise SettingsError(path, where, f"must be a string (a folder or repo id) or a table, got {value!r}")
        targets = [k for k in ("path", "repo") if k in value]
        if len(targets) != 1 or not isinstance(value[targets[0]], str) or not value[targets[0]]:
            raise SettingsError(path, where, 'needs exactly one of path = "FOLDER" or repo = "ORG/NAME"')
        table = {k: v for k, v in value.items() if k not in ("path", "repo")}
        for key, v in table.items():
            kind = DISTRIBUTED_KEYS.get(key)
            if kind is None:
                known = ", ".join(["path", "repo", *DISTRIBUTED_KEYS])
                raise SettingsError(path, f"{where}.{key}", f"unknown key (known: {known})")
            if isinstance(v, bool) and kind is not bool or not isinstance(v, kind):
                raise SettingsError(path, f"{where}.{key}", f"has the wrong type: {v!r}")
        if table and "hostfile" not in table:
            raise SettingsError(path, where, "the keys besides path/repo need a hostfile")
        models[name] = value[targets[0]]
        if table:
            distributed[name] = table
    return models, distributed


_SECTIONS: dict[str, type] = {
    "memory": MemorySettings,
    "cache": CacheSettings,
    "engine": EngineSettings,
    "prompt_cache": PromptCacheSettings,
    "catalog": CatalogSettings,
    "ui": UISettings,
    "api": ApiSettings,
}


def _fraction(key: str, value: Any, path: Path | None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SettingsError(path, key, f"must be a number between 0 and 1, got {value!r}")
    if not 0 < float(value) <= 1:
        hint = f"; write {value / 100:g} for {value:g}%" if 1 < float(value) <= 100 else ""
        raise SettingsError(path, key, f"must be a fraction in (0, 1], got {value}{hint}")
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


def _remotes(raw: Any, path: Path | None) -> tuple[RemoteSettings, ...]:
    if not isinstance(raw, list):
        raise SettingsError(path, "[[remotes]]", "must be an array of tables ([[remotes]] blocks)")
    remotes = []
    for i, item in enumerate(raw):
        remote = _section(f"remotes[{i}]", RemoteSettings, item, path)
        if not remote.name or not remote.url:
            raise SettingsError(path, f"remotes[{i}]", "needs a name and a url")
        if remote.name in {r.name for r in remotes}:
            raise SettingsError(path, f"remotes[{i}].name", f"{remote.name!r} is used twice")
        remotes.append(remote)
    return tuple(remotes)


def parse_settings(data: Mapping[str, Any], path: Path | None = None) -> Settings:
    """Validate parsed TOML into :class:`Settings`; raises :class:`SettingsError`."""
    extra = ("models", "remotes")
    for key in data:
        if key not in _SECTIONS and key not in extra:
            known = ", ".join(sorted([*_SECTIONS, *extra]))
            raise SettingsError(path, f"[{key}]", f"unknown section (known: {known})")
    sections = {
        name: _section(name, cls, data.get(name, {}), path) for name, cls in _SECTIONS.items()
    }
    models, distributed = _models(data.get("models", {"default": "demo"}), path)
    settings = Settings(models=models, remotes=_remotes(data.get("remotes", []), path),
                        distributed=distributed, **sections)
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
    try:
        get_policy(s.cache.policy)
    except KeyError as exc:  # one wording of the message, the policy module's
        raise SettingsError(path, "cache.policy", str(exc.args[0])) from None
    check_port("api.port", s.api.port, path)
    if s.api.ollama_port:
        check_port("api.ollama_port", s.api.ollama_port, path)
    e = s.engine
    for key in ("max_batch", "prefill_step", "queue_size", "max_prompt_tokens", "max_tokens",
                "max_messages", "loader_threads"):
        if getattr(e, key) < 1:
            raise SettingsError(path, f"engine.{key}", f"must be at least 1, got {getattr(e, key)}")
    if s.api.max_body_bytes < 1024:
        raise SettingsError(path, "api.max_body_bytes",
                            f"must be at least 1024, got {s.api.max_body_bytes}")


def check_port(key: str, port: int, path: Path | None = None) -> int:
    """A TCP port a server may listen on (1-65535); raises :class:`SettingsError` naming ``key``."""
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise SettingsError(path, key, f"must be a port number 1-65535, got {port}")
    return port


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


def _write_atomically(path: Path, text: str) -> None:
    """A temporary file beside ``path``, fsync, then rename over it: never half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
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


def write_settings(settings: Settings, path: Path) -> None:
    """Write the whole of ``settings`` atomically under the header (a new file)."""
    _write_atomically(path, HEADER + "\n" + tomli_w.dumps(settings.to_toml_dict()))


def _edit_document(text: str, changes: Mapping[str, Mapping[str, Any]]) -> str:
    """``text`` (valid TOML) with ``changes`` written into it, keeping the user's comments,
    order and layout: only the values that change are rewritten (tomlkit)."""
    import tomlkit

    doc = tomlkit.parse(text)
    for section, values in changes.items():
        if section == "remotes":
            array = tomlkit.aot()
            for remote in values:
                array.append(tomlkit.item(dict(remote)))  # type: ignore[call-overload]
            doc["remotes"] = array
            continue
        table = doc.get(section)
        if table is None:
            table = tomlkit.table()
            doc[section] = table
        if section == "models":
            for gone in [k for k in table if k not in values]:
                del table[gone]
        for key, value in values.items():
            value = list(value) if isinstance(value, tuple) else value
            if isinstance(value, Mapping):
                sub = table.get(key)
                if sub is None:
                    table[key] = tomlkit.table()
                    sub = table[key]
                for gone in [k for k in sub if k not in value]:
                    del sub[gone]
                for k, v in value.items():
                    sub[k] = v
            else:
                table[key] = value
    return tomlkit.dumps(doc)


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


@dataclass(frozen=True)
class SettingsChange:
    """What a listener of :class:`SettingsStore` hears: the new valid settings and which
    sections changed, or the error of a file that was not applied (``new`` is None then)."""

    old: Settings
    new: Settings | None
    sections: frozenset[str] = frozenset()
    error: SettingsError | None = None


SettingsListener = Callable[[SettingsChange], None]


class SettingsStore:
    """Owns the current valid settings of a process and the file they live in.

    ``reload_if_changed()`` is cheap (a ``stat``) and meant to be polled by one owner (the
    runtime's watcher); listeners hear each valid change with the sections it touched, or the
    error of an invalid file, from the thread that polled or saved. ``update()`` validates,
    writes every changed section in one atomic write (keeping the user's comments) and applies.
    """

    def __init__(self, path: Path, source: str = "") -> None:
        self.path = path
        self.source = source
        self._lock = threading.Lock()
        self._listeners: Listeners[SettingsListener] = Listeners()
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

    def subscribe(self, listener: SettingsListener) -> Callable[[], None]:
        """Hear every change; returns a function that unsubscribes."""
        return self._listeners.add(listener)

    def _stat(self) -> float | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return st.st_mtime_ns + st.st_size

    def _notify(self, change: SettingsChange) -> None:
        for listener in self._listeners.snapshot():
            listener(change)

    def reload_if_changed(self) -> bool:
        """Re-read the file when it changed on disk; returns whether it changed."""
        mtime = self._stat()
        with self._lock:
            if mtime == self._mtime:
                return False
            self._mtime = mtime
            if mtime is None:
                return False
            old = self._settings
            try:
                new = read_settings(self.path)
            except SettingsError as exc:
                self.error = exc
                change = SettingsChange(old, None, error=exc)
            else:
                self._settings, self.error = new, None
                change = SettingsChange(old, new, new.changed_sections(old))
        if change.error is not None or change.sections:
            self._notify(change)
        return True

    def update(self, changes: Mapping[str, Mapping[str, Any]]) -> Settings:
        """Apply ``{"section": {key: value}}`` for any number of sections in one atomic write,
        then tell listeners once.

        Raises :class:`SettingsError` (and changes nothing) when the result is invalid. If the
        file on disk is currently invalid it is not overwritten: the user's text stays intact.
        Comments and layout of an existing file are kept; only changed values are rewritten.
        """
        with self._lock:
            if self.error is not None and self.path.exists():
                raise SettingsError(
                    self.path, "", f"not saved: fix the file first ({self.error.problem})"
                )
            old = self._settings
            new = old.with_changes(changes)
            text = None
            if self.path.exists():
                try:
                    text = _edit_document(self.path.read_text(encoding="utf-8"), changes)
                except (OSError, ValueError):
                    text = None  # unreadable as a document: written whole below
            if text is None:
                write_settings(new, self.path)
            else:
                _write_atomically(self.path, text)
            self._settings = new
            self._mtime = self._stat()
            change = SettingsChange(old, new, new.changed_sections(old))
        if change.sections:
            self._notify(change)
        return new
