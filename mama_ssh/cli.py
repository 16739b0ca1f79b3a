"""``mama-ssh``: probe -> decide -> run ssh. Fails open: any error of ours runs plain ssh.

git runs ``mama-ssh [options] [user@]host '<command>'`` (as GIT_SSH_COMMAND, core.sshCommand or
GIT_SSH). Admin commands: ``--status``, ``--explain [user@]host``, ``--cleanup``.
"""

from __future__ import annotations

import os
import sys
import time

from .slots import DEFAULT_MAX_MASTERS, Pool, member

TYPE_CHECKING = False  # no `typing` at run time: mama-ssh starts for every ssh connection git makes
if TYPE_CHECKING:
    from typing import Any, Callable, Mapping, NoReturn, Sequence

    from . import mux

__all__ = ["main", "plan", "Plan"]

PREWARM_TIMEOUT = 30.0  # an authentication that needs longer than this is not worth waiting for
FAILED_FOR = 300.0  # after a failed pre-warm, connect plainly for 5 minutes instead of retrying
SLOT_WAIT = 10.0  # how long a process waits for a free session slot before connecting plainly
RETRIES = 4  # runs of ssh after the server dropped it during key exchange (MaxStartups), with backoff
RETRY_BASE = 0.25
SLOT_LINGER = 0.05  # seconds a slot stays taken after its session ended (the channel is closing)
REFUSED_RETRIES = 5  # runs over the master after the server refused the session (sshd's MaxSessions), with backoff
REFUSED_BASE = 0.05
GROW_BACKOFF = 60.0  # after a further master of a pool failed to start, don't try that one again for a minute
# A session limit learned from refusals is trusted for a day, then learned again: the server's
# MaxSessions may have been raised, and a refusal under a moment's load must not cost forever.
LEARNED_FOR = 86400.0


class Plan:
    """What to run: a ``session`` over a master (holding the slot ``slot_fd``), or plain ssh's ``argv``,
    which is also what runs when the master cannot carry the session."""

    def __init__(self, argv: list[str], slot_fd: int | None = None, why: str = "", learn: "tuple[object, str, int] | None" = None,
                 wake: Pool | None = None, session: "mux.Request | None" = None) -> None:
        self.argv = argv
        self.slot_fd = slot_fd
        self.why = why
        self.learn = learn  # (state, key, session limit used): where a refused session is recorded
        self.wake = wake  # the pool whose waiters are told when the slot is free again
        self.session = session


def _debug(env: Mapping[str, str], text: str) -> None:
    if env.get("MAMA_SSH_DEBUG", "") not in ("", "0"):
        sys.stderr.write(f"mama-ssh: {text}\n")


def _number(env: Mapping[str, str], name: str, default: float) -> float:
    try:
        return float(env.get(name, default))
    except ValueError:
        return default


def is_windows_openssh(banner: str) -> bool:
    """Microsoft's OpenSSH port has no ControlMaster (Win32-OpenSSH#405)."""
    return "OpenSSH_for_Windows" in banner


def _mux_unsupported(ssh: str) -> str | None:
    if sys.platform == "win32":
        return "no multiplexing on native Windows"
    if ssh.lower().endswith(".exe"):
        import subprocess

        banner = subprocess.run(
            [ssh, "-V"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=10
        ).stdout.decode(errors="replace")
        if is_windows_openssh(banner):
            return "Microsoft OpenSSH has no multiplexing"
    return None


def plan(args: Sequence[str], env: Mapping[str, str], ssh: str) -> Plan:
    """Decide what to run for git's ``args``. Raises on internal trouble (the caller falls back)."""
    from . import argv as argvmod
    from . import master, mux, slots
    from .options import KEEPALIVE_INTERVAL, identity_key, needs_keepalive, passenger_problem, session_env, user_multiplexes
    from .probe import probe
    from .state import State, UnsafeDirectory, default_state_dir

    plain = Plan([ssh, *args], why="plain")
    try:
        parsed = argvmod.parse(list(args))
    except argvmod.ArgvError as exc:
        return Plan([ssh, *args], why=f"not a plain connection ({exc})")
    if parsed.flags & set("GOVMSNfW") or not parsed.command:
        return Plan([ssh, *args], why="not a git session (-G/-O/-V/-N/...)")
    state: State | None
    try:
        state = State(default_state_dir(env))
    except UnsafeDirectory as exc:
        _debug(env, f"state directory unusable: {exc}")
        state = None
    result = probe(ssh, parsed.options, parsed.dest, env, state)
    extra = ["-o", f"ServerAliveInterval={KEEPALIVE_INTERVAL}"] if needs_keepalive(result) else []
    plain = Plan([ssh, *extra, *args], why="keepalives only")
    if user_multiplexes(result):
        return Plan([ssh, *extra, *args], why="the user's own multiplexing")
    if env.get("MAMA_SSH_MULTIPLEX", "1") in ("0", "false", "no"):
        return Plan(plain.argv, why="MAMA_SSH_MULTIPLEX=0")
    problem = passenger_problem(result, parsed.flags)
    if problem:
        return Plan(plain.argv, why=f"plain ssh: {problem}")
    reason = _mux_unsupported(ssh)
    if reason or state is None:
        return Plan(plain.argv, why=reason or "no private state directory")
    key = identity_key(result, parsed.dest, env.get("SSH_AUTH_SOCK"))
    try:
        path = master.socket_path(master.socket_dir(env), key)
    except UnsafeDirectory as exc:
        return Plan(plain.argv, why=f"no private socket directory: {exc}")
    limit = max(int(_number(env, "MAMA_SSH_MAX_SESSIONS", slots.DEFAULT_MAX_SESSIONS)), 1)
    learned = _learned(state, key)
    if learned is not None:
        limit = max(1, min(limit, learned[0]))
    pool = Pool(os.path.join(state.root, "slots"), key, limit, int(_number(env, "MAMA_SSH_MAX_MASTERS", DEFAULT_MAX_MASTERS)))
    sockets = [master.socket_path(os.path.dirname(path), member(key, m)) for m in range(pool.max_masters)]
    got = _slot(pool, sockets, ssh, parsed, key, bool(extra), state, env)
    if isinstance(got, str):
        return Plan(plain.argv, why=got)
    fd, m = got
    # What ssh's own client would ask of the master for this argv (ssh joins the command's words with spaces).
    request = mux.Request(sockets[m], " ".join(parsed.command).encode("utf-8", "surrogateescape"), session_env(result, env),
                          want_agent=result.get("forwardagent", "no").lower() != "no",
                          want_x11=result.get("forwardx11", "no").lower() == "yes",
                          term=env.get("TERM", "").encode("utf-8", "surrogateescape"))
    return Plan(plain.argv, slot_fd=fd, why=f"multiplexed (master {m + 1} of up to {pool.max_masters})", learn=(state, key, limit),
                wake=pool, session=request)


def _learned(state: Any, key: str) -> "tuple[int, float] | None":
    """(session limit, seconds it is still trusted) learned for ``key`` from refused sessions, if any."""
    rec = state.read("caps", key)
    try:
        left = float(rec["at"]) + LEARNED_FOR - time.time() if rec else 0.0
    except (KeyError, TypeError, ValueError):
        return None
    if rec is None or left <= 0 or not isinstance(rec.get("max"), int):
        return None
    return rec["max"], left


def _live(sockets: list[str]) -> list[int]:
    from . import master

    return [m for m, path in enumerate(sockets) if master.alive(path)]


def _slot(pool: Pool, sockets: list[str], ssh: str, parsed: Any, key: str, keepalive: bool, state: Any,
          env: Mapping[str, str]) -> "tuple[int, int] | str":
    """A session slot on a live master of the pool, starting a master when the waiters outnumber
    the free slots; or the reason to connect plainly."""
    live = _live(sockets)
    got = pool.take_slot(live)
    if got is not None:
        _adopt(state, key, got[1], sockets, parsed, pool)
        return got
    deadline = time.monotonic() + _number(env, "MAMA_SSH_SLOT_WAIT", SLOT_WAIT)
    ticket = pool.enqueue()
    waker = pool.waker()
    try:
        while True:
            got = pool.take_slot(live)
            if got is not None:
                _adopt(state, key, got[1], sockets, parsed, pool)
                return got
            m = _claim_start(pool, sockets, key, state)  # None, among others, when the first master just failed
            if m is None and not live and state.failed_until(key) > time.time():
                return "a recent pre-warm failed"
            if m is not None:
                start_fd, index = m
                try:
                    problem = _start(ssh, parsed, sockets[index], key, index, keepalive, state, env, others=bool(live),
                                     not_for_recorder=[fd for fd in (ticket, waker.fd) if fd is not None])
                finally:
                    os.close(start_fd)
                    # every waiter looks again (the master listens by now, its record may still be
                    # coming): for the new slots, and to start the next master
                    pool.wake(max(pool.waiters(), pool.limit))
                if problem is not None and not live:
                    return problem
                live = _live(sockets)
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                return "every session slot of the pool stayed busy"
            waker.wait(left)
            live = _live(sockets)
    finally:
        waker.close()
        if ticket is not None:
            os.close(ticket)


def _claim_start(pool: Pool, sockets: list[str], key: str, state: Any) -> "tuple[int, int] | None":
    """Under the pool's decision lock: (start lock fd, master) if this process should start one.

    Another master starts when the waiting processes outnumber the slots that are free or about
    to come up (``limit`` per master being started), and the pool is not full. The starts are
    staggered (each needs its share of waiters) and never
    more than the pool's size, so our unauthenticated connections stay well under sshd's
    MaxStartups (10)."""
    with pool.decide():
        live = _live(sockets)
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


def _start(ssh: str, parsed: Any, path: str, key: str, m: int, keepalive: bool, state: Any, env: Mapping[str, str],
           others: bool, not_for_recorder: Sequence[int] = ()) -> str | None:
    """Pre-warm master ``m`` of ``key``'s pool (its start lock is held); the reason it failed, or None.

    Once the master listens, its pid (its alive check) and its record are left to a forked child,
    which holds the start lock until the record is written (so nobody adopts the master
    meanwhile), and this process goes on to its own session at once: asking and recording took
    ~0.2 s under a burst, and the starters were the last operations of the burst to finish.
    ``_run`` waits for that child before exiting, so the record exists once git is done."""
    from . import master

    name = member(key, m)
    if master.alive(path):
        return None
    timeout = _number(env, "MAMA_SSH_PREWARM_TIMEOUT", PREWARM_TIMEOUT)
    try:
        master.prewarm(ssh, parsed.options, parsed.dest, path, keepalive, state, name, env, timeout)
    except master.PrewarmFailed as exc:
        # The first master failing sends everyone to plain ssh for a while; a further one failing
        # (the server's MaxStartups, a slow link) only stops the pool growing for a minute.
        if others:
            state.mark_failed(name, str(exc), GROW_BACKOFF)
        else:
            state.mark_failed(key, str(exc), _number(env, "MAMA_SSH_FAILED_FOR", FAILED_FOR))
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
        _RECORDERS.append(child)
    return None


_RECORDERS: list[int] = []  # forked children writing a new master's record; waited for at exit


def _adopt(state: Any, key: str, m: int, sockets: list[str], parsed: Any, pool: Pool) -> None:
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


class _Interrupted(Exception):
    """SIGINT, SIGTERM or SIGHUP while no ssh of ours runs to pass it on to."""


def _run(p: Plan, env: Mapping[str, str]) -> NoReturn:
    if sys.platform == "win32":
        import subprocess  # os.execvp on Windows does not wait and loses the exit code (cpython#101191)

        sys.exit(subprocess.call(p.argv))
    if env.get("MAMA_SSH_RETRIES") == "0" and p.session is None:
        for pid in _RECORDERS:
            _wait(pid)
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
            raise _Interrupted(signum)  # a session over the master ends when we close its connection

    for sig in (_signal.SIGINT, _signal.SIGTERM, _signal.SIGHUP):
        _signal.signal(sig, on_signal)
    try:
        code = _ride(p, env) if p.session is not None else None
        if code is None:
            code = _ssh(p.argv, env, child)
    except _Interrupted:
        code = 255  # what ssh exits with when a signal ends it
    for sig in (_signal.SIGINT, _signal.SIGTERM, _signal.SIGHUP):
        _signal.signal(sig, _signal.SIG_DFL)  # the session is over: nothing of ours is left to end cleanly
    if p.slot_fd is not None:
        _release_slot(p, _number(env, "MAMA_SSH_SLOT_LINGER", SLOT_LINGER))
    for pid in _RECORDERS:  # the record of the master we started exists once git is done
        _wait(pid)
    _leave(code)


def _ride(p: Plan, env: Mapping[str, str]) -> int | None:
    """Git's session over the master: its exit status, or None when the master cannot carry it
    (gone, or refusing the session again and again), and plain ssh is to run instead."""
    from . import mux

    assert p.session is not None
    refused = 0
    while True:
        try:
            session = mux.Session(p.session)
        except mux.Unavailable as exc:
            _debug(env, f"the master cannot carry this session ({exc}); connecting directly")
            return None
        except mux.Refused as exc:
            # The server allows fewer sessions than the slots taken now, or one that just closed
            # still counted against its MaxSessions: try again shortly, when a session has ended.
            # Refused a second time, it is the server's limit: learn it. Nothing was sent.
            refused += 1
            if refused > REFUSED_RETRIES:
                _debug(env, f"the master's sessions stay refused ({exc}); connecting directly")
                return None
            if refused >= 2:
                _learn_refusal(p)
            import random

            delay = min(REFUSED_BASE * 2.0 ** (refused - 1), 1.0) * random.uniform(0.5, 1.5)
            _debug(env, f"the session was refused ({exc}); over the master again in {delay:.2f}s")
            time.sleep(delay)
            continue
        return session.wait()


def _ssh(argv: list[str], env: Mapping[str, str], child: list[int]) -> int:
    """Run ssh (posix_spawn: subprocess costs ~12 ms to import), again with backoff and jitter while
    the server drops it during key exchange; its exit status."""
    retries = int(_number(env, "MAMA_SSH_RETRIES", RETRIES))
    dropped = 0
    while True:
        r, w = os.pipe()
        child[0] = os.posix_spawnp(argv[0], argv, os.environ, file_actions=[(os.POSIX_SPAWN_DUP2, w, 2), (os.POSIX_SPAWN_CLOSE, r)])
        os.close(w)
        relay = _StderrRelay()
        relay.run(r)
        code = _wait(child[0])
        child[0] = 0
        if code != 255 or not relay.dropped or dropped >= retries:
            relay.flush()  # the session ran (whatever its exit): never run it twice
            return code
        import random

        dropped += 1
        delay = min(RETRY_BASE * 2.0 ** (dropped - 1), 4.0) * random.uniform(0.5, 1.5)
        _debug(env, f"the server dropped the connection during key exchange; attempt {dropped + 1} in {delay:.2f}s")
        time.sleep(delay)


def _leave(code: int) -> NoReturn:
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


def _wait(pid: int) -> int:
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
    return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)


class _StderrRelay:
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


def _learn_refusal(p: Plan) -> None:
    """Halve the session slots of this host (persistently): the server allows fewer. Half of the
    limit this session was planned under, so a burst of refusals halves it once, not once each."""
    if p.learn is None:
        return
    state, key, used = p.learn
    try:
        with state.lock():  # type: ignore[attr-defined]
            current = _learned(state, key)
            new = max(1, used // 2)
            if current is None or new < current[0]:
                state.write("caps", key, {"max": new, "at": time.time()})  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - learning is an optimisation; the session itself already ran
        pass


def _admin(cmd: str, rest: list[str], env: Mapping[str, str], ssh: str) -> int:
    from . import slots
    from .state import State, default_state_dir

    as_json = "--json" in rest
    rest = [a for a in rest if a != "--json"]
    state = State(default_state_dir(env))
    limit = int(_number(env, "MAMA_SSH_MAX_SESSIONS", slots.DEFAULT_MAX_SESSIONS))
    if cmd == "--status":
        return _show(_status(state, limit), as_json, _status_text)
    if cmd == "--cleanup":
        return _cleanup(state, ssh, env)
    if cmd == "--explain":
        if not rest:
            print("usage: mama-ssh --explain [--json] [ssh options] [user@]host", file=sys.stderr)
            return 2
        return _show(_explain(rest, env, ssh, limit, state), as_json, _explain_text)
    return 2


def _show(data: dict[str, Any], as_json: bool, text: Callable[[dict[str, Any]], list[str]]) -> int:
    if as_json:
        import json

        print(json.dumps(data, indent=2))
    else:
        print("\n".join(text(data)))
    return 0


def _status(state: Any, limit: int) -> dict[str, Any]:
    from . import master, slots

    learned = {}
    for key in state.keys("caps"):
        got = _learned(state, key)
        if got is not None:
            learned[key] = {"key": key, "max_sessions": got[0], "seconds_left": round(got[1])}
    masters = []
    for key in state.keys("masters"):
        rec = state.read("masters", key) or {}
        pool_key = key.rsplit("-", 1)[0] if "-" in key else key  # member m of a pool is "<key>-<m>"
        used = min(limit, learned[pool_key]["max_sessions"]) if pool_key in learned else limit
        masters.append({"key": key, "dest": rec.get("dest"), "up": master.alive(rec.get("socket", "")), "owned": bool(rec.get("owned")),
                        "pid": rec.get("pid"), "sessions": slots.in_use(os.path.join(state.root, "slots"), key, used),
                        "limit": used, "socket": rec.get("socket")})
    failed = []
    for key in state.keys("failed"):
        left = state.failed_until(key) - time.time()
        if left > 0:
            failed.append({"key": key, "seconds_left": round(left), "reason": (state.read("failed", key) or {}).get("reason")})
    return {"state": state.root, "masters": masters, "failed": failed, "learned": list(learned.values())}


def _status_text(data: dict[str, Any]) -> list[str]:
    lines = [f"state: {data['state']}"]
    if not data["masters"]:
        lines.append("no masters")
    for m in data["masters"]:
        who = f"started by mama-ssh (pid {m['pid']})" if m["owned"] else "adopted (never closed by mama-ssh)"
        lines.append(f"{m['key']}  {m['dest']}  {'up' if m['up'] else 'down'}  {who}  sessions {m['sessions']}/{m['limit']}  {m['socket']}")
    for f in data["failed"]:
        lines.append(f"{f['key']}  pre-warm failed, plain connections for {f['seconds_left']}s more: {f['reason']}")
    for c in data["learned"]:
        lines.append(f"{c['key']}  the server refused sessions: {c['max_sessions']} per master, learned again in {c['seconds_left']}s")
    return lines


def _cleanup(state: Any, ssh: str, env: Mapping[str, str]) -> int:
    from . import master

    stopped = 0
    for key in state.keys("masters"):
        rec = state.read("masters", key) or {}
        if not rec.get("owned"):
            continue
        if master.alive(rec.get("socket", "")):
            master.stop(ssh, rec["socket"], rec.get("dest", "localhost"), env)
            stopped += 1
        with state.lock():
            state.remove("masters", key)
    print(f"stopped {stopped} master(s) started by mama-ssh; running transfers finish first")
    return 0


def _explain(rest: list[str], env: Mapping[str, str], ssh: str, limit: int, state: Any = None) -> dict[str, Any]:
    from . import master
    from .argv import parse
    from .options import identity_key, needs_keepalive, passenger_problem, user_multiplexes
    from .probe import probe

    p = plan([*rest, "true"], dict(env, MAMA_SSH_EXPLAIN="1", MAMA_SSH_MULTIPLEX="0"), ssh)
    parsed = parse([*rest, "true"])
    result = probe(ssh, parsed.options, parsed.dest, env, None)
    data: dict[str, Any] = {"destination": parsed.dest, "add_keepalive": needs_keepalive(result),
                            "multiplexing": "yours" if user_multiplexes(result) else "mama-ssh"}
    if data["multiplexing"] == "mama-ssh":
        key = identity_key(result, parsed.dest, env.get("SSH_AUTH_SOCK"))
        try:
            data["socket"] = master.socket_path(master.socket_dir(env), key)
        except Exception as exc:  # noqa: BLE001 - explain, don't fail
            data["socket"] = None
            data["socket_problem"] = str(exc)
        data["control_persist"] = 600
        learned = _learned(state, key) if state is not None else None
        data["session_slots"] = min(limit, learned[0]) if learned else limit  # what a master carries now
        data["session_slots_configured"] = limit
        data["learned_for_seconds"] = round(learned[1]) if learned else None
        data["max_masters"] = int(_number(env, "MAMA_SSH_MAX_MASTERS", DEFAULT_MAX_MASTERS))
        data["plain_ssh_because"] = passenger_problem(result, parsed.flags)  # None: sessions ride the masters
    data["would_run"] = p.argv[:-1]
    return data


def _explain_text(data: dict[str, Any]) -> list[str]:
    lines = [f"destination: {data['destination']}",
             f"keepalives: {'add ServerAliveInterval (yours is 0)' if data['add_keepalive'] else 'yours are kept'}"]
    if data["multiplexing"] == "yours":
        lines.append("multiplexing: yours (ControlMaster/ControlPath configured): nothing added")
    else:
        where = data["socket"] or f"none ({data.get('socket_problem')})"
        lines.append(f"multiplexing: a pool of up to {data['max_masters']} masters per identity (MAMA_SSH_MAX_MASTERS), "
                     f"the first on socket {where}, ControlPersist {data['control_persist']}s")
        if data.get("learned_for_seconds") is not None:
            lines.append(f"session slots: {data['session_slots']} per master, learned from refused sessions for "
                         f"{data['learned_for_seconds']}s more (MAMA_SSH_MAX_SESSIONS is {data['session_slots_configured']})")
        else:
            lines.append(f"session slots: {data['session_slots']} per master (MAMA_SSH_MAX_SESSIONS)")
        if data["plain_ssh_because"] is None:
            lines.append("sessions: carried over a master's socket by mama-ssh itself (no ssh process per session)")
            lines.append(f"when no master can carry one: {' '.join(data['would_run'])} <command>")
            return lines
        lines.append(f"sessions: plain ssh, not multiplexed ({data['plain_ssh_because']})")
    lines.append(f"would run: {' '.join(data['would_run'])} <command>")
    return lines


USAGE = """usage: mama-ssh [ssh options] [user@]host [command]   (what git runs)
       mama-ssh --status [--json] | --cleanup | --explain [--json] [user@]host | --version

Use it as git's ssh command:  git config --global core.sshCommand mama-ssh
Environment: MAMA_SSH_MAX_SESSIONS (10 per master), MAMA_SSH_MAX_MASTERS (4 per host), MAMA_SSH_SLOT_WAIT (10 s),
MAMA_SSH_RETRIES (4), MAMA_SSH_PREWARM_TIMEOUT (30 s), MAMA_SSH_MULTIPLEX=0 (keepalives only),
MAMA_SSH_SSH (the ssh to run), MAMA_SSH_DEBUG=1.
"""


def main(argv: Sequence[str] | None = None) -> NoReturn:
    args = list(sys.argv[1:] if argv is None else argv)
    env = os.environ
    ssh = env.get("MAMA_SSH_SSH") or "ssh"
    if args and args[0] in ("--status", "--cleanup", "--explain", "--help", "-h", "--version"):
        if args[0] in ("--help", "-h"):
            sys.stdout.write(USAGE)
            sys.exit(0)
        if args[0] == "--version":
            from . import __version__

            print(f"mama-ssh {__version__}")
            sys.exit(0)
        sys.exit(_admin(args[0], args[1:], env, ssh))
    try:
        p = plan(args, env, ssh)
    except KeyboardInterrupt:
        _leave(255)  # ^C while waiting for a master or a slot: gone quietly, as ssh is
    except Exception as exc:  # noqa: BLE001 - fail open: an optimisation must never break a fetch
        _debug(env, f"internal error, running plain ssh: {type(exc).__name__}: {exc}")
        p = Plan([ssh, *args], why="internal error")
    _debug(env, f"{p.why}: " + (f"a session over {p.session.socket}" if p.session else f"{' '.join(p.argv[:-1])} ..."))
    try:
        _run(p, env)
    except OSError as exc:
        sys.stderr.write(f"mama-ssh: cannot run {p.argv[0]}: {exc.strerror}\n")
        sys.exit(255)
