"""Which options to add, from the effective config (``ssh -G``) and shared state. Pure.

Rules (reference/ssh-multiplexing.md §9): add only what the user lacks; never touch identity,
agent or host-key settings; a user who multiplexes already gets no multiplexing options; keepalives
only when the user's ``ServerAliveInterval`` is 0.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def sha256(data: bytes = b"") -> "Any":
    """A SHA-256 object from the builtin module: hashlib's OpenSSL import costs ~4 ms, on every connection."""
    try:
        from _sha256 import sha256 as impl  # type: ignore[import-not-found,unused-ignore]  # Python 3.11
    except ImportError:
        from hashlib import sha256 as impl
    return impl(data)

__all__ = ["sha256", "Probe", "user_multiplexes", "needs_keepalive", "identity_key", "KEEPALIVE_INTERVAL", "PERSIST_SECONDS"]

# 15 s x ServerAliveCountMax (default 3): a dead link is noticed within ~45 s instead of the
# TCP timeout (minutes to hours) that makes a fetch over a flaky link hang.
KEEPALIVE_INTERVAL = 15
# A finite ControlPersist is the backstop when nobody runs --cleanup (atexit never runs on SIGKILL).
PERSIST_SECONDS = 600
# ssh -G keys that decide which account and route a connection uses: two destinations that differ
# in any of them must never share a master (aliases with different IdentityFile, -i, ProxyJump).
_IDENTITY_KEYS = (
    "hostname", "port", "user", "identityfile", "identitiesonly", "identityagent", "certificatefile",
    "proxyjump", "proxycommand", "addressfamily", "bindaddress", "pkcs11provider", "securitykeyprovider",
    "hostkeyalias", "userknownhostsfile", "stricthostkeychecking",
)


class Probe:
    """``ssh -G`` output as a multimap: keys lower-cased, every value of repeated keys kept."""

    def __init__(self, values: dict[str, list[str]]) -> None:
        self.values = values

    @classmethod
    def parse(cls, text: str) -> "Probe":
        values: dict[str, list[str]] = {}
        for line in text.splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            key, _, value = line.partition(" ")
            values.setdefault(key.lower(), []).append(value.strip())
        return cls(values)

    def get(self, key: str, default: str = "") -> str:
        vals = self.values.get(key)
        return vals[0] if vals else default

    def to_json(self) -> dict[str, list[str]]:
        return self.values


def user_multiplexes(probe: Probe) -> bool:
    """The user's own config (or the caller's -o options) already set up multiplexing."""
    master = probe.get("controlmaster", "false").lower()
    path = probe.get("controlpath", "none")
    return master not in ("false", "no", "") and path.lower() not in ("", "none")


def needs_keepalive(probe: Probe) -> bool:
    return probe.get("serveraliveinterval", "0") in ("0", "")


def identity_key(probe: Probe, dest: str, agent_sock: str | None) -> str:
    """A short hash of everything that decides who we are and where we go (socket name, locks)."""
    h = sha256()
    h.update(dest.encode())
    for key in _IDENTITY_KEYS:
        for value in probe.values.get(key, []):
            h.update(b"\0" + key.encode() + b"=" + value.encode())
    h.update(b"\0agent=" + (agent_sock or "").encode())
    return str(h.hexdigest())[:16]
