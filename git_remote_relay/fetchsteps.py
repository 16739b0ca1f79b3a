"""Big fetches in committed steps, so that an interrupted fetch continues where it stopped.

A pack stream cannot be resumed: a fetch killed at 90 % has stored nothing. So a fetch whose pack
announces more than ``relay.fetchStepObjects`` objects is abandoned at its 12-byte header (before
any object is stored) and done in steps instead:

1. one commit-only fetch (``filter tree:0``) of the wanted history into a scratch repository
   gives its first-parent line;
2. commits spaced along that line are fetched oldest first, each with the previous ones as haves;
   each step is a complete, indexed, ``.keep``-protected pack, recorded in this run's state file;
3. the real wants are fetched last, with every step as a have, and reported to git as usual.

A run that dies leaves its state under ``$GIT_DIR/relay/``: ``fetch-<id>.state`` (finished steps,
the temporary pack index-pack was writing) beside ``fetch-<id>.lock``, which the live run holds
locked. The next fetch into the repository takes over what dead runs left: it removes their
temporary packs and uses their finished steps as haves, so the same command re-run sends only
what is still missing. After a successful fetch the steps' ``.keep`` files and the state go;
the objects are referenced by the refs git then writes.

A small fetch pays nothing: one look at the pack header and a directory listing.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable

from .errors import LocalGitError
from .fetch import FetchResult, fetch_pack
from .gitcmd import Git
from .history import Scratch, first_parent_chain
from .protocol import Advertisement, supports_filter
from .stepcache import StepCache
from .transport.base import Service
from .ui import Reporter

__all__ = ["RunState", "Steps", "fetch_resumable", "MAX_STEPS"]

# More steps add a round trip (and a server-side object count) each for little gain.
MAX_STEPS = 64

OpenUpload = Callable[[], "tuple[Service, Advertisement]"]

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Protocol

    class SessionLike(Protocol):
        def take_upload(self) -> "tuple[Service, Advertisement]": ...
        def done_upload(self, aborted: bool = False) -> None: ...
        def close(self) -> None: ...


class _TooBig(Exception):
    """Raised from the header hook: this pack is to be fetched in steps."""

    def __init__(self, objects: int) -> None:
        super().__init__(objects)
        self.objects = objects


def _dedupe(*lists: list[str]) -> list[str]:
    return list(dict.fromkeys(x for lst in lists for x in lst))


class RunState:
    """This fetch's record under ``$GIT_DIR/relay/``; see the module docstring."""

    def __init__(self, git: Git) -> None:
        self.git = git
        git_dir = git.env.get("GIT_DIR")  # git gives helpers GIT_DIR: no rev-parse on every fetch
        self.dir = os.path.join(git.cwd or os.getcwd(), git_dir, "relay") if git_dir else git.git_path("relay")
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        self.name = f"fetch-{os.getpid()}-{os.urandom(4).hex()}"
        self.lock_path = os.path.join(self.dir, self.name + ".lock")
        self.state_path = os.path.join(self.dir, self.name + ".state")
        self._fd: int | None = os.open(self.lock_path, os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        self.tmp: list[str] = []  # temporary packs being written now
        self.steps: list[tuple[str, str | None]] = []  # (commit, .keep protecting its pack)
        self.on_step: Callable[[str, str | None], object] | None = None  # told of each finished step

    @property
    def done(self) -> list[str]:
        return [oid for oid, _ in self.steps]

    def _save(self) -> None:
        # one record a line: "tmp <path>" or "step <oid> <keep path or ->" (paths have no newline:
        # they are git's own pack names under the repository)
        data = "".join(f"tmp {t}\n" for t in self.tmp) + "".join(f"step {oid} {keep or '-'}\n" for oid, keep in self.steps)
        part = self.state_path + ".part"
        with open(part, "w", encoding="utf-8") as fh:
            fh.write(data)
        os.replace(part, self.state_path)

    def add_tmp(self, paths: list[str]) -> None:
        self.tmp = list(paths)
        self._save()

    def add_step(self, oid: str, keep: str | None, announce: bool = True) -> None:
        self.steps.append((oid, keep))
        self.tmp = []
        self._save()
        if announce and self.on_step is not None:
            self.on_step(oid, keep)

    def adopt_dead(self) -> tuple[int, int]:
        """Take over what runs that died left: remove their temporary packs, reuse their steps.

        Returns (temporary packs removed, steps reused). A run that still holds its lock is alive
        and left alone.
        """
        removed, reused = 0, 0
        for entry in sorted(os.listdir(self.dir)):
            if not (entry.startswith("fetch-") and entry.endswith(".lock")) or entry == self.name + ".lock":
                continue
            path = os.path.join(self.dir, entry)
            try:
                fd = os.open(path, os.O_RDWR)
            except OSError:
                continue
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # alive
                state = path[: -len(".lock")] + ".state"
                tmps, steps = _read_state(state)
                for tmp in tmps:
                    if _ours(tmp, self.git) and os.path.exists(tmp):
                        os.unlink(tmp)
                        removed += 1
                present = self.git.existing([oid for oid, _ in steps])
                for oid, keep in steps:
                    if oid in present and oid not in self.done:
                        self.steps.append((oid, keep))
                        reused += 1
                    elif keep and _ours(keep, self.git) and os.path.exists(keep):
                        os.unlink(keep)  # its objects are gone: nothing left to protect
                for leftover in (state, state + ".part", path):
                    try:
                        os.unlink(leftover)
                    except FileNotFoundError:
                        pass
            finally:
                os.close(fd)
        if reused or removed:
            self._save()
        return removed, reused

    def finish(self, keep_for_git: str | None) -> None:
        """The fetch is complete: the steps need no protection beyond the refs git now writes."""
        for _, keep in self.steps:
            if keep and keep != keep_for_git and _ours(keep, self.git):
                try:
                    os.unlink(keep)
                except FileNotFoundError:
                    pass
        self.steps, self.tmp = [], []
        for path in (self.state_path, self.lock_path):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        self.release()

    def release(self) -> None:
        """Stop holding the lock; what the state file says is left for a later run."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if not self.steps and not self.tmp:
            for path in (self.state_path, self.lock_path):
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass


def _read_state(path: str) -> tuple[list[str], list[tuple[str, str | None]]]:
    """(temporary packs, steps) from a state file; a missing or damaged file holds nothing."""
    tmps: list[str] = []
    steps: list[tuple[str, str | None]] = []
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except (OSError, UnicodeDecodeError):
        return tmps, steps
    for line in lines:
        kind, _, rest = line.partition(" ")
        if kind == "tmp" and rest:
            tmps.append(rest)
        elif kind == "step":
            oid, _, keep = rest.partition(" ")
            if len(oid) == 40 and keep:
                steps.append((oid, None if keep == "-" else keep))
    return tmps, steps


def _ours(path: str, git: Git) -> bool:
    """Only files in this repository's pack directory are ever removed (never where a state file points)."""
    pack_dir = os.path.realpath(git.git_path("objects/pack"))
    return os.path.dirname(os.path.realpath(path)) == pack_dir and os.path.basename(path).startswith(("tmp_", "pack-"))


class _Fetch:
    """One fetch run's repeated request: upload-pack, haves (plus finished steps), the state."""

    def __init__(self, open_upload: OpenUpload, drop_upload: Callable[[bool], None], git: Git, reporter: Reporter,
                 haves: list[str], state: RunState, host_label: str, allow_shallow: bool) -> None:
        self.open_upload = open_upload
        self.drop_upload = drop_upload
        self.git = git
        self.reporter = reporter
        self.haves = haves
        self.state = state
        self.host_label = host_label
        self.allow_shallow = allow_shallow
        self.adv: Advertisement | None = None  # of the request under way

    def __call__(self, wants: list[str], *, include_tag: bool = False, check_connectivity: bool = False,
                 on_header: Callable[[int], None] | None = None, into: Git | None = None, filter_spec: str | None = None) -> FetchResult:
        """Fetch ``wants`` (into the repository, or ``into`` a scratch one: then commits only, quietly)."""
        service, adv = self.open_upload()
        self.adv = adv
        thin = into is None or filter_spec is not None  # a commits-only pack has no outside base to lean on
        result = fetch_pack(service, adv, into or self.git, self.reporter.quiet() if into else self.reporter, wants,
                            _dedupe(self.state.done, self.haves), include_tag=include_tag, check_connectivity=check_connectivity,
                            host_label=self.host_label, filter_spec=filter_spec, thin=thin, on_header=on_header,
                            on_tmp=None if into else self.state.add_tmp, allow_shallow=self.allow_shallow)
        self.drop_upload(False)
        return result


def fetch_resumable(
    open_upload: OpenUpload,
    drop_upload: Callable[[bool], None],
    git: Git,
    reporter: Reporter,
    wants: list[str],
    haves: list[str],
    *,
    include_tag: bool,
    check_connectivity: bool,
    host_label: str,
    step_objects: int | None,
    env: dict[str, str],
    allow_shallow: bool = False,
) -> FetchResult:
    """Fetch ``wants`` (in steps when the pack is big); see the module docstring.

    ``open_upload()`` gives upload-pack ready for one fetch request; ``drop_upload(aborted)``
    ends that conversation when it cannot serve another (a v0 stream, or a reply abandoned).
    """
    try:
        state = RunState(git)
    except OSError as exc:
        raise LocalGitError(f"cannot write the fetch state under {git.git_path('relay')}: {exc.strerror}") from exc
    try:
        removed, reused = state.adopt_dead()
        if removed:
            reporter.trace(f"fetch: removed {removed} temporary pack(s) left by a fetch that died")
        if reused:
            reporter.say(f"relay: resuming an interrupted fetch ({reused} finished step(s) kept)")
        fetch = _Fetch(open_upload, drop_upload, git, reporter, haves, state, host_label, allow_shallow)

        def check(objects: int) -> None:
            # steps need the commit graph first (a filtered fetch): without filters, one plain fetch
            if step_objects and objects > step_objects and fetch.adv is not None and supports_filter(fetch.adv):
                raise _TooBig(objects)

        try:
            result = fetch(wants, include_tag=include_tag, check_connectivity=check_connectivity, on_header=check)
        except _TooBig as big:
            drop_upload(True)
            reporter.trace(f"fetch: the pack has {big.objects} objects; fetching in steps")
            result = _in_steps(fetch, wants, big.objects, step_objects or 1, include_tag=include_tag,
                               check_connectivity=check_connectivity, env=env)
        state.finish(result.keep)
        return result
    finally:
        state.release()


def _in_steps(fetch: _Fetch, wants: list[str], objects: int, step_objects: int, *, include_tag: bool, check_connectivity: bool,
              env: dict[str, str]) -> FetchResult:
    total, stored = _fetch_steps(fetch, wants, objects, step_objects, env)
    final = fetch(wants, include_tag=include_tag, check_connectivity=check_connectivity)
    final.bytes += total
    final.objects = (final.objects or 0) + stored
    return final


def _fetch_steps(fetch: _Fetch, wants: list[str], objects: int, step_objects: int, env: dict[str, str]) -> tuple[int, int]:
    """Fetch the history of ``wants`` up to its last step, oldest first; (bytes, objects) stored.

    The first-parent line comes from a commit-only fetch; steps a dead run finished (already in
    ``fetch.state``) cover the line up to the newest of them, and only the rest is cut."""
    with Scratch(env) as scratch:
        fetch(wants, into=scratch.git, filter_spec="tree:0")
        parents = scratch.parents()
    chain = max((first_parent_chain(parents, w) for w in wants), key=len, default=[])
    where = {oid: i for i, oid in enumerate(chain)}
    covered = max((where[d] for d in fetch.state.done if d in where), default=-1)
    chain = chain[covered + 1 :]
    count = min(MAX_STEPS, -(-objects // step_objects), len(chain))
    cuts = [chain[(i * len(chain)) // count - 1] for i in range(1, count)] if count >= 2 else []
    total, stored = 0, 0
    for i, commit in enumerate(cuts, start=1):
        fetch.reporter.say(f"relay: step {i}/{count}: history up to {commit[:12]}")
        step = fetch([commit])
        fetch.state.add_step(commit, step.keep)
        total += step.bytes
        stored += step.objects or 0
    if cuts:
        fetch.reporter.say(f"relay: step {count}/{count}: the rest")
    return total, stored


class Steps:
    """Big fetches in steps for git's own fetch-pack (``tap.Stepper``): the steps are fetched into
    the repository by the engine; git's request then goes out with them as haves.

    A fetch that offers no haves (a clone, a fetch into a new repository) also keeps its steps
    in the per-user ``StepCache`` of the URL, so that it resumes even after ``git clone`` removed
    its directory.
    """

    def __init__(self, git: Git, reporter: Reporter, open_session: Callable[[], "SessionLike"], env: dict[str, str],
                 host_label: str, limit: int, cache: StepCache | None) -> None:
        self.git = git
        self.reporter = reporter
        self.open_session = open_session
        self.env = env
        self.host_label = host_label
        self.limit = limit
        self.cache = cache
        self.state: RunState | None = None
        self.fresh = False
        self.bytes = 0  # pack bytes of the steps fetched by this run

    def _state(self) -> RunState:
        if self.state is None:
            try:
                self.state = RunState(self.git)
            except OSError as exc:
                raise LocalGitError(f"cannot write the fetch state under {self.git.git_path('relay')}: {exc.strerror}") from exc
            removed, reused = self.state.adopt_dead()
            if removed:
                self.reporter.trace(f"fetch: removed {removed} temporary pack(s) left by a fetch that died")
            if reused:
                self.reporter.say(f"relay: resuming an interrupted fetch ({reused} finished step(s) kept)")
            cache = self.cache if self.fresh else None
            if cache is not None:
                if cache.lock():
                    restored = [(oid, keep) for oid, keep in cache.restore(self.git.git_path("objects/pack")) if oid not in self.state.done]
                    for oid, keep in restored:
                        self.state.add_step(oid, keep, announce=False)
                    if restored:
                        self.reporter.say(f"relay: resuming an interrupted clone ({len(restored)} finished step(s) from {cache.dir})")
                    self.state.on_step = cache.add
                else:
                    self.cache = None  # another fetch of this URL is using it
        return self.state

    def _leftovers(self) -> bool:
        relay_dir = os.path.join(self.git.cwd or os.getcwd(), self.env["GIT_DIR"], "relay") if self.env.get("GIT_DIR") else None
        try:
            if relay_dir and any(n.startswith("fetch-") for n in os.listdir(relay_dir)):
                return True
        except FileNotFoundError:
            pass
        return self.fresh and self.cache is not None and bool(self.cache.steps())

    def resume(self, wants: list[str], haves: list[str]) -> list[str]:
        self.fresh = not haves
        if not self._leftovers():
            return []
        return self._state().done

    def run(self, wants: list[str], haves: list[str], objects: int) -> list[str]:
        state = self._state()
        self.reporter.trace(f"fetch: the pack has {objects} objects; fetching in steps")
        if self.fresh and self.cache is not None:
            self.reporter.trace(f"fetch: finished steps are kept in {self.cache.dir} until the fetch completes")
        session = self.open_session()
        try:
            fetch = _Fetch(session.take_upload, session.done_upload, self.git, self.reporter, haves, state, self.host_label, False)
            self.bytes += _fetch_steps(fetch, wants, objects, self.limit or 1, self.env)[0]
        finally:
            session.close()
        return state.done

    def finish(self) -> None:
        if self.state is not None:
            self.state.finish(None)
        if self.cache is not None and self.fresh and self.cache.locked:
            self.cache.clear()

    def release(self) -> None:
        if self.state is not None:
            self.state.release()
        if self.cache is not None:
            self.cache.unlock()
