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

__all__ = ["sha256", "Probe", "user_multiplexes", "needs_keepalive", "identity_key", "passenger_problem", "session_env",
           "KEEPALIVE_INTERVAL", "PERSIST_SECONDS"]

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


# ssh flags a session riding a master cannot honour: no tty, stdin, subsystem, verbose client or
# forwarding of its own (the rest shape the connection, which the master already has, or only the
# client's own messages). -f, -N, -W, -M, -S, -O, -G and -V never reach here (not a git session).
_NOT_PASSENGER_FLAGS = {"t": "-t (a tty)", "s": "-s (a subsystem)", "n": "-n", "v": "-v (ssh's own debug output)",
                        "w": "-w (a tunnel)", "L": "-L (a forwarding)", "R": "-R (a forwarding)", "D": "-D (a forwarding)"}


def passenger_problem(probe: Probe, flags: "set[str]") -> str | None:
    """Why git's session cannot ride a master without an ssh client of its own, or None.

    mama-ssh then runs plain ssh for it: the cases are ones a git host never needs (a tty, forwards,
    a RemoteCommand), and ``-v``, where ssh's own account of the connection is the point."""
    given = sorted(flags & _NOT_PASSENGER_FLAGS.keys())
    if given:
        return f"{_NOT_PASSENGER_FLAGS[given[0]]} given"
    if probe.get("requesttty", "auto").lower() not in ("auto", "no", "false"):
        return f"RequestTTY {probe.get('requesttty')}"
    # (what ssh -G prints when they are not set)
    checks = (("sessiontype", "default"), ("stdinnull", "no"), ("forkafterauthentication", "no"), ("tunnel", "false"),
              ("remotecommand", "none"))
    for key, unset in checks:
        value = probe.get(key, unset).lower()
        if value != unset:
            return f"{key} {value} in the ssh config"
    for key in ("localforward", "remoteforward", "dynamicforward"):
        if probe.values.get(key):
            return f"{key} in the ssh config"
    return None


def session_env(probe: Probe, environ: "Any") -> "list[bytes]":
    """The environment strings ssh's client would send with a session: our variables matching its
    SendEnv patterns, then its SetEnv assignments."""
    patterns = probe.values.get("sendenv", [])
    out = [f"{name}={value}" for name, value in environ.items() if any(_wildcard(name, pattern) for pattern in patterns)]
    return [text.encode("utf-8", "surrogateescape") for text in (*out, *probe.values.get("setenv", []))]


def _wildcard(text: str, pattern: str) -> bool:
    """ssh's match_pattern: ``*`` any run of characters, ``?`` one character, nothing else special."""
    t = p = 0
    star, mark = -1, 0
    while t < len(text):
        if p < len(pattern) and pattern[p] == "*":
            star, mark, p = p, t, p + 1
        elif p < len(pattern) and pattern[p] in ("?", text[t]):
            t, p = t + 1, p + 1
        elif star >= 0:
            mark += 1
            t, p = mark, star + 1
        else:
            return False
    return all(c == "*" for c in pattern[p:])
