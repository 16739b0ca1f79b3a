"""An in-memory git server behind the transport interface, for engine tests that run in milliseconds.

``MemoryServer`` keeps refs and answers like git's services: a v0 receive-pack (report-status,
side-band-64k, delete-refs, atomic, push-options) that takes a pack, optionally refuses one over
``max_input`` bytes the way ``receive.maxInputSize`` does (or resets the connection, like git
daemon), and applies the commands; and a v2 upload-pack with ``ls-refs`` and a ``fetch`` whose
pack comes from ``pack_for(wants, haves)``. Register it with ``transport.register("memory", ...)``
and use URLs ``memory://<name>/``. It checks framing, not objects: a pack is bytes with a header.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable

from ..errors import TransportError
from ..pktline import DELIM, FLUSH, MAX_PAYLOAD, PktReader, pkt, pkt_text
from ..protocol import ZERO_OID
from ..url import InnerUrl
from .base import Context, Service

__all__ = ["MemoryServer", "MemoryTransport", "fake_pack", "SERVERS"]

RECEIVE_CAPS = "report-status side-band-64k delete-refs atomic ofs-delta push-options quiet agent=git/memory"


def fake_pack(objects: int, size: int) -> bytes:
    """``size`` bytes that start like a pack of ``objects`` objects (enough for the engine)."""
    head = b"PACK" + (2).to_bytes(4, "big") + objects.to_bytes(4, "big")
    return head + b"\0" * max(0, size - len(head))


def _sideband(channel: int, data: bytes) -> bytes:
    out = []
    for i in range(0, len(data), MAX_PAYLOAD - 1):
        out.append(pkt(bytes((channel,)) + data[i:i + MAX_PAYLOAD - 1]))
    return b"".join(out)


class MemoryServer:
    """One repository's refs and the rules it pushes and fetches by."""

    def __init__(self, refs: dict[str, str] | None = None) -> None:
        self.refs: dict[str, str] = dict(refs or {})
        self.max_input: int | None = None  # receive.maxInputSize
        self.reset_over_limit = False  # refuse by resetting the connection (git daemon) instead of saying why
        self.pushes: list[tuple[list[tuple[str, str, str]], int]] = []  # (commands, pack bytes) accepted or not
        self.connections = 0
        self.pack_for: Callable[[list[str], list[str]], bytes] = lambda wants, haves: fake_pack(len(wants), 64)
        self.hook: Callable[[list[tuple[str, str, str]]], str | None] = lambda commands: None  # pre-receive: a reason refuses

    # -- receive-pack -----------------------------------------------------------------------------
    def receive_advertisement(self) -> bytes:
        lines = [f"{oid} {name}" for name, oid in self.refs.items()] or [f"{ZERO_OID} capabilities^{{}}"]
        first = pkt(lines[0].encode() + b"\0" + RECEIVE_CAPS.encode() + b"\n")
        return first + b"".join(pkt_text(x) for x in lines[1:]) + FLUSH.wire

    def receive(self, body: bytes) -> bytes:
        stream = io.BytesIO(body)
        reader = PktReader(stream.read, "client")  # reads exactly each packet: the pack follows in ``stream``
        commands: list[tuple[str, str, str]] = []
        caps: list[str] = []
        while True:
            item = reader.read_pkt()
            if item is FLUSH:
                break
            assert isinstance(item, bytes)
            line, _, capstext = item.partition(b"\0")
            if capstext:
                caps = capstext.decode().split()
            old, new, name = line.decode().rstrip("\n").split(" ")
            commands.append((old, new, name))
        if not commands:
            return b""
        if "push-options" in caps:
            reader.read_lines_until_flush()
        rest = stream.read()
        self.pushes.append((commands, len(rest)))
        if self.max_input is not None and len(rest) > self.max_input:
            if self.reset_over_limit:
                raise ConnectionResetError(104, "Connection reset by peer")
            return self._report(caps, "unpack error: pack exceeds maximum allowed size", {n: "unpacker error" for _, _, n in commands})
        why = self.hook(commands)
        results: dict[str, str | None] = {}
        for old, _new, name in commands:
            if why:
                results[name] = "pre-receive hook declined"
            elif self.refs.get(name, ZERO_OID) != old:
                results[name] = "stale info"
            else:
                results[name] = None
        if "atomic" in caps and any(results.values()):
            results = {n: r or "atomic transaction failed" for n, r in results.items()}
        for _old, new, name in commands:
            if results[name] is None:
                if new == ZERO_OID:
                    self.refs.pop(name, None)
                else:
                    self.refs[name] = new
        return self._report(caps, "unpack ok", results)

    @staticmethod
    def _report(caps: list[str], unpack: str, results: dict[str, str | None]) -> bytes:
        lines = [pkt_text(unpack)] + [pkt_text(f"ok {n}" if r is None else f"ng {n} {r}") for n, r in results.items()] + [FLUSH.wire]
        report = b"".join(lines)
        return _sideband(1, report) + FLUSH.wire if "side-band-64k" in caps else report

    # -- upload-pack (v2) ---------------------------------------------------------------------------
    def upload_advertisement(self) -> bytes:
        return b"".join(pkt_text(x) for x in ["version 2", "agent=git/memory", "ls-refs=unborn", "fetch=shallow filter"]) + FLUSH.wire

    def upload(self, body: bytes) -> bytes:
        reader = PktReader(io.BytesIO(body).read, "client")
        command = reader.read_line()
        while reader.read_line() is not DELIM:
            pass
        args = reader.read_lines_until_flush()
        if command == "command=ls-refs":
            return b"".join(pkt_text(f"{oid} {name}") for name, oid in self.refs.items()) + FLUSH.wire
        wants = [a.split()[1] for a in args if a.startswith("want ")]
        haves = [a.split()[1] for a in args if a.startswith("have ")]
        return pkt_text("packfile") + _sideband(1, self.pack_for(wants, haves)) + FLUSH.wire


class MemoryService(Service):
    """One conversation: each request is handled at once, like a POST."""

    stateless = True

    def __init__(self, server: MemoryServer, service: str) -> None:
        self.server = server
        self.service = service
        self.label = f"memory {service}"
        advert = server.receive_advertisement() if service == "receive-pack" else server.upload_advertisement()
        self.reader = PktReader(io.BytesIO(advert).read, self.label)

    def request(self, body: Iterable[bytes]) -> PktReader:
        data = b"".join(body)
        try:
            reply = self.server.receive(data) if self.service == "receive-pack" else self.server.upload(data)
        except ConnectionResetError as exc:
            raise TransportError(f"the connection to the {self.label} broke (Connection reset by peer)") from exc
        self.reader = PktReader(io.BytesIO(reply).read, self.label)
        return self.reader

    def close(self) -> None:
        pass


SERVERS: dict[str, MemoryServer] = {}


class MemoryTransport:
    """``memory://<name>/``: the ``MemoryServer`` registered under ``SERVERS[name]``."""

    def __init__(self, url: InnerUrl, ctx: Context) -> None:
        self.server = SERVERS[url.host]

    def open(self, service: str, want_v2: bool) -> MemoryService:
        self.server.connections += 1
        return MemoryService(self.server, service)
