"""``ssh -G`` with the caller's own options, cached in the state directory."""

from __future__ import annotations

import os
import time

from .options import Probe, sha256
from .state import State

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Mapping

__all__ = ["probe", "PROBE_TTL", "ProbeFailed"]

# `ssh -G` evaluates Match exec and may resolve names: cache it, but not for long, so an edited
# ~/.ssh/config takes effect within a minute.
PROBE_TTL = 60.0
PROBE_TIMEOUT = 10.0
_ENV_KEYS = ("HOME", "USER", "SSH_AUTH_SOCK")


class ProbeFailed(RuntimeError):
    """``ssh -G`` refused the destination or options (or hung): ssh itself would refuse them too."""


def probe(ssh: str, options: list[str], dest: str, env: Mapping[str, str], state: State | None) -> Probe:
    fingerprint = sha256("\0".join([ssh, *options, dest, *(env.get(k, "") for k in _ENV_KEYS)]).encode()).hexdigest()[:24]
    if state is None:
        return Probe.parse(_ssh_g(ssh, options, dest, env))
    cached = _cached(state, fingerprint)
    if cached is not None:
        return cached
    # Single flight: when many connections start at once with a cold cache, one runs `ssh -G`
    # and the others wait for its answer instead of each running their own.
    import fcntl

    fd = os.open(os.path.join(state.root, "probes", f"{fingerprint}.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        cached = _cached(state, fingerprint)
        if cached is not None:
            return cached
        result = Probe.parse(_ssh_g(ssh, options, dest, env))
        state.write_cache("probes", fingerprint, {"at": time.time(), "values": result.to_json()})
        return result
    finally:
        os.close(fd)


def _cached(state: State, fingerprint: str) -> Probe | None:
    cached = state.read_cache("probes", fingerprint)
    if cached and time.time() - float(cached.get("at", 0)) < PROBE_TTL and isinstance(cached.get("values"), dict):
        return Probe(cached["values"])
    return None


def _ssh_g(ssh: str, options: list[str], dest: str, env: Mapping[str, str]) -> str:
    """``ssh -G``'s output."""
    from .master import spawn_wait

    rc, out = spawn_wait([ssh, "-G", *options, "--", dest], env, PROBE_TIMEOUT, capture=1)
    if rc is None:
        raise ProbeFailed(f"'{ssh} -G' did not answer within {PROBE_TIMEOUT:g} s (a Match exec or a name lookup that hangs?)")
    if rc != 0:
        raise ProbeFailed(f"'{ssh} -G' refused these options or this destination (exit {rc}); ssh would too")
    return out.decode(errors="replace")
