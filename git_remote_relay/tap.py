"""git's own fetch-pack over the helper's pipe (``connect`` / ``stateless-connect``, protocol v2).

Every v2 fetch is git's: negotiation, alternates and ``--reference``, ``fetch.fsck.*``, shallow
rules, server options, ref prefixes and ``GIT_TRACE_PACKET`` are its own. The helper relays each
request git writes and the server's response, on the connection it owns (idle timeout, mama-ssh,
its HTTP client), and watches one thing: a fetch request that ends negotiation (``done``). When
that response's pack announces more objects than ``relay.fetchStepObjects``, the response is
dropped at the pack's 12-byte header, before one object reaches git; the history is fetched in
resumable steps (``fetchsteps``), and git's request goes out again with the finished steps as
``have`` lines. git receives that smaller pack as the answer to the request it made: with
``done`` sent, a v2 response has no acknowledgments, so the two answers have the same shape.

No byte is decoded on the way but pkt-line framing (a stream response ends at its flush) and the
side-band channel of the packets before the pack header.
"""

from __future__ import annotations

from collections.abc import Callable

from .errors import ProtocolError, TransportError
from .pktline import DELIM, FLUSH, RESPONSE_END, PktReader, Special, pkt, pkt_text
from .protocol import Advertisement
from .transport.base import Service

TYPE_CHECKING = False  # typing costs ~10 ms of start-up; mypy reads this as typing.TYPE_CHECKING
if TYPE_CHECKING:
    from typing import BinaryIO, Protocol

    class Stepper(Protocol):
        """Big fetches in steps (``fetchsteps.Steps``)."""

        limit: int

        def resume(self, wants: list[str], haves: list[str]) -> list[str]:
            """Steps finished by runs that died, to send as haves (none when there are none)."""
            ...

        def run(self, wants: list[str], haves: list[str], objects: int) -> list[str]:
            """Fetch the history of ``wants`` in steps; every finished step."""
            ...

        def finish(self) -> None:
            """The answer reached git whole: the steps need no protection any more."""
            ...

        def release(self) -> None:
            """Stop (the steps stay recorded for the next run)."""
            ...


__all__ = ["relay_v2", "Request", "Tally"]

Item = "bytes | Special"
OpenUpload = Callable[[], "tuple[Service, Advertisement]"]
# Arguments after which a fetch is git's alone: shallow boundaries, filters, refs by name and
# packfile URIs change the response's shape or the objects a step would need.
_NO_STEPS = (b"deepen", b"shallow ", b"filter", b"want-ref ", b"packfile-uris")


class Request:
    """One v2 request as git wrote it: the packets up to its flush."""

    def __init__(self, items: list[bytes | Special]) -> None:
        self.items = items

    @property
    def command(self) -> bytes:
        first = self.items[0] if self.items else b""
        return first.rstrip(b"\n") if isinstance(first, bytes) else b""

    def args(self) -> list[bytes]:
        """The lines after the delimiter."""
        out: list[bytes] = []
        seen_delim = False
        for item in self.items:
            if item is DELIM:
                seen_delim = True
            elif seen_delim and isinstance(item, bytes):
                out.append(item.rstrip(b"\n"))
        return out

    def oids(self, word: bytes) -> list[str]:
        n = len(word) + 1
        return [a[n:].decode() for a in self.args() if a.startswith(word + b" ")]

    def steppable(self) -> bool:
        """A fetch that ends negotiation and whose answer is one plain pack."""
        if self.command != b"command=fetch":
            return False
        args = self.args()
        return b"done" in args and any(a.startswith(b"want ") for a in args) and not any(a.startswith(_NO_STEPS) for a in args)

    def with_haves(self, haves: list[str]) -> bytes:
        """This request with more ``have`` lines before its ``done``."""
        out: list[bytes] = []
        extra = b"".join(pkt_text(f"have {h}") for h in haves)
        for item in self.items:
            if item == b"done\n":
                out.append(extra)
            out.append(item.wire if isinstance(item, Special) else pkt(item))
        return b"".join(out)

    def wire(self) -> bytes:
        return b"".join(item.wire if isinstance(item, Special) else pkt(item) for item in self.items)


def _read_request(reader: PktReader) -> Request | None:
    """git's next request, or None when git has closed the pipe (the conversation is over)."""
    items: list[bytes | Special] = []
    while True:
        try:
            item = reader.read_pkt()
        except TransportError:
            if not items:
                return None
            raise
        items.append(item)
        if item is FLUSH:
            return Request(items)


class Tally:
    """What a conversation fetched, for ``-v`` and ``relay.statsFile``."""

    def __init__(self) -> None:
        self.bytes = 0  # response bytes passed to git (a dropped big answer not counted)
        self.wants: list[str] = []
        self.objects: int | None = None  # of the last pack git received, from its header


class _Out:
    """git's end of the pipe: every packet is passed on as it arrives (progress must not wait)."""

    def __init__(self, stdout: BinaryIO, tally: Tally) -> None:
        self.stdout = stdout
        self.tally = tally
        self.error = False  # the server sent an ERR packet: git shows it and ends

    def write(self, data: bytes) -> None:
        self.tally.bytes += len(data)
        self.stdout.write(data)

    def item(self, item: bytes | Special) -> None:
        if isinstance(item, Special):
            self.write(item.wire)
        else:
            if item.startswith(b"ERR "):
                self.error = True
            self.write(pkt(item))
        self.stdout.flush()


class _Framing:
    """remote-curl's check of a relayed HTTP response: it must end on a packet boundary, so git
    is told of a cut-off answer (and not left waiting for the rest of a packet)."""

    def __init__(self) -> None:
        self.head = b""  # length digits of the next packet seen so far
        self.remaining = 0  # payload bytes of the current packet still to come

    def feed(self, data: bytes) -> None:
        i, n = 0, len(data)
        while i < n:
            if self.remaining:
                step = min(self.remaining, n - i)
                self.remaining -= step
                i += step
                continue
            take = min(4 - len(self.head), n - i)
            self.head += data[i : i + take]
            i += take
            if len(self.head) == 4:
                try:
                    size = int(self.head, 16)
                except ValueError:
                    raise ProtocolError(f"remote-curl: bad line length character: {self.head.decode('latin-1')}") from None
                if size == 2:
                    raise ProtocolError("remote-curl: unexpected response end packet")
                self.remaining = size - 4 if size >= 4 else 0
                self.head = b""

    def end(self) -> None:
        if self.head:
            raise ProtocolError(f"{len(self.head)} bytes of length header were received")
        if self.remaining:
            raise ProtocolError(f"{self.remaining} bytes of body are still expected")


def _copy_rest(service: Service, reader: PktReader, out: _Out) -> None:
    """The rest of a response: over HTTP the body to its end, undecoded; on a stream, up to its flush."""
    if service.stateless:
        read = service.raw_read
        framing = _Framing()  # the reader stopped on a packet boundary, if it read at all
        while True:
            data = read(1 << 16)
            if not data:
                break
            framing.feed(data)
            out.write(data)
        out.stdout.flush()
        framing.end()
        return
    while True:
        item = reader.read_pkt()
        out.item(item)
        if item is FLUSH:
            return


def _skip_preamble(reader: PktReader) -> None:
    """Read a response up to its ``packfile`` line (git has had these sections from the first answer)."""
    while True:
        item = reader.read_pkt()
        if item == b"packfile\n":
            return
        if item is FLUSH:
            raise TransportError("the remote ended its answer without a pack", "try the fetch again")


def _watch(service: Service, reader: PktReader, out: _Out, limit: int) -> int | None:
    """Pass the response on up to its pack header; then the rest, unless the pack has more than
    ``limit`` objects: return that count, having passed no pack byte on."""
    shallow = False
    while True:
        item = reader.read_pkt()
        out.item(item)
        if item == b"shallow-info\n":
            shallow = True  # the server's repository is itself shallow: git's alone
        if item == b"packfile\n":
            break
        if item is FLUSH or out.error:
            return None
    held: list[bytes | Special] = []
    head = b""
    ended = False
    while len(head) < 12 and not ended:
        item = reader.read_pkt()
        ended = isinstance(item, Special) or item[:1] == b"\x03"  # the end, or the server's error
        if held or (isinstance(item, bytes) and item[:1] == b"\x01"):
            held.append(item)
            if isinstance(item, bytes) and item[:1] == b"\x01":
                head += item[1:13]
        else:
            out.item(item)  # progress before the pack: git shows it as the server sends it
    objects = int.from_bytes(head[8:12], "big") if len(head) >= 12 and head[:4] == b"PACK" else 0
    if objects > limit and not shallow and not ended:
        return objects
    out.tally.objects = objects
    for item in held:
        out.item(item)
    if not ended:
        _copy_rest(service, reader, out)
    return None


def relay_v2(
    service: Service,
    adv: Advertisement,
    open_upload: OpenUpload,
    stdin: BinaryIO,
    stdout: BinaryIO,
    make_stepper: Callable[[], Stepper | None],
    tally: Tally | None = None,
) -> int:
    """Serve git's v2 conversation on ``service`` until git closes the pipe; the exit status.

    ``open_upload()`` opens upload-pack again after a response was dropped (a stream cannot
    continue past it). ``make_stepper()`` is called at the first fetch that could be stepped (a
no-op fetch never pays for it); it gives None where big fetches are not to be stepped.
    """
    out = _Out(stdout, tally or Tally())
    stateless = service.stateless
    lines = [pkt_text("version 2")]
    lines += [pkt_text(key if value is None else f"{key}={value}") for key, value in adv.caps.items()]
    stdout.write(b"".join(lines) + FLUSH.wire)
    stdout.flush()
    requests = PktReader(stdin.read, "git")
    try:
        while True:
            request = _read_request(requests)
            if request is None:
                break
            if request.items == [FLUSH]:
                # git's goodbye on a stream (disconnect_git): it expects no answer
                service.request([FLUSH.wire])
                service.wait_sent()
                break
            if request.command == b"command=fetch":
                out.tally.wants += request.oids(b"want")
            stepper = make_stepper() if request.steppable() and "filter" in (adv.caps.get("fetch") or "").split() else None
            if stepper is not None:
                service = _fetch(service, open_upload, request, out, stepper)
            else:
                reader = service.request([request.wire()])
                _copy_rest(service, reader, out)
            if stateless:
                stdout.write(RESPONSE_END.wire)
                stdout.flush()
            if out.error:
                return 1
    finally:
        service.close()
    # like git's finish_connect: an upload-pack that failed fails the fetch, whatever it sent
    return service.exit_status or 0


def _fetch(service: Service, open_upload: OpenUpload, request: Request, out: _Out, stepper: Stepper) -> Service:
    """Relay a fetch that ends negotiation, in steps when its pack is big; the service to go on with."""
    wants, haves = request.oids(b"want"), request.oids(b"have")
    try:
        extra = stepper.resume(wants, haves)
        body = request.with_haves(extra) if extra else request.wire()
        objects = _watch(service, service.request([body]), out, stepper.limit)
        if objects is None:
            stepper.finish() if extra else stepper.release()
            return service
        service.abort()
        steps = stepper.run(wants, haves, objects)
        service, _ = open_upload()
        reader = service.request([request.with_haves(steps)])
        _skip_preamble(reader)
        _copy_rest(service, reader, out)
        stepper.finish()
        return service
    finally:
        stepper.release()
