"""The fetch half of the pack-relay engine: upload-pack's pack straight into ``git index-pack``.

One round: wants (deduplicated), haves (local tips, then a bounded date-ordered walk), ``done``.
The side-band is demultiplexed as it arrives: channel 1 goes to the stdin of
``git index-pack --stdin --fix-thin --keep`` in the chunks it came in, channel 2 to stderr. Python
holds one pkt-line at a time. index-pack names the pack (``keep\\t<hash>``); the ``.keep`` it
wrote is handed to git with ``lock`` so no gc can remove the pack before git has moved its refs.

On any failure index-pack is stopped and the temporary pack it was writing is removed, so the
local repository gains neither refs nor a half-written pack.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping

from .errors import LocalGitError, PackError, RelayError, ShallowRemoteError, TransportError
from .gitcmd import PIPE, Child, Git, widen_pipe
from .pktline import pump_sideband
from .protocol import Advertisement, fetch_request, read_fetch_preamble
from .transport.base import Service
from .ui import Reporter

__all__ = ["FetchResult", "fetch_pack", "fsck_msg_types", "local_haves", "record_shallow", "MAX_WALK_HAVES"]

# A bound on the haves walk: enough to find a common ancestor behind a few hundred local commits
# without a request that grows with history (the request is small: 50 bytes a have).
MAX_WALK_HAVES = 1024
# index-pack creates its tmp_pack_* within a few ms of starting, while our request is on its way
_TMP_WAIT = 2.0


class FetchResult:
    """What one fetch stored (a plain class: dataclasses cost milliseconds of start-up)."""

    def __init__(self, keep: str | None, connectivity_ok: bool, bytes: int, seconds: float, objects: int | None = None,
                 shallow: list[str] | None = None) -> None:
        self.keep = keep
        self.connectivity_ok = connectivity_ok
        self.bytes = bytes
        self.seconds = seconds
        self.objects = objects
        self.shallow = list(shallow or [])  # the remote's own shallow boundary


def local_haves(git: Git, limit: int = MAX_WALK_HAVES) -> list[str]:
    """Tips of every local ref (and of alternates' refs) first, then up to ``limit`` commits behind them, newest first."""
    if not git.in_repo:
        return []
    tips_out = git.run(["for-each-ref", "--format=%(objectname)"]).decode().split()
    # the tips of alternates (`clone --reference`) count as ours, as in git's fetch-pack
    has_alternates = os.path.exists(git.git_path("objects/info/alternates"))
    alternates = git.run(["rev-list", "--no-walk", "--alternate-refs"]).decode().split() if has_alternates else []
    tips = list(dict.fromkeys(tips_out + alternates))
    if not tips:
        return []
    # default order streams newest-first without walking the whole graph (--date-order would not)
    walk = git.run(["rev-list", f"--max-count={limit}", "--all", *(["--alternate-refs"] if alternates else [])]).decode().split()
    return list(dict.fromkeys(tips + walk))


def _tmp_packs(pack_dir: str) -> set[str]:
    try:
        return {n for n in os.listdir(pack_dir) if n.startswith("tmp_")}
    except FileNotFoundError:
        return set()


def _check_unadvertised(adv: Advertisement, wants: list[str]) -> None:
    """Like git's fetch-pack: over v0, an object no ref points at is asked for only from a server
    that allows it (a v2 server decides for itself)."""
    if adv.version != 0 or adv.has("allow-tip-sha1-in-want") or adv.has("allow-reachable-sha1-in-want"):
        return
    tips = set(adv.refs.values())
    for oid in wants:
        if oid not in tips:
            raise RelayError(f"Server does not allow request for unadvertised object {oid}")


def fetch_pack(
    service: Service,
    adv: Advertisement,
    git: Git,
    reporter: Reporter,
    wants: list[str],
    haves: list[str],
    *,
    include_tag: bool,
    check_connectivity: bool,
    host_label: str,
    filter_spec: str | None = None,
    thin: bool = True,
    on_header: Callable[[int], None] | None = None,
    on_tmp: Callable[[list[str]], None] | None = None,
    allow_shallow: bool = False,
    depth: int | None = None,
) -> FetchResult:
    """Fetch ``wants`` into the local object store; raise on any failure, leaving nothing behind.

    ``on_header(objects)`` sees the pack's object count before any object is stored, and may
    raise to abandon the fetch. ``on_tmp(paths)`` learns the temporary pack index-pack writes,
    so that a later run can remove it should this process be killed. A remote that is itself
    shallow raises ``ShallowRemoteError`` before anything is stored, unless ``allow_shallow``:
    then its boundary is returned in ``FetchResult.shallow`` for the caller to record.
    """
    started = time.monotonic()
    wants = list(dict.fromkeys(wants))
    _check_unadvertised(adv, wants)
    pack_dir = git.git_path("objects/pack")
    os.makedirs(pack_dir, exist_ok=True)
    before = _tmp_packs(pack_dir)
    args = _index_args(git, reporter, check_connectivity, host_label)
    request = fetch_request(adv, wants, haves, progress=reporter.progress, include_tag=include_tag, filter_spec=filter_spec, thin=thin,
                            depth=depth)
    reporter.trace(f"fetch: {len(wants)} wants, {len(haves)} haves, protocol v{adv.version}")
    index = _start_index(git, args)
    received = 0
    objects: int | None = None
    shallow_file: str | None = None
    try:
        # Learn index-pack's temporary file while the request is on its way (an HTTP request
        # returns only with the reply's headers, which may be long: look before sending it).
        if on_tmp is not None and service.stateless:
            on_tmp(_await_tmp(pack_dir, before, index))
        reader = service.request([request])
        if on_tmp is not None and not service.stateless:
            on_tmp(_await_tmp(pack_dir, before, index))
        shallow = read_fetch_preamble(reader, adv) or list(adv.shallow)  # v0 said so in its advertisement
        if shallow and not allow_shallow:
            raise ShallowRemoteError("the remote repository is shallow (its history is cut off)", shallow=shallow)
        if shallow:
            # History stops at the shallow commits, so the pack is never "connected", and
            # --strict would miss their parents: like git's fetch-pack, restart index-pack with
            # a temporary shallow file that names them (and ours).
            index.kill()
            index.wait()
            _remove_new_tmp(pack_dir, before)
            check_connectivity = False
            shallow_file = _temporary_shallow(git, shallow)
            index = _start_index(git, ["--shallow-file", shallow_file, *(a for a in args if a != "--check-self-contained-and-connected")])
            if on_tmp is not None:
                on_tmp(_await_tmp(pack_dir, before, index))
        assert index.stdin is not None and index.stdout is not None
        sink = index.stdin

        def store(data: memoryview) -> None:
            nonlocal objects, received
            if objects is None and len(data) >= 12 and bytes(data[:4]) == b"PACK":
                objects = int.from_bytes(data[8:12], "big")
                if on_header is not None:
                    on_header(objects)
            try:
                sink.write(data)
            except BrokenPipeError:
                raise PackError("git index-pack stopped reading the pack", "see its message above") from None
            received += len(data)

        pump_sideband(reader, store, reporter.sideband)
        reporter.flush_sideband()
        service.wait_sent()
        sink.close()
        out = index.stdout.read().decode()
        rc = index.wait()
    except TransportError as exc:
        reporter.flush_sideband()
        index.kill()
        index.wait()
        _remove_new_tmp(pack_dir, before)
        raise TransportError(
            f"{exc.message} after {received} bytes of the pack",
            "nothing was stored and no ref was changed; try the fetch again",
        ) from exc
    except BaseException:
        reporter.flush_sideband()
        index.kill()
        index.wait()
        _remove_new_tmp(pack_dir, before)
        raise
    finally:
        _drop(shallow_file)
    if rc not in (0, 1) or (rc == 1 and not check_connectivity):
        _remove_new_tmp(pack_dir, before)
        raise PackError(
            f"git index-pack failed (exit code {rc}): the pack from the remote was not stored",
            "nothing was changed locally; try the fetch again",
        )
    kind, _, pack_hash = out.strip().partition("\t")
    if kind not in ("keep", "pack") or len(pack_hash) < 40:
        raise LocalGitError(f"unexpected output from git index-pack: {out.strip()[:100]!r}")
    keep = os.path.join(pack_dir, f"pack-{pack_hash}.keep") if kind == "keep" else None
    elapsed = time.monotonic() - started
    reporter.trace(f"fetch: {received} pack bytes in {elapsed:.2f}s")
    return FetchResult(
        keep=keep, connectivity_ok=check_connectivity and rc == 0, bytes=received, seconds=elapsed, objects=objects, shallow=shallow
    )


def _temporary_shallow(git: Git, shallow: list[str]) -> str:
    """A shallow file with the remote's boundary and our own, for index-pack (git's setup_temporary_shallow)."""
    ours = _read_shallow(git.git_path("shallow"))
    directory = git.git_path("relay")
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f"shallow-{os.getpid()}")
    with open(tmp, "w", encoding="ascii") as fh:
        fh.write("".join(oid + "\n" for oid in dict.fromkeys([*ours, *shallow])))
    return tmp


def _read_shallow(path: str) -> list[str]:
    """The commits a ``shallow`` file names (none when there is no file)."""
    try:
        with open(path, encoding="ascii") as fh:
            return fh.read().split()
    except FileNotFoundError:
        return []


def _drop(path: str | None) -> None:
    if path:
        try:
            os.unlink(path)
        except OSError:
            pass


def _index_args(git: Git, reporter: Reporter, check_connectivity: bool, host_label: str) -> list[str]:
    """git fetch-pack's own index-pack command line."""
    config = git.config()
    args = ["index-pack", "--stdin", "--fix-thin", f"--keep=fetch-pack {os.getpid()} on {host_label}"]
    if reporter.progress:
        args.append("-v")
    if check_connectivity:
        args.append("--check-self-contained-and-connected")
    fsck_key = "fetch.fsckobjects" if config.get("fetch.fsckobjects") is not None else "transfer.fsckobjects"
    if config.get_bool(fsck_key):
        args.append("--strict" + fsck_msg_types(config.values))
    return args


def fsck_msg_types(values: Mapping[str, list[str]]) -> str:
    """``fetch.fsck.<msg-id>`` and ``fetch.fsck.skipList`` as git's fetch-pack hands them to
    ``index-pack --strict``: ``=id=severity,...,skiplist=path`` in config order ("" for none)."""
    parts: list[str] = []
    for key, vals in values.items():
        if not key.startswith("fetch.fsck.") or key.count(".") != 2:
            continue
        name = key[len("fetch.fsck."):]
        for value in vals:
            parts.append(f"skiplist={os.path.expanduser(value)}" if name == "skiplist" else f"{name}={value}")
    return "=" + ",".join(parts) if parts else ""


def _start_index(git: Git, args: list[str]) -> Child:
    index = git.popen(args, stdin=PIPE, stdout=PIPE, stderr=None)
    assert index.stdin is not None
    widen_pipe(index.stdin.fileno())
    return index


def _await_tmp(pack_dir: str, before: set[str], index: Child) -> list[str]:
    """The temporary files index-pack has just created (waits briefly for it to start)."""
    deadline = time.monotonic() + _TMP_WAIT
    while True:
        fresh = _tmp_packs(pack_dir) - before
        if fresh or index.poll() is not None or time.monotonic() > deadline:
            return [os.path.join(pack_dir, n) for n in sorted(fresh)]
        time.sleep(0.0005)


def record_shallow(git: Git, oids: list[str]) -> None:
    """Add ``oids`` to ``$GIT_DIR/shallow`` under git's own ``shallow.lock`` (a clone of a remote
    that is itself shallow is shallow at the same commits, as git's fetch-pack makes it)."""
    path = git.git_path("shallow")
    lock = path + ".lock"
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
    except FileExistsError:
        raise LocalGitError(
            f"unable to create '{lock}': it exists", "another git process may be running; if not, remove the file"
        ) from None
    try:
        existing = _read_shallow(path)
        with os.fdopen(fd, "w", encoding="ascii") as out:
            out.write("".join(oid + "\n" for oid in sorted(set(existing) | set(oids))))
        os.replace(lock, path)
    except BaseException:
        try:
            os.unlink(lock)
        except FileNotFoundError:
            pass
        raise


def _remove_new_tmp(pack_dir: str, before: set[str]) -> None:
    for name in _tmp_packs(pack_dir) - before:
        try:
            os.unlink(os.path.join(pack_dir, name))
        except OSError:
            pass
