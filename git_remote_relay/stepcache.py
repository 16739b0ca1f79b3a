"""Finished steps of a big first fetch, kept per user and per URL, so an interrupted clone resumes.

``git clone`` deletes its directory when it fails, and the steps it had stored with it. So the
steps of a fetch into a repository that has nothing yet (a clone, or a fetch into a new
``git init``) are also kept in ``<user cache>/git-remote-relay/fetch/<key>/``: each step's pack and
index (hard links where the filesystem allows, copies elsewhere) and a ``steps`` file naming the
commit each one holds. The next such fetch of the same URL links them into its repository and
fetches only the rest; a fetch that completes empties the entry. ``<key>`` is a hash of the URL
without credentials. The whole cache is bounded (``relay.fetchCacheBytes``): older entries go
first, and a step that does not fit is not kept.

One fetch at a time uses an entry (a ``flock`` on ``<key>.lock``); another one that finds it
busy goes without the cache.
"""

from __future__ import annotations

import fcntl
import os

# hashlib and shutil are imported where used: settings imports this module on every helper start

__all__ = ["StepCache", "DEFAULT_CACHE_BYTES", "default_root"]

# Enough for the steps of a repository of several GiB; a step that does not fit is simply not kept.
DEFAULT_CACHE_BYTES = 8 << 30
_SUFFIXES = (".pack", ".idx", ".rev")


def default_root(env: dict[str, str]) -> str:
    """``GIT_RELAY_CACHE_DIR``, else the platform's per-user cache directory."""
    if env.get("GIT_RELAY_CACHE_DIR"):
        return os.path.join(env["GIT_RELAY_CACHE_DIR"], "fetch")
    import platformdirs

    return os.path.join(platformdirs.user_cache_dir("git-remote-relay"), "fetch")


def _link_or_copy(src: str, dst: str) -> None:
    import shutil

    try:
        os.link(src, dst)
    except FileExistsError:
        pass
    except OSError:
        part = dst + ".part"
        shutil.copyfile(src, part)
        os.replace(part, dst)


def _size(path: str) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


class StepCache:
    """The cache entry of one URL; see the module docstring. ``None``-safe to construct: nothing
    is created on disk until a step is added."""

    def __init__(self, root: str, url: str, limit: int = DEFAULT_CACHE_BYTES) -> None:
        self.root = root
        import hashlib

        self.key = hashlib.sha256(url.encode()).hexdigest()[:24]
        self.dir = os.path.join(root, self.key)
        self.limit = limit
        self._fd: int | None = None

    def lock(self) -> bool:
        """Take the entry for this fetch; False when another fetch holds it."""
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        fd = os.open(os.path.join(self.root, self.key + ".lock"), os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    @property
    def locked(self) -> bool:
        """This fetch holds the entry."""
        return self._fd is not None

    def unlock(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def steps(self) -> list[tuple[str, str]]:
        """(commit, pack base name) of every step kept, oldest first."""
        out: list[tuple[str, str]] = []
        try:
            with open(os.path.join(self.dir, "steps"), encoding="ascii") as fh:
                lines = fh.read().splitlines()
        except (OSError, UnicodeDecodeError):
            return out
        for line in lines:
            oid, _, base = line.partition(" ")
            if len(oid) == 40 and base.startswith("pack-") and os.path.exists(os.path.join(self.dir, base + ".idx")):
                out.append((oid, base))
        return out

    def add(self, oid: str, keep: str | None) -> bool:
        """Keep the pack ``keep`` protects (its ``.keep`` path) as the step ``oid``; False when it does not fit."""
        if not keep or not keep.endswith(".keep") or self.limit <= 0:
            return False
        base_path = keep[: -len(".keep")]
        files = [base_path + s for s in _SUFFIXES if os.path.exists(base_path + s)]
        need = sum(os.path.getsize(f) for f in files)
        if not self._make_room(need):
            return False
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        for f in files:
            _link_or_copy(f, os.path.join(self.dir, os.path.basename(f)))
        with open(os.path.join(self.dir, "steps"), "a", encoding="ascii") as fh:
            fh.write(f"{oid} {os.path.basename(base_path)}\n")
        return True

    def restore(self, pack_dir: str) -> list[tuple[str, str]]:
        """Link the kept steps into ``pack_dir``, each protected by a ``.keep``; (commit, .keep path)."""
        out: list[tuple[str, str]] = []
        os.makedirs(pack_dir, exist_ok=True)
        for oid, base in self.steps():
            # the index goes last: git looks for packs by their .idx
            for suffix in (".pack", ".rev", ".idx"):
                src = os.path.join(self.dir, base + suffix)
                if os.path.exists(src):
                    _link_or_copy(src, os.path.join(pack_dir, base + suffix))
            keep = os.path.join(pack_dir, base + ".keep")
            with open(keep, "w", encoding="ascii") as fh:
                fh.write("git-remote-relay: a resumed fetch\n")
            out.append((oid, keep))
        return out

    def clear(self) -> None:
        import shutil

        shutil.rmtree(self.dir, ignore_errors=True)

    def _make_room(self, need: int) -> bool:
        """Remove other URLs' entries, oldest first, until ``need`` more bytes fit under the limit."""
        import shutil

        if need > self.limit:
            return False
        try:
            names = [n for n in os.listdir(self.root) if os.path.isdir(os.path.join(self.root, n))]
        except FileNotFoundError:
            return True
        sizes = {n: _size(os.path.join(self.root, n)) for n in names}
        total = sum(sizes.values())
        others = sorted((n for n in names if n != self.key), key=lambda n: os.path.getmtime(os.path.join(self.root, n)))
        for name in others:
            if total + need <= self.limit:
                break
            lock = os.path.join(self.root, name + ".lock")
            fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o600)
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # in use by a fetch right now
                shutil.rmtree(os.path.join(self.root, name), ignore_errors=True)
                total -= sizes[name]
            finally:
                os.close(fd)
        return total + need <= self.limit
