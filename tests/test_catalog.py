"""Where models come from: aliases, model folders, and the local Hugging Face cache (offline)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable

from mlx_tui.core.catalog import DEMO_MODEL_PATH, Catalog, estimate_resident_bytes
from mlx_tui.core.loader import MlxLoader

from .conftest import make_settings


def put_in_hf_cache(model: Path, repo_id: str) -> Path:
    """Lay a model out as huggingface_hub does: blobs, a snapshot of links, refs/main."""
    repo = Path(os.environ["HF_HUB_CACHE"]) / f"models--{repo_id.replace('/', '--')}"
    revision = "0123456789abcdef0123456789abcdef01234567"
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir()
    for i, f in enumerate(sorted(model.iterdir())):
        blob = repo / "blobs" / f"blob{i}"
        shutil.copy(f, blob)
        (snapshot / f.name).symlink_to(os.path.relpath(blob, snapshot))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    return snapshot


def test_aliases_folders_demo_and_the_hf_cache_are_listed(
        tmp_path: Path, model_factory: Callable[..., Path]) -> None:
    shelf = tmp_path / "models"
    shelf.mkdir()
    shutil.copytree(model_factory("a"), shelf / "my-llama")
    (shelf / "notes").mkdir()  # not a model: ignored
    snapshot = put_in_hf_cache(model_factory("b", seed=1), "mlx-community/Tiny-4bit")
    settings = make_settings({"fast": str(model_factory("a"))},
                             catalog={"dirs": [str(shelf)], "huggingface_cache": True})
    found = Catalog(settings).scan()

    assert set(found) == {"fast", "demo", "my-llama", "mlx-community/Tiny-4bit"}
    assert found["fast"].source == "alias" and found["fast"].architecture == "llama"
    assert found["my-llama"].source == "folder"
    assert found["mlx-community/Tiny-4bit"].source == "huggingface"
    assert found["mlx-community/Tiny-4bit"].path == snapshot
    assert found["demo"].path == DEMO_MODEL_PATH
    assert all(info.loadable for info in found.values())


def test_a_repo_id_alias_resolves_from_the_local_cache_or_says_not_downloaded(
        model_factory: Callable[..., Path]) -> None:
    put_in_hf_cache(model_factory("b", seed=1), "mlx-community/Tiny-4bit")
    settings = make_settings({"coding": "mlx-community/Tiny-4bit", "big": "mlx-community/Huge-70B"})
    catalog = Catalog(settings)
    assert catalog.resolve("coding").loadable
    missing = catalog.resolve("big")
    assert not missing.loadable
    assert "not downloaded" in (missing.problem or "") and "never downloads" in (missing.problem or "")


def test_the_estimate_before_loading_is_what_the_load_holds(model_factory: Callable[..., Path]) -> None:
    folder = model_factory("wide", hidden_size=128, num_hidden_layers=2, intermediate_size=256)
    estimate = estimate_resident_bytes(folder)
    info = Catalog(make_settings({"wide": str(folder)})).resolve("wide")
    assert info.estimated_bytes == estimate
    assert info.disk_bytes > estimate, "disk also holds the tokenizer and headers"
    loaded = MlxLoader().load(info)
    assert loaded.resident_bytes == estimate


def test_a_quantized_model_reports_its_bits(tmp_path: Path, model_factory: Callable[..., Path]) -> None:
    import json

    folder = tmp_path / "q"
    shutil.copytree(model_factory("a"), folder)
    config = json.loads((folder / "config.json").read_text())
    config["quantization"] = {"group_size": 64, "bits": 4}
    (folder / "config.json").write_text(json.dumps(config))
    info = Catalog(make_settings({"q": str(folder)})).resolve("q")
    assert info.quantization_bits == 4


def test_broken_folders_are_listed_with_the_reason(tmp_path: Path, model_factory: Callable[..., Path]) -> None:
    shelf = tmp_path / "models"
    shutil.copytree(model_factory("a"), shelf / "no-config")
    (shelf / "no-config" / "config.json").unlink()
    shutil.copytree(model_factory("a"), shelf / "bad-json")
    (shelf / "bad-json" / "config.json").write_text("{not json")
    found = Catalog(make_settings({}, catalog={"dirs": [str(shelf)]})).scan()
    assert "no config.json" in (found["no-config"].problem or "")
    assert "not valid JSON" in (found["bad-json"].problem or "")
