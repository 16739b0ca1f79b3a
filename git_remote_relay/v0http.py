"""Which HTTP repositories answered protocol v0 when asked for v2, so the next fetch asks once.

git asks a helper for v2 (``stateless-connect``); the helper learns what the server speaks from
its ``info/refs`` answer. A v0 answer means git's own ``remote-http`` serves the session, and it
asks for ``info/refs`` again: two advertisements per fetch where git alone makes one (for a
repository with many refs, most of a no-op fetch's time). So a v0 answer is remembered per
repository URL (without credentials) in ``http-v0`` in the user's state directory, and for
``DAYS`` after it the helper hands the session over without asking first. A server that learnt
v2 meanwhile is then spoken to in v2 by ``remote-http`` itself, as without ``relay::``.

One line per repository, ``<url> <unix time>``; replaced atomically under a file lock, read
without one. Best effort: a state directory that cannot be written costs the second request.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping

from .limits import state_dir

__all__ = ["V0Memory", "DAYS"]

DAYS = 7


class V0Memory:
    def __init__(self, env: Mapping[str, str]) -> None:
        self.dir = state_dir(env)
        self.path = os.path.join(self.dir, "http-v0")

    def _read(self) -> dict[str, float]:
        seen: dict[str, float] = {}
        try:
            with open(self.path, encoding="utf-8") as fh:
                lines = fh.read().splitlines()
        except (OSError, UnicodeDecodeError):
            return seen
        for line in lines:
            url, _, when = line.rpartition(" ")
            try:
                seen[url] = float(when)
            except ValueError:
                continue
        return seen

    def speaks_v0(self, url: str) -> bool:
        """``url`` answered v0 within the last ``DAYS`` days."""
        when = self._read().get(url)
        return when is not None and _fresh(time.time() - when)

    def remember(self, url: str) -> None:
        try:
            from filelock import FileLock

            os.makedirs(self.dir, mode=0o700, exist_ok=True)
            with FileLock(self.path + ".lock", timeout=10):
                now = time.time()
                seen = {u: w for u, w in self._read().items() if _fresh(now - w)}
                seen[url] = now
                part = self.path + ".part"
                with open(part, "w", encoding="utf-8") as fh:
                    fh.writelines(f"{u} {int(w)}\n" for u, w in sorted(seen.items()))  # whole seconds, never ahead
                os.replace(part, self.path)
        except Exception:  # noqa: BLE001 - an optimisation: it must never fail a fetch
            return


def _fresh(age: float) -> bool:
    """Younger than ``DAYS`` (a clock set back a little since does not make it older than new)."""
    return -3600 <= age < DAYS * 86400
