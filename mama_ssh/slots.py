"""Session slots per master, across all processes: one ``flock`` per session in use.

A slot is held by the mama-ssh process that waits for its ssh client, so it is released when
that process ends, however it ends (kernel-released locks cannot leak). ``fcntl.flock`` is used
directly because the lock must belong to exactly this open file: filelock's reentrancy and
lock-file handling add nothing here.
"""

from __future__ import annotations

import fcntl
import os
import time

__all__ = ["acquire", "in_use", "DEFAULT_MAX_SESSIONS"]

# sshd's default MaxSessions is 10; 8 leaves room for a user's own interactive sessions and for the
# session the master itself may hold, so a git operation never meets "Session open refused".
DEFAULT_MAX_SESSIONS = 8


def _slot_path(directory: str, key: str, n: int) -> str:
    return os.path.join(directory, f"{key}.{n}")


def acquire(directory: str, key: str, limit: int, wait: float) -> int | None:
    """An fd holding a free slot, or None when all ``limit`` slots stayed busy for ``wait`` s."""
    deadline = time.monotonic() + wait
    delay = 0.01
    while True:
        for n in range(limit):
            fd = os.open(_slot_path(directory, key, n), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd
            except BlockingIOError:
                os.close(fd)
        if time.monotonic() >= deadline:
            return None
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def in_use(directory: str, key: str, limit: int) -> int:
    """How many slots are held right now (for --status)."""
    busy = 0
    for n in range(limit):
        path = _slot_path(directory, key, n)
        if not os.path.exists(path):
            continue
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
        except BlockingIOError:
            busy += 1
        finally:
            os.close(fd)
    return busy
