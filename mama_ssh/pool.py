"""The master pool's decisions: which session slot a connection takes, when another master is
started (and by whom), and the session limit learned from a server that refused sessions.

Every decision is taken under the pool's locks (``slots``), so processes started at once by one
git command (or many) agree without talking to each other.
"""

from __future__ import annotations

import os
import time

from .setting import number
from .slots import Pool, member

TYPE_CHECKING = False  # no `typing` at run time: mama-ssh starts for every ssh connection git makes
if TYPE_CHECKING:
    from typing import Any, Mapping, Sequence

__all__ = ["learned_limit", "live_masters", "take_slot", "claim_start", "start_master", "adopt", "RECORDERS",
           "PREWARM_TIMEOUT", "FAILED_FOR", "SLOT_WAIT", "GROW_BACKOFF", "LEARNED_FOR"]

PREWARM_TIMEOUT = 30.0  # an authentication that needs longer than this is not worth waiting for
FAILED_FOR = 300.0  # after a failed pre-warm, connect plainly for 5 minutes instead of retrying
SLOT_WAIT = 10.0  # how long a process waits for a free session slot before connecting plainly
GROW_BACKOFF = 60.0  # after a further master of a pool failed to start, don't try that one again for a minute
# A session limit learned from refusals is trusted for a day, then learned again: the server's
# MaxSessions may have been raised, and a refusal under a moment's load must not cost forever.
LEARNED_FOR = 86400.0


def learned_limit(state: Any, key: str) -> "tuple[int, float] | None":
    """(session limit, seconds it is still trusted) learned for ``key`` from refused sessions, if any."""
    rec = state.read("caps", key)
    try:
        left = float(rec["at"]) + LEARNED_FOR - time.time() if rec else 0.0
    except (KeyError, TypeError, ValueError):
        return None
    if rec is None or left <= 0 or not isinstance(rec.get("max"), int):
        return None
    return rec["max"], left


def live_masters(sockets: list[str]) -> list[int]:
    from . import master

    return [m for m, path in enumerate(sockets) if master.alive(path)]


def take_slot(pool: Pool, sockets: list[str], ssh: str, parsed: Any, key: str, keepalive: bool, state: Any,
          env: Mapping[str, str]) -> "tuple[int, int] | str":
    """A session slot on a live master of the pool, starting a master when the waiters outnumber
    the free slots; or the reason to connect plainly."""
    live = live_masters(sockets)
    got = pool.take_slot(live)
    if got is not None:
        adopt(state, key, got[1], sockets, parsed, pool)
        return got
    deadline = time.monotonic() + number(env, "MAMA_SSH_SLOT_WAIT", SLOT_WAIT)
    ticket = pool.enqueue()
    waker = pool.waker()
    try:
        while True:
            got = pool.take_slot(live)
            if got is not None:
                adopt(state, key, got[1], sockets, parsed, pool)
                return got
            m = claim_start(pool, sockets, key, state)  # None, among others, when the first master just failed
            if m is None and not live and state.failed_until(key) > time.time():
                return "a recent pre-warm failed"
            if m is not None:
                start_fd, index = m
                try:
                    problem = start_master(ssh, parsed, sockets[index], key, index, keepalive, state, env, others=bool(live),
                                     not_for_recorder=[fd for fd in (ticket, waker.fd) if fd is not None])
                finally:
                    os.close(start_fd)
                    # every waiter looks again (the master listens by now, its record may still be
                    # coming): for the new slots, and to start the next master
                    pool.wake(max(pool.waiters(), pool.limit))
                if problem is not None and not live:
                    return problem
                live = live_masters(sockets)
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                return "every session slot of the pool stayed busy"
            waker.wait(left)
            live = live_masters(sockets)
    finally:
        waker.close()
        if ticket is not None:
            os.close(ticket)


def claim_start(pool: Pool, sockets: list[str], key: str, state: Any) -> "tuple[int, int] | None":
    """Under the pool's decision lock: (start lock fd, master) if this process should start one.

    Another master starts when the waiting processes outnumber the slots that are free or about
    to come up (``limit`` per master being started), and the pool is not full. The starts are
    staggered (each needs its share of waiters) and never
    more than the pool's size, so our unauthenticated connections stay well under sshd's
    MaxStartups (10)."""
    with pool.decide():
        live = live_masters(sockets)
        if not live and state.failed_until(key) > time.time():
            return None  # the first master failed since the caller looked: nobody tries again
        starting = pool.starting(state.root)
        if len(set(live) | set(starting)) >= pool.max_masters:
            return None
        if live or starting:
            waiting = pool.waiters()
            if not live and waiting <= pool.limit * len(starting):
                # Until one master is up (proving the host takes them), another starts only when
                # the waiters would fill more than the masters starting: a host that refuses
                # masters sees a single failed pre-warm from up to one master's sessions.
                return None
            # (a master that is up while its starter still records it counts once, as live)
            if live and waiting <= pool.free(live) + pool.limit * len(set(starting) - set(live)):
                return None
        for m in range(pool.max_masters):
            if m in live or m in starting or state.failed_until(member(key, m)) > time.time():
                continue
            fd = pool.try_start(m, state.root)
            if fd is not None:
                return fd, m
    return None


def start_master(ssh: str, parsed: Any, path: str, key: str, m: int, keepalive: bool, state: Any, env: Mapping[str, str],
           others: bool, not_for_recorder: Sequence[int] = ()) -> str | None:
    """Pre-warm master ``m`` of ``key``'s pool (its start lock is held); the reason it failed, or None.

    Once the master listens, its pid (its alive check) and its record are left to a forked child,
    which holds the start lock until the record is written (so nobody adopts the master
    meanwhile), and this process goes on to its own session at once: asking and recording took
    ~0.2 s under a burst, and the starters were the last operations of the burst to finish.
    ``session.run`` waits for that child before exiting, so the record exists once git is done."""
    from . import master

    name = member(key, m)
    if master.alive(path):
        return None
    timeout = number(env, "MAMA_SSH_PREWARM_TIMEOUT", PREWARM_TIMEOUT)
    try:
        master.prewarm(ssh, parsed.options, parsed.dest, path, keepalive, state, name, env, timeout)
    except master.PrewarmFailed as exc:
        # The first master failing sends everyone to plain ssh for a while; a further one failing
        # (the server's MaxStartups, a slow link) only stops the pool growing for a minute.
        if others:
            state.mark_failed(name, str(exc), GROW_BACKOFF)
        else:
            state.mark_failed(key, str(exc), number(env, "MAMA_SSH_FAILED_FOR", FAILED_FOR))
        return str(exc)
    by = os.getpid()

    def record() -> None:
        pid = master.find_pid(path)
        with state.lock():
            state.write("masters", name, {"socket": path, "pid": pid, "dest": parsed.dest, "options": parsed.options,
                                          "owned": True, "started": time.time(), "by": by})

    try:
        child = os.fork()
    except OSError:
        child = -1
    if child == 0:  # the recorder: none of git's pipes, none of our waiting; the start lock it keeps
        try:
            import _signal  # type: ignore[import-not-found,unused-ignore]

            for sig in (_signal.SIGINT, _signal.SIGHUP, _signal.SIGTERM):  # a ^C to git must not lose the record
                _signal.signal(sig, _signal.SIG_IGN)  # (the job is bounded: the alive check and the lock time out)
            null = os.open(os.devnull, os.O_RDWR)
            for std in (0, 1, 2):
                os.dup2(null, std)
            for fd in not_for_recorder:
                os.close(fd)
            record()
        finally:
            os._exit(0)
    if child < 0:
        record()
    else:
        RECORDERS.append(child)
    return None


RECORDERS: list[int] = []  # forked children writing a new master's record; waited for at exit


def adopt(state: Any, key: str, m: int, sockets: list[str], parsed: Any, pool: Pool) -> None:
    """Record a live master nobody recorded (a lost record, or one started by hand): used, never closed.

    A master whose start lock is held is being started by one of us, who records it once it has
    its pid: the processes it woke take its slots without touching the state lock (a burst of
    them queueing for that lock cost a cold pool more than half a second)."""
    name = member(key, m)
    if not state.exists("masters", name) and not pool.is_starting(m, state.root):
        with state.lock():
            if state.read("masters", name) is None:
                state.write("masters", name, {"socket": sockets[m], "pid": None, "dest": parsed.dest, "options": parsed.options,
                                              "owned": False, "started": time.time(), "by": None})
