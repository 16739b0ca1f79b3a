"""``git push relay::``: one push batch from the local repository, on the pack-relay engine.

git's per-ref rules are applied up front (``push.decide``), the pack comes from local
``git pack-objects`` (``LocalHistory.send``), a push too big for the target goes through the
split engine, and every ref is reported ``ok`` only when the server said so.
"""

from __future__ import annotations

import time

from . import stats
from .errors import PackError, RelayError
from .gitcmd import DEVNULL, Git, run_command
from .limits import Limits, limit_key
from .protocol import ZERO_OID, Advertisement
from .push import NO_REPORT, PackStream, PushOptions, RefUpdate, decide, parse_push_lines, resolve, send_updates, shallow_roots, start_pack
from .quoting import c_quote
from .settings import Settings
from .split import OVERSIZED_HINT, Learning, push_or_split, target_haves
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

    def largest_blobs(self, tips: list[str], base: list[str], count: int = 3) -> list[tuple[int, str, str]]:
        """(size, path, blob) of the biggest files that ``tips`` add over ``base``, biggest first."""
        present = self.git.existing(base)
        revs = ("\n".join([*tips, *("^" + b for b in base if b in present)]) + "\n").encode()
        named = self.git.run(["rev-list", "--objects", "--stdin"], input=revs).decode().splitlines()
        paths = {line[:40]: line[41:] for line in named if len(line) > 41}
        oids = "".join(line[:40] + "\n" for line in named).encode()
        sizes = self.git.run(["cat-file", "--batch-check=%(objecttype) %(objectsize) %(objectname)"], input=oids)
        blobs = []
        for line in sizes.decode().splitlines():
            kind, size, oid = line.split(" ")
            if kind == "blob":
                blobs.append((int(size), paths.get(oid, "?"), oid))
        return sorted(blobs, reverse=True)[:count]

    def describe(self, commit: str, base: list[str]) -> str:
        subject = self.git.run(["log", "-1", "--format=%s", commit]).decode().strip()
        files = ", ".join(f"{path} ({size / 2**20:.1f} MiB)" for size, path, _ in self.largest_blobs([commit], base))
        return f"{commit[:12]} ('{subject[:60]}')" + (f", which adds {files}" if files else "")

    def commit_adding(self, blob: str, tips: list[str], base: list[str]) -> str:
        """The oldest commit in ``tips`` minus ``base`` that introduces ``blob``."""
        present = self.git.existing(base)
        out = self.git.run(["log", "--format=%H", f"--find-object={blob}", *tips, "--not", *(b for b in base if b in present)])
        return (out.decode().split() or ["?"])[-1]

    def prepare(self, updates: list[RefUpdate], base: list[str], ofs_delta: bool) -> PackStream | None:
        """Start the pack for ``updates`` over ``base`` now, to be sent later (quietly: another
        step's progress is on the screen meanwhile)."""
        present = self.git.existing(base)
        return start_pack(self.git, updates, [b for b in base if b in present], PushOptions(), False, ofs_delta)

    def send(
        self, service: Service, adv: Advertisement, updates: list[RefUpdate], opts: PushOptions, limit: int | None, limit_source: str,
        prepared: PackStream | None = None,
    ) -> tuple[int, int | None]:
        return send_updates(self.git, self.reporter, service, adv, updates, opts, limit=limit, limit_source=limit_source, prepared=prepared)


def _recheck_moved(session: Session, reporter: Reporter, updates: list[RefUpdate]) -> None:
    """A ref the server refused but that already holds what we pushed is reported as pushed."""
    suspects = [u for u in updates if u.error and not u.ok and not u.delete and u.new != ZERO_OID]
    if not suspects:
        return
    try:
        service, adv = session.new_receive()
    except RelayError:
        return
    service.dismiss()
    for u in suspects:
        if adv.refs.get(u.dst) == u.new:
            reporter.warn(f"{u.dst}: the server refused the update ({u.error}) but already holds {u.new[:12]}; nothing to do")
            u.error, u.ok = None, True


def _refuse_oversized_files(history: LocalHistory, todo: list[RefUpdate], haves: list[str], limit: int) -> None:
    """relay.maxObjectBytes (a host's file size limit): stop before anything is sent, naming the file."""
    tips = [u.new for u in todo if not u.delete]
    if not tips:
        return
    big = [b for b in history.largest_blobs(tips, haves, count=5) if b[0] > limit]
    if not big:
        return
    size, path, blob = big[0]
    commit = history.commit_adding(blob, tips, haves)
    more = f" (and {len(big) - 1} more)" if len(big) > 1 else ""
    raise PackError(f"{path} ({size / 2**20:.1f} MiB, added by commit {commit[:12]}) is larger than relay.maxObjectBytes "
                    f"({limit / 2**20:.1f} MiB){more}; nothing was pushed", OVERSIZED_HINT)


# A push to a remote none of whose tips we have carries the whole history of what it pushes (as
# native git's would); beyond git, that case is negotiated even without push.negotiate, when the
# history is at least this long (a short one costs less to send than a negotiation round).
AUTO_NEGOTIATE_COMMITS = 1000


def _negotiate(git: Git, reporter: Reporter, session: Session, adv: Advertisement, todo: list[RefUpdate]) -> None:
    """``push.negotiate``: git's own ``git fetch --negotiate-only`` (through relay::) finds the
    commits the remote shares with what we push, and they are left out of the pack, as git's
    send-pack does. Unset, it is done where it pays: no remote tip is ours, the remote is not
    empty, and the history to send is long. A failed negotiation never fails the push."""
    tips = list(dict.fromkeys(u.new for u in todo if not u.delete))
    if not tips:
        return
    config = session.ctx.config
    asked = config.get("push.negotiate") is not None
    if asked and not config.get_bool("push.negotiate"):
        return
    if not asked:
        haves = target_haves(adv)
        if not haves or git.existing(haves):
            return
        count = git.run(["rev-list", "--count", f"--max-count={AUTO_NEGOTIATE_COMMITS}", *tips]).strip()
        if int(count or 0) < AUTO_NEGOTIATE_COMMITS:
            return
        reporter.trace("no remote tip is local: negotiating which commits the remote has")
    argv = ["git", "fetch", "--negotiate-only", *(f"--negotiation-tip={t}" for t in tips), "relay::" + session.url.raw]
    proc = run_command(argv, env=git.env, cwd=git.cwd, stderr=None if asked else DEVNULL)
    commons = [line for line in proc.stdout.decode("ascii", "replace").split() if len(line) in (40, 64)]
    if proc.returncode != 0:
        if asked:
            reporter.warn("push negotiation failed; proceeding anyway with push")
        return
    reporter.trace(f"negotiation: the remote has {len(commons)} of our commits")
    session.add_commons(commons)


def _status_line(u: RefUpdate) -> str:
    """The helper's reply for one ref, in the words git's transport-helper turns into its statuses."""
    if u.ok:
        return f"ok {u.dst} forced update" if u.forced else f"ok {u.dst}"
    if u.error == NO_REPORT:
        return f"error {u.dst} expecting report"  # git: "[remote failure] (remote failed to report status)"
    return f"error {u.dst} {c_quote(u.error or 'rejected')}"


def run_push_batch(
    git: Git, reporter: Reporter, session: Session, settings: Settings, lines: list[str], opts: PushOptions
) -> tuple[str, bool, bool]:
    """Push one batch; return (the reply for git, whether every ref succeeded, whether the
    transport failed: then the reply has no closing blank line and the helper ends after it)."""
    started = time.monotonic()
    updates = parse_push_lines(lines)
    service, adv = session.receive()
    adv.check_object_format()
    if opts.atomic and not adv.has("atomic"):
        raise RelayError("the receiving end does not support --atomic push")
    if opts.push_options and not adv.has("push-options"):
        raise RelayError("the receiving end does not support push options")
    opts.use_bitmaps = session.ctx.config.get_bool("push.usebitmaps", True)
    opts.shallow = shallow_roots(git)
    resolve(git, updates)
    decide(git, updates, adv, opts)
    if opts.atomic and any(u.error for u in updates):
        for u in updates:
            if not u.error:
                u.error = "atomic push failed"
    todo = [u for u in updates if not u.error]
    if todo and not opts.dry_run:
        _negotiate(git, reporter, session, adv, todo)
    if todo and settings.max_object_bytes is not None and not opts.dry_run:
        _refuse_oversized_files(LocalHistory(git, reporter), todo, target_haves(adv), settings.max_object_bytes)
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
    reply = [_status_line(u) for u in updates]
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
    text = "".join(x + "\n" for x in reply)
    # The server could not take the pack at all (it said "unpack <error>"): git's send-pack fails
    # the transport then, not just the refs, and `git push --porcelain` prints no "Done". A helper
    # says so by ending without the blank line that closes its reply.
    unpack_failed = any(u.error == "unpacker error" or (u.error or "").startswith("no report from the server (unpack") for u in updates)
    return (text if unpack_failed else text + "\n"), all(u.ok or u.error == "up to date" for u in updates), unpack_failed
