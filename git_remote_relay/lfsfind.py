"""Where a relay's Git LFS pointers are: the blobs that move, read without a checkout.

A fetch of the relayed range (the same wants and haves as the pack relay) with ``filter
blob:limit=1024`` goes into a scratch repository, and its small blobs are read as pointer files.
A repository that does not use LFS is recognised first, for the price of one shallow look at the
tips (their trees and small files): no ``.gitattributes`` there, at any depth, names
``filter=lfs`` and no pointer is there. ``--lfs-history`` scans what moves all the same.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator

from .errors import RelayError
from .fetch import fetch_pack
from .gitcmd import DEVNULL, PIPE, Git
from .history import Scratch
from .lfs import POINTER_MAX, Pointer, parse_pointer
from .protocol import supports_filter
from .transport.session import Session
from .ui import Reporter

__all__ = ["find_pointers"]


def _blobs(git: Git, limit: int) -> Iterator[str]:
    """The blobs of at most ``limit`` bytes in the scratch repository, as git lists them."""
    proc = git.popen(["cat-file", "--batch-all-objects", "--batch-check=%(objecttype) %(objectsize) %(objectname)"],
                     stdin=DEVNULL, stdout=PIPE)
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            kind, size, oid = line.decode().split()
            if kind == "blob" and int(size) <= limit:
                yield oid
    finally:
        proc.stdout.close()
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def _contents(git: Git, oids: Iterable[str]) -> Iterator[tuple[str, bytes]]:
    """(oid, content) of each blob, read as ``git cat-file --batch`` writes them: nothing is
    held but the blob at hand, however many there are. The caller may stop early."""
    proc = git.popen(["cat-file", "--batch"], stdin=PIPE, stdout=PIPE)
    assert proc.stdin is not None and proc.stdout is not None

    def feed() -> None:
        try:
            for oid in oids:
                proc.stdin.write(oid.encode() + b"\n")
            proc.stdin.close()
        except (BrokenPipeError, ValueError):
            pass  # the reader stopped early: cat-file is gone
        finally:
            close = getattr(oids, "close", None)
            if close is not None:
                close()  # a generator's own process ends here too

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    try:
        while True:
            header = proc.stdout.readline()
            if not header:
                break
            words = header.split()
            if len(words) < 3:  # "<oid> missing"
                continue
            size = int(words[2])
            data = proc.stdout.read(size + 1)[:size]
            yield words[0].decode(), data
    finally:
        proc.stdout.close()
        if proc.poll() is None:
            proc.kill()  # stopped early: the writer's next write fails instead of blocking
        writer.join()
        proc.wait()


def _tip_files(git: Git, tips: list[str]) -> tuple[list[str], list[str]]:
    """The blob ids of every ``.gitattributes`` in the tips' trees, at any depth, and of each
    root ``.lfsconfig``: the trees are read through one ``git cat-file --batch``, level by level,
    each distinct tree once (a thousand tags share most of theirs). A tip that is no tree-ish (a
    tag of a blob) has no files."""
    attributes: list[str] = []
    configs: list[str] = []
    seen: set[str] = set()
    width = len(tips[0]) // 2 if tips else 20  # bytes of an object id: 20 (sha1) or 32 (sha256)
    asked = "".join(f"{tip}^{{}}\n" for tip in dict.fromkeys(tips)).encode()
    peeled = git.run(["cat-file", "--batch-check=%(objecttype) %(objectname)"], input=asked).decode().splitlines()
    level = [f"{words[1]}^{{tree}}" for words in map(str.split, peeled) if words[0] in ("commit", "tree")]
    root = True
    while level:
        below: list[str] = []
        for oid, data in _contents(git, level):
            if oid in seen:
                continue  # two tips with one tree
            seen.add(oid)
            at, end = 0, len(data)
            while at < end:
                nul = data.index(0, at)
                if data.startswith(b"40000 ", at):
                    below.append(data[nul + 1:nul + 1 + width].hex())
                elif nul - at == 21 and data.endswith(b" .gitattributes", at, nul):  # "100644 .gitattributes"
                    attributes.append(data[nul + 1:nul + 1 + width].hex())
                elif root and nul - at == 17 and data.endswith(b" .lfsconfig", at, nul):
                    configs.append(data[nul + 1:nul + 1 + width].hex())
                at = nul + 1 + width
        level = [oid for oid in dict.fromkeys(below) if oid not in seen]
        root = False
    return list(dict.fromkeys(attributes)), list(dict.fromkeys(configs))


def _uses_lfs_at_tips(git: Git, tips: list[str]) -> tuple[bool, str | None]:
    """Do the tips (fetched one commit deep, trees and small blobs) show LFS: a ``.gitattributes``
    naming ``filter=lfs``, or a pointer file? And the ``lfs.url`` of the first tip whose
    ``.lfsconfig`` sets one (git-lfs reads it from the tree)."""
    attributes, configs = _tip_files(git, tips)
    url = None
    for oid in configs:
        url = git.run(["config", "--blob", oid, "--get", "lfs.url"], ok_codes=(0, 1, 128)).decode().strip() or None
        if url:
            break
    # A .gitattributes too large to have been fetched (git.git's po/.gitattributes is 1.3 KiB)
    # is not read: the pointers that LFS files leave at the tips are the answer then.
    if any(b"filter=lfs" in data for _, data in _contents(git, attributes)):
        return True, url
    return any(parse_pointer(data) for _, data in _contents(git, _blobs(git, POINTER_MAX))), url


def find_pointers(source: Session, wants: list[str], haves: list[str], reporter: Reporter,
                  history: bool = False) -> tuple[list[Pointer] | None, str | None]:
    """The LFS objects named by the blobs a relay of ``wants`` (the target having ``haves``)
    moves, and the ``lfs.url`` the source's ``.lfsconfig`` names (or None); no list, said in a
    warning, when the source cannot show them (it allows no filtered fetch, or the look failed):
    the relay of the commits goes on, as it would without LFS. The blobs that move are scanned
    when the tips show LFS, or always with ``history`` (``--lfs-history``)."""
    if not wants:
        return [], None
    looked = _filtering(source, reporter)
    if looked is None:
        reporter.warn("the source allows no filtered fetch (uploadpack.allowFilter), so its LFS pointers were not looked for: "
                      "LFS objects are not copied (--no-lfs says that is intended)")
        return None, None
    try:
        used, url = _lfs_at_tips(looked, wants, reporter)
        if history and not used:
            reporter.trace("lfs: --lfs-history: scanning every blob that moves all the same")
        return (_scan(looked, wants, haves, reporter) if used or history else []), url
    except RelayError as exc:
        looked.done_upload(aborted=True)
        reporter.warn(f"looking for LFS pointers failed ({exc.message or 'see above'}): LFS objects are not copied")
        return None, None
    finally:
        if looked is not source:
            looked.close()


# the upload-pack that git relay runs itself for a local source's LFS look
_LOCAL_FILTERING = "git -c uploadpack.allowFilter=true upload-pack"


def _filtering(source: Session, reporter: Reporter) -> Session | None:
    """A session of ``source`` that serves filtered fetches: the source itself when it allows them
    (a fresh v0 stream stays fresh for the relay's own request); for a local repository that does
    not, a second session whose upload-pack, which we run ourselves, allows them; else None."""
    if supports_filter(source.upload()[1]):
        return source
    if not source.url.is_local or "upload-pack" in source.ctx.programs:
        return None
    import copy

    ctx = copy.copy(source.ctx)
    ctx.programs = {**source.ctx.programs, "upload-pack": _LOCAL_FILTERING}
    local = Session(source.url, ctx)
    try:
        if supports_filter(local.upload()[1]):
            reporter.trace("lfs: the local source allows no filtered fetch; its look runs with uploadpack.allowFilter")
            return local
    except RelayError:
        pass
    local.close()
    return None


def _lfs_at_tips(source: Session, wants: list[str], reporter: Reporter) -> tuple[bool, str | None]:
    """Do the tips show LFS, and which ``lfs.url`` does their ``.lfsconfig`` name? One commit
    deep, trees and small blobs (v2 only; else, and when the source refuses the shallow look, the
    answer is yes: look at everything)."""
    if source.upload()[1].version != 2:
        return True, None
    service, adv = source.take_upload()
    with Scratch(source.ctx.env) as look:
        try:
            fetch_pack(service, adv, look.git, reporter.quiet(), wants, [], include_tag=False, check_connectivity=False,
                       host_label="git-relay", filter_spec=f"blob:limit={POINTER_MAX}", thin=False, allow_shallow=True, depth=1)
            source.done_upload()
        except RelayError as exc:
            source.done_upload(aborted=True)
            reporter.trace(f"lfs: the shallow look at the tips failed ({exc.message}); looking at everything that moves")
            return True, None
        used, url = _uses_lfs_at_tips(look.git, wants)
    if not used:
        reporter.trace("lfs: no .gitattributes names filter=lfs at the tips and no pointer is there")
    return used, url


def _scan(source: Session, wants: list[str], haves: list[str], reporter: Reporter) -> list[Pointer]:
    """The pointers among the blobs that move (of at most POINTER_MAX bytes)."""
    quiet = reporter.quiet()
    with Scratch(source.ctx.env) as scratch:
        service, adv = source.take_upload()
        try:
            fetch_pack(service, adv, scratch.git, quiet, wants, haves, include_tag=False, check_connectivity=False,
                       host_label="git-relay", filter_spec=f"blob:limit={POINTER_MAX}", thin=False)
            source.done_upload()
        except RelayError as exc:
            # Some servers (dulwich's) refuse a client that does not take thin packs. A thin pack
            # may lean on objects only the target has, which this scratch repository lacks, so
            # then look at the whole history of the wants instead (more than moves, never less).
            source.done_upload(aborted=True)
            reporter.trace(f"lfs: the filtered fetch failed ({exc.message}); looking at the whole history of the wants")
            service, adv = source.take_upload()
            fetch_pack(service, adv, scratch.git, quiet, wants, [], include_tag=False, check_connectivity=False,
                       host_label="git-relay", filter_spec=f"blob:limit={POINTER_MAX}", thin=True)
            source.done_upload()
        found: dict[str, Pointer] = {}
        for _, data in _contents(scratch.git, _blobs(scratch.git, POINTER_MAX)):
            pointer = parse_pointer(data)
            if pointer is not None:
                found.setdefault(pointer.oid, pointer)
        return list(found.values())
