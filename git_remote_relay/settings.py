"""Every ``relay.*`` setting, read once at an entry point from the environment and git config.

The engine and the transports get a ``Settings`` object and never look at the environment
themselves. Environment variables override git config; defaults work with no configuration.
"""

from __future__ import annotations

from collections.abc import Mapping

from .errors import RelayError
from .gitcmd import Config
from .stepcache import DEFAULT_CACHE_BYTES

__all__ = ["Settings", "DEFAULT_TIMEOUT", "DEFAULT_STEP_OBJECTS", "size_value"]

# Like http.lowSpeedTime: five minutes without a single byte either way is a stalled server or
# link, not a slow one (upload-pack and receive-pack send keepalives every 5 s while they think).
DEFAULT_TIMEOUT = 300.0
# Steps cost: measured on git.git (419k objects, bitmapped server, 2 cores) a clone in steps of
# 100k objects took 1.8x native (a commit-only scratch fetch, thin packs that cannot reuse the
# server's deltas across step boundaries, git's full connectivity walk at the end). So only a
# repository several times that size steps by default, where resuming is worth its price; on a
# flaky link, set relay.fetchStepObjects lower (100000 steps git.git in five).
DEFAULT_STEP_OBJECTS = 1_000_000


def _on(value: str | None) -> bool:
    return (value or "") not in ("", "0", "false")


def size_value(value: str, what: str) -> int:
    """An integer with git's optional k/m/g suffix (``what`` names it in the error)."""
    size = Config({"x.y": [value]}).get_size("x.y")
    if size is None:
        raise RelayError(f"bad size '{value}' for {what}", "use a number with optional k, m or g")
    return size


class Settings:
    """The relay's knobs; see README "Configuration"."""

    def __init__(self, env: Mapping[str, str], config: Config) -> None:
        def size(env_name: str, key: str) -> int | None:
            value = env.get(env_name)
            if value:
                return size_value(value, env_name)
            return config.get_size(key)

        self.mode = (env.get("GIT_RELAY_MODE") or config.get("relay.mode") or "relay").lower()
        if self.mode not in ("relay", "passthrough"):
            raise RelayError(f"bad relay.mode '{self.mode}'", "use 'relay' (the default) or 'passthrough'")
        self.trace = _on(env.get("GIT_RELAY_TRACE"))
        self.max_pack_bytes = size("GIT_RELAY_MAX_PACK_BYTES", "relay.maxPackBytes")
        self.max_push_bytes = size("GIT_RELAY_MAX_PUSH_BYTES", "relay.maxPushBytes")
        self.max_object_bytes = size("GIT_RELAY_MAX_OBJECT_BYTES", "relay.maxObjectBytes")
        steps = size("GIT_RELAY_FETCH_STEP_OBJECTS", "relay.fetchStepObjects")
        self.fetch_step_objects = DEFAULT_STEP_OBJECTS if steps is None else steps
        cache = size("GIT_RELAY_FETCH_CACHE_BYTES", "relay.fetchCacheBytes")
        self.fetch_cache_bytes = DEFAULT_CACHE_BYTES if cache is None else cache
        self.stats_file = env.get("GIT_RELAY_STATS_FILE") or config.get("relay.statsfile")
        self.split_interval = _seconds(env.get("GIT_RELAY_SPLIT_INTERVAL") or config.get("relay.splitInterval"), "relay.splitInterval")
        self.timeout = _timeout(env.get("GIT_RELAY_TIMEOUT") or config.get("relay.timeout"))
        spool = env.get("GIT_RELAY_SPOOL")
        self.spool = _on(spool) if spool is not None else config.get_bool("relay.spool")  # git relay: the source's pack to disk first
        lfs = env.get("GIT_RELAY_LFS")
        self.lfs = _on(lfs) if lfs is not None else config.get_bool("relay.lfs", True)  # git relay: copy Git LFS objects
        history = env.get("GIT_RELAY_LFS_HISTORY")  # git relay: look for pointers even where the tips show no LFS
        self.lfs_history = _on(history) if history is not None else config.get_bool("relay.lfsHistory")


def _seconds(value: str | None, key: str) -> float:
    if value is None or not value.strip():
        return 0.0
    try:
        return max(0.0, float(value.strip().rstrip("s")))
    except ValueError:
        raise RelayError(f"bad {key} '{value}'", "give a number of seconds, e.g. 2.5") from None


def _timeout(value: str | None) -> float | None:
    """Seconds of no traffic before a transfer is given up; ``0`` = never; default 300."""
    if value is None or not value.strip():
        return DEFAULT_TIMEOUT
    try:
        seconds = float(value.strip().rstrip("s"))
    except ValueError:
        raise RelayError(f"bad relay.timeout '{value}'", "give a number of seconds, e.g. 300 (0 waits forever)") from None
    return seconds if seconds > 0 else None
