"""mama-ssh's settings from the environment (``MAMA_SSH_*``), and its debug line."""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # no `typing` at run time: mama-ssh starts for every ssh connection git makes
if TYPE_CHECKING:
    from typing import Mapping

__all__ = ["debug", "number"]


def debug(env: Mapping[str, str], text: str) -> None:
    if env.get("MAMA_SSH_DEBUG", "") not in ("", "0"):
        sys.stderr.write(f"mama-ssh: {text}\n")


def number(env: Mapping[str, str], name: str, default: float) -> float:
    try:
        return float(env.get(name, default))
    except ValueError:
        return default
