"""Masters: the socket directory, liveness, pre-warm, adoption and stopping.

Only this module and ``probe`` run ssh for our own purposes; every such argv ends with
``-- <dest>`` so a destination can never be read as an option.
"""

from __future__ import annotations

import _socket  # not `socket`: its enums cost ~9 ms of start-up on the warm path
import os
import time

from .options import KEEPALIVE_INTERVAL, PERSIST_SECONDS
from .state import State, UnsafeDirectory, private_dir

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Mapping

__all__ = ["socket_dir", "socket_path", "alive", "prewarm", "find_pid", "stop", "spawn_wait", "MAX_SOCKET_PATH", "PrewarmFailed"]

# sun_path is 108 bytes on Linux and 104 on macOS, and the master first binds
# "<ControlPath>.<16 random chars>": 86 keeps every platform safe (reference §4).
MAX_SOCKET_PATH = 86


PREWARM_ATTEMPTS = 4


class PrewarmFailed(RuntimeError):
    pass


def socket_dir(env: Mapping[str, str]) -> str:
    """A short private directory for control sockets (not the state dir: macOS paths are long)."""
    candidates = []
    if env.get("MAMA_SSH_SOCKET_DIR"):
        candidates.append(env["MAMA_SSH_SOCKET_DIR"])
    runtime = env.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        candidates.append(os.path.join(runtime, "mama-ssh"))
    candidates.append(f"/tmp/mama-ssh-{os.geteuid()}")
    problems = []
    for path in candidates:
        if len(path) + 1 + 16 > MAX_SOCKET_PATH:
            problems.append(f"{path}: too long for a socket path")
            continue
        try:
            return private_dir(path)
        except UnsafeDirectory as exc:
            problems.append(str(exc))
    raise UnsafeDirectory("; ".join(problems))


def socket_path(directory: str, key: str) -> str:
    path = os.path.join(directory, key)
    if len(path) > MAX_SOCKET_PATH:
        raise UnsafeDirectory(f"socket path {path} longer than {MAX_SOCKET_PATH} bytes")
    return path


def alive(path: str) -> bool:
    """A master listens on ``path`` (a plain connect: no ssh spawn, no network)."""
    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    s.settimeout(1.0)
    try:
        s.connect(path)
        return True
    except (BlockingIOError, TimeoutError):
        # EAGAIN: a listener whose backlog is full (fifty processes looking at once). Taking that
        # for a dead master would start another on its path and orphan the live one.
        return True
    except OSError:
        return False
    finally:
        s.close()


def _inherited() -> list[int]:
    """Descriptors above 2 that a spawned process would inherit: git's, if it leaked any (ours are
    all close-on-exec). A master lives for minutes in the background, and an inherited pipe would
    keep git waiting for its end."""
    candidates: "list[int] | range" = range(3, 256)  # nothing to list: look at the likely ones
    for listing in ("/proc/self/fd", "/dev/fd"):
        try:
            candidates = [int(name) for name in os.listdir(listing)]
            break
        except (OSError, ValueError):
            continue
    fds = []
    for fd in candidates:
        try:
            if fd > 2 and os.get_inheritable(fd):
                fds.append(fd)
        except OSError:
            pass  # not open (the listing's own descriptor is closed by now)
    return fds


def spawn_wait(argv: list[str], env: Mapping[str, str], timeout: float, capture: int | None = None) -> tuple[int | None, bytes]:
    """Run ``argv`` with /dev/null for stdin, stdout and stderr, except ``capture`` (1 or 2): a pipe
    read here; and none of our other descriptors. (Exit code, or None when it was killed at the
    timeout; what it wrote to ``capture``.)

    Not ``subprocess``: it costs ~10 ms to import, and a wait with a timeout polls with sleeps of up
    to 50 ms, which a pre-warm pays between ssh's login and the first session. Here the wait is a
    pidfd in ``select`` (Linux), or short polls elsewhere."""
    import select

    null = os.open(os.devnull, os.O_RDWR)
    r = w = -1
    if capture is not None:
        r, w = os.pipe()
    actions: list[tuple[int, ...]] = [(os.POSIX_SPAWN_DUP2, w if std == capture else null, std) for std in (0, 1, 2)]
    actions += [(os.POSIX_SPAWN_CLOSE, fd) for fd in _inherited() if fd not in (null, r, w)]
    try:
        pid = os.posix_spawnp(argv[0], argv, dict(env), file_actions=actions)
    finally:
        os.close(null)
        if capture is not None:
            os.close(w)
    deadline = time.monotonic() + timeout
    chunks = []
    try:
        while capture is not None:  # read to the end (or the deadline), then reap
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([r], [], [], left)[0]:
                break
            chunk = os.read(r, 65536)
            if not chunk:
                break
            chunks.append(chunk)
        return _reap(pid, deadline), b"".join(chunks)
    except BaseException:  # ^C while it runs: it does not outlive us (a login we gave up on)
        _kill(pid)
        raise
    finally:
        if capture is not None:
            os.close(r)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    except OSError:
        pass  # reaped already


def _reap(pid: int, deadline: float) -> int | None:
    """The exit code of child ``pid``, or None after killing it at ``deadline``."""
    import select

    try:
        pidfd = os.pidfd_open(pid) if hasattr(os, "pidfd_open") else -1
    except OSError:
        pidfd = -1
    delay = 0.002
    try:
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return os.waitstatus_to_exitcode(status)
            left = deadline - time.monotonic()
            if left <= 0:
                _kill(pid)
                return None
            if pidfd >= 0:
                select.select([pidfd], [], [], left)
            else:
                time.sleep(min(delay, left))
                delay = min(delay * 2, 0.02)
    finally:
        if pidfd >= 0:
            os.close(pidfd)


def find_pid(path: str) -> int | None:
    """The pid of the master on ``path``, None when it does not answer (its alive check, as ``ssh -O check`` asks it)."""
    from .mux import Unavailable, alive_check

    try:
        return alive_check(path)
    except Unavailable:
        return None


def prewarm(
    ssh: str, options: list[str], dest: str, path: str, keepalive: bool, state: State, key: str, env: Mapping[str, str], timeout: float
) -> None:
    """Start a master for ``dest`` on ``path``, returning once it listens (its pid is for
    ``find_pid``). Raises ``PrewarmFailed``."""
    if os.path.lexists(path):
        # A socket nobody listens on blocks a new master ("already exists"); it is ours to remove
        # only inside our own verified directory, and the caller holds this host's lock.
        if os.path.dirname(os.path.realpath(path)) == os.path.realpath(os.path.dirname(path)):
            try:
                os.unlink(path)
            except OSError as exc:
                raise PrewarmFailed(f"cannot remove stale socket {path}: {exc.strerror}") from exc
    argv = [
        ssh,
        "-f",
        "-N",
        "-o",
        "ControlMaster=yes",
        "-o",
        f"ControlPath={path}",
        "-o",
        f"ControlPersist={PERSIST_SECONDS}",
        "-o",
        "SendEnv=GIT_PROTOCOL",
        "-E",
        os.path.join(state.root, "logs", f"{key}.log"),
    ]
    if keepalive:
        argv += ["-o", f"ServerAliveInterval={KEEPALIVE_INTERVAL}"]
    argv += [*options, "--", dest]
    log = os.path.join(state.root, "logs", f"{key}.log")
    started = time.monotonic()
    for attempt in range(PREWARM_ATTEMPTS):
        try:
            seen = os.path.getsize(log)
        except OSError:
            seen = 0
        left = timeout - (time.monotonic() - started)
        try:
            # stdio to /dev/null: a backgrounded ssh older than 8.4 keeps inherited pipes open forever
            rc, _ = spawn_wait(argv, env, max(left, 1.0))
        except OSError as exc:
            raise PrewarmFailed(f"cannot run {ssh}: {exc.strerror}") from exc
        # `ssh -fN` exiting 0 proves nothing (a lost race leaves a plain connection): ask the socket.
        if alive(path):
            return
        if rc is None or not _dropped_in_key_exchange(log, seen) or attempt + 1 == PREWARM_ATTEMPTS:
            break
        # sshd's MaxStartups drops unauthenticated connections at random under load: try again soon
        import random

        time.sleep(min(0.25 * 2**attempt, 2.0) * random.uniform(0.5, 1.5))
    reason = "timed out" if rc is None else f"ssh exited {rc}"
    raise PrewarmFailed(f"pre-warm of {dest} failed after {time.monotonic() - started:.1f}s ({reason})")


def _dropped_in_key_exchange(log: str, offset: int) -> bool:
    try:
        with open(log, "rb") as fh:
            fh.seek(offset)
            text = fh.read(65536)
    except OSError:
        return False
    return b"kex_exchange_identification" in text or b"ssh_exchange_identification" in text


def stop(ssh: str, path: str, dest: str, env: Mapping[str, str]) -> bool:
    """``-O stop``: no new sessions, running transfers finish, then the master exits."""
    try:
        rc, _ = spawn_wait([ssh, "-o", f"ControlPath={path}", "-O", "stop", "--", dest], env, 10.0)
    except OSError:
        return False
    return rc == 0
