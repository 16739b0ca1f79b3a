"""Cross-process state in a private per-user directory, guarded by file locks.

Layout (under platformdirs' user state dir, mode 0700):
  state.lock             held only while a record is read or written (never across network I/O)
  prewarm-<member>.lock  held (flock) by the process starting that master of a pool (slots.py)
  masters/<key>.json     {socket, pid, dest, owned, started}
  failed/<key>.json      {until, reason}: a pre-warm failed; everyone connects plainly until then
  probes/<hash>.bin      cached ``ssh -G`` output (marshal: read on every connection)
  slots/<key>.<n>        one flock per session in use on that master
  caps/<key>.json        {max}: fewer slots, learned from a server that refused sessions
  logs/<key>.log         the master's own log (ssh -E)
A record that cannot be parsed (a crash mid-write, a foreign file) is treated as absent.
"""

from __future__ import annotations

import os
import stat
import sys
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Mapping

__all__ = ["State", "UnsafeDirectory", "private_dir"]


class UnsafeDirectory(RuntimeError):
    """A directory we would keep secrets or sockets in is not private to us."""


def private_dir(path: str) -> str:
    """Create ``path`` 0700 if missing; refuse it unless it is a real directory, ours, private."""
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise UnsafeDirectory(f"cannot create {path}: {exc.strerror}") from exc
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise UnsafeDirectory(f"{path} is not a directory (a symlink?)")
    if st.st_uid != os.geteuid():
        raise UnsafeDirectory(f"{path} belongs to uid {st.st_uid}, not to us")
    if st.st_mode & 0o077:
        raise UnsafeDirectory(f"{path} is open to other users (mode {oct(st.st_mode & 0o777)})")
    return path


def default_state_dir(env: Mapping[str, str]) -> str:
    if env.get("MAMA_SSH_STATE_DIR"):
        return env["MAMA_SSH_STATE_DIR"]
    if sys.platform.startswith("linux"):
        # What platformdirs.user_state_dir gives on Linux, without its ~15 ms import: mama-ssh
        # starts for every ssh connection git makes.
        base = (env.get("XDG_STATE_HOME") or "").strip() or os.path.join(os.path.expanduser("~"), ".local", "state")
        return os.path.join(base, "mama-ssh")
    import platformdirs

    return platformdirs.user_state_dir("mama-ssh", appauthor=False)


class State:
    def __init__(self, root: str) -> None:
        self.root = private_dir(root)
        for sub in ("masters", "failed", "probes", "slots", "logs", "caps"):
            private_dir(os.path.join(self.root, sub))

    # -- locks ----------------------------------------------------------------------------------
    def lock(self, timeout: float = 10.0) -> "_Lock":
        """The state lock: hold it only to read or write records."""
        return _Lock(os.path.join(self.root, "state.lock"), timeout)

    # -- records --------------------------------------------------------------------------------
    def _path(self, kind: str, key: str) -> str:
        return os.path.join(self.root, kind, f"{key}.json")

    def read(self, kind: str, key: str) -> dict[str, Any] | None:
        try:
            with open(self._path(kind, key), encoding="utf-8") as fh:
                text = fh.read()
            import json  # only when a record exists: json costs ~10 ms of start-up (it imports re)

            value = json.loads(text)
            return value if isinstance(value, dict) else None
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            self.remove(kind, key)  # half-written or corrupt: recover by forgetting it
            return None

    def write(self, kind: str, key: str, value: dict[str, Any]) -> None:
        """Atomic replace: a unique temporary name, then rename (concurrent writers never collide).
        (Not ``tempfile``: its import costs ~7 ms, paid by every master's starter in a burst.)"""
        import json

        directory = os.path.join(self.root, kind)
        tmp = os.path.join(directory, f".{key}.{os.getpid()}.{os.urandom(6).hex()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(value, fh)
            os.replace(tmp, self._path(kind, key))
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise

    def exists(self, kind: str, key: str) -> bool:
        return os.path.exists(self._path(kind, key))

    # A cache read on every connection is kept with marshal: json would cost ~10 ms of start-up.
    def read_cache(self, kind: str, key: str) -> dict[str, Any] | None:
        import marshal

        path = os.path.join(self.root, kind, f"{key}.bin")
        try:
            with open(path, "rb") as fh:
                value = marshal.load(fh)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, EOFError, TypeError):
            self._unlink(path)  # half-written or foreign: forget it
            return None
        return value if isinstance(value, dict) else None

    def write_cache(self, kind: str, key: str, value: dict[str, Any]) -> None:
        import marshal

        path = os.path.join(self.root, kind, f"{key}.bin")
        tmp = f"{path}.{os.getpid()}.tmp"  # unique per writer; replaced atomically
        try:
            with open(tmp, "wb") as fh:
                marshal.dump(value, fh)
            os.replace(tmp, path)
        except BaseException:
            self._unlink(tmp)
            raise

    @staticmethod
    def _unlink(path: str) -> None:
        try:
            os.unlink(path)
        except OSError:
            pass

    def remove(self, kind: str, key: str) -> None:
        try:
            os.unlink(self._path(kind, key))
        except OSError:
            pass

    def keys(self, kind: str) -> list[str]:
        try:
            names = os.listdir(os.path.join(self.root, kind))
        except OSError:
            return []
        return sorted(n[:-5] for n in names if n.endswith(".json") and not n.startswith("."))

    # -- failed pre-warms -----------------------------------------------------------------------
    def failed_until(self, key: str) -> float:
        rec = self.read("failed", key)
        try:
            return float(rec["until"]) if rec else 0.0
        except (KeyError, TypeError, ValueError):
            return 0.0

    def mark_failed(self, key: str, reason: str, seconds: float) -> None:
        with self.lock():
            self.write("failed", key, {"until": time.time() + seconds, "reason": reason[-500:]})


class _Lock:
    """An exclusive ``flock`` on ``path``, waited for at most ``timeout`` seconds (then TimeoutError).

    Not filelock (which the relay uses): its import costs ~40 ms of CPU, and each new master's
    recorder paid it in the middle of a burst, just as the sessions start. Like filelock on Unix,
    it is a ``flock`` on the file, so the two exclude each other; the kernel drops it however the
    holder ends."""

    def __init__(self, path: str, timeout: float) -> None:
        self.path = path
        self.timeout = timeout
        self.fd = -1

    def __enter__(self) -> "_Lock":
        import fcntl

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        deadline = time.monotonic() + self.timeout
        delay = 0.001
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise TimeoutError(f"{self.path} stayed locked for {self.timeout:g}s") from None
                time.sleep(delay)
                delay = min(delay * 2, 0.05)
        self.fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)
