"""Settings files that know only the models they are given: no folder or Hugging Face scans,
no preload. Tests and benchmarks write these so that nothing on the machine changes a run."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from ..core.settings import Settings, parse_settings, write_settings

__all__ = ["isolated_settings", "write_isolated_settings"]


def isolated_settings(models: Mapping[str, str], **sections: Mapping[str, Any]) -> Settings:
    """Settings with only ``models`` known, plus ``sections`` (``memory={...}``, ``api={...}``)
    merged into the defaults of each section."""
    data: dict[str, Any] = {
        "models": dict(models),
        "catalog": {"dirs": [], "huggingface_cache": False},
        "cache": {"preload": []},
    }
    for name, values in sections.items():
        data[name] = {**data.get(name, {}), **values}
    return parse_settings(data)


def write_isolated_settings(path: Path, models: Mapping[str, str],
                            **sections: Mapping[str, Any]) -> Path:
    """Write :func:`isolated_settings` to ``path`` (atomically); returns ``path``."""
    write_settings(isolated_settings(models, **sections), path)
    return path
