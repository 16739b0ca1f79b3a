"""The push half of the pack-relay engine: per-ref decisions, a streamed pack, honest status.

Decisions are made locally and up front, as git's ``set_ref_status_for_push`` makes them, with
the reason words git's transport-helper understands (``fetch first``, ``non-fast forward``,
``needs force``, ``already exists``, ``stale info``). Negotiation is free: every advertised remote
tip (and ``.have``) that exists locally is excluded from the pack, so a second branch sends only
its new objects. ``git pack-objects --stdout --thin --revs`` streams straight into receive-pack.
Each ref is reported ``ok`` only when receive-pack's report-status said ``ok`` for it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from .errors import PackError, ProtocolError, RelayError, TooLargeError
from .gitcmd import PIPE, Child, widen_pipe
from .pktline import FLUSH, PktReader, pkt, pkt_text
from .protocol import AGENT, ZERO_OID, Advertisement
from .transport.base import SendError, Service

TYPE_CHECKING = False  # typing costs ~10 ms of start-up; mypy reads this as typing.TYPE_CHECKING

if TYPE_CHECKING:
    from .gitcmd import Git
    from .ui import Reporter

__all__ = ["PushOptions", "RefUpdate", "PackTooLarge", "PackStream", "decide", "resolve", "exchange", "send_updates", "local_haves",
           "parse_push_lines"]

_CHUNK = 1 << 20  # pack bytes per read from pack-objects (its pipe holds as much): fewer, bigger writes
_SIZE_REFUSALS = ("exceeds maximum allowed size", "pack exceeds", "too large", "request entity too large")


class PackTooLarge(PackError):
    """The pack grew past a limit (ours or the server's)."""

    def __init__(self, message: str, hint: str = "", sent: int = 0, ours: bool = False, uncertain: bool = False,
                 limit: int | None = None) -> None:
        super().__init__(message, hint)
        self.sent = sent
        self.ours = ours
        self.limit = limit  # the size the server said it allows ("maximum allowed size (2.86 MiB)"), if it said
        # The server reset the connection after (part of) the pack, before any report:
        # git daemon does exactly that on receive.maxInputSize, but so does a broken link.
        self.uncertain = uncertain


class PushOptions:
    """What git said with ``option`` before a push batch (plain class: no dataclasses at start-up)."""

    def __init__(self, dry_run: bool = False, atomic: bool = False) -> None:
        self.dry_run = dry_run
        self.atomic = atomic
        self.push_options: list[str] = []
        self.cas: dict[str, str] = {}
        self.use_bitmaps = True  # push.useBitmaps
        # our shallow roots (a push from a shallow clone), sent as git's send-pack sends them;
        # None: not looked up yet
        self.shallow: list[str] | None = None
        self.signed: str | None = None  # git push --signed: "true" or "if-asked"

    def set(self, name: str, value: str) -> str:
        """Record ``option <name> <value>``; return the reply for git."""
        if name == "dry-run":
            self.dry_run = value == "true"
        elif name == "atomic":
            self.atomic = value == "true"
        elif name == "push-option":
            self.push_options.append(value)
        elif name == "cas":
            ref, sep, oid = value.rpartition(":")
            if not sep or len(oid) != 40:
                return "error bad cas value"
            self.cas[ref] = oid
        elif name == "force-if-includes":
            pass  # git checks the reflog condition itself before the push lines reach us
        elif name == "pushcert":
            # a signed push is git's own send-pack's (signedpush): it signs, with git's settings
            self.signed = value if value in ("true", "if-asked") else None
        else:
            return "unsupported"
        return "ok"


class RefUpdate:
    """One ref to change on a target: what git asked for (or ``git relay`` planned), and the result.

    ``error`` is set when the update was refused (locally, by git's rules, or by the server);
    ``ok`` only when the server's report said so. ``action``/``reason``/``mode``/``result`` carry
    ``git relay``'s plan and outcome for its ``plan`` output and ``--json``.
    """

    def __init__(self, src: str, dst: str, force: bool, new: str = ZERO_OID, old: str = ZERO_OID,
                 action: str = "", reason: str = "") -> None:
        self.src = src
        self.dst = dst
        self.force = force
        self.new = new
        self.old = old
        self.error: str | None = None
        self.ok = False
        self.action = action
        self.reason = reason
        self.mode = ""
        self.result = "planned"
        self.forced = False  # not a fast-forward, done because forced: reported as "forced update"

    @property
    def delete(self) -> bool:
        return not self.src

    def __repr__(self) -> str:
        return f"RefUpdate({self.src!r} -> {self.dst!r}, {self.old[:12]}..{self.new[:12]}, ok={self.ok}, error={self.error!r})"


def resolve(git: "Git", updates: list[RefUpdate]) -> None:
    """Turn each update's ``src`` into the object id it names locally (or a ``does not match`` error)."""
    srcs = [u.src for u in updates if not u.delete]
    if not srcs:
        return
    out = git.run(["cat-file", "--batch-check=%(objectname) %(objecttype)"], input="".join(s + "\n" for s in srcs).encode())
    it = iter(out.decode().splitlines())
    for u in updates:
        if u.delete:
            continue
        line = next(it, "")
        oid = line.split(" ", 1)[0]
        if line.endswith(" missing") or len(oid) != 40:
            u.error = f"src refspec {u.src} does not match any"
        else:
            u.new = oid


def decide(git: "Git", updates: list[RefUpdate], adv: Advertisement, opts: PushOptions) -> None:
    """git's per-ref rules, applied before anything is sent."""
    olds = [adv.refs.get(u.dst, ZERO_OID) for u in updates]
    present = git.existing([o for o in olds if o != ZERO_OID])
    for u, old in zip(updates, olds, strict=True):
        u.old = old
        if u.error:
            continue
        forced = u.force
        # Like git, --force (or +) defeats the lease. git has checked the lease itself and sends a
        # stale one only when forced, but it marks a forced delete with no "+": a delete goes through.
        if u.dst in opts.cas and not u.force and not u.delete:
            expected = opts.cas[u.dst]
            if expected != old:
                u.error = "stale info"
                continue
            forced = True  # a matching lease is permission to overwrite
        if u.delete:
            # Like git, a delete of a ref the remote lacks is still sent: its hooks see it.
            if not adv.has("delete-refs"):
                u.error = "the remote does not support deleting refs"
            continue
        if u.new == old:
            u.error = "up to date"
            continue
        if old == ZERO_OID:
            continue
        refusal = _refusal(git, u, old, old in present)
        if refusal and forced:
            u.forced = True
        elif refusal:
            u.error = refusal


def _refusal(git: "Git", u: RefUpdate, old: str, present: bool) -> str | None:
    """Why git would refuse to move ``u.dst`` from ``old`` without force (None: a fast-forward)."""
    if not present:
        return "fetch first"
    if u.dst.startswith("refs/tags/"):
        return "already exists"
    types = git.run(["cat-file", "--batch-check=%(objecttype)"], input=f"{old}\n{u.new}\n".encode()).decode().split()
    if types != ["commit", "commit"]:
        return "needs force"
    if git.returncode(["merge-base", "--is-ancestor", old, u.new]) != 0:
        return "non-fast forward"
    return None


class PackStream:
    """Pack bytes on their way to receive-pack: counts them, enforces a limit, reads the header.

    Subclasses produce the chunks (``_chunks``) and know how to stop their producer (``stop``).
    """

    def __init__(self, limit: int | None, limit_source: str) -> None:
        self.limit = limit
        self.limit_source = limit_source
        self.sent = 0
        self.objects: int | None = None

    def _chunks(self) -> Iterator[bytes]:
        raise NotImplementedError

    def stop(self) -> None:
        """Stop producing (idempotent)."""

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._chunks():
            if self.objects is None and self.sent == 0 and len(chunk) >= 12 and chunk[:4] == b"PACK":
                self.objects = int.from_bytes(chunk[8:12], "big")
            self.sent += len(chunk)
            if self.limit is not None and self.sent > self.limit:
                self.stop()
                raise PackTooLarge(
                    f"the pack is larger than {self.limit_source} ({self.limit} bytes); nothing was pushed",
                    "raise the limit, or push fewer commits at a time",
                    sent=self.sent,
                    ours=True,
                )
            yield chunk


class _PackObjects(PackStream):
    """``git pack-objects --stdout``'s output."""

    def __init__(self, proc: Child, limit: int | None, limit_source: str) -> None:
        super().__init__(limit, limit_source)
        self.proc = proc

    def _chunks(self) -> Iterator[bytes]:
        assert self.proc.stdout is not None
        read = self.proc.stdout.read1 if hasattr(self.proc.stdout, "read1") else self.proc.stdout.read
        while True:
            chunk = read(_CHUNK)
            if not chunk:
                break
            yield chunk
        if self.proc.wait() != 0:
            raise PackError(f"git pack-objects failed (exit code {self.proc.returncode}); nothing was pushed")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def _commands(updates: list[RefUpdate], adv: Advertisement, opts: PushOptions, progress: bool) -> bytes:
    caps = ["report-status", "side-band-64k"] if adv.has("side-band-64k") else ["report-status"]
    if opts.atomic:
        caps.append("atomic")
    if opts.push_options:
        caps.append("push-options")
    if not progress and adv.has("quiet"):
        caps.append("quiet")
    if adv.has("agent"):
        caps.append(f"agent={AGENT}")
    if adv.has("object-format"):
        caps.append("object-format=sha1")
    # a shallow clone tells receive-pack where its history stops, so it can check (and, with
    # receive.shallowUpdate, record) the new shallow roots a push brings
    out = [pkt_text(f"shallow {oid}") for oid in opts.shallow or []]
    for i, u in enumerate(updates):
        line = f"{u.old} {u.new} {u.dst}"
        if i == 0:
            out.append(pkt(line.encode() + b"\0" + " ".join(caps).encode()))
        else:
            out.append(pkt_text(line))
    out.append(FLUSH.wire)
    if opts.push_options:
        out += [pkt_text(o) for o in opts.push_options]
        out.append(FLUSH.wire)
    return b"".join(out)


_UNITS = {"bytes": 1, "byte": 1, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40}


def stated_limit(text: str) -> int | None:
    """The limit in receive-pack's "pack exceeds maximum allowed size (2.86 MiB)", in bytes (rounded down)."""
    at = text.find("maximum allowed size (")
    if at < 0:
        return None
    number, _, unit = text[at + len("maximum allowed size ("):].partition(")")[0].strip().partition(" ")
    try:
        return int(float(number) * _UNITS[unit.strip().lower()])
    except (ValueError, KeyError):
        return None


def _size_refusal(text: str) -> bool:
    lowered = text.lower()
    return any(word in lowered for word in _SIZE_REFUSALS)


def _was_reset(exc: BaseException) -> bool:
    """Did the connection end with a TCP reset (rather than an answer or a clean close)?"""
    seen: BaseException | None = exc
    for _ in range(4):
        if seen is None:
            return False
        if isinstance(seen, ConnectionResetError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _read_report(reader: PktReader, sideband: bool, reporter: "Reporter", remote_text: bytearray) -> tuple[str, dict[str, str | None]]:
    """(unpack status, {ref: None for ok | reason}); the remote's messages go to ``remote_text``."""
    if sideband:
        buffered = bytearray()
        for channel, data in reader.sideband():
            if channel == 1:
                buffered += data
            else:
                reporter.sideband(data)
                remote_text += data
                del remote_text[:-4096]
        reporter.flush_sideband()
        pos = 0

        def read(n: int) -> bytes:
            nonlocal pos
            chunk = bytes(buffered[pos:pos + n])
            pos += len(chunk)
            return chunk

        inner = PktReader(read, "remote report")
    else:
        inner = reader
    first = inner.read_line()
    if not isinstance(first, str) or not first.startswith("unpack "):
        raise ProtocolError(f"protocol error: expected 'unpack' status, got {first!r}")
    statuses: dict[str, str | None] = {}
    for line in inner.read_lines_until_flush():
        word, _, rest = line.partition(" ")
        if word == "ok":
            statuses[rest] = None
        elif word == "ng":
            ref, _, why = rest.partition(" ")
            statuses[ref] = why or "rejected"
        else:
            raise ProtocolError(f"protocol error: bad report-status line '{line[:100]}'")
    return first[len("unpack "):], statuses


def local_haves(git: "Git", adv: Advertisement) -> list[str]:
    """Every tip the target advertised (and ``.have``) that exists here: all excluded from the pack."""
    candidates = list(dict.fromkeys([*adv.refs.values(), *adv.extra_haves]))
    present = git.existing(candidates)
    return [oid for oid in candidates if oid in present]


def shallow_roots(git: "Git") -> list[str]:
    """The commits where a shallow repository's history stops (none in a complete one)."""
    out = git.run(["rev-parse", "--is-shallow-repository", "--git-path", "shallow"]).decode().split("\n")
    if out[0].strip() != "true":
        return []
    path = out[1].strip()
    path = path if os.path.isabs(path) else os.path.join(git.cwd or os.getcwd(), path)
    try:
        with open(path, encoding="ascii") as fh:
            return [line.strip() for line in fh if line.strip()]
    except OSError:
        return []


def start_pack(git: "Git", updates: list[RefUpdate], haves: list[str], opts: PushOptions, progress: bool, ofs_delta: bool,
               limit: int | None = None, limit_source: str = "relay.maxPackBytes") -> "PackStream":
    """Start ``git pack-objects`` for ``updates`` minus ``haves`` (which must exist locally)."""
    # git's own pack-objects arguments for a push (send-pack.c), in git's order
    # (always --thin: git never tells a helper about --no-thin, see README "Conformance")
    args = ["pack-objects", "--all-progress-implied", "--revs", "--stdout", "--thin"]
    if ofs_delta:
        args.append("--delta-base-offset")
    args.append("--progress" if progress else "-q")
    if not opts.use_bitmaps:
        args.append("--no-use-bitmap-index")
    if opts.shallow if opts.shallow is not None else shallow_roots(git):
        args.append("--shallow")
    proc = git.popen(args, stdin=PIPE, stdout=PIPE, stderr=None)
    assert proc.stdin is not None and proc.stdout is not None
    widen_pipe(proc.stdout.fileno())  # a MiB per read instead of the pipe's default 64 KiB
    revs = [u.new for u in updates if not u.delete] + ["^" + h for h in haves]
    try:
        proc.stdin.write("".join(r + "\n" for r in revs).encode())
        proc.stdin.close()
    except BrokenPipeError:
        pass
    return _PackObjects(proc, limit, limit_source)


def send_updates(git: "Git", reporter: "Reporter", service: Service, adv: Advertisement, updates: list[RefUpdate], opts: PushOptions,
                 limit: int | None = None, limit_source: str = "relay.maxPackBytes",
                 prepared: "PackStream | None" = None) -> tuple[int, int | None]:
    """Push ``updates`` with a pack from the local repository; fill in their results.

    ``prepared`` is a pack already started for exactly these updates (a split push starts the
    next step's pack while the current one uploads). Returns (pack bytes sent, objects). Raises
    ``PackTooLarge`` when a limit stopped the pack.
    """
    stream: PackStream | None = prepared
    if stream is None and any(not u.delete for u in updates):
        stream = start_pack(git, updates, local_haves(git, adv), opts, reporter.progress, adv.has("ofs-delta"), limit, limit_source)
    elif stream is not None:
        stream.limit, stream.limit_source = limit, limit_source
    return exchange(service, adv, updates, opts, reporter, stream)


def exchange(
    service: Service, adv: Advertisement, updates: list[RefUpdate], opts: PushOptions, reporter: "Reporter", stream: PackStream | None
) -> tuple[int, int | None]:
    """Send the commands for ``updates`` and ``stream`` (the pack, None for deletes only) to an
    open receive-pack; set each update's ``ok``/``error`` from report-status only.
    """
    header = _commands(updates, adv, opts, reporter.progress)
    body: list[bytes] | Iterator[bytes] = [header] if stream is None else _with_header(header, stream)
    said = bytearray()
    try:
        reader = service.request(body)
        unpack, statuses = _read_report(reader, adv.has("side-band-64k"), reporter, said)
    except TooLargeError as exc:
        if stream is not None:
            stream.stop()
        raise PackTooLarge(exc.message, sent=stream.sent if stream else 0) from exc
    except RelayError as exc:
        _explain_failure(exc, service, stream, said)
        raise
    try:
        service.wait_sent()
    except PackTooLarge:
        if stream is not None:
            stream.stop()
        raise  # our own limit cut the pack; the server's complaint about it is a consequence
    except SendError:
        if unpack == "ok":
            raise
        # the server stopped reading the pack and said why in its report: that is the story
    if stream is not None:
        stream.stop()
    sent = stream.sent if stream else 0
    _apply_report(updates, unpack, statuses)
    text = unpack + " " + said.decode("utf-8", "replace")
    if unpack != "ok" and _size_refusal(text):
        raise PackTooLarge(f"the server refused the pack for its size: {unpack}", sent=sent, limit=stated_limit(text))
    if unpack != "ok":
        reporter.error(f"error: remote unpack failed: {unpack}")  # send-pack's own line, -q or not
    return sent, stream.objects if stream else None


def _with_header(header: bytes, stream: PackStream) -> Iterator[bytes]:
    yield header
    yield from stream


def _explain_failure(exc: RelayError, service: Service, stream: PackStream | None, said: bytearray) -> None:
    """The exchange broke: raise what it most likely means, or return to let ``exc`` stand."""
    if stream is not None:
        stream.stop()
    send_error: RelayError | None = None
    try:
        service.wait_sent()
    except PackTooLarge:
        raise  # our own limit stopped the pack: that is the real story
    except RelayError as err:
        send_error = err
    if stream is None:
        return
    text = said.decode("utf-8", "replace")
    if _size_refusal(text):
        raise PackTooLarge(f"the server refused the pack for its size ({exc.message})", sent=stream.sent, limit=stated_limit(text)) from exc
    # A reset is reported once, to the reader or to the writer, whichever asks first. git daemon
    # resets the socket when receive.maxInputSize stops the pack, before the reason can reach us:
    # most likely a size refusal, retried smaller a few times only.
    if stream.sent and (_was_reset(exc) or (send_error is not None and _was_reset(send_error))):
        raise PackTooLarge(
            f"the server reset the connection after {stream.sent} bytes of the pack, without a reason", sent=stream.sent, uncertain=True
        ) from exc


NO_REPORT = "the server did not report on this ref"


def _apply_report(updates: list[RefUpdate], unpack: str, statuses: dict[str, str | None]) -> None:
    """Each update's result, from the server's report only: no report, no ``ok``."""
    for u in updates:
        if u.dst in statuses:
            why = statuses[u.dst]
            if why is None:
                u.ok = True
            else:
                u.error = why
        else:
            u.error = f"no report from the server (unpack {unpack})" if unpack != "ok" else NO_REPORT


def parse_push_lines(lines: list[str]) -> list[RefUpdate]:
    updates = []
    for line in lines:
        if not line.startswith("push "):
            raise RelayError(f"unexpected line in a push batch: {line[:100]!r}")
        spec = line[5:]
        force = spec.startswith("+")
        if force:
            spec = spec[1:]
        src, sep, dst = spec.partition(":")
        if not sep or not dst:
            raise RelayError(f"bad push line from git: {line[:100]!r}")
        updates.append(RefUpdate(src=src, dst=dst, force=force))
    return updates
