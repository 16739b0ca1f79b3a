"""What to run for one ssh connection git asks for: plain ssh (with keepalives where the user
has none), or a session over a master of the host's pool. Raises on internal trouble; the entry
point then runs plain ssh (mama-ssh fails open).
"""

from __future__ import annotations

import os
import sys

from .pool import learned_limit, take_slot
from .setting import debug, number
from .slots import DEFAULT_MAX_MASTERS, Pool, member

TYPE_CHECKING = False  # no `typing` at run time: mama-ssh starts for every ssh connection git makes
if TYPE_CHECKING:
    from typing import Mapping, Sequence

    from . import mux

__all__ = ["Plan", "plan", "is_windows_openssh"]


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


def is_windows_openssh(banner: str) -> bool:
    """Microsoft's OpenSSH port has no ControlMaster (Win32-OpenSSH#405)."""
    return "OpenSSH_for_Windows" in banner


def mux_unsupported(ssh: str) -> str | None:
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
        debug(env, f"state directory unusable: {exc}")
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
    reason = mux_unsupported(ssh)
    if reason or state is None:
        return Plan(plain.argv, why=reason or "no private state directory")
    key = identity_key(result, parsed.dest, env.get("SSH_AUTH_SOCK"))
    try:
        path = master.socket_path(master.socket_dir(env), key)
    except UnsafeDirectory as exc:
        return Plan(plain.argv, why=f"no private socket directory: {exc}")
    limit = max(int(number(env, "MAMA_SSH_MAX_SESSIONS", slots.DEFAULT_MAX_SESSIONS)), 1)
    learned = learned_limit(state, key)
    if learned is not None:
        limit = max(1, min(limit, learned[0]))
    pool = Pool(os.path.join(state.root, "slots"), key, limit, int(number(env, "MAMA_SSH_MAX_MASTERS", DEFAULT_MAX_MASTERS)))
    sockets = [master.socket_path(os.path.dirname(path), member(key, m)) for m in range(pool.max_masters)]
    got = take_slot(pool, sockets, ssh, parsed, key, bool(extra), state, env)
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
