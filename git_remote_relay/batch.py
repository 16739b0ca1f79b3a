"""Pushes too big for the target: split into fast-forward steps along first-parent history.

A target may refuse a pack for its size (``receive.maxInputSize``, HTTP 413, a forge's limit) or
the user may cap each push (``relay.maxPushBytes``). Then each ref's new first-parent history is
cut into steps whose estimated size (``git rev-list --disk-usage``) fits the budget. Every step is
pushed to a helper ref, ``refs/relay/split/<dst>``, so the user's ref moves only once, in the last
push, which also removes the helper ref. A run that is interrupted leaves the helper ref on the
target; the next push advertises it, it counts as a have, and the work already done is not sent
again. A step the target still refuses halves the budget and is planned again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import PackError
from .protocol import ZERO_OID, Advertisement
from .push import PackTooLarge, PushOptions, RefUpdate, _haves, send_updates
from .transport.base import Service

if TYPE_CHECKING:
    from .helper import Helper

__all__ = ["push_maybe_split", "split_ref", "SPLIT_PREFIX"]

SPLIT_PREFIX = "refs/relay/split/"
# Budget below which splitting gives up: a single commit bigger than the target's limit cannot
# be pushed by any split, and tiny steps would only multiply round trips.
MIN_BUDGET = 16 * 1024
# A reset without a reason (git daemon on receive.maxInputSize, or a broken link) is retried with
# smaller steps at most this many times, so a link that keeps failing ends in an error, not a loop.
MAX_UNEXPLAINED_RESETS = 3
RESET_HINT = ("git daemon resets the connection when a pack exceeds the target's receive.maxInputSize; if that is the cause, "
              "set relay.maxPushBytes below that limit, otherwise check the network; nothing of your refs was changed")


def split_ref(dst: str) -> str:
    return SPLIT_PREFIX + (dst[len("refs/"):] if dst.startswith("refs/") else dst)


def _max_push_bytes(helper: "Helper") -> int | None:
    return helper.size_setting("GIT_RELAY_MAX_PUSH_BYTES", "relay.maxPushBytes")


def _open(helper: "Helper") -> tuple[Service, Advertisement]:
    return helper.remote.connect("receive-pack")


def _estimate(helper: "Helper", tip: str, exclude: list[str]) -> int:
    out = helper.git.run(["rev-list", "--objects", "--disk-usage", "--stdin"], input=("\n".join([tip, *("^" + e for e in exclude)]) + "\n").encode())
    return int(out.strip() or 0)


def _plan(helper: "Helper", u: RefUpdate, haves: list[str], budget: int) -> list[str]:
    """Commits on ``u.new``'s first-parent line to push in turn, each step within ``budget``."""
    chain = helper.git.run(["rev-list", "--first-parent", "--reverse", "--stdin"], input=("\n".join([u.new, *("^" + h for h in haves)]) + "\n").encode()).decode().split()
    steps: list[str] = []
    base: list[str] = list(haves)
    start = 0
    while start < len(chain):
        lo, hi, best = start, len(chain) - 1, start
        while lo <= hi:
            mid = (lo + hi) // 2
            if _estimate(helper, chain[mid], base) <= budget:
                best, lo = mid, mid + 1
            else:
                hi = mid - 1
        steps.append(chain[best])
        base = [*haves, chain[best]]
        start = best + 1
    return steps


def push_maybe_split(helper: "Helper", service: Service, adv: Advertisement, todo: list[RefUpdate], opts: PushOptions, max_pack: int | None) -> tuple[int, int | None]:
    """Push ``todo`` at once when it fits, else in steps; return (bytes sent, objects)."""
    budget = _max_push_bytes(helper)
    limit = max_pack if budget is None else (budget if max_pack is None else min(budget, max_pack))
    source = "relay.maxPackBytes" if budget is None or (max_pack is not None and max_pack <= budget) else "relay.maxPushBytes"
    if budget is not None and max_pack is not None and max_pack < budget:
        budget = None  # the hard limit is smaller: a step could never be bigger than it anyway
    try:
        return send_updates(helper, service, adv, todo, opts, limit=limit, limit_source=source)
    except PackTooLarge as exc:
        if exc.ours and budget is None:
            raise  # relay.maxPackBytes: abort cleanly, never split
        first_sent, resets = exc.sent, int(exc.uncertain)
    finally:
        service.close()
    if budget is None:
        # the refusal came about when the pack passed the limit: start a little under it
        budget = max(first_sent * 3 // 4, MIN_BUDGET)
        if resets:
            helper.reporter.say(f"relay: the target reset the connection after {first_sent} bytes without a reason "
                                f"(git daemon does that on receive.maxInputSize); trying steps of at most ~{budget} bytes")
        else:
            helper.reporter.say(f"relay: the target refused a {first_sent}-byte pack; splitting the push (steps of at most ~{budget} bytes)")
    for u in todo:
        u.error, u.ok = None, False
    return _split(helper, todo, opts, budget, max_pack, resets)


def _split(helper: "Helper", todo: list[RefUpdate], opts: PushOptions, budget: int, max_pack: int | None, resets: int = 0) -> tuple[int, int | None]:
    total_sent, total_objects = 0, 0
    for u in todo:
        if u.delete:
            continue
        while True:
            service, adv = _open(helper)
            haves = _haves(helper, adv)
            steps = _plan(helper, u, haves, budget)
            if len(steps) <= 1:
                service.close()
                break  # what is left fits in one push: the final push below sends it
            helper.reporter.say(f"relay: {u.dst}: {len(steps)} steps of at most ~{budget} bytes")
            refused = False
            for k, commit in enumerate(steps[:-1], start=1):
                if k > 1:
                    service, adv = _open(helper)
                tmp = split_ref(u.dst)
                step = RefUpdate(src=commit, dst=tmp, force=True, new=commit, old=adv.refs.get(tmp, ZERO_OID))
                helper.reporter.say(f"relay: step {k}/{len(steps)}: {u.dst} -> {commit[:12]}")
                try:
                    sent, objects = send_updates(helper, service, adv, [step], PushOptions(), limit=max_pack, limit_source="relay.maxPackBytes")
                except PackTooLarge as exc:
                    if exc.ours:
                        raise
                    if exc.uncertain:
                        resets += 1
                        if resets > MAX_UNEXPLAINED_RESETS:
                            raise PackError(f"the target reset the connection {resets} times while receiving steps of {u.dst}, "
                                            f"the last after {exc.sent} bytes", RESET_HINT) from exc
                    refused = True
                    break
                finally:
                    service.close()
                total_sent += sent
                total_objects += objects or 0
                if not step.ok:
                    raise PackError(f"split push step {k} of {u.dst} was refused by the target: {step.error}", "nothing of your refs was changed; fix the cause and push again to resume")
            if not refused:
                break
            if budget // 2 < MIN_BUDGET and resets:
                raise PackError(f"the target reset the connection {resets} times while receiving steps of {u.dst}, down to ~{budget} bytes", RESET_HINT)
            if budget // 2 < MIN_BUDGET:
                raise PackError(f"the target refuses even a single step of {u.dst} (~{budget} bytes)", "a commit on this branch is larger than the target accepts; nothing of your refs was changed")
            budget //= 2
            helper.reporter.say(f"relay: the target refused a step; retrying with steps of ~{budget} bytes")
    # The final push: the user's refs, in one command list (atomic if asked), helper refs removed.
    service, adv = _open(helper)
    cleanup = [RefUpdate(src="", dst=split_ref(u.dst), force=True, old=adv.refs[split_ref(u.dst)]) for u in todo if split_ref(u.dst) in adv.refs]
    for u in todo:
        if adv.refs.get(u.dst, ZERO_OID) != u.old:
            u.error = "stale info"  # the target moved while we were working: never overwrite blindly
    final = [u for u in todo if not u.error]
    try:
        sent, objects = send_updates(helper, service, adv, final + (cleanup if adv.has("delete-refs") else []), opts, limit=max_pack)
    finally:
        service.close()
    for c in cleanup:
        if not c.ok:
            helper.reporter.warn(f"could not remove the helper ref {c.dst} on the target: {c.error}")
    return total_sent + sent, total_objects + (objects or 0)
