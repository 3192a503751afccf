"""The house rules that keep the app fast and the layers honest."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_python(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout


def test_the_core_imports_neither_textual_nor_mlx_lm_at_import_time() -> None:
    out = run_python(
        "import sys, mlx_tui.core.cache, mlx_tui.core.chat, mlx_tui.core.runtime;"
        "print(sorted(m for m in ('textual', 'mlx_lm', 'starlette', 'mlx_tui.ui', 'mlx_tui.server')"
        " if m in sys.modules))"
    )
    assert out.strip() == "[]"


def test_the_import_linter_contracts_hold() -> None:
    lint = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run([str(lint)], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout
