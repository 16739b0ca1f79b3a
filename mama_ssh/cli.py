"""``mama-ssh``: probe -> decide -> run ssh. Fails open: any error of ours runs plain ssh.

git runs ``mama-ssh [options] [user@]host '<command>'`` (as GIT_SSH_COMMAND, core.sshCommand or
GIT_SSH). Admin commands: ``--status``, ``--explain [user@]host``, ``--cleanup``.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Callable, Mapping, NoReturn, Sequence

__all__ = ["main", "plan", "Plan"]

PREWARM_TIMEOUT = 30.0  # an authentication that needs longer than this is not worth waiting for
FAILED_FOR = 300.0  # after a failed pre-warm, connect plainly for 5 minutes instead of retrying
SLOT_WAIT = 10.0  # how long a process waits for a free session slot before connecting plainly


class Plan:
    """What to run: ``argv`` and, when it rides a master, the fd of its session slot."""

    def __init__(self, argv: list[str], slot_fd: int | None = None, why: str = "", learn: "tuple[object, str, int] | None" = None) -> None:
        self.argv = argv
        self.slot_fd = slot_fd
        self.why = why
        self.learn = learn  # (state, key, session limit used): where a refused session is recorded


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
    from . import master, slots
    from .options import KEEPALIVE_INTERVAL, identity_key, needs_keepalive, user_multiplexes
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
    reason = _mux_unsupported(ssh)
    if reason or state is None:
        return Plan(plain.argv, why=reason or "no private state directory")
    key = identity_key(result, parsed.dest, env.get("SSH_AUTH_SOCK"))
    try:
        path = master.socket_path(master.socket_dir(env), key)
    except UnsafeDirectory as exc:
        return Plan(plain.argv, why=f"no private socket directory: {exc}")
    if state.failed_until(key) > time.time():
        return Plan(plain.argv, why="a recent pre-warm failed")
    refused = _ensure_master(ssh, parsed, path, key, bool(extra), state, env) if not master.alive(path) else None
    if refused is not None:
        return Plan(plain.argv, why=refused)
    if state.read("masters", key) is None:
        with state.lock():
            if state.read("masters", key) is None:
                # a master we did not start (a record lost, or started by hand): use it, never close it
                state.write("masters", key, {"socket": path, "pid": None, "dest": parsed.dest, "options": parsed.options,
                                             "owned": False, "started": time.time(), "by": None})
    limit = max(int(_number(env, "MAMA_SSH_MAX_SESSIONS", slots.DEFAULT_MAX_SESSIONS)), 1)
    learned = state.read("caps", key)
    if learned and isinstance(learned.get("max"), int):
        limit = max(1, min(limit, learned["max"]))
    fd = slots.acquire(os.path.join(state.root, "slots"), key, limit, _number(env, "MAMA_SSH_SLOT_WAIT", SLOT_WAIT))
    if fd is None:
        return Plan(plain.argv, why="every session slot of the master stayed busy")
    # ControlMaster=no: a client never becomes a master we don't manage, and if the master is
    # gone, ssh connects directly instead of failing.
    return Plan(
        [ssh, "-o", "ControlMaster=no", "-o", f"ControlPath={path}", *extra, *args],
        slot_fd=fd,
        why="multiplexed",
        learn=(state, key, limit),
    )


def _ensure_master(ssh: str, parsed: Any, path: str, key: str, keepalive: bool, state: Any, env: Mapping[str, str]) -> str | None:
    """Pre-warm the master for ``key`` under its host lock; the reason to go plain, or None."""
    from filelock import Timeout

    from . import master

    timeout = _number(env, "MAMA_SSH_PREWARM_TIMEOUT", PREWARM_TIMEOUT)
    try:
        with state.prewarm_lock(key, timeout=timeout + 5):
            # another process may have finished the pre-warm (or given up) while we waited
            if state.failed_until(key) > time.time():
                return "a concurrent pre-warm failed"
            if master.alive(path):
                return None
            try:
                pid = master.prewarm(ssh, parsed.options, parsed.dest, path, keepalive, state, key, env, timeout)
            except master.PrewarmFailed as exc:
                state.mark_failed(key, str(exc), _number(env, "MAMA_SSH_FAILED_FOR", FAILED_FOR))
                return str(exc)
            with state.lock():
                state.write("masters", key, {"socket": path, "pid": pid, "dest": parsed.dest, "options": parsed.options,
                                             "owned": True, "started": time.time(), "by": os.getpid()})
    except Timeout:
        return "timed out waiting for another process's pre-warm"
    return None


def _run(p: Plan) -> NoReturn:
    if sys.platform == "win32":
        import subprocess  # os.execvp on Windows does not wait and loses the exit code (cpython#101191)

        sys.exit(subprocess.call(p.argv))
    if p.slot_fd is None:
        os.execvp(p.argv[0], p.argv)
    # Keep the slot while the session runs: wait for ssh, forward signals, return its status.
    # (posix_spawn rather than subprocess: this is the warm path, and subprocess costs ~12 ms to import.)
    import signal

    # ssh's stderr passes through us so that a "Session open refused" (the server's MaxSessions is
    # lower than our slots) is noticed and the slot count for this master halved for next time.
    r, w = os.pipe()
    pid = os.posix_spawnp(p.argv[0], p.argv, os.environ, file_actions=[(os.POSIX_SPAWN_DUP2, w, 2), (os.POSIX_SPAWN_CLOSE, r)])
    os.close(w)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, _frame: os.kill(pid, signum))
    if _relay_stderr(r):
        _learn_refusal(p)
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
    sys.exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status))


def _relay_stderr(fd: int) -> bool:
    """Copy ssh's stderr to ours until it closes; True if ssh said a session was refused."""
    refused, tail = False, b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except InterruptedError:
            continue
        if not chunk:
            os.close(fd)
            return refused
        refused = refused or b"Session open refused" in tail + chunk
        tail = chunk[-64:]
        view = memoryview(chunk)
        while view:
            try:
                view = view[os.write(2, view) :]
            except InterruptedError:
                continue
            except OSError:
                break  # nobody reads our stderr any more: keep draining so ssh never blocks


def _learn_refusal(p: Plan) -> None:
    """Halve the session slots of this master (persistently): the server allows fewer."""
    if p.learn is None:
        return
    state, key, used = p.learn
    try:
        with state.lock():  # type: ignore[attr-defined]
            current = state.read("caps", key)  # type: ignore[attr-defined]
            known = current.get("max") if current else None
            new = max(1, used // 2)
            if not isinstance(known, int) or new < known:
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
        return _show(_explain(rest, env, ssh, limit), as_json, _explain_text)
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

    masters = []
    for key in state.keys("masters"):
        rec = state.read("masters", key) or {}
        masters.append({"key": key, "dest": rec.get("dest"), "up": master.alive(rec.get("socket", "")), "owned": bool(rec.get("owned")),
                        "pid": rec.get("pid"), "sessions": slots.in_use(os.path.join(state.root, "slots"), key, limit),
                        "limit": limit, "socket": rec.get("socket")})
    failed = []
    for key in state.keys("failed"):
        left = state.failed_until(key) - time.time()
        if left > 0:
            failed.append({"key": key, "seconds_left": round(left), "reason": (state.read("failed", key) or {}).get("reason")})
    return {"state": state.root, "masters": masters, "failed": failed}


def _status_text(data: dict[str, Any]) -> list[str]:
    lines = [f"state: {data['state']}"]
    if not data["masters"]:
        lines.append("no masters")
    for m in data["masters"]:
        who = f"started by mama-ssh (pid {m['pid']})" if m["owned"] else "adopted (never closed by mama-ssh)"
        lines.append(f"{m['key']}  {m['dest']}  {'up' if m['up'] else 'down'}  {who}  sessions {m['sessions']}/{m['limit']}  {m['socket']}")
    for f in data["failed"]:
        lines.append(f"{f['key']}  pre-warm failed, plain connections for {f['seconds_left']}s more: {f['reason']}")
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


def _explain(rest: list[str], env: Mapping[str, str], ssh: str, limit: int) -> dict[str, Any]:
    from . import master
    from .argv import parse
    from .options import identity_key, needs_keepalive, user_multiplexes
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
        data["session_slots"] = limit
    data["would_run"] = p.argv[:-1]
    return data


def _explain_text(data: dict[str, Any]) -> list[str]:
    lines = [f"destination: {data['destination']}",
             f"keepalives: {'add ServerAliveInterval (yours is 0)' if data['add_keepalive'] else 'yours are kept'}"]
    if data["multiplexing"] == "yours":
        lines.append("multiplexing: yours (ControlMaster/ControlPath configured): nothing added")
    else:
        where = data["socket"] or f"none ({data.get('socket_problem')})"
        lines.append(f"multiplexing: one pre-warmed master per identity, socket {where}, ControlPersist {data['control_persist']}s")
        lines.append(f"session slots: {data['session_slots']} per master (MAMA_SSH_MAX_SESSIONS)")
    lines.append(f"would run: {' '.join(data['would_run'])} <command>")
    return lines


USAGE = """usage: mama-ssh [ssh options] [user@]host [command]   (what git runs)
       mama-ssh --status [--json] | --cleanup | --explain [--json] [user@]host | --version

Use it as git's ssh command:  git config --global core.sshCommand mama-ssh
Environment: MAMA_SSH_MAX_SESSIONS (8), MAMA_SSH_SLOT_WAIT (10 s), MAMA_SSH_PREWARM_TIMEOUT (30 s),
MAMA_SSH_MULTIPLEX=0 (keepalives only), MAMA_SSH_SSH (the ssh to run), MAMA_SSH_DEBUG=1.
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
    except Exception as exc:  # noqa: BLE001 - fail open: an optimisation must never break a fetch
        _debug(env, f"internal error, running plain ssh: {type(exc).__name__}: {exc}")
        p = Plan([ssh, *args], why="internal error")
    _debug(env, f"{p.why}: {' '.join(p.argv[:-1])} ...")
    try:
        _run(p)
    except OSError as exc:
        sys.stderr.write(f"mama-ssh: cannot run {p.argv[0]}: {exc.strerror}\n")
        sys.exit(255)
