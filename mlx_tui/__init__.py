"""mlx_tui: a Textual TUI and model cache manager for MLX language models."""

__version__ = "0.1.0"
