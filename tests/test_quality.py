"""The code's own checks, run with the tests so CI runs them: mypy --strict and ruff (line length,
complexity, imports, common bugs), configured in pyproject.toml."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from conftest import unavailable

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    path = BIN / name
    if not path.exists():
        found = shutil.which(name)
        if not found:
            unavailable(f"{name} is not installed (run ./install.sh --dev)")
        return str(found)
    return str(path)


def test_mypy_strict_is_clean() -> None:
    proc = subprocess.run([tool("mypy")], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ruff_is_clean() -> None:
    paths = ["git_remote_relay", "mama_ssh", "tests", "bench"]
    proc = subprocess.run([tool("ruff"), "check", *paths], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
