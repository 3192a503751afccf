"""Developer tools: synthetic and demo models for tests, fault drills and benchmarks."""

from mlx_tui.devtools.modelgen import (
    CORRUPTIONS,
    DEMO_MODEL_DIR,
    Corruption,
    corrupt_model,
    train_tokenizer,
    write_random_model,
    write_tokenizer,
)

__all__ = [
    "CORRUPTIONS",
    "DEMO_MODEL_DIR",
    "Corruption",
    "corrupt_model",
    "train_tokenizer",
    "write_random_model",
    "write_tokenizer",
]
