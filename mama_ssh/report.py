"""The admin verbs: ``--status`` (masters, slots in use, failures, learned limits), ``--explain``
(what mama-ssh would do for a destination, without connecting) and ``--cleanup`` (stop the
masters mama-ssh started). Each prints text, or JSON with ``--json``.
"""

from __future__ import annotations

import os
import sys
import time

from .plan import plan
from .pool import learned_limit
from .setting import number
from .slots import DEFAULT_MAX_MASTERS

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Mapping

__all__ = ["admin", "status", "status_text", "explain", "explain_text"]


def admin(cmd: str, rest: list[str], env: Mapping[str, str], ssh: str) -> int:
    """Run an admin verb; whatever goes wrong ends in one line saying what (exit 2), not a traceback."""
    try:
        return _admin(cmd, rest, env, ssh)
    except Exception as exc:  # noqa: BLE001 - the user gets one line, whatever it was
        print(f"mama-ssh {cmd}: {_what(exc)}", file=sys.stderr)
        return 2


def _what(exc: Exception) -> str:
    from .argv import ArgvError
    from .probe import ProbeFailed
    from .state import UnsafeDirectory

    if isinstance(exc, ArgvError):
        return f"not something ssh would connect to ({exc}); give [user@]host, with ssh options before it"
    if isinstance(exc, (ProbeFailed, UnsafeDirectory)):
        return str(exc)
    if isinstance(exc, OSError):
        return f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")
    return f"internal error: {type(exc).__name__}: {exc}"


def _admin(cmd: str, rest: list[str], env: Mapping[str, str], ssh: str) -> int:
    from . import slots
    from .state import State, default_state_dir

    as_json = "--json" in rest
    rest = [a for a in rest if a != "--json"]
    state = State(default_state_dir(env))
    limit = int(number(env, "MAMA_SSH_MAX_SESSIONS", slots.DEFAULT_MAX_SESSIONS))
    if cmd == "--status":
        return _show(status(state, limit), as_json, status_text)
    if cmd == "--cleanup":
        return _cleanup(state, ssh, env)
    if cmd == "--explain":
        if not rest:
            print("usage: mama-ssh --explain [--json] [ssh options] [user@]host", file=sys.stderr)
            return 2
        return _show(explain(rest, env, ssh, limit, state), as_json, explain_text)
    return 2


def _show(data: dict[str, Any], as_json: bool, text: Callable[[dict[str, Any]], list[str]]) -> int:
    if as_json:
        import json

        print(json.dumps(data, indent=2))
    else:
        print("\n".join(text(data)))
    return 0


def status(state: Any, limit: int) -> dict[str, Any]:
    from . import master, slots

    learned = {}
    for key in state.keys("caps"):
        got = learned_limit(state, key)
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


def status_text(data: dict[str, Any]) -> list[str]:
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


def explain(rest: list[str], env: Mapping[str, str], ssh: str, limit: int, state: Any = None) -> dict[str, Any]:
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
        learned = learned_limit(state, key) if state is not None else None
        data["session_slots"] = min(limit, learned[0]) if learned else limit  # what a master carries now
        data["session_slots_configured"] = limit
        data["learned_for_seconds"] = round(learned[1]) if learned else None
        data["max_masters"] = int(number(env, "MAMA_SSH_MAX_MASTERS", DEFAULT_MAX_MASTERS))
        data["plain_ssh_because"] = passenger_problem(result, parsed.flags)  # None: sessions ride the masters
    data["would_run"] = p.argv[:-1]
    return data


def explain_text(data: dict[str, Any]) -> list[str]:
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
