"""Where models come from: ``[models]`` aliases, model folders, the local Hugging Face cache.

:class:`Catalog` never downloads. A repo id that is not in the local Hugging Face cache is
listed with the problem "not downloaded". For each model it knows the bytes on disk and an
estimate of the bytes it will hold once loaded, read from the ``*.safetensors`` headers (exact
tensor sizes, so quantized models are estimated as stored) before anything is loaded.

A folder that cannot be read or parsed never stops a scan: it becomes a :class:`ModelInfo` with
the reason in ``problem``. Every name is valid text (undecodable bytes of a folder name are
escaped), and every model has an identity (:attr:`ModelInfo.key`: its resolved folder) that no
request can re-point.
"""

from __future__ import annotations

import json
import os
import re
import struct
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable, Mapping

from .settings import Settings

__all__ = [
    "ModelInfo",
    "Catalog",
    "UnknownModel",
    "DEMO_MODEL_PATH",
    "inspect_model_folder",
    "estimate_resident_bytes",
    "hf_cache_dir",
    "safe_text",
    "looks_like_path",
]

DEMO_MODEL_PATH = Path(__file__).resolve().parent.parent / "demo_model"

_DTYPE_BYTES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
    "U16": 2, "U32": 4, "U64": 8, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1,
}
_MAX_JSON_BYTES = 50_000_000
_LAYER = re.compile(r"(?:^|\.)(?:layers|h|blocks)\.(\d+)\.")
_GENERATION_KEYS = {"temperature": float, "top_p": float, "top_k": int, "min_p": float,
                    "repetition_penalty": float, "max_new_tokens": int}


def safe_text(value: str) -> str:
    """``value`` as valid text: a folder name's undecodable bytes (``os.fsdecode`` keeps them as
    lone surrogates, which no JSON or terminal can carry) become ``\\xNN`` escapes."""
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        pass
    try:
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a lone surrogate that came from JSON, not from a file name
        return value.encode("utf-8", "backslashreplace").decode("utf-8")


class UnknownModel(LookupError):
    """A name that is neither an alias, a folder model nor a Hugging Face cache model (or a
    path a request may not name): the same answer whether or not such a path exists."""

    def __init__(self, name: str, known: Iterable[str] = ()) -> None:
        self.name = safe_text(name)[:300]
        names = ", ".join(sorted(safe_text(k) for k in known)) or "none"
        super().__init__(f"unknown model {self.name!r}: not in the catalogue (known: {names})")


@dataclass(frozen=True)
class ModelInfo:
    """What the catalog knows about one model before it is loaded."""

    name: str
    path: Path | None
    source: str  # "demo", "alias", "folder", "huggingface" or "path" (named by a request)
    disk_bytes: int = 0
    estimated_bytes: int = 0
    architecture: str | None = None
    quantization_bits: int | None = None
    problem: str | None = None  # why it cannot load, when that is known in advance
    generation_defaults: Mapping[str, Any] = field(default_factory=dict)
    target: str | None = None  # what the alias points at, as settings.toml says

    @property
    def loadable(self) -> bool:
        return self.problem is None and self.path is not None

    @cached_property
    def key(self) -> str:
        """The model's identity: its resolved folder (or what an alias names when it has no
        folder). Two names with one key are one model; no request can change a key's folder.
        Resolved once per ``ModelInfo`` (a rescan makes new ones): the cache asks for it on every
        lookup, and resolving is a system call per path component."""
        if self.path is not None:
            try:
                return str(self.path.expanduser().resolve())
            except (OSError, RuntimeError, ValueError):
                return str(self.path)
        return f"{self.source}:{self.target or self.name}"


def _read_json(path: Path, what: str) -> Any:
    """Parse a JSON file; raises ValueError with a sentence (too big, too deep, not JSON)."""
    if path.stat().st_size > _MAX_JSON_BYTES:
        raise ValueError(f"{what} is larger than {_MAX_JSON_BYTES // 1_000_000} MB")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except RecursionError:
        raise ValueError(f"{what} is nested too deeply") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"{what} is not UTF-8 text ({exc.reason})") from None


def _safetensors_header(path: Path) -> dict[str, Any]:
    with path.open("rb") as fh:
        head = fh.read(8)
        if len(head) != 8:
            raise ValueError(f"{path.name} is too short to be a safetensors file")
        (length,) = struct.unpack("<Q", head)
        if length > 100_000_000:
            raise ValueError(f"{path.name} has an impossible header length")
        try:
            header = json.loads(fh.read(length))
        except RecursionError:
            raise ValueError(f"{path.name}: header nested too deeply") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path.name}: header is not a JSON object")
    return header


def _tensors(header: Mapping[str, Any], name: str) -> Iterable[tuple[str, int, list[int]]]:
    """(tensor name, bytes, shape) of each tensor a header declares; ValueError if malformed."""
    for key, meta in header.items():
        if key == "__metadata__":
            continue
        if not isinstance(meta, dict) or not isinstance(meta.get("shape"), list):
            raise ValueError(f"{name}: tensor {safe_text(str(key))[:80]!r} has no shape")
        count = 1
        for dim in meta["shape"]:
            if isinstance(dim, bool) or not isinstance(dim, int) or dim < 0:
                raise ValueError(f"{name}: tensor {safe_text(str(key))[:80]!r} has a bad shape")
            count *= dim
        yield str(key), count * _DTYPE_BYTES.get(str(meta.get("dtype")), 4), meta["shape"]


def _weights_summary(folder: Path) -> tuple[int, set[int]]:
    """Bytes of every tensor in the folder's safetensors files, and the layer indices they
    hold, from the headers alone (no weights read)."""
    total, layers = 0, set()
    for path in sorted(folder.glob("*.safetensors")):
        for key, nbytes, _ in _tensors(_safetensors_header(path), path.name):
            total += nbytes
            match = _LAYER.search(key)
            if match:
                layers.add(int(match.group(1)))
    return total, layers


def estimate_resident_bytes(folder: Path) -> int:
    """Estimate memory a loaded model holds: the tensors its safetensors files declare."""
    return _weights_summary(folder)[0]


def _config_layers(config: Mapping[str, Any]) -> int | None:
    for source in (config, config.get("text_config") if isinstance(config.get("text_config"), dict) else {}):
        value = source.get("num_hidden_layers", source.get("n_layer", source.get("num_layers")))
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def _shape_problem(config: Mapping[str, Any], layers: set[int], estimate: int) -> str | None:
    """Why ``config.json`` disagrees with its weights (a config that lies about its size would
    have mlx_lm build a model far larger than the files), or None."""
    declared = _config_layers(config)
    if declared is None or not layers:
        return None
    held = max(layers) + 1
    if declared > held:
        return (f"config.json declares {declared:,} layers but the weights hold {held:,} "
                f"({estimate:,} bytes); refusing to build a model the files cannot fill")
    return None


def _generation_defaults(folder: Path) -> dict[str, Any]:
    """The sampling defaults of the model's ``generation_config.json`` that the chat honours
    (``max_new_tokens`` as ``max_tokens``); anything unreadable is ignored."""
    path = folder / "generation_config.json"
    try:
        raw = _read_json(path, "generation_config.json") if path.is_file() else {}
    except (OSError, ValueError):
        return {}
    if not isinstance(raw, dict):
        return {}
    found: dict[str, Any] = {}
    for key, kind in _GENERATION_KEYS.items():
        value = raw.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
            found["max_tokens" if key == "max_new_tokens" else key] = kind(value)
    if raw.get("do_sample") is False:
        found["temperature"] = 0.0
    return found


def inspect_model_folder(name: str, folder: Path, source: str, target: str | None = None) -> ModelInfo:
    """Describe one model folder, with ``problem`` set when it clearly cannot load.

    Never raises for what is on disk: an unreadable folder, a config that is not an object or
    is nested 100,000 deep, a damaged header, all become the ``problem`` of that one model.
    """
    name = safe_text(name)
    try:
        folder = folder.expanduser()
    except RuntimeError:  # "~nosuchuser/m": no such home folder
        return ModelInfo(name, folder, source, target=target,
                         problem=f"folder {safe_text(str(folder))} does not exist (unknown user)")
    try:
        return _inspect(name, folder, source, target)
    except Exception as exc:  # noqa: BLE001 - one bad folder must not stop a scan
        return ModelInfo(name, folder, source, target=target,
                         problem=f"cannot read {safe_text(str(folder))}: {type(exc).__name__}: "
                                 f"{safe_text(str(exc))[:200]}")


def _inspect(name: str, folder: Path, source: str, target: str | None) -> ModelInfo:
    shown = safe_text(str(folder))
    if not folder.is_dir():
        return ModelInfo(name, folder, source, target=target, problem=f"folder {shown} does not exist")
    disk = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
    config_path = folder / "config.json"
    if not config_path.is_file():
        return ModelInfo(name, folder, source, disk, target=target, problem=f"no config.json in {shown}")
    try:
        config = _read_json(config_path, "config.json")
    except (OSError, ValueError) as exc:
        return ModelInfo(name, folder, source, disk, target=target,
                         problem=f"config.json is not valid JSON: {safe_text(str(exc))[:200]}")
    if not isinstance(config, dict):
        return ModelInfo(name, folder, source, disk, target=target,
                         problem=f"config.json must be a JSON object, not {type(config).__name__}")
    arch = config.get("model_type")
    arch = safe_text(arch) if isinstance(arch, str) else None
    quant = config.get("quantization") or config.get("quantization_config") or {}
    bits = quant.get("bits") if isinstance(quant, dict) else None
    bits = bits if isinstance(bits, int) and not isinstance(bits, bool) else None
    defaults = _generation_defaults(folder)
    if not any(folder.glob("*.safetensors")):
        return ModelInfo(name, folder, source, disk, 0, arch, bits, target=target,
                         problem=f"no *.safetensors weights in {shown}", generation_defaults=defaults)
    try:
        estimate, layers = _weights_summary(folder)
    except (OSError, ValueError, KeyError, TypeError, struct.error) as exc:
        return ModelInfo(name, folder, source, disk, 0, arch, bits, target=target,
                         problem=f"damaged weights file: {safe_text(str(exc))[:200]}",
                         generation_defaults=defaults)
    problem = _shape_problem(config, layers, estimate)
    return ModelInfo(name, folder, source, disk, estimate, arch, bits, problem,
                     generation_defaults=defaults, target=target)


def looks_like_path(value: str) -> bool:
    """A name that means a folder (``/x``, ``~/x``, ``./x``, ``a/b`` that exists)."""
    if value.startswith(("/", "~", ".")):
        return True
    if os.sep not in value:
        return False
    try:
        return Path(value).expanduser().exists()
    except (OSError, RuntimeError, ValueError):
        return False


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment now (not at import time):
    ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or str(Path.home() / ".cache" / "huggingface")
    return Path(home).expanduser() / "hub"


def _hf_snapshot(repo_id: str) -> Path | None:
    """The local snapshot folder of ``repo_id`` in the Hugging Face cache, without network."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo_id, "config.json", cache_dir=hf_cache_dir())
    except Exception:  # noqa: BLE001 - a malformed repo id or cache: simply not there
        return None
    return Path(found).parent if isinstance(found, str) else None


class Catalog:
    """Lists and resolves models for a :class:`Settings`; cheap to rebuild after a change.

    Names: the alias names of ``[models]``, ``demo`` (the bundled model), each model folder's
    name under ``[catalog].dirs``, and each Hugging Face cache repo id.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def resolve_target(self, name: str, target: str) -> ModelInfo:
        """Resolve one alias value: ``demo``, a folder path, or a Hugging Face repo id."""
        if target == "demo":
            return inspect_model_folder(name, DEMO_MODEL_PATH, "demo", target)
        if looks_like_path(target):
            return inspect_model_folder(name, Path(target), "alias", target)
        snapshot = _hf_snapshot(target)
        if snapshot is None:
            return ModelInfo(name, None, "huggingface", target=target,
                             problem=f"{target} is not downloaded (not in the local "
                                     "Hugging Face cache; mlx-tui never downloads)")
        return inspect_model_folder(name, snapshot, "huggingface", target)

    def _folder_models(self) -> Iterable[ModelInfo]:
        for raw in self.settings.catalog.dirs:
            root = Path(raw).expanduser()
            try:
                if not root.is_dir():
                    continue
                candidates = [root] if (root / "config.json").exists() else sorted(
                    p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")
                )
            except OSError:
                continue  # an unreadable catalogue folder lists nothing
            for folder in candidates:
                try:
                    is_model = (folder / "config.json").exists() or any(folder.glob("*.safetensors"))
                except OSError:
                    is_model = True  # listed with the reason it cannot be read
                if is_model:
                    yield inspect_model_folder(folder.name, folder, "folder")

    def _hf_models(self) -> Iterable[ModelInfo]:
        if not self.settings.catalog.huggingface_cache:
            return
        from huggingface_hub import scan_cache_dir
        from huggingface_hub.errors import CacheNotFound

        try:
            cache = scan_cache_dir(hf_cache_dir())
        except (CacheNotFound, OSError, ValueError):
            return
        for repo in sorted(cache.repos, key=lambda r: r.repo_id):
            if repo.repo_type != "model" or not repo.revisions:
                continue
            latest = max(repo.revisions, key=lambda r: r.last_modified)
            names = {f.file_name for f in latest.files}
            if "config.json" in names and any(n.endswith(".safetensors") for n in names):
                yield inspect_model_folder(repo.repo_id, latest.snapshot_path, "huggingface", repo.repo_id)

    def scan_all(self) -> list[ModelInfo]:
        """Every model this machine has, aliases first, then ``demo``, folders and HF; two
        folders with one name are both listed (the cache tells them apart by folder)."""
        found = [self.resolve_target(alias, target) for alias, target in self.settings.models.items()]
        if "demo" not in self.settings.models:
            found.append(self.resolve_target("demo", "demo"))
        return [*found, *self._folder_models(), *self._hf_models()]

    def scan(self) -> dict[str, ModelInfo]:
        """Every model this machine has, by name (the first of each name: aliases first)."""
        found: dict[str, ModelInfo] = {}
        for info in self.scan_all():
            found.setdefault(info.name, info)
        return found

    def resolve(self, name: str, *, allow_paths: bool = True) -> ModelInfo:
        """One model by name, or a path to a model folder; raises :class:`UnknownModel`.

        With ``allow_paths`` False (what the API does by default), a path is answered with
        "not in the catalogue" whether or not it exists, so a caller cannot probe the disk.
        """
        if name in self.settings.models:
            return self.resolve_target(name, self.settings.models[name])
        if name == "demo":
            return self.resolve_target("demo", "demo")
        if allow_paths and looks_like_path(name):
            return inspect_model_folder(Path(name).name, Path(name), "path")
        known = self.scan()
        if name in known:
            return known[name]
        raise UnknownModel(name, known)
