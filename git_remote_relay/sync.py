"""Remote-to-remote relay: plan per ref, then stream the source's pack into the target.

No local clone: the source's upload-pack reply is demultiplexed and its pack bytes go straight
into the target's receive-pack request. The relayed fetch sends every target tip as a have, so
the source sends only what the target lacks. Decisions are ``syncplan.plan``'s; a target that
refuses the pack for its size gets it through the split engine (``split.py``) with the source
as the ``History`` (``RemoteHistory``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping

from .errors import DumbHttpError, RelayError, ShallowRemoteError, UnsupportedError
from .fetch import fetch_pack
from .gitcmd import Config, Git
from .history import Scratch, first_parent_chain
from .lfsfind import find_pointers
from .lfssync import LfsReport, copy_objects, lfs_location
from .limits import Limits, limit_key
from .protocol import ZERO_OID, Advertisement, fetch_request, read_fetch_preamble, supports_filter
from .push import PackStream, PushOptions, RefUpdate, exchange
from .selection import Selection
from .settings import Settings
from .split import Learning, push_or_split, target_haves
from .syncplan import PUSHED_ACTIONS, plan
from .transport import Context, Service
from .transport.session import Session
from .ui import Reporter
from .url import check_allowed, credentials_in_url, parse

TYPE_CHECKING = False  # typing costs ~10 ms of start-up; mypy reads this as typing.TYPE_CHECKING
if TYPE_CHECKING:
    from typing import Any

__all__ = ["endpoint", "RemoteHistory", "run_sync", "probe", "EMPTY_PACK", "Selection"]

# A valid pack with no objects: "PACK", version 2, 0 objects, SHA-1 of those 12 bytes. Strict
# servers want a pack with every non-delete command, even when the objects are already there.
EMPTY_PACK = bytes.fromhex("5041434b0000000200000000029d08823bd8a8eab510ad6ac75c823cfd3ed31e")


def endpoint(address: str, env: Mapping[str, str], config: Config, settings: Settings, reporter: Reporter) -> Session:
    """A session on one side of the relay (``relay::`` prefix optional); no local repository involved."""
    inner = address[len("relay::"):] if address.startswith("relay::") else address
    url = parse(inner)
    check_allowed(url.scheme, env, config.values)
    plaintext = credentials_in_url(inner, config.values)
    if plaintext:
        reporter.warn(plaintext)
    git = Git({k: v for k, v in env.items() if k not in ("GIT_DIR", "GIT_WORK_TREE")})
    return Session(url, Context(env=env, git=git, config=config, trace=reporter.trace, timeout=settings.timeout, say=reporter.say))


class _Bytes(PackStream):
    def __init__(self, data: bytes) -> None:
        super().__init__(None, "")
        self.data = data

    def _chunks(self) -> Iterator[bytes]:
        yield self.data


class _SourcePack(PackStream):
    """The pack from the source's upload-pack reply, side-band removed, as it arrives."""

    def __init__(self, source: Session, service: Service, adv: Advertisement, request: bytes, reporter: Reporter,
                 limit: int | None, limit_source: str) -> None:
        super().__init__(limit, limit_source)
        self.source = source
        self.service = service
        self.adv = adv
        self.request = request
        self.reporter = reporter
        self.complete = False
        self.stopped = False

    def _chunks(self) -> Iterator[bytes]:
        reader = self.service.request([self.request])
        shallow = read_fetch_preamble(reader, self.adv)
        if shallow:
            raise ShallowRemoteError("the source repository is shallow", shallow=shallow)
        for channel, data in reader.sideband():
            if channel == 1:
                yield data
            else:
                self.reporter.sideband(data)
        self.reporter.flush_sideband()
        self.complete = True

    def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            self.source.done_upload(aborted=not self.complete)  # a half-read reply cannot be reused


class _Spooled(PackStream):
    """A source's pack written to an unnamed temporary file first (``--spool``), then read back:
    the target's request starts only when the slow source is done, so an HTTP target that gives
    up on a silent upload (GitHub answers 408) never waits on it. Memory stays flat; the file
    has no name and is gone when it is closed."""

    def __init__(self, pack: _SourcePack, reporter: Reporter) -> None:
        super().__init__(None, pack.limit_source)
        import tempfile

        try:
            self.file = tempfile.TemporaryFile(prefix="git-relay-spool-")
        except OSError as exc:
            pack.stop()
            raise _spool_failure(exc, pack.sent) from exc
        try:
            for chunk in pack:  # the source's limit is enforced on the way in
                try:
                    self.file.write(chunk)
                except OSError as exc:  # (the spool's own write only: the source's failures say themselves)
                    raise _spool_failure(exc, pack.sent) from exc
        except BaseException:
            self.file.close()
            raise
        finally:
            pack.stop()
        reporter.trace(f"spooled {pack.sent} bytes of the source's pack")
        self.file.seek(0)

    def _chunks(self) -> Iterator[bytes]:
        while True:
            data = self.file.read(1 << 20)
            if not data:
                return
            yield data

    def stop(self) -> None:
        self.file.close()


def _spool_failure(exc: OSError, written: int) -> RelayError:
    import tempfile

    return RelayError(f"cannot spool the source's pack in {tempfile.gettempdir()} after {written} bytes: {exc.strerror or exc}",
                      "free space there, or set TMPDIR to a directory with room for the whole pack (or run without --spool); "
                      "nothing was pushed")


class RemoteHistory:
    """The source remote as the split engine's ``History``: its commit graph is known, not its sizes."""

    def __init__(self, source: Session, reporter: Reporter, spool: bool = False) -> None:
        self.source = source
        self.reporter = reporter
        self.spool = spool

    def chain(self, tip: str, target_haves: list[str]) -> list[str]:
        """One commit-only fetch (have = every target tip, so a resumed run sees only what is missing)."""
        service, adv = self.source.take_upload()
        if not supports_filter(adv):
            raise UnsupportedError("splitting a relay needs a source that allows filtered fetches (uploadpack.allowFilter)",
                                   "enable uploadpack.allowFilter on the source, or raise the target's size limit")
        quiet = self.reporter.quiet()
        with Scratch(self.source.ctx.env) as scratch:
            fetch_pack(service, adv, scratch.git, quiet, [tip], target_haves, include_tag=False, check_connectivity=False,
                       host_label="git-relay", filter_spec="tree:0", thin=True)  # commits only: nothing for a thin pack to lean on
            self.source.done_upload()
            return first_parent_chain(scratch.parents(), tip)

    def estimate(self, tip: str, base: list[str]) -> int | None:
        return None

    def describe(self, commit: str, base: list[str]) -> str:
        return commit[:12]  # only the commit graph is known here, not its files

    def prepare(self, updates: list[RefUpdate], base: list[str], ofs_delta: bool) -> PackStream | None:
        return None  # the pack comes from the source remote, per request

    def send(self, service: Service, adv: Advertisement, updates: list[RefUpdate], opts: PushOptions,
             limit: int | None, limit_source: str, prepared: PackStream | None = None) -> tuple[int, int | None]:
        wants = list(dict.fromkeys(u.new for u in updates if u.new != ZERO_OID))
        haves = target_haves(adv)
        stream: PackStream | None = None
        if wants and all(w in set(haves) for w in wants):
            stream = _Bytes(EMPTY_PACK)
        elif wants:
            sservice, sadv = self.source.take_upload()
            # thin, as git push sends: deltas may use only objects of the haves the source shares
            # with us, all of them the target's, and receive-pack completes a thin pack (some
            # servers, dulwich's among them, even refuse a client that does not take thin packs);
            # ofs-delta only if the target takes it
            request = fetch_request(sadv, wants, haves, progress=self.reporter.progress, include_tag=False, thin=True,
                                    ofs_delta=adv.has("ofs-delta"))
            stream = _SourcePack(self.source, sservice, sadv, request, self.reporter, limit, limit_source)
            if self.spool:
                stream = _Spooled(stream, self.reporter)
        try:
            return exchange(service, adv, updates, opts, self.reporter, stream)
        finally:
            if stream is not None:
                stream.stop()


def _as_json(u: RefUpdate) -> dict[str, Any]:
    return {"src": u.src or None, "dst": u.dst, "old": u.old, "new": u.new, "action": u.action,
            "mode": u.mode, "reason": u.reason, "result": u.result}


def _relay(source: Session, target: Session, plans: list[RefUpdate], *, atomic: bool, limit: int | None,
           reporter: Reporter, interval: float = 0.0, spool: bool = False, max_push: int | None = None,
           limit_name: str = "--max-pack-bytes") -> tuple[int, int | None]:
    """Push every create/update/force/delete in ``plans`` with the source's pack; set results."""
    todo = [p for p in plans if p.action in PUSHED_ACTIONS]
    if not todo:
        return 0, None
    first = target.receive()
    tadv = first[1]
    if any(p.action == "delete" for p in todo) and not tadv.has("delete-refs"):
        raise UnsupportedError("the target does not allow deleting refs (no delete-refs)", "run without --prune")
    if atomic and not tadv.has("atomic"):
        raise UnsupportedError("the target does not support atomic pushes", "run without --atomic")
    try:
        learning = Learning(Limits(target.ctx.env), limit_key(target.url))
        sent, objects = push_or_split(RemoteHistory(source, reporter, spool), target.new_receive, first, todo, PushOptions(atomic=atomic),
                                      reporter, max_pack=limit, max_push=max_push, max_pack_name=limit_name, learning=learning,
                                      interval=interval)
    finally:
        target.release_receive()
    for p in todo:
        p.result = "ok" if p.ok else (p.error or "rejected")
    return sent, objects


def _already_there(target: Session, plans: list[RefUpdate], reporter: Reporter) -> None:
    """A ref update the target refused that it has all the same (another run of this pair, a
    retried shard, pushed the same value first): the goal is reached, so it is ``ok``."""
    failed = [p for p in plans if p.action in PUSHED_ACTIONS and p.result != "ok"]
    if not failed:
        return
    try:
        service, adv = target.new_receive()
        service.dismiss()
    except RelayError:
        return  # the refusal stands as reported
    for p in failed:
        now = adv.refs.get(p.dst, ZERO_OID)
        if now == p.new:
            reporter.say(f"relay: {p.dst}: the target has {p.new[:12]} already (another run pushed it first): ok")
            p.result = "ok"


def _lfs(source: Session, target: Session, plans: list[RefUpdate], reporter: Reporter, dry_run: bool,
         lfs_urls: tuple[str | None, str | None], history: bool = False) -> LfsReport | None:
    """Before any ref moves (as git-lfs's pre-push hook does): the LFS objects named by the blobs
    that move, and those the target lacks copied from the source (only counted for a plan).
    None: the source could not show them, which is said. The source's LFS server: the one given,
    else the ``lfs.url`` of its ``.lfsconfig`` (as git-lfs reads it), else where git-lfs looks."""
    wants = list(dict.fromkeys(p.new for p in plans if p.action in PUSHED_ACTIONS and p.new != ZERO_OID))
    report = LfsReport()
    if not wants:
        return report
    pointers, configured = find_pointers(source, wants, target_haves(target.receive()[1]), reporter, history=history)
    if pointers is None:
        return None  # (said: the commits are relayed, their LFS objects are not)
    if configured and not configured.startswith(("http://", "https://")):
        reporter.warn(f"the source's .lfsconfig names lfs.url '{configured}', which git relay cannot use (http(s) only); "
                      "using the source's own LFS server (--source-lfs-url chooses another)")
        configured = None
    if pointers:
        copy_objects(source, target, pointers, report, reporter, dry_run=dry_run, apis=(lfs_urls[0] or configured, lfs_urls[1]))
        if report.copied:
            target.release_receive(used=False)  # idle while objects moved: the relay opens a fresh one
    return report


def probe(session: Session, push: bool) -> dict[str, Any]:
    adv = session.upload(listed=True)[1]
    info: dict[str, Any] = {
        "url": session.url.redacted,
        "protocol": adv.version,
        "object_format": adv.caps.get("object-format") or "sha1",
        "capabilities": sorted(k if v is None else f"{k}={v}" for k, v in adv.caps.items() if k != "symref"),
        "head": adv.symrefs.get("HEAD"),
        "refs": dict(adv.refs),
        "peeled": dict(adv.peeled),
        "size_limit": Limits(session.ctx.env).get(limit_key(session.url)).describe(),
        "lfs": lfs_location(session),
    }
    session.close_upload()
    if push:
        try:
            tadv = session.receive()[1]
            info["push_capabilities"] = sorted(k if v is None else f"{k}={v}" for k, v in tadv.caps.items())
        except RelayError as exc:
            info["push_capabilities"] = f"unavailable: {exc.message or 'see above'}"
        finally:
            session.release_receive(used=False)
    return info


def run_sync(source: Session, target: Session, selection: Selection, *, force_with_lease: bool = False, prune: bool = False,
             atomic: bool = False, limit: int | None = None, dry_run: bool = False, bootstrap_only: bool = False,
             reporter: Reporter, split_interval: float = 0.0, spool: bool = False, lfs: bool = True, lfs_history: bool = False,
             lfs_urls: tuple[str | None, str | None] = (None, None), max_push: int | None = None,
             limit_name: str = "--max-pack-bytes") -> dict[str, Any]:
    """Plan, refuse what is blocked, copy the LFS objects the moving commits name (unless not
    ``lfs``), relay the rest. Returns the run's record (see ``--json``). ``limit`` aborts a pack
    that grows past it (named ``limit_name`` when it does); ``max_push`` splits the push into
    steps of about that size (relay.maxPushBytes), as the helper's pushes do."""
    try:
        return _run_sync(source, target, selection, force_with_lease=force_with_lease, prune=prune, atomic=atomic, limit=limit,
                         dry_run=dry_run, bootstrap_only=bootstrap_only, reporter=reporter, interval=split_interval, spool=spool,
                         lfs=lfs, lfs_history=lfs_history, lfs_urls=lfs_urls, max_push=max_push, limit_name=limit_name)
    except DumbHttpError as exc:  # what the helper hands to git's remote-http, git relay has no one to hand to
        raise UnsupportedError(exc.message, "git relay cannot use it; mirror this repository with git itself "
                               "(git clone --mirror, then git push --mirror)") from exc
    except ShallowRemoteError as exc:
        raise UnsupportedError(
            f"the source repository is shallow: its history stops at {len(exc.shallow)} commit(s) "
            f"({', '.join(o[:12] for o in exc.shallow[:3])}), so it cannot be relayed",
            "a target needs the whole history: relay from a complete copy (run 'git fetch --unshallow' in the source first)",
        ) from exc
    finally:
        source.close()
        target.close()


def _run_sync(source: Session, target: Session, selection: Selection, *, force_with_lease: bool, prune: bool,
              atomic: bool, limit: int | None, dry_run: bool, bootstrap_only: bool, reporter: Reporter,
              interval: float, spool: bool = False, lfs: bool = True, lfs_history: bool = False,
              lfs_urls: tuple[str | None, str | None] = (None, None), max_push: int | None = None,
              limit_name: str = "--max-pack-bytes") -> dict[str, Any]:
    started = time.monotonic()
    plans, mode = plan(source, target, selection, force_with_lease=force_with_lease, prune=prune, reporter=reporter)
    if bootstrap_only and mode != "bootstrap":
        existing = [p.dst for p in plans if p.old != ZERO_OID]
        raise RelayError(f"the target already has managed refs ({', '.join(existing[:5])}); bootstrap only seeds an empty target",
                         "use git relay sync to update it")
    blocked = [p for p in plans if p.action == "blocked"]
    sent, objects = 0, None
    status = "ok"
    lfs_report = _lfs(source, target, plans, reporter, dry_run, lfs_urls, lfs_history) if lfs and not blocked else None
    if blocked:
        status = "blocked"
        for p in plans:
            p.result = "blocked" if p.action == "blocked" else "not pushed (other refs are blocked)"
    elif dry_run:
        status = "planned"
    else:
        sent, objects = _relay(source, target, plans, atomic=atomic, limit=limit, reporter=reporter, interval=interval, spool=spool,
                               max_push=max_push, limit_name=limit_name)
        for p in plans:
            if p.action in ("up-to-date", "keep"):
                p.result = "ok"
        _already_there(target, plans, reporter)
        if any(p.result != "ok" for p in plans):
            status = "failed"
    from .ui import peak_rss

    own, children = peak_rss()
    return {
        "source": source.url.redacted,
        "target": target.url.redacted,
        "mode": mode,
        "status": status,
        "refs": [_as_json(p) for p in plans],
        "objects": objects,
        "bytes": sent,
        "lfs": lfs_report.as_json() if lfs_report is not None else None,
        "elapsed": round(time.monotonic() - started, 3),
        "peak_rss": own,
        "peak_rss_children": children,
        "throttled": sorted(source.ctx.throttled | target.ctx.throttled),
    }
