"""``ssh -G`` with the caller's own options, cached in the state directory."""

from __future__ import annotations

import hashlib
import time
from typing import Mapping

from .options import Probe
from .state import State

__all__ = ["probe", "PROBE_TTL"]

# `ssh -G` evaluates Match exec and may resolve names: cache it, but not for long, so an edited
# ~/.ssh/config takes effect within a minute.
PROBE_TTL = 60.0
_ENV_KEYS = ("HOME", "USER", "SSH_AUTH_SOCK")


def probe(ssh: str, options: list[str], dest: str, env: Mapping[str, str], state: State | None) -> Probe:
    fingerprint = hashlib.sha256("\0".join([ssh, *options, dest, *(env.get(k, "") for k in _ENV_KEYS)]).encode()).hexdigest()[:24]
    if state is not None:
        cached = state.read("probes", fingerprint)
        if cached and time.time() - float(cached.get("at", 0)) < PROBE_TTL and isinstance(cached.get("values"), dict):
            return Probe(cached["values"])
    import subprocess

    proc = subprocess.run([ssh, "-G", *options, "--", dest], env=dict(env), stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=10)
    if proc.returncode != 0:
        raise RuntimeError(f"ssh -G exited {proc.returncode}")
    result = Probe.parse(proc.stdout.decode(errors="replace"))
    if state is not None:
        state.write("probes", fingerprint, {"at": time.time(), "values": result.to_json()})
    return result
