"""Where models come from: ``[models]`` aliases, model folders, the local Hugging Face cache.

:class:`Catalog` never downloads. A repo id that is not in the local Hugging Face cache is
listed with the problem "not downloaded". For each model it knows the bytes on disk and an
estimate of the bytes it will hold once loaded, read from the ``*.safetensors`` headers (exact
tensor sizes, so quantized models are estimated as stored) before anything is loaded.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from .settings import Settings

__all__ = [
    "ModelInfo",
    "Catalog",
    "UnknownModel",
    "DEMO_MODEL_PATH",
    "inspect_model_folder",
    "estimate_resident_bytes",
    "hf_cache_dir",
]

DEMO_MODEL_PATH = Path(__file__).resolve().parent.parent / "demo_model"

_DTYPE_BYTES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
    "U16": 2, "U32": 4, "U64": 8, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1,
}


class UnknownModel(LookupError):
    """A name that is neither an alias, a folder model nor a Hugging Face cache model."""

    def __init__(self, name: str, known: Iterable[str] = ()) -> None:
        names = ", ".join(sorted(known)) or "none"
        super().__init__(f"unknown model {name!r} (known: {names})")
        self.name = name


@dataclass(frozen=True)
class ModelInfo:
    """What the catalog knows about one model before it is loaded."""

    name: str
    path: Path | None
    source: str  # "demo", "alias", "folder" or "huggingface"
    disk_bytes: int = 0
    estimated_bytes: int = 0
    architecture: str | None = None
    quantization_bits: int | None = None
    problem: str | None = None  # why it cannot load, when that is known in advance

    @property
    def loadable(self) -> bool:
        return self.problem is None and self.path is not None


def _safetensors_tensor_bytes(path: Path) -> int:
    """Bytes of all tensors in one safetensors file, from its JSON header (no weights read)."""
    with path.open("rb") as fh:
        head = fh.read(8)
        if len(head) != 8:
            raise ValueError(f"{path.name} is too short to be a safetensors file")
        (length,) = struct.unpack("<Q", head)
        if length > 100_000_000:
            raise ValueError(f"{path.name} has an impossible header length")
        header = json.loads(fh.read(length))
    total = 0
    for key, meta in header.items():
        if key == "__metadata__":
            continue
        count = 1
        for dim in meta["shape"]:
            count *= dim
        total += count * _DTYPE_BYTES.get(meta["dtype"], 4)
    return total


def estimate_resident_bytes(folder: Path) -> int:
    """Estimate memory a loaded model holds: the tensors its safetensors files declare."""
    return sum(_safetensors_tensor_bytes(p) for p in sorted(folder.glob("*.safetensors")))


def inspect_model_folder(name: str, folder: Path, source: str) -> ModelInfo:
    """Describe one model folder, with ``problem`` set when it clearly cannot load."""
    folder = folder.expanduser()
    if not folder.is_dir():
        return ModelInfo(name, folder, source, problem=f"folder {folder} does not exist")
    disk = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
    config_path = folder / "config.json"
    if not config_path.is_file():
        return ModelInfo(name, folder, source, disk, problem=f"no config.json in {folder}")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return ModelInfo(name, folder, source, disk, problem=f"config.json is not valid JSON: {exc}")
    arch = config.get("model_type") if isinstance(config, dict) else None
    quant = config.get("quantization") or config.get("quantization_config") or {}
    bits = quant.get("bits") if isinstance(quant, dict) else None
    if not any(folder.glob("*.safetensors")):
        return ModelInfo(name, folder, source, disk, 0, arch, bits,
                         problem=f"no *.safetensors weights in {folder}")
    try:
        estimate = estimate_resident_bytes(folder)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return ModelInfo(name, folder, source, disk, 0, arch, bits,
                         problem=f"damaged weights file: {exc}")
    return ModelInfo(name, folder, source, disk, estimate, arch, bits)


def _looks_like_path(value: str) -> bool:
    return value.startswith(("/", "~", ".")) or os.sep in value and Path(value).expanduser().exists()


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

    found = try_to_load_from_cache(repo_id, "config.json", cache_dir=hf_cache_dir())
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
            info = inspect_model_folder(name, DEMO_MODEL_PATH, "demo")
        elif _looks_like_path(target):
            info = inspect_model_folder(name, Path(target), "alias")
        else:
            snapshot = _hf_snapshot(target)
            if snapshot is None:
                return ModelInfo(name, None, "huggingface",
                                 problem=f"{target} is not downloaded (not in the local "
                                         "Hugging Face cache; mlx-tui never downloads)")
            info = inspect_model_folder(name, snapshot, "huggingface")
        return info

    def _folder_models(self) -> Iterable[ModelInfo]:
        for raw in self.settings.catalog.dirs:
            root = Path(raw).expanduser()
            if not root.is_dir():
                continue
            candidates = [root] if (root / "config.json").exists() else sorted(
                p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")
            )
            for folder in candidates:
                if (folder / "config.json").exists() or any(folder.glob("*.safetensors")):
                    yield inspect_model_folder(folder.name, folder, "folder")

    def _hf_models(self) -> Iterable[ModelInfo]:
        if not self.settings.catalog.huggingface_cache:
            return
        from huggingface_hub import scan_cache_dir
        from huggingface_hub.errors import CacheNotFound

        try:
            cache = scan_cache_dir(hf_cache_dir())
        except (CacheNotFound, OSError):
            return
        for repo in sorted(cache.repos, key=lambda r: r.repo_id):
            if repo.repo_type != "model" or not repo.revisions:
                continue
            latest = max(repo.revisions, key=lambda r: r.last_modified)
            names = {f.file_name for f in latest.files}
            if "config.json" in names and any(n.endswith(".safetensors") for n in names):
                yield inspect_model_folder(repo.repo_id, latest.snapshot_path, "huggingface")

    def scan(self) -> dict[str, ModelInfo]:
        """Every model this machine has, by name (aliases first, then folders, then HF)."""
        found: dict[str, ModelInfo] = {}
        for alias, target in self.settings.models.items():
            found[alias] = self.resolve_target(alias, target)
        found.setdefault("demo", self.resolve_target("demo", "demo"))
        for info in (*self._folder_models(), *self._hf_models()):
            found.setdefault(info.name, info)
        return found

    def resolve(self, name: str) -> ModelInfo:
        """One model by name, or a path to a model folder; raises :class:`UnknownModel`."""
        if name in self.settings.models:
            return self.resolve_target(name, self.settings.models[name])
        if name == "demo":
            return self.resolve_target("demo", "demo")
        if _looks_like_path(name):
            return inspect_model_folder(Path(name).name, Path(name), "folder")
        known = self.scan()
        if name in known:
            return known[name]
        raise UnknownModel(name, known)
