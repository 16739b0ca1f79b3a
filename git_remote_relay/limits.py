"""What each host has accepted and refused, so the next big push splits up front.

A target that refused a pack for its size will refuse one as big again: each refusal (the bytes
sent when it came, an upper bound of the limit) and each accepted pack are remembered per host
and first path segment (``https://example.com:443/small``: a front end's body limit is often per
location) in ``limits`` under the user's state directory (``$XDG_STATE_HOME/git-remote-relay``,
``GIT_RELAY_STATE_DIR`` overrides), under a file lock. A later push to the same place starts
with steps that fit, with no refused attempt. ``relay.maxPushBytes`` overrides what was learned;
``git relay probe`` shows it.

Reads need no lock (the file is replaced atomically); start-up pays nothing unless a push runs.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping

from .url import InnerUrl

__all__ = ["Limits", "Known", "limit_key"]


def limit_key(url: InnerUrl) -> str:
    """``scheme://host:port/first-segment``: where one size limit is likely to hold."""
    first = url.path.strip("/").split("/", 1)[0]
    port = f":{url.port}" if url.port else ""
    host = url.host or "local"
    return f"{url.scheme}://{host}{port}/{first if url.scheme in ('http', 'https') else ''}"


class Known:
    """What was learned about one place: the smallest size refused, the largest accepted."""

    def __init__(self, refused: int | None = None, accepted: int | None = None, when: float = 0.0) -> None:
        self.refused = refused
        self.accepted = accepted
        self.when = when

    def budget(self) -> int | None:
        """A step size that should pass: under the smallest refusal, at least what passed."""
        if self.refused is None:
            return None
        under = self.refused * 3 // 4
        return max(under, min(self.accepted or 0, self.refused - 1))

    def describe(self) -> str:
        parts = []
        if self.refused is not None:
            parts.append(f"refused a pack of {self.refused} bytes")
        if self.accepted is not None:
            parts.append(f"accepted one of {self.accepted} bytes")
        return ", ".join(parts) or "nothing known"


class Limits:
    """The learned-limits file of one user."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.dir = _state_dir(env)
        self.path = os.path.join(self.dir, "limits")

    def _read(self) -> dict[str, Known]:
        known: dict[str, Known] = {}
        try:
            with open(self.path, encoding="utf-8") as fh:
                lines = fh.read().splitlines()
        except (OSError, UnicodeDecodeError):
            return known
        for line in lines:
            words = line.split(" ")
            if len(words) != 4:
                continue
            try:
                refused = int(words[1]) if words[1] != "-" else None
                accepted = int(words[2]) if words[2] != "-" else None
                known[words[0]] = Known(refused, accepted, float(words[3]))
            except ValueError:
                continue
        return known

    def get(self, key: str) -> Known:
        return self._read().get(key, Known())

    def record(self, key: str, *, refused: int | None = None, accepted: int | None = None) -> None:
        """Remember a refusal (keeps the smallest) or an accepted pack (keeps the largest).

        Best effort: a state directory that cannot be written costs a refused attempt next time,
        never the push itself.
        """
        try:
            from filelock import FileLock

            os.makedirs(self.dir, mode=0o700, exist_ok=True)
            with FileLock(self.path + ".lock", timeout=10):
                known = self._read()
                old = known.get(key, Known())
                new_refused = old.refused if refused is None else min(refused, old.refused or refused)
                new_accepted = old.accepted if accepted is None else max(accepted, old.accepted or 0)
                if new_refused is not None and new_accepted is not None and new_accepted >= new_refused:
                    new_accepted = None  # the limit moved up: what passed before says nothing now
                known[key] = Known(new_refused, new_accepted, time.time())
                part = self.path + ".part"
                with open(part, "w", encoding="utf-8") as fh:
                    for k, v in sorted(known.items()):
                        refused_text = "-" if v.refused is None else str(v.refused)
                        accepted_text = "-" if v.accepted is None else str(v.accepted)
                        fh.write(f"{k} {refused_text} {accepted_text} {v.when:.0f}\n")
                os.replace(part, self.path)
        except Exception:  # noqa: BLE001 - learning is an optimisation: it must never fail a push
            return


def state_dir(env: Mapping[str, str]) -> str:
    """The per-user state directory (``GIT_RELAY_STATE_DIR`` overrides it)."""
    return _state_dir(env)


def _state_dir(env: Mapping[str, str]) -> str:
    override = env.get("GIT_RELAY_STATE_DIR")
    if override:
        return override
    import sys

    if sys.platform.startswith("linux"):
        base = env.get("XDG_STATE_HOME") or os.path.join(env.get("HOME") or os.path.expanduser("~"), ".local", "state")
        return os.path.join(base, "git-remote-relay")
    import platformdirs

    return str(platformdirs.user_state_dir("git-remote-relay"))
