"""``git push relay::``: one push batch from the local repository, on the pack-relay engine.

git's per-ref rules are applied up front (``push.decide``), the pack comes from local
``git pack-objects`` (``LocalHistory.send``), a push too big for the target goes through the
split engine, and every ref is reported ``ok`` only when the server said so.
"""

from __future__ import annotations

import time

from . import stats
from .errors import RelayError
from .gitcmd import Git
from .limits import Limits, limit_key
from .protocol import ZERO_OID, Advertisement
from .push import PushOptions, RefUpdate, decide, parse_push_lines, resolve, send_updates
from .quoting import c_quote
from .settings import Settings
from .split import Learning, push_or_split
from .transport.base import Service
from .transport.session import Session
from .ui import Reporter

__all__ = ["LocalHistory", "run_push_batch"]


class LocalHistory:
    """The local repository as the split engine's ``History``: sizes are known here."""

    def __init__(self, git: Git, reporter: Reporter) -> None:
        self.git = git
        self.reporter = reporter

    def chain(self, tip: str, target_haves: list[str]) -> list[str]:
        present = self.git.existing(target_haves)
        revs = [tip, *("^" + h for h in target_haves if h in present)]
        return (
            self.git.run(["rev-list", "--first-parent", "--reverse", "--stdin"], input=("\n".join(revs) + "\n").encode()).decode().split()
        )

    def estimate(self, tip: str, base: list[str]) -> int | None:
        present = self.git.existing(base)
        revs = [tip, *("^" + b for b in base if b in present)]
        out = self.git.run(["rev-list", "--objects", "--disk-usage", "--stdin"], input=("\n".join(revs) + "\n").encode())
        return int(out.strip() or 0)

    def send(
        self, service: Service, adv: Advertisement, updates: list[RefUpdate], opts: PushOptions, limit: int | None, limit_source: str
    ) -> tuple[int, int | None]:
        return send_updates(self.git, self.reporter, service, adv, updates, opts, limit=limit, limit_source=limit_source)


def _recheck_moved(session: Session, reporter: Reporter, updates: list[RefUpdate]) -> None:
    """A ref the server refused but that already holds what we pushed is reported as pushed."""
    suspects = [u for u in updates if u.error and not u.ok and not u.delete and u.new != ZERO_OID]
    if not suspects:
        return
    try:
        service, adv = session.new_receive()
    except RelayError:
        return
    session.say_goodbye(service)
    for u in suspects:
        if adv.refs.get(u.dst) == u.new:
            reporter.warn(f"{u.dst}: the server refused the update ({u.error}) but already holds {u.new[:12]}; nothing to do")
            u.error, u.ok = None, True


def run_push_batch(
    git: Git, reporter: Reporter, session: Session, settings: Settings, lines: list[str], opts: PushOptions
) -> tuple[str, bool]:
    """Push one batch; return (the reply for git, whether every ref succeeded)."""
    started = time.monotonic()
    updates = parse_push_lines(lines)
    service, adv = session.receive()
    adv.check_object_format()
    resolve(git, updates)
    decide(git, updates, adv, opts)
    if opts.atomic and any(u.error for u in updates):
        for u in updates:
            if not u.error:
                u.error = "atomic push failed"
    todo = [u for u in updates if not u.error]
    sent, objects = 0, None
    used = False
    try:
        if todo and not opts.dry_run:
            used = True
            learning = Learning(Limits(session.ctx.env), limit_key(session.url))
            sent, objects = push_or_split(
                LocalHistory(git, reporter),
                session.new_receive,
                (service, adv),
                todo,
                opts,
                reporter,
                max_pack=settings.max_pack_bytes,
                max_push=settings.max_push_bytes,
                learning=learning,
                interval=settings.split_interval,
            )
            _recheck_moved(session, reporter, todo)
        elif todo:
            for u in todo:
                u.ok = True
    finally:
        session.release_receive(used=used)
    reply = [f"ok {u.dst}" if u.ok else f"error {u.dst} {c_quote(u.error or 'rejected')}" for u in updates]
    if not opts.dry_run:
        stats.record(
            reporter,
            settings,
            session.url.redacted,
            "push",
            [{"ref": u.dst, "old": u.old, "new": u.new, "result": "ok" if u.ok else u.error} for u in updates],
            sent,
            objects,
            started,
        )
    return "".join(x + "\n" for x in reply) + "\n", all(u.ok or u.error == "up to date" for u in updates)
