"""Pushes too big for the target, in resumable steps: one engine for ``git push`` and ``git relay``.

A target may refuse a pack for its size (``receive.maxInputSize``, HTTP 413, a forge's limit), or
the user caps each push (``relay.maxPushBytes``). Then each ref's new first-parent history is cut
into steps, and each step is pushed to a helper ref, ``refs/relay/split/<ref>``, so the user's
ref moves only once, in the final push, which also removes the helper ref. An interrupted run
leaves the helper ref on the target; the next one sees it advertised, counts it as a have, and
does not send that work again.

Where the steps come from is a ``History``: the local repository for ``git push`` (its sizes
are known, so steps are planned in bytes with ``git rev-list --disk-usage``), or the source
remote for ``git relay`` (only its commit graph is known, so steps are planned as equal parts
of the first-parent line). A step the target still refuses halves the step and plans again. A
connection reset with no reason (git daemon's answer to ``receive.maxInputSize``, or a broken
link) counts as a refusal at most ``MAX_UNEXPLAINED_RESETS`` times.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from .errors import PackError
from .limits import Limits
from .protocol import ZERO_OID, Advertisement
from .push import PackStream, PackTooLarge, PushOptions, RefUpdate
from .transport.base import Service
from .ui import Reporter

TYPE_CHECKING = False  # typing costs ~10 ms of start-up; mypy reads this as typing.TYPE_CHECKING
if TYPE_CHECKING:
    from typing import Protocol

    class History(Protocol):
        """Where a split push gets its commits and its packs."""

        def chain(self, tip: str, target_haves: list[str]) -> list[str]:
            """Oldest-first first-parent commits of ``tip`` that the target (with these tips) lacks."""
            ...

        def estimate(self, tip: str, base: list[str]) -> int | None:
            """About how many bytes a pack of ``tip`` minus ``base`` takes; None when unknown."""
            ...

        def describe(self, commit: str, base: list[str]) -> str:
            """What ``commit`` adds over ``base`` that makes it big (its largest files), for an error."""
            ...

        def prepare(self, updates: list[RefUpdate], base: list[str], ofs_delta: bool) -> PackStream | None:
            """Start the pack for ``updates`` over ``base`` ahead of its ``send``; None when this
            history cannot (its packs come per request)."""
            ...

        def send(self, service: Service, adv: Advertisement, updates: list[RefUpdate], opts: PushOptions,
                 limit: int | None, limit_source: str, prepared: PackStream | None = None) -> tuple[int, int | None]:
            """Push ``updates`` with a pack from this history (or the ``prepared`` one); (bytes sent, objects)."""
            ...


__all__ = ["History", "Learning", "push_or_split", "split_ref", "target_haves", "SPLIT_PREFIX", "MIN_BUDGET", "MAX_UNEXPLAINED_RESETS"]

SPLIT_PREFIX = "refs/relay/split/"
# Below this a step in bytes gives up: a single commit bigger than the target's limit cannot be
# pushed by any split, and tiny steps would only multiply round trips.
MIN_BUDGET = 16 * 1024
# A reset without a reason is retried with smaller steps at most this many times, so a link that
# keeps failing ends in an error, not a loop.
MAX_UNEXPLAINED_RESETS = 3
OVERSIZED_HINT = ("no split can push one commit bigger than the target's limit: move the large files to Git LFS "
                  "(git lfs migrate import --include=PATH), or rewrite them out of history (git filter-repo "
                  "--strip-blobs-bigger-than SIZE), then push again; nothing of your refs was changed")
RESET_HINT = ("git daemon resets the connection when a pack exceeds the target's receive.maxInputSize; if that is the cause, "
              "set relay.maxPushBytes below that limit, otherwise check the network; nothing of your refs was changed")

OpenTarget = Callable[[], "tuple[Service, Advertisement]"]


def split_ref(dst: str) -> str:
    return SPLIT_PREFIX + (dst[len("refs/"):] if dst.startswith("refs/") else dst)


def target_haves(adv: Advertisement) -> list[str]:
    return list(dict.fromkeys([*adv.refs.values(), *adv.extra_haves]))


class _Limit:
    """The hard pack limit (never split, only abort), the name the user knows it by, and the pause
    between steps (``relay.splitInterval``, for hosts that rate-limit pushes)."""

    def __init__(self, size: int | None, name: str, interval: float = 0.0) -> None:
        self.size = size
        self.name = name
        self.interval = interval


class _Budget:
    """How big a step may be: bytes when the history can estimate, else parts of the chain."""

    def __init__(self, size: int) -> None:
        self.bytes = size
        self.parts = 2

    def smaller(self) -> None:
        self.bytes //= 2
        self.parts *= 2

    def describe(self, sized: bool) -> str:
        return f"~{self.bytes} bytes" if sized else f"1/{self.parts} of the history"


def _plan(history: History, chain: list[str], base: list[str], budget: _Budget) -> tuple[list[str], bool]:
    """(the commits to push in turn, whether sizes were known) for ``chain`` within ``budget``."""
    if not chain:
        return [], False
    if history.estimate(chain[0], base) is None:
        parts = min(budget.parts, len(chain))
        return [chain[(i * len(chain)) // parts - 1] for i in range(1, parts + 1)], False
    steps: list[str] = []
    floor = list(base)
    start = 0
    while start < len(chain):
        lo, hi, best = start, len(chain) - 1, start
        while lo <= hi:
            mid = (lo + hi) // 2
            if (history.estimate(chain[mid], floor) or 0) <= budget.bytes:
                best, lo = mid, mid + 1
            else:
                hi = mid - 1
        steps.append(chain[best])
        floor = [*base, chain[best]]
        start = best + 1
    return steps, True


class Learning:
    """What one push learns about its target's size limit, written once at the end (``limits.py``)."""

    def __init__(self, limits: Limits, key: str) -> None:
        self.limits = limits
        self.key = key
        self.known = limits.get(key)
        self.refused_at: int | None = None  # a stated refusal: certain
        self.reset_at: int | None = None  # a reset without a reason: a limit only if smaller steps pass
        self.largest = 0

    def refused(self, sent: int, uncertain: bool) -> None:
        if uncertain:
            self.reset_at = sent if self.reset_at is None else min(self.reset_at, sent)
        else:
            self.refused_at = sent if self.refused_at is None else min(self.refused_at, sent)

    def accepted(self, sent: int) -> None:
        self.largest = max(self.largest, sent)

    def save(self, succeeded: bool) -> None:
        refused = self.refused_at
        if succeeded and self.reset_at is not None:
            refused = self.reset_at if refused is None else min(refused, self.reset_at)
        if refused is not None or (self.largest and self.known.refused is not None):
            self.limits.record(self.key, refused=refused, accepted=self.largest or None)


def _estimate_all(history: History, todo: list[RefUpdate], haves: list[str]) -> int | None:
    total = 0
    for u in todo:
        if u.delete:
            continue
        size = history.estimate(u.new, haves)
        if size is None:
            return None
        total += size
    return total


def push_or_split(history: History, open_target: OpenTarget, first: tuple[Service, Advertisement], todo: list[RefUpdate],
                  opts: PushOptions, reporter: Reporter, *, max_pack: int | None, max_push: int | None,
                  max_pack_name: str = "relay.maxPackBytes", learning: Learning | None = None,
                  interval: float = 0.0) -> tuple[int, int | None]:
    """Push ``todo`` on the open ``first`` connection when it fits, else in steps; (bytes, objects).

    ``max_pack`` (relay.maxPackBytes, or ``max_pack_name``) aborts, never splits; ``max_push``
    (relay.maxPushBytes) splits on purpose; else a size the target refused before (``learning``)
    does. A push known to be too big goes to steps at once, without a refused attempt. The
    ``first`` connection is closed here; later ones come from ``open_target``.
    """
    learned = learning.known.budget() if learning is not None and max_push is None else None
    budget = max_push if max_push is not None else learned
    if budget is not None and max_pack is not None and max_pack < budget:
        budget = None  # the hard limit is smaller: a step could never be bigger than it anyway
    service, adv = first
    total = _estimate_all(history, todo, target_haves(adv)) if budget is not None else None
    succeeded = False
    try:
        if budget is not None and total is not None and total > budget:
            service.dismiss()  # it got no command: receive-pack ends quietly
            before = learning.known.refused if learning is not None else None
            why = "relay.maxPushBytes" if max_push is not None else f"this target refused {before} bytes before"
            reporter.say(f"relay: about {total} bytes to push, more than {budget} ({why}); pushing in steps")
            resets = 0
        else:
            sent_limit = max_pack if total is not None or budget is None else (budget if max_pack is None else min(budget, max_pack))
            named = "relay.maxPushBytes" if max_push is not None else "the size refused before"
            source = max_pack_name if sent_limit == max_pack else named
            try:
                result = history.send(service, adv, todo, opts, sent_limit, source)
                if learning is not None:
                    learning.accepted(result[0])
                succeeded = True
                return result
            except PackTooLarge as exc:
                if exc.ours and budget is None:
                    raise  # relay.maxPackBytes: abort cleanly, never split
                if not exc.ours and learning is not None:
                    learning.refused(exc.sent, exc.uncertain)
                first_sent, resets, stated = exc.sent, int(exc.uncertain), exc.limit
            finally:
                service.close()
            if budget is None:
                # the refusal came about when the pack passed the limit: start a little under it (the
                # server may have read well past its limit before it said so; if it named the limit,
                # a tenth under that)
                budget = max(first_sent * 3 // 4 if stated is None else min(first_sent * 3 // 4, stated * 9 // 10), MIN_BUDGET)
                if resets:
                    reporter.say(f"relay: the target reset the connection after {first_sent} bytes without a reason "
                                 f"(git daemon does that on receive.maxInputSize); pushing in smaller steps")
                else:
                    reporter.say(f"relay: the target refused a {first_sent}-byte pack for its size; pushing in steps")
        for u in todo:
            u.error, u.ok = None, False
        rules = _Limit(max_pack, max_pack_name, interval)
        result = _in_steps(history, open_target, todo, opts, reporter, _Budget(budget), rules, resets, learning)
        succeeded = all(u.ok for u in todo)
        return result
    finally:
        if learning is not None:
            learning.save(succeeded)


def _in_steps(history: History, open_target: OpenTarget, todo: list[RefUpdate], opts: PushOptions, reporter: Reporter,
              budget: _Budget, max_pack: _Limit, resets: int, learning: Learning | None) -> tuple[int, int | None]:
    total_sent, total_objects = 0, 0
    for u in todo:
        if u.delete:
            continue
        while True:
            refused, resets, sent, objects = _steps_of(history, open_target, u, reporter, budget, max_pack, resets, learning)
            total_sent += sent
            total_objects += objects
            if not refused:
                break
            budget.smaller()
    return _final(history, open_target, todo, opts, reporter, max_pack, total_sent, total_objects, learning)


def _give_up_if_hopeless(exc: PackTooLarge, history: History, u: RefUpdate, chain: list[str], steps: list[str], k: int,
                         haves: list[str], budget: _Budget, sized: bool, resets: int) -> None:
    """Step ``k`` was refused: raise when smaller steps cannot help, else return (try smaller)."""
    commit = steps[k - 1]
    if exc.uncertain and resets > MAX_UNEXPLAINED_RESETS:
        raise PackError(f"the target reset the connection {resets} times while receiving steps of {u.dst}, "
                        f"the last after {exc.sent} bytes", RESET_HINT) from exc
    previous = steps[k - 2] if k > 1 else None
    alone = chain.index(commit) == (chain.index(previous) + 1 if previous else 0)
    if alone and not exc.uncertain:
        base = [*haves, previous] if previous else haves
        raise PackError(f"the target refuses {u.dst}'s commit {history.describe(commit, base)} for its size "
                        f"({exc.sent} bytes sent when it said no)", OVERSIZED_HINT) from exc
    if not sized and budget.parts >= len(chain):
        raise PackError(f"the target refuses even one commit of {u.dst} ({commit[:12]}) for its size",
                        "raise the target's limit; nothing of your refs was changed") from exc
    if sized and budget.bytes // 2 < MIN_BUDGET:
        if resets:
            raise PackError(f"the target reset the connection {resets} times while receiving steps of {u.dst}, "
                            f"down to {budget.describe(sized)}", RESET_HINT) from exc
        raise PackError(f"the target refuses even a single step of {u.dst} ({budget.describe(sized)})",
                        "a commit on this branch is larger than the target accepts; nothing of your refs was changed") from exc


def _steps_of(history: History, open_target: OpenTarget, u: RefUpdate, reporter: Reporter, budget: _Budget,
              max_pack: _Limit, resets: int, learning: Learning | None) -> tuple[bool, int, int, int]:
    """Push ``u``'s steps onto its helper ref; (refused, resets so far, bytes, objects)."""
    service, adv = open_target()
    haves = target_haves(adv)
    try:
        chain = history.chain(u.new, haves)
        steps, sized = _plan(history, chain, haves, budget)
    except BaseException:
        service.dismiss()
        raise
    if not steps:
        service.dismiss()
        return False, resets, 0, 0  # the target has all of this history already
    reporter.say(f"relay: {u.dst}: {len(steps)} steps of at most {budget.describe(sized)}")
    sent_total, objects_total = 0, 0
    tmp = split_ref(u.dst)
    # Every step goes to the helper ref, the last one too: then a commit too big on its own is
    # found (and named) here, and the final push only moves the refs.
    # Pipelined: while step k uploads (and the target indexes it), step k+1's pack is counted and
    # compressed. It assumes step k lands; when the target shows anything else, it is dropped.
    prepared: PackStream | None = None
    for k, commit in enumerate(steps, start=1):
        if k > 1:
            try:
                service, adv = open_target()
            except BaseException:
                _drop(prepared)
                raise
        step = RefUpdate(src=commit, dst=tmp, force=True, new=commit, old=adv.refs.get(tmp, ZERO_OID))
        if prepared is not None and adv.refs.get(tmp) != steps[k - 2]:
            _drop(prepared)
            prepared = None
        reporter.say(f"relay: step {k}/{len(steps)}: {u.dst} -> {commit[:12]}")
        upcoming = None
        if k < len(steps):
            following = RefUpdate(src=steps[k], dst=tmp, force=True, new=steps[k])
            upcoming = history.prepare([following], [*haves, commit], adv.has("ofs-delta"))
        try:
            sent, objects = history.send(service, adv, [step], PushOptions(), max_pack.size, max_pack.name, prepared=prepared)
        except PackTooLarge as exc:
            _drop(upcoming)
            resets = _step_refused(exc, learning, resets)
            _give_up_if_hopeless(exc, history, u, chain, steps, k, haves, budget, sized, resets)
            reporter.say("relay: the target refused a step; trying smaller steps")
            return True, resets, sent_total, objects_total
        except BaseException:
            _drop(upcoming)
            raise
        finally:
            service.close()
        prepared = upcoming
        if not step.ok:
            _drop(upcoming)
        sent_total += sent
        objects_total += objects or 0
        if learning is not None:
            learning.accepted(sent)
        if not step.ok:
            raise PackError(f"split push step {k} of {u.dst} was refused by the target: {step.error}",
                            "nothing of your refs was changed; fix the cause and push again to resume")
        if max_pack.interval > 0:
            reporter.trace(f"split: waiting {max_pack.interval:g} s (relay.splitInterval)")
            time.sleep(max_pack.interval)
    return False, resets, sent_total, objects_total


def _step_refused(exc: PackTooLarge, learning: Learning | None, resets: int) -> int:
    """Note a refused step (our own limit re-raises); the count of unexplained resets so far."""
    if exc.ours:
        raise exc
    if learning is not None:
        learning.refused(exc.sent, exc.uncertain)
    return resets + int(exc.uncertain)


def _drop(stream: PackStream | None) -> None:
    """Stop a prepared pack that will not be sent (its pack-objects is killed and reaped)."""
    if stream is not None:
        stream.stop()


def _final(history: History, open_target: OpenTarget, todo: list[RefUpdate], opts: PushOptions, reporter: Reporter,
           max_pack: _Limit, sent: int, objects: int, learning: Learning | None) -> tuple[int, int | None]:
    """The user's refs in one command list (atomic if asked), with the helper refs removed."""
    service, adv = open_target()
    helpers = [split_ref(u.dst) for u in todo if split_ref(u.dst) in adv.refs]
    cleanup = [RefUpdate(src="", dst=ref, force=True, old=adv.refs[ref]) for ref in helpers]
    for u in todo:
        if adv.refs.get(u.dst, ZERO_OID) != u.old:
            u.error = "stale info"  # the target moved while we were working: never overwrite blindly
    final = [u for u in todo if not u.error]
    try:
        more, more_objects = history.send(
            service, adv, final + (cleanup if adv.has("delete-refs") else []), opts, max_pack.size, max_pack.name
        )
    finally:
        service.close()
    if learning is not None:
        learning.accepted(more)
    for c in cleanup:
        if not c.ok:
            reporter.warn(f"could not remove the helper ref {c.dst} on the target: {c.error}")
    return sent + more, objects + (more_objects or 0)
