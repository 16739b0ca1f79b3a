"""``git relay``'s decision per managed ref, made before anything is pushed.

* absent on the target -> ``create``; equal -> ``up-to-date``;
* a branch whose target tip is an ancestor of the source tip -> ``update`` (fast-forward), proven
  with one commit-only fetch (``filter tree:0``) whose only have is that target tip, indexed in a
  scratch directory: the update is a fast-forward iff some fetched commit has the target tip as a
  parent (another target ref pointing into the range cannot hide it: it is not a have there);
* anything else (diverged branch, moved tag, ref gone from the source) -> ``blocked`` with the
  reason, unless ``--force-with-lease`` (``force``: the advertised old value is sent, so a target
  that moved since refuses) or ``--prune`` (``delete``); gone and not pruned -> ``keep``.

Mode: ``bootstrap`` when no managed ref exists on the target, else ``incremental``.
"""

from __future__ import annotations

from .errors import RemoteError, ShallowRemoteError, TransportError
from .fetch import fetch_pack
from .history import Scratch
from .protocol import ZERO_OID, supports_filter
from .push import RefUpdate
from .selection import Selection, kind
from .transport.session import Session
from .ui import Reporter

__all__ = ["plan", "prove_fast_forward", "PUSHED_ACTIONS"]

# The actions that make a ref update on the target (the others are reported only).
PUSHED_ACTIONS = ("create", "update", "force", "delete")


def prove_fast_forward(source: Session, old: str, new: str, scratch: Scratch, reporter: Reporter) -> bool:
    """Is ``old`` an ancestor of ``new`` on the source? One commit-only fetch, have = {old}."""
    _, adv = source.upload()
    filter_spec = "tree:0" if supports_filter(adv) else None
    if filter_spec is None and not scratch.warned:
        scratch.warned = True
        reporter.warn(
            "the source does not allow filtered fetches (uploadpack.allowFilter): proving a fast-forward fetches the new history in full"
        )

    def fetch(haves: list[str], thin: bool) -> None:
        service, adv = source.take_upload()
        fetch_pack(service, adv, scratch.git, reporter.quiet(), [new], haves, include_tag=False, check_connectivity=False,
                   host_label="git-relay", filter_spec=filter_spec, thin=thin)
        source.done_upload()

    # Thin, as git asks, where that is safe: a commits-only pack has nothing to lean on outside it
    # (a thin pack's outside bases are trees and blobs). A full pack into the scratch repository
    # must be self-contained, so it is asked for without thin-pack; a server that refuses such a
    # client (dulwich's does) is asked again, thin and with no haves: all of ``new``'s history.
    if filter_spec is not None:
        fetch([old], True)
    else:
        try:
            fetch([old], False)
        except (TransportError, RemoteError) as exc:
            source.done_upload(aborted=True)
            reporter.trace(f"the source refused a fetch without thin-pack ({exc.message}): fetching all of {new[:12]}'s history")
            fetch([], True)
    return any(old in parents for parents in scratch.parents().values())


def _update(src: str, dst: str, new: str, old: str, action: str, reason: str) -> RefUpdate:
    return RefUpdate(src=src, dst=dst, force=action == "force", new=new, old=old, action=action, reason=reason)


def _decide(
    source: Session, src: str, dst: str, new: str, old: str, get_scratch: "ScratchHolder", force_with_lease: bool, reporter: Reporter
) -> RefUpdate:
    if old == ZERO_OID:
        return _update(src, dst, new, old, "create", f"new {kind(dst)}")
    if old == new:
        return _update(src, dst, new, old, "up-to-date", "same object on both sides")
    if kind(dst) == "branch":
        if prove_fast_forward(source, old, new, get_scratch.get(source), reporter):
            return _update(src, dst, new, old, "update", "fast-forward")
        if force_with_lease:
            return _update(src, dst, new, old, "force", "not a fast-forward; --force-with-lease")
        return _update(src, dst, new, old, "blocked", "the target has diverged (not a fast-forward); use --force-with-lease to overwrite")
    if force_with_lease:
        return _update(src, dst, new, old, "force", f"{kind(dst)} moved; --force-with-lease")
    return _update(src, dst, new, old, "blocked", f"the {kind(dst)} points elsewhere on the target; use --force-with-lease to move it")


class ScratchHolder:
    """One scratch repository for all the proofs of a plan, made on first use."""

    def __init__(self) -> None:
        self.scratch: Scratch | None = None

    def get(self, source: Session) -> Scratch:
        if self.scratch is None:
            self.scratch = Scratch(source.ctx.env)
        return self.scratch

    def close(self) -> None:
        if self.scratch is not None:
            self.scratch.close()


def plan(
    source: Session, target: Session, selection: Selection, *, force_with_lease: bool, prune: bool, reporter: Reporter
) -> tuple[list[RefUpdate], str]:
    """Per-ref decisions and the relay mode (``bootstrap`` or ``incremental``)."""
    sadv = source.upload(listed=True)[1]
    if sadv.shallow:
        raise ShallowRemoteError("the source repository is shallow", shallow=sadv.shallow)
    tadv = target.receive()[1]
    src_refs = {k: v for k, v in sadv.refs.items() if k != "HEAD" and not k.endswith("^{}")}
    tgt_refs = dict(tadv.refs)
    pairs = selection.pairs(src_refs)
    for prefix, count in selection.forge_owned(src_refs).items():
        reporter.warn(f"skipping {count} ref(s) under {prefix}: a forge writes that namespace itself and refuses pushes to it")
    # the source's default branch first: forges pick a new repository's default from the first push
    head = sadv.symrefs.get("HEAD")
    pairs.sort(key=lambda p: (p[0] != head, p[1]))
    managed_on_target = [r for r in tgt_refs if selection.managed(r)]
    mode = "bootstrap" if not managed_on_target else "incremental"
    scratch = ScratchHolder()
    try:
        plans = [
            _decide(source, src, dst, src_refs[src], tgt_refs.get(dst, ZERO_OID), scratch, force_with_lease, reporter) for src, dst in pairs
        ]
    finally:
        scratch.close()
    wanted = {dst for _, dst in pairs}
    for dst in managed_on_target:
        if dst in wanted:
            continue
        if prune:
            plans.append(_update("", dst, ZERO_OID, tgt_refs[dst], "delete", "gone from the source; --prune"))
        else:
            plans.append(_update("", dst, ZERO_OID, tgt_refs[dst], "keep", "not on the source (use --prune to delete)"))
    for p in plans:
        p.mode = (
            mode if p.action in ("create", "update") else ("lease" if p.action == "force" else "prune" if p.action == "delete" else "none")
        )
    return plans, mode
