"""pkt-line and side-band framing (gitprotocol-common, gitprotocol-v2). Pure: works on callables.

A pkt-line is four hex digits of length (including themselves) and a payload; ``0000`` is a
flush, ``0001`` a delimiter and ``0002`` a response end (v2 stateless). Payloads are at most
65516 bytes; side-band-64k puts a one-byte channel in front (1 = data, 2 = progress, 3 = error).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from .errors import ProtocolError, RemoteError, TransportError

__all__ = [
    "FLUSH",
    "DELIM",
    "RESPONSE_END",
    "MAX_PAYLOAD",
    "pkt",
    "pkt_text",
    "PktReader",
    "Special",
    "pump_sideband",
]

FLUSH_PKT = b"0000"
DELIM_PKT = b"0001"
RESPONSE_END_PKT = b"0002"
MAX_PAYLOAD = 65516


class Special:
    """A control packet (flush, delim, response-end); compared by identity."""

    def __init__(self, name: str, wire: bytes) -> None:
        self.name = name
        self.wire = wire

    def __repr__(self) -> str:
        return f"<{self.name}>"


FLUSH = Special("flush", FLUSH_PKT)
DELIM = Special("delim", DELIM_PKT)
RESPONSE_END = Special("response-end", RESPONSE_END_PKT)
_SPECIALS = {0: FLUSH, 1: DELIM, 2: RESPONSE_END}


def pkt(payload: bytes) -> bytes:
    """Frame one payload."""
    if len(payload) > MAX_PAYLOAD:
        raise ValueError("pkt-line payload too long")
    return b"%04x" % (len(payload) + 4) + payload


def pkt_text(line: str) -> bytes:
    """Frame one text line, adding the LF git expects."""
    return pkt(line.encode() + b"\n")


def _read_exact(read: Callable[[int], bytes], n: int) -> bytes:
    data = read(n)
    if len(data) == n or not data:
        return data
    parts = [data]
    got = len(data)
    while got < n:
        more = read(n - got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


class PktReader:
    """Reads pkt-lines from ``read(n)``; raises ``TransportError`` on a cut-off stream."""

    def __init__(
        self, read: Callable[[int], bytes], what: str = "remote", readinto: Callable[[memoryview], int | None] | None = None
    ) -> None:
        self._read = read
        self._readinto = readinto
        self._what = what
        self._pushed: list[bytes | Special] = []
        self.started = False
        self.trace: Callable[[bytes], None] | None = None  # GIT_TRACE_PACKET: each packet read (gittrace)
        self._untaped: Callable[[int], bytes] | None = None

    def record(self) -> bytearray:
        """From now on keep a copy of every byte read (until ``stop_recording``): a reply as it
        came, to hand on whole (a v0 advertisement, to git's own fetch-pack)."""
        tape = bytearray()
        read = self._untaped = self._untaped or self._read

        def taped(n: int) -> bytes:
            data = read(n)
            tape.extend(data)
            return data

        self._read = taped
        return tape

    def stop_recording(self) -> None:
        if self._untaped is not None:
            self._read, self._untaped = self._untaped, None

    def read_pkt(self) -> bytes | Special:
        """The next payload (bytes) or control packet."""
        if self._pushed:
            return self._pushed.pop()
        head = self._read_safely(4)
        if not head and not self.started:
            # git's words (connect.c), which scripts look for; the server's own reason, when it
            # gave one, is on the line before
            raise TransportError(
                "Could not read from remote repository.\n\nPlease make sure you have the correct access rights\n"
                "and the repository exists."
            )
        self.started = True
        if len(head) < 4:
            raise TransportError(
                f"the {self._what} hung up unexpectedly",
                "the connection closed in the middle of a reply; check the server and try again",
            )
        try:
            size = int(head, 16)
        except ValueError:
            raise ProtocolError(f"protocol error: bad line length {head!r} from the {self._what}") from None
        if size < 4:
            special = _SPECIALS.get(size) or self._bad(head)
            if self.trace is not None:
                self.trace(special.wire)
            return special
        payload = self._read_safely(size - 4)
        if len(payload) < size - 4:
            raise TransportError(
                f"the {self._what} hung up unexpectedly (truncated packet)",
                "the connection closed in the middle of a reply; check the server and try again",
            )
        if self.trace is not None:
            self.trace(payload)
        return payload

    def _next_size(self) -> int:
        """The length field of the next packet (0 for a flush); other control packets are errors."""
        head = self._read_safely(4)
        if len(head) < 4:
            raise TransportError(
                f"the {self._what} hung up unexpectedly",
                "the connection closed in the middle of a reply; check the server and try again",
            )
        self.started = True
        try:
            size = int(head, 16)
        except ValueError:
            raise ProtocolError(f"protocol error: bad line length {head!r} from the {self._what}") from None
        if 0 < size < 4:
            raise ProtocolError(f"protocol error: unexpected control packet {head!r} in side-band data")
        if size > MAX_PAYLOAD + 4:
            raise ProtocolError(f"protocol error: packet of {size} bytes from the {self._what}")
        return size

    def _read_safely(self, n: int) -> bytes:
        try:
            return _read_exact(self._read, n)
        except OSError as exc:  # a reset connection is a transport failure, not a crash
            raise TransportError(f"the connection to the {self._what} broke ({exc.strerror or exc})") from exc

    def _bad(self, head: bytes) -> Special:
        raise ProtocolError(f"protocol error: bad line length {head!r} from the {self._what}")

    def unread(self, item: bytes | Special) -> None:
        self._pushed.append(item)

    def read_line(self) -> str | Special:
        """A text payload without its trailing LF; ``ERR`` lines become ``RemoteError``."""
        item = self.read_pkt()
        if isinstance(item, Special):
            return item
        text = item.decode("utf-8", "replace")
        if text.endswith("\n"):
            text = text[:-1]
        if text.startswith("ERR "):
            raise RemoteError(f"remote error: {text[4:]}")
        return text

    def read_lines_until_flush(self) -> list[str]:
        lines: list[str] = []
        while True:
            item = self.read_line()
            if item is FLUSH:
                return lines
            if isinstance(item, Special):
                raise ProtocolError(f"protocol error: unexpected {item.name} packet from the {self._what}")
            lines.append(item)

    def sideband(self) -> Iterator[tuple[int, bytes]]:
        """Yield ``(channel, payload)`` until a flush. Channel 3 raises ``RemoteError``."""
        while True:
            item = self.read_pkt()
            if item is FLUSH:
                return
            if isinstance(item, Special):
                raise ProtocolError(f"protocol error: unexpected {item.name} packet in side-band data")
            if not item:
                continue
            channel = item[0]
            if channel == 3:
                text = item[1:].decode("utf-8", "replace").strip()
                raise RemoteError(f"remote error: {text}")
            if channel not in (1, 2):
                raise ProtocolError(f"protocol error: bad side-band channel {channel}")
            yield channel, item[1:]


def pump_sideband(reader: PktReader, on_data: Callable[[memoryview], object], on_progress: Callable[[bytes], None]) -> int:
    """Demultiplex side-band data up to a flush, handing channel 1 to ``on_data`` without copying.

    The hot loop of a fetch: one reusable buffer filled with ``readinto``, so Python allocates and
    copies nothing per packet. ``on_data`` must consume the view before returning. Returns the
    number of data bytes. Falls back to ``sideband()`` when the stream offers no ``readinto``.
    """
    total = 0
    readinto = reader._readinto
    if readinto is None or reader._pushed or reader.trace is not None:
        for channel, data in reader.sideband():
            if channel == 1:
                on_data(memoryview(data))
                total += len(data)
            else:
                on_progress(data)
        return total
    buf = bytearray(MAX_PAYLOAD)
    view = memoryview(buf)
    while True:
        item_size = reader._next_size()
        if item_size == 0:
            return total
        n = item_size - 4
        got = 0
        try:
            while got < n:
                k = readinto(view[got:n])
                if not k:
                    raise TransportError(
                        f"the {reader._what} hung up unexpectedly (truncated packet)",
                        "the connection closed in the middle of a reply; check the server and try again",
                    )
                got += k
        except OSError as exc:
            raise TransportError(f"the connection to the {reader._what} broke ({exc.strerror or exc})") from exc
        if n == 0:
            continue
        channel = buf[0]
        if channel == 1:
            on_data(view[1:n])
            total += n - 1
        elif channel == 2:
            on_progress(bytes(view[1:n]))
        elif channel == 3:
            raise RemoteError(f"remote error: {bytes(view[1:n]).decode('utf-8', 'replace').strip()}")
        else:
            raise ProtocolError(f"protocol error: bad side-band channel {channel}")
