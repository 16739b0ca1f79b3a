"""Running the plan: git's session over a master's socket, or ssh itself, kept in charge of the
slot until the session ends; a session the master refuses is run again, and an ssh the server
dropped during key exchange (sshd's MaxStartups) is run again with backoff.
"""

from __future__ import annotations

import os
import sys
import time

from .pool import RECORDERS, learned_limit
from .setting import debug, number

TYPE_CHECKING = False  # no `typing` at run time: mama-ssh starts for every ssh connection git makes
if TYPE_CHECKING:
    from typing import Mapping, NoReturn

    from .plan import Plan

__all__ = ["run", "ride", "leave", "wait", "learn_refusal", "StderrRelay", "Interrupted",
           "SLOT_LINGER", "RETRIES", "RETRY_BASE", "REFUSED_RETRIES", "REFUSED_BASE"]

RETRIES = 4  # runs of ssh after the server dropped it during key exchange (MaxStartups), with backoff
RETRY_BASE = 0.25
SLOT_LINGER = 0.05  # seconds a slot stays taken after its session ended (the channel is closing)
REFUSED_RETRIES = 5  # runs over the master after the server refused the session (sshd's MaxSessions), with backoff
REFUSED_BASE = 0.05


class Interrupted(Exception):
    """SIGINT, SIGTERM or SIGHUP while no ssh of ours runs to pass it on to."""


def run(p: Plan, env: Mapping[str, str]) -> NoReturn:
    if sys.platform == "win32":
        import subprocess  # os.execvp on Windows does not wait and loses the exit code (cpython#101191)

        sys.exit(subprocess.call(p.argv))
    if env.get("MAMA_SSH_RETRIES") == "0" and p.session is None:
        for pid in RECORDERS:
            wait(pid)
        os.execvp(p.argv[0], p.argv)
    # Stay in charge: to keep the slot while the session runs, to run a refused session over the
    # master again, and to run ssh again when the server dropped it during key exchange (sshd's
    # MaxStartups does that to an unauthenticated connection): no git byte went through yet, so a
    # retry is safe.
    import _signal  # type: ignore[import-not-found,unused-ignore]  # the C module: `signal` builds enums (~2 ms) that nothing here needs

    child = [0]

    def on_signal(signum: int, _frame: object) -> None:
        if child[0]:
            os.kill(child[0], signum)  # ssh ends as it would have without us
        else:
            raise Interrupted(signum)  # a session over the master ends when we close its connection

    for sig in (_signal.SIGINT, _signal.SIGTERM, _signal.SIGHUP):
        _signal.signal(sig, on_signal)
    try:
        code = ride(p, env) if p.session is not None else None
        if code is None:
            code = _ssh(p.argv, env, child)
    except Interrupted:
        code = 255  # what ssh exits with when a signal ends it
    for sig in (_signal.SIGINT, _signal.SIGTERM, _signal.SIGHUP):
        _signal.signal(sig, _signal.SIG_DFL)  # the session is over: nothing of ours is left to end cleanly
    if p.slot_fd is not None:
        _release_slot(p, number(env, "MAMA_SSH_SLOT_LINGER", SLOT_LINGER))
    for pid in RECORDERS:  # the record of the master we started exists once git is done
        wait(pid)
    leave(code)


def ride(p: Plan, env: Mapping[str, str]) -> int | None:
    """Git's session over the master: its exit status, or None when the master cannot carry it
    (gone, or refusing the session again and again), and plain ssh is to run instead."""
    from . import mux

    assert p.session is not None
    refused = 0
    while True:
        try:
            session = mux.Session(p.session)
        except mux.Unavailable as exc:
            debug(env, f"the master cannot carry this session ({exc}); connecting directly")
            return None
        except mux.Refused as exc:
            # The server allows fewer sessions than the slots taken now, or one that just closed
            # still counted against its MaxSessions: try again shortly, when a session has ended.
            # Refused a second time, it is the server's limit: learn it. Nothing was sent.
            refused += 1
            if refused > REFUSED_RETRIES:
                debug(env, f"the master's sessions stay refused ({exc}); connecting directly")
                return None
            if refused >= 2:
                learn_refusal(p)
            import random

            delay = min(REFUSED_BASE * 2.0 ** (refused - 1), 1.0) * random.uniform(0.5, 1.5)
            debug(env, f"the session was refused ({exc}); over the master again in {delay:.2f}s")
            time.sleep(delay)
            continue
        return session.wait()


def _ssh(argv: list[str], env: Mapping[str, str], child: list[int]) -> int:
    """Run ssh (posix_spawn: subprocess costs ~12 ms to import), again with backoff and jitter while
    the server drops it during key exchange; its exit status."""
    retries = int(number(env, "MAMA_SSH_RETRIES", RETRIES))
    dropped = 0
    while True:
        r, w = os.pipe()
        child[0] = os.posix_spawnp(argv[0], argv, env, file_actions=[(os.POSIX_SPAWN_DUP2, w, 2), (os.POSIX_SPAWN_CLOSE, r)])
        os.close(w)
        relay = StderrRelay()
        relay.run(r)
        code = wait(child[0])
        child[0] = 0
        if code != 255 or not relay.dropped or dropped >= retries:
            relay.flush()  # the session ran (whatever its exit): never run it twice
            return code
        import random

        dropped += 1
        delay = min(RETRY_BASE * 2.0 ** (dropped - 1), 4.0) * random.uniform(0.5, 1.5)
        debug(env, f"the server dropped the connection during key exchange; attempt {dropped + 1} in {delay:.2f}s")
        time.sleep(delay)


def leave(code: int) -> NoReturn:
    """Exit without the interpreter's teardown: nothing is left to flush but our stderr, and the
    teardown (a garbage collection, every module freed) costs a few ms of CPU on every connection,
    more after ``_release_slot``'s fork, where each page it writes is copied."""
    try:
        sys.stderr.flush()
    finally:
        os._exit(code)


def _release_slot(p: Plan, linger: float) -> None:
    """Give the slot back ``linger`` seconds after ssh ended, without making git wait for that.

    The master closes a finished session's channel with the server a moment after the client is
    gone; a slot handed over at once could open an eleventh session while ten are still
    closing, which sshd refuses (and ssh then logs in anew). A forked child keeps the slot's lock
    for that moment, with none of git's pipes open, while this process exits at once."""
    fd, pool = p.slot_fd, p.wake
    assert fd is not None and pool is not None  # a slot always comes from a pool
    try:
        pid = os.fork() if linger > 0 else -1
    except OSError:
        pid = -1  # no fork: give the slot back now
    if pid == 0:  # the child: detached from git's pipes, holds the lock, then wakes a waiter
        try:
            null = os.open(os.devnull, os.O_RDWR)
            for std in (0, 1, 2):
                os.dup2(null, std)
            time.sleep(linger)
            os.close(fd)
            pool.wake(1)
        finally:
            os._exit(0)
    os.close(fd)
    if pid < 0:
        try:
            pool.wake(1)
        except Exception:  # noqa: BLE001 - waiters also look again on their own
            pass


def wait(pid: int) -> int:
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
    return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)


class StderrRelay:
    """Copies ssh's stderr to ours as it comes, except the lines of a connection dropped during
    key exchange: those are held back, and dropped if the connection is retried."""

    HOLD = (b"kex_exchange_identification", b"ssh_exchange_identification")
    AFTER = (b"Connection closed by ", b"Connection reset by ")

    def __init__(self) -> None:
        self.partial = b""
        self.held: list[bytes] = []
        self.dropped = False

    def _holds(self, line: bytes) -> bool:
        text = line.lstrip()
        if text.startswith(self.HOLD):
            self.dropped = True
            return True
        return self.dropped and text.startswith(self.AFTER)

    def _maybe_held(self, partial: bytes) -> bool:
        text = partial.lstrip()
        return any(p.startswith(text) or text.startswith(p) for p in (*self.HOLD, *self.AFTER))

    def feed(self, chunk: bytes) -> bytes:
        data = self.partial + chunk
        out = []
        *lines, self.partial = data.split(b"\n")
        for line in lines:
            if self._holds(line):
                self.held.append(line + b"\n")
            else:
                out.append(line + b"\n")
        if self.partial and not self._maybe_held(self.partial):
            out.append(self.partial)  # progress without a newline goes out at once
            self.partial = b""
        return b"".join(out)

    def run(self, fd: int) -> None:
        """Relay until ssh closes its stderr."""
        while True:
            try:
                chunk = os.read(fd, 65536)
            except InterruptedError:
                continue
            if not chunk:
                os.close(fd)
                return
            _write_all(self.feed(chunk))

    def flush(self) -> None:
        _write_all(b"".join(self.held) + self.partial)


def _write_all(data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(2, view) :]
        except InterruptedError:
            continue
        except OSError:
            return  # nobody reads our stderr any more: keep draining so ssh never blocks


def learn_refusal(p: Plan) -> None:
    """Halve the session slots of this host (persistently): the server allows fewer. Half of the
    limit this session was planned under, so a burst of refusals halves it once, not once each."""
    if p.learn is None:
        return
    state, key, used = p.learn
    try:
        with state.lock():  # type: ignore[attr-defined]
            current = learned_limit(state, key)
            new = max(1, used // 2)
            if current is None or new < current[0]:
                state.write("caps", key, {"max": new, "at": time.time()})  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - learning is an optimisation; the session itself already ran
        pass
