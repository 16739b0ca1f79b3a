"""The pool of masters per host identity: session slots, waiters and starts, across processes.

Everything here is an ``flock`` on a small file under ``<state>/slots``, held by the mama-ssh
process that waits for its ssh client, so the kernel releases it however that process ends and
nothing can leak:

  <member>.<n>        session slot n of one master (a member of the pool: ``<key>`` or ``<key>-<m>``)
  <key>.q<n>          one waiting process (how many wait decides whether another master starts)
  <key>.decide        held for the few microseconds a process decides to start a master
  <key>.wake          a FIFO: a process that frees a slot, or whose master came up, writes a byte;
                      waiters sleep in ``select`` on it, so a slot is handed over at once, not by polling

``fcntl.flock`` is used directly because a lock must belong to exactly one open file: filelock's
reentrancy and lock-file handling add nothing here.
"""

from __future__ import annotations

import fcntl
import os
import select
import stat

__all__ = ["Pool", "DEFAULT_MAX_SESSIONS", "DEFAULT_MAX_MASTERS", "in_use"]

# sshd's default MaxSessions. Our masters hold no session of their own (-N) and nobody else's
# sessions ride them; a slot is handed over only after its channel has been closed with the server
# (SLOT_LINGER in cli.py), and a server that allows fewer refuses the extra sessions, which wait
# for the master and teach the pool the server's limit.
DEFAULT_MAX_SESSIONS = 10
# Four masters stay well under sshd's default MaxStartups (10 unauthenticated connections) even
# when all of them authenticate at once, and give 40 sessions per host.
DEFAULT_MAX_MASTERS = 4
_MAX_WAITERS = 256
# A holder killed with SIGKILL frees its slot without a wake-up byte: waiters look again this often.
_RECHECK = 0.25


def member(key: str, m: int) -> str:
    """The name of master ``m`` of ``key``'s pool (sockets, records, slots, logs)."""
    return key if m == 0 else f"{key}-{m}"


def _try_lock(path: str) -> int | None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return fd
    except BlockingIOError:
        os.close(fd)
        return None


def _held(path: str) -> bool:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def in_use(directory: str, name: str, limit: int) -> int:
    """How many session slots of master ``name`` are held right now (for --status)."""
    return sum(1 for n in range(limit) if _held(os.path.join(directory, f"{name}.{n}")))


class Pool:
    def __init__(self, directory: str, key: str, limit: int, max_masters: int) -> None:
        self.directory = directory
        self.key = key
        self.limit = max(1, limit)
        self.max_masters = max(1, max_masters)

    def _file(self, suffix: str) -> str:
        return os.path.join(self.directory, f"{self.key}{suffix}")

    # -- slots ----------------------------------------------------------------------------------
    def take_slot(self, live: list[int]) -> tuple[int, int] | None:
        """(fd, master) holding a free session slot on one of the ``live`` masters, or None."""
        for m in live:
            for n in range(self.limit):
                fd = _try_lock(os.path.join(self.directory, f"{member(self.key, m)}.{n}"))
                if fd is not None:
                    return fd, m
        return None

    def free(self, live: list[int]) -> int:
        return sum(1 for m in live for n in range(self.limit) if not _held(os.path.join(self.directory, f"{member(self.key, m)}.{n}")))

    # -- waiting --------------------------------------------------------------------------------
    def enqueue(self) -> int | None:
        """Count this process among the waiters (None when the count is full: it simply isn't counted)."""
        for n in range(_MAX_WAITERS):
            fd = _try_lock(self._file(f".q{n}"))
            if fd is not None:
                return fd
        return None

    def waiters(self) -> int:
        n, seen = 0, 0
        while n < _MAX_WAITERS and os.path.exists(self._file(f".q{n}")):
            seen += _held(self._file(f".q{n}"))
            n += 1
        return seen

    def decide(self) -> "_Flock":
        """Serialises the decision to start a master (held only while counting)."""
        return _Flock(self._file(".decide"))

    def try_start(self, m: int, lock_dir: str) -> int | None:
        """The start lock of master ``m`` (``prewarm-<member>.lock``), if nobody is starting it."""
        return _try_lock(os.path.join(lock_dir, f"prewarm-{member(self.key, m)}.lock"))

    def is_starting(self, m: int, lock_dir: str) -> bool:
        return _held(os.path.join(lock_dir, f"prewarm-{member(self.key, m)}.lock"))

    def starting(self, lock_dir: str) -> list[int]:
        return [m for m in range(self.max_masters) if self.is_starting(m, lock_dir)]

    # -- hand-over ------------------------------------------------------------------------------
    def waker(self) -> "Waker":
        return Waker(self._file(".wake"))

    def wake(self, n: int = 1) -> None:
        """Tell waiters a slot is free or a master is up (nobody waiting: nothing to do)."""
        try:
            fd = os.open(self._file(".wake"), os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            return  # no FIFO yet, or no reader (ENXIO): nobody waits
        try:
            os.write(fd, b"." * max(1, min(n, 512)))
        except OSError:
            pass  # a full FIFO already wakes everyone
        finally:
            os.close(fd)


class _Flock:
    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = -1

    def __enter__(self) -> "_Flock":
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)


class Waker:
    """A waiter's end of the wake-up FIFO. Opened before the waiter's last look at the slots, so a
    byte written after that look is still in the pipe when the waiter sleeps: no lost wake-up."""

    def __init__(self, path: str) -> None:
        try:
            os.mkfifo(path, 0o600)
        except FileExistsError:
            pass
        st = os.lstat(path)
        if not stat.S_ISFIFO(st.st_mode) or st.st_uid != os.geteuid():
            raise OSError(f"{path} is not our FIFO")
        # read-write: the FIFO never reports end-of-file to us while we hold it
        self.fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)

    def wait(self, timeout: float) -> None:
        ready, _, _ = select.select([self.fd], [], [], max(0.0, min(timeout, _RECHECK)))
        if ready:
            try:
                os.read(self.fd, 1)  # one byte, one freed slot: a second byte wakes a second waiter
            except BlockingIOError:
                pass  # another waiter took the byte: look at the slots anyway

    def close(self) -> None:
        os.close(self.fd)
