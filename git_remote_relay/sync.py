"""Remote-to-remote relay: plan per ref, then stream the source's pack into the target.

No local clone: the source's upload-pack reply is demultiplexed and its pack bytes go straight
into the target's receive-pack request. Decisions per managed ref:

* absent on the target -> ``create``; equal -> ``up-to-date``;
* a branch whose target tip is an ancestor of the source tip -> ``update`` (fast-forward), proven
  with one commit-only fetch (``filter tree:0``) whose only have is that target tip, indexed in a
  scratch directory: the update is a fast-forward iff some fetched commit has the target tip as a
  parent (another target ref pointing into the range cannot hide it: it is not a have there);
* anything else (diverged branch, moved tag, ref gone from the source) -> ``blocked`` with the
  reason, unless ``--force-with-lease`` (the advertised old value is sent, so a target that moved
  since refuses) or ``--prune`` (deletes).

Mode: ``bootstrap`` when no managed ref exists on the target, else ``incremental``. The relayed
fetch sends every target tip as a have, so the source sends only what the target lacks.
"""

from __future__ import annotations

import time
from typing import Any, Iterator, Mapping

from .errors import PackError, RelayError, ShallowRemoteError, UnsupportedError, UrlError
from .gitcmd import Config, Git
from .history import Scratch, first_parent_chain
from .pktline import FLUSH
from .protocol import ZERO_OID, Advertisement, fetch_request, ls_refs_request, read_fetch_preamble, read_ls_refs, supports_filter
from .push import PackStream, PackTooLarge, PushOptions, RefUpdate, exchange
from .transport import Context, Remote, Service
from .transport.base import timeout_setting
from .ui import Reporter
from .url import InnerUrl, check_allowed, parse

__all__ = ["Endpoint", "Selection", "RefPlan", "plan", "run_sync", "probe", "EMPTY_PACK"]

# A valid pack with no objects: "PACK", version 2, 0 objects, SHA-1 of those 12 bytes. Strict
# servers want a pack with every non-delete command, even when the objects are already there.
EMPTY_PACK = bytes.fromhex("5041434b0000000200000000029d08823bd8a8eab510ad6ac75c823cfd3ed31e")


class Endpoint:
    """One side of the relay: its URL, transport, and the advertisement of one service."""

    def __init__(self, address: str, env: Mapping[str, str], config: Config, reporter: Reporter) -> None:
        self.url: InnerUrl = parse(address[len("relay::"):] if address.startswith("relay::") else address)
        check_allowed(self.url.scheme, env, config.values)
        git = Git({k: v for k, v in env.items() if k not in ("GIT_DIR", "GIT_WORK_TREE")})
        self.ctx = Context(env=env, git=git, config=config, trace=reporter.trace, timeout=timeout_setting(env, config))
        self.remote = Remote(self.url, self.ctx)
        self.service: Service | None = None
        self.adv: Advertisement | None = None
        self.fresh = False

    def open(self, service: str) -> tuple[Service, Advertisement]:
        """(Re)open ``service``; a v2 stream or HTTP is reused, a used v0 stream is replaced."""
        if self.service is not None and self.adv is not None:
            if self.service.stateless or self.adv.version == 2 or self.fresh:
                return self.service, self.adv
            self.close()
        svc, adv = self.remote.connect(service)
        try:
            if service == "upload-pack" and adv.version == 2:
                read_ls_refs(svc.request([ls_refs_request(adv)]), adv)
        except BaseException:
            svc.close()
            raise
        self.service, self.adv, self.fresh = svc, adv, True
        return svc, adv

    def close(self) -> None:
        if self.service is not None:
            if self.fresh and self.adv is not None and self.adv.version == 0 and not self.service.stateless:
                try:
                    self.service.request([FLUSH.wire])
                    self.service.wait_sent()
                except RelayError:
                    pass
            self.service.close()
            self.service = None


# -- ref selection (pure) ---------------------------------------------------------------------------

def _kind(ref: str) -> str:
    return "branch" if ref.startswith("refs/heads/") else "tag" if ref.startswith("refs/tags/") else "other"


def _full(name: str) -> str:
    if name.startswith("refs/"):
        return name
    if not name or name.startswith(("heads/", "tags/", "-")):
        raise UrlError(f"ambiguous ref name '{name}'", "use a branch name like 'main' or a full ref like 'refs/tags/v1'")
    return "refs/heads/" + name


class Selection:
    """Which refs are managed and where they go. Validated before any network traffic."""

    def __init__(self, branches: list[str] | None = None, maps: list[str] | None = None, tags: bool = False, all_refs: bool = False, excludes: list[str] | None = None) -> None:
        self.branches = [_full(b) for b in (branches or [])]
        self.tags = tags
        self.all_refs = all_refs
        self.excludes = list(excludes or [])
        self.maps: list[tuple[str, str]] = []
        seen: dict[str, str] = {}
        for spec in maps or []:
            src, sep, dst = spec.partition(":")
            if not sep or not src or not dst:
                raise UrlError(f"bad --map '{spec}'", "write it as SRC:DST, e.g. --map main:stable")
            if src.startswith("refs/") != dst.startswith("refs/"):
                raise UrlError(f"ambiguous --map '{spec}': mixes a short name and a full ref", "use two short branch names or two full refs")
            full_src, full_dst = _full(src), _full(dst)
            if _kind(full_src) != _kind(full_dst):
                raise UrlError(f"--map '{spec}' maps a {_kind(full_src)} to a {_kind(full_dst)}", "map branches to branches and tags to tags")
            if full_dst in seen:
                raise UrlError(f"--map '{spec}' and --map '{seen[full_dst]}' both write {full_dst}", "each target ref can have one source")
            seen[full_dst] = spec
            self.maps.append((full_src, full_dst))

    def managed(self, ref: str) -> bool:
        """Is this target ref ours to create, update or prune?"""
        if ref == "HEAD" or ref.endswith("^{}") or ref.startswith("refs/relay/") or any(ref.startswith(p) for p in self.excludes):
            return False
        if self.maps:
            return any(ref == dst for _, dst in self.maps)
        if self.all_refs:
            return ref.startswith("refs/")
        if self.branches:
            return ref in self.branches or (self.tags and ref.startswith("refs/tags/"))
        return ref.startswith("refs/heads/") or (self.tags and ref.startswith("refs/tags/"))

    def pairs(self, source_refs: Mapping[str, str]) -> list[tuple[str, str]]:
        if self.maps:
            missing = [src for src, _ in self.maps if src not in source_refs]
            if missing:
                raise UrlError(f"the source has no {', '.join(missing)}", "check the --map source names (git relay probe SOURCE)")
            return list(self.maps)
        if self.branches:
            missing = [b for b in self.branches if b not in source_refs]
            if missing:
                raise UrlError(f"the source has no {', '.join(missing)}", "check --branch (git relay probe SOURCE)")
        return [(ref, ref) for ref in source_refs if self.managed(ref)]


# -- planning -----------------------------------------------------------------------------------------

class RefPlan:
    def __init__(self, src: str | None, dst: str, new: str, old: str, action: str, reason: str) -> None:
        self.src, self.dst, self.new, self.old = src, dst, new, old
        self.action, self.reason = action, reason
        self.mode = ""
        self.result = "planned"

    def to_json(self) -> dict[str, Any]:
        return {"src": self.src, "dst": self.dst, "old": self.old, "new": self.new, "action": self.action,
                "mode": self.mode, "reason": self.reason, "result": self.result}


def prove_fast_forward(source: Endpoint, old: str, new: str, scratch: Scratch, reporter: Reporter) -> bool:
    """Is ``old`` an ancestor of ``new`` on the source? One commit-only fetch, have = {old}."""
    from .fetch import fetch_pack

    service, adv = source.open("upload-pack")
    source.fresh = False
    filter_spec = "tree:0" if supports_filter(adv) else None
    if filter_spec is None and not scratch.warned:
        scratch.warned = True
        reporter.warn("the source does not allow filtered fetches (uploadpack.allowFilter): proving a fast-forward fetches the new history in full")
    quiet = Reporter(reporter.stream, verbosity=0, progress=False, trace=reporter.tracing)
    fetch_pack(service, adv, scratch.git, quiet, [new], [old], include_tag=False, check_connectivity=False,
               host_label="git-relay", filter_spec=filter_spec, thin=False)
    if adv.version == 0 and not service.stateless:
        source.close()
    return any(old in parents for parents in scratch.parents().values())


def plan(source: Endpoint, target: Endpoint, selection: Selection, *, force_with_lease: bool, prune: bool, reporter: Reporter) -> tuple[list[RefPlan], str]:
    """Per-ref decisions and the relay mode (``bootstrap``, ``incremental`` or ``none``)."""
    _, sadv = source.open("upload-pack")
    if sadv.shallow:
        raise ShallowRemoteError("the source repository is shallow", shallow=sadv.shallow)
    _, tadv = target.open("receive-pack")
    src_refs = {k: v for k, v in sadv.refs.items() if k != "HEAD" and not k.endswith("^{}")}
    tgt_refs = dict(tadv.refs)
    pairs = selection.pairs(src_refs)
    # the source's default branch first: forges pick a new repository's default from the first push
    head = sadv.symrefs.get("HEAD")
    pairs.sort(key=lambda p: (p[0] != head, p[1]))
    managed_on_target = [r for r in tgt_refs if selection.managed(r)]
    mode = "bootstrap" if not managed_on_target else "incremental"
    plans: list[RefPlan] = []
    scratch: Scratch | None = None
    try:
        for src, dst in pairs:
            new, old = src_refs[src], tgt_refs.get(dst, ZERO_OID)
            if old == ZERO_OID:
                plans.append(RefPlan(src, dst, new, old, "create", f"new {_kind(dst)}"))
            elif old == new:
                plans.append(RefPlan(src, dst, new, old, "up-to-date", "same object on both sides"))
            elif _kind(dst) == "branch":
                if scratch is None:
                    scratch = Scratch(source.ctx.env)
                if prove_fast_forward(source, old, new, scratch, reporter):
                    plans.append(RefPlan(src, dst, new, old, "update", "fast-forward"))
                elif force_with_lease:
                    plans.append(RefPlan(src, dst, new, old, "force", "not a fast-forward; --force-with-lease"))
                else:
                    plans.append(RefPlan(src, dst, new, old, "blocked", "the target has diverged (not a fast-forward); use --force-with-lease to overwrite"))
            elif force_with_lease:
                plans.append(RefPlan(src, dst, new, old, "force", f"{_kind(dst)} moved; --force-with-lease"))
            else:
                plans.append(RefPlan(src, dst, new, old, "blocked", f"the {_kind(dst)} points elsewhere on the target; use --force-with-lease to move it"))
        wanted = {dst for _, dst in pairs}
        for dst in managed_on_target:
            if dst in wanted:
                continue
            if prune:
                plans.append(RefPlan(None, dst, ZERO_OID, tgt_refs[dst], "delete", "gone from the source; --prune"))
            else:
                plans.append(RefPlan(None, dst, ZERO_OID, tgt_refs[dst], "keep", "not on the source (use --prune to delete)"))
    finally:
        if scratch is not None:
            scratch.close()
    for p in plans:
        p.mode = mode if p.action in ("create", "update") else ("lease" if p.action == "force" else "prune" if p.action == "delete" else "none")
    return plans, mode


# -- relaying ------------------------------------------------------------------------------------------

class _SourcePack(PackStream):
    """The pack from the source's upload-pack reply, side-band removed, as it arrives."""

    def __init__(self, source: Endpoint, service: Service, adv: Advertisement, request: bytes, reporter: Reporter, limit: int | None) -> None:
        super().__init__(limit, "--max-pack-bytes")
        self.source = source
        self.service = service
        self.adv = adv
        self.request = request
        self.reporter = reporter
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

    def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            self.source.close()  # a half-read reply cannot be reused


def relay(source: Endpoint, target: Endpoint, plans: list[RefPlan], *, atomic: bool, limit: int | None, reporter: Reporter) -> tuple[int, int | None]:
    """Push every create/update/force/delete in ``plans`` with the source's pack; set results."""
    todo = [p for p in plans if p.action in ("create", "update", "force", "delete", "cleanup")]
    if not todo:
        return 0, None
    tservice, tadv = target.open("receive-pack")
    if any(p.action == "delete" for p in todo) and not tadv.has("delete-refs"):
        raise UnsupportedError("the target does not allow deleting refs (no delete-refs)", "run without --prune")
    if atomic and not tadv.has("atomic"):
        raise UnsupportedError("the target does not support atomic pushes", "run without --atomic")
    updates = [RefUpdate(src=p.src or "", dst=p.dst, force=p.action == "force", new=p.new, old=p.old) for p in todo]
    wants = list(dict.fromkeys(p.new for p in todo if p.new != ZERO_OID))
    target_has = set(tadv.refs.values()) | set(tadv.extra_haves)
    stream: PackStream | None = None
    if wants:
        if all(w in target_has for w in wants):
            stream = _Bytes(EMPTY_PACK)
        else:
            sservice, sadv = source.open("upload-pack")
            source.fresh = False
            haves = list(dict.fromkeys([*tadv.refs.values(), *tadv.extra_haves]))
            # never thin (the target gets a self-contained pack); ofs-delta only if the target takes it
            request = fetch_request(sadv, wants, haves, progress=reporter.progress, include_tag=False, thin=False, ofs_delta=tadv.has("ofs-delta"))
            stream = _SourcePack(source, sservice, sadv, request, reporter, limit)
    target.fresh = False
    try:
        sent, objects = exchange(tservice, tadv, updates, PushOptions(atomic=atomic), reporter, stream)
    finally:
        target.close()
    for p, u in zip(todo, updates):
        p.result = "ok" if u.ok else (u.error or "rejected")
    return sent, objects


def _split_ref(dst: str) -> str:
    from .batch import split_ref

    return split_ref(dst)


def split_branch(source: Endpoint, target: Endpoint, p: RefPlan, *, limit: int | None, reporter: Reporter) -> int:
    """Relay ``p``'s new history in steps onto ``refs/relay/split/<dst>``; return bytes sent.

    The chain comes from one commit-only fetch (have = every target tip, so a resumed run only
    sees what is still missing). Steps start at half the chain and halve on each size refusal.
    """
    from .fetch import fetch_pack

    scratch = Scratch(source.ctx.env)
    try:
        _, tadv = target.open("receive-pack")
        haves = list(dict.fromkeys([*tadv.refs.values(), *tadv.extra_haves]))
        target.close()
        service, sadv = source.open("upload-pack")
        source.fresh = False
        if not supports_filter(sadv):
            raise UnsupportedError("splitting a relay needs a source that allows filtered fetches (uploadpack.allowFilter)",
                                   "enable uploadpack.allowFilter on the source, or raise the target's size limit")
        quiet = Reporter(reporter.stream, verbosity=0, progress=False, trace=reporter.tracing)
        fetch_pack(service, sadv, scratch.git, quiet, [p.new], haves, include_tag=False, check_connectivity=False,
                   host_label="git-relay", filter_spec="tree:0", thin=False)
        if sadv.version == 0 and not service.stateless:
            source.close()
        chain = first_parent_chain(scratch.parents(), p.new)
    finally:
        scratch.close()
    tmp = _split_ref(p.dst)
    step_size, i, sent, n = max(1, len(chain) // 2), 0, 0, 0
    while i < len(chain):
        j = min(len(chain) - 1, i + step_size - 1)
        _, tadv = target.open("receive-pack")
        step = RefPlan(None, tmp, chain[j], tadv.refs.get(tmp, ZERO_OID), "force", "split step")
        n += 1
        reporter.say(f"relay: {p.dst}: step {n}, {j + 1}/{len(chain)} commits")
        try:
            more, _ = relay(source, target, [step], atomic=False, limit=limit, reporter=reporter)
        except PackTooLarge as exc:
            if exc.ours:
                raise
            if step_size == 1:
                raise PackError(f"the target refuses even one commit of {p.dst} ({chain[j][:12]}) for its size",
                                "raise the target's limit; nothing of your refs was changed") from exc
            step_size //= 2
            reporter.say(f"relay: the target refused the step; steps of {step_size} commits now")
            continue
        if step.result != "ok":
            raise PackError(f"split step {n} of {p.dst} was refused by the target: {step.result}",
                            "nothing of your refs was changed; run the same command again to resume")
        sent += more
        i = j + 1
    return sent


class _Bytes(PackStream):
    def __init__(self, data: bytes) -> None:
        super().__init__(None, "")
        self.data = data

    def _chunks(self) -> Iterator[bytes]:
        yield self.data


def relay_or_split(source: Endpoint, target: Endpoint, plans: list[RefPlan], *, atomic: bool, limit: int | None, reporter: Reporter) -> tuple[int, int | None]:
    """``relay``, and when the target refuses the pack for its size, split each branch into steps
    first (resumable: the steps live on ``refs/relay/split/*``), then push the refs themselves."""
    try:
        return relay(source, target, plans, atomic=atomic, limit=limit, reporter=reporter)
    except PackTooLarge as exc:
        if exc.ours:
            raise
        reporter.say(f"relay: the target refused a {exc.sent}-byte pack for its size; relaying in steps")
        target.close()
        source.close()
    sent = 0
    for p in plans:
        if p.action in ("create", "update", "force") and _kind(p.dst) == "branch":
            sent += split_branch(source, target, p, limit=limit, reporter=reporter)
    _, tadv = target.open("receive-pack")
    cleanup = [RefPlan(None, ref, ZERO_OID, oid, "cleanup", "split helper ref") for ref, oid in tadv.refs.items() if ref.startswith("refs/relay/split/")]
    more, objects = relay(source, target, plans + (cleanup if tadv.has("delete-refs") else []), atomic=atomic, limit=limit, reporter=reporter)
    for c in cleanup:
        if c.result != "ok":
            reporter.warn(f"could not remove the helper ref {c.dst} on the target: {c.result}")
    return sent + more, objects


def probe(endpoint: Endpoint, push: bool) -> dict[str, Any]:
    service, adv = endpoint.open("upload-pack")
    info: dict[str, Any] = {
        "url": endpoint.url.redacted,
        "protocol": adv.version,
        "object_format": adv.caps.get("object-format") or "sha1",
        "capabilities": sorted(k if v is None else f"{k}={v}" for k, v in adv.caps.items() if k != "symref"),
        "head": adv.symrefs.get("HEAD"),
        "refs": {k: v for k, v in adv.refs.items()},
        "peeled": dict(adv.peeled),
    }
    endpoint.close()
    if push:
        try:
            _, tadv = endpoint.open("receive-pack")
            info["push_capabilities"] = sorted(k if v is None else f"{k}={v}" for k, v in tadv.caps.items())
        except RelayError as exc:
            info["push_capabilities"] = f"unavailable: {exc.message}"
        finally:
            endpoint.close()
    return info


def run_sync(source: Endpoint, target: Endpoint, selection: Selection, *, force_with_lease: bool = False, prune: bool = False,
             atomic: bool = False, limit: int | None = None, dry_run: bool = False, bootstrap_only: bool = False, reporter: Reporter) -> dict[str, Any]:
    """Plan, refuse what is blocked, relay the rest. Returns the run's record (see ``--json``)."""
    try:
        return _run_sync(source, target, selection, force_with_lease=force_with_lease, prune=prune, atomic=atomic, limit=limit,
                         dry_run=dry_run, bootstrap_only=bootstrap_only, reporter=reporter)
    except ShallowRemoteError as exc:
        raise UnsupportedError(
            f"the source repository is shallow: its history stops at {len(exc.shallow)} commit(s) ({', '.join(o[:12] for o in exc.shallow[:3])}), so it cannot be relayed",
            "a target needs the whole history: relay from a complete copy (run 'git fetch --unshallow' in the source first)",
        ) from exc


def _run_sync(source: Endpoint, target: Endpoint, selection: Selection, *, force_with_lease: bool, prune: bool,
              atomic: bool, limit: int | None, dry_run: bool, bootstrap_only: bool, reporter: Reporter) -> dict[str, Any]:
    started = time.monotonic()
    plans, mode = plan(source, target, selection, force_with_lease=force_with_lease, prune=prune, reporter=reporter)
    if bootstrap_only and mode != "bootstrap":
        existing = [p.dst for p in plans if p.old != ZERO_OID]
        raise RelayError(f"the target already has managed refs ({', '.join(existing[:5])}); bootstrap only seeds an empty target",
                         "use git relay sync to update it")
    blocked = [p for p in plans if p.action == "blocked"]
    sent, objects = 0, None
    status = "ok"
    if blocked:
        status = "blocked"
        for p in plans:
            if p.action != "blocked":
                p.result = "not pushed (other refs are blocked)"
            else:
                p.result = "blocked"
    elif dry_run:
        status = "planned"
    else:
        sent, objects = relay_or_split(source, target, plans, atomic=atomic, limit=limit, reporter=reporter)
        for p in plans:
            if p.action in ("up-to-date", "keep"):
                p.result = "ok"
        if any(p.result not in ("ok",) for p in plans):
            status = "failed"
    source.close()
    target.close()
    from .ui import peak_rss

    own, children = peak_rss()
    return {
        "source": source.url.redacted,
        "target": target.url.redacted,
        "mode": mode,
        "status": status,
        "refs": [p.to_json() for p in plans],
        "objects": objects,
        "bytes": sent,
        "elapsed": round(time.monotonic() - started, 3),
        "peak_rss": own,
        "peak_rss_children": children,
    }
