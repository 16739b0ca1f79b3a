"""The transport interface: open one service (upload-pack or receive-pack) and exchange requests.

A ``Service`` starts with the server's advertisement in ``reader``. ``request(body)`` sends a
request (an iterable of byte chunks, streamed as it is produced) and returns the reader of the
reply. Stateful transports (ssh, local, git://) keep one byte stream: the body is written by a
thread so a reply that starts before the body ends (receive-pack's side-band progress) never
deadlocks. The stateless transport (http) turns each request into one POST.
"""

from __future__ import annotations

import io
import os
import select
import threading
import time
from collections.abc import Callable, Iterable, Mapping

from ..errors import RelayError, StalledError, TransportError
from ..gitcmd import Config, Git
from ..gittrace import CurlTrace, PacketTrace, curl_trace, packet_trace
from ..pktline import FLUSH, PktReader

__all__ = ["Context", "Service", "StreamService", "SendError", "NOT_FOUND_HINT", "Activity", "IdleReader", "stalled"]

NOT_FOUND_HINT = "Could not read from remote repository: check the URL, that the repository exists and that you have access."


# How often a waiting read looks at the clock; a write in progress elsewhere resets the clock.
_POLL_SLICE = 5.0


def stalled(label: str, timeout: float) -> StalledError:
    return StalledError(
        f"no data from the {label} for {timeout:g} s (relay.timeout): the server or the network has stalled",
        "check the server and the network, then try again; a server that is slow to answer needs a larger relay.timeout "
        "(seconds, 0 = wait forever)",
    )


class Activity:
    """When a byte last moved on a connection, in either direction (shared by reader and writer)."""

    def __init__(self) -> None:
        self.last = time.monotonic()
        self.producing = False  # our request body is waiting on its producer (pack-objects thinking)

    def touch(self) -> None:
        self.last = time.monotonic()

    def idle(self) -> float:
        """Seconds the other side has had nothing to do with us; 0 while we owe it bytes."""
        if self.producing:
            self.last = time.monotonic()
            return 0.0
        return time.monotonic() - self.last


class IdleReader(io.RawIOBase):
    """A raw reader over a pipe or socket fd that gives up after ``timeout`` seconds of no traffic.

    Traffic is counted both ways (``activity``): while our side is still sending a request body
    (a push whose pack-objects is busy), the server has nothing to say and is not stalled.
    """

    def __init__(self, fd: int, timeout: float | None, label: str, activity: Activity) -> None:
        super().__init__()
        self.fd = fd
        self.timeout = timeout if timeout and timeout > 0 else None
        self.label = label
        self.activity = activity
        self.timed_out = False

    def readable(self) -> bool:
        return True

    def readinto(self, buf: "memoryview | bytearray") -> int:  # type: ignore[override]
        if self.timeout is not None:
            while True:
                left = self.timeout - self.activity.idle()
                ready, _, _ = select.select([self.fd], [], [], max(0.0, min(_POLL_SLICE, left)))
                if ready:
                    break
                if left <= 0:
                    self.timed_out = True
                    raise stalled(self.label, self.timeout)
        n = os.readv(self.fd, [buf])
        if n:
            self.activity.touch()
        return n


class SendError(TransportError):
    """Writing the request to the remote failed (it stopped reading or hung up)."""


def _no_trace(_msg: str) -> None:
    return None


class Context:
    """What a transport needs from its caller; nothing here is read from the process directly."""

    def __init__(
        self,
        env: Mapping[str, str],
        git: Git,
        config: Config,
        remote_name: str | None = None,
        family: str | None = None,
        trace: Callable[[str], None] = _no_trace,
        timeout: float | None = None,
        say: Callable[[str], None] = _no_trace,
    ) -> None:
        self.env = env
        self.say = say  # a line for the user (a wait the server asked for)
        self.timeout = timeout  # relay.timeout: seconds of no traffic before a transfer is given up (None: never)
        self.git = git
        self.config = config
        self.remote_name = remote_name
        self.family = family  # "ipv4" / "ipv6" from `option family`
        self.trace = trace
        self.programs: dict[str, str] = {}  # service -> remote program given by git (servpath)
        self.v1 = False  # protocol.version=1: services that do not speak v2 are asked for version 1
        self.verbose: Callable[[str], object] | None = None  # git -v: where connect.c's account of a connection goes
        # GIT_TRACE_PACKET / GIT_TRACE_CURL: git's traces of what only the helper sees (None: off)
        self.packets: PacketTrace | None = packet_trace(env)
        self.curl: CurlTrace | None = curl_trace(env)
        # hosts that asked us to slow down (HTTP 429/503): a fleet gives them fewer pairs at once
        self.throttled: set[str] = set()


class Service:
    """One open conversation with a remote service."""

    version: int = 0
    stateless: bool = False
    reader: PktReader
    raw_read: Callable[[int], bytes]  # stateless services: the last response's body, undecoded
    label: str = "remote"
    exit_status: int | None = None  # after close(): the exit status of a child process that served us
    packets: PacketTrace | None = None  # GIT_TRACE_PACKET for this conversation (see ``traced``)

    def traced(self, packets: PacketTrace | None) -> None:
        """Trace the packets read and written from now on (None: stop; git traces what it relays itself)."""
        self.packets = packets
        self.reader.trace = packets.read if packets is not None else None

    def request(self, body: Iterable[bytes]) -> PktReader:
        raise NotImplementedError

    def wait_sent(self) -> None:
        """Wait until the last request body is fully sent (stateful transports send it in a thread)."""

    def close(self) -> None:
        raise NotImplementedError

    def goodbye(self) -> None:
        """Before closing a connection that got no request: a stateful service ends quietly on a
        flush, where a bare EOF makes it print "fatal: the remote end hung up unexpectedly"."""
        if self.stateless:
            return
        try:
            self.request([FLUSH.wire])
            self.wait_sent()
        except RelayError:
            pass

    def dismiss(self) -> None:
        """Close a connection that got no request: ``goodbye``, then ``close``."""
        self.goodbye()
        self.close()

    def abort(self) -> None:
        """Close in the middle of a reply (which makes the connection unusable)."""
        self.close()

    def __enter__(self) -> "Service":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class StreamService(Service):
    """A service over one full-duplex byte stream (a child process's pipes or a TCP socket)."""

    def __init__(
        self,
        read: Callable[[int], bytes],
        write: Callable[[bytes], object],
        close_write: Callable[[], None],
        close: Callable[[], int | None],
        label: str,
        readinto: Callable[[memoryview], int | None] | None = None,
        activity: Activity | None = None,
        fds: tuple[int, int] | None = None,
    ) -> None:
        self.reader = PktReader(read, label, readinto)
        self.fds = fds  # (read, write) file descriptors of the stream, to pass it on as it is
        self.activity = activity or Activity()
        self._write = write
        self._close_write = close_write
        self._close = close
        self.label = label
        self._writer: threading.Thread | None = None
        self.write_error: BaseException | None = None

    def _pump(self, body: Iterable[bytes]) -> None:
        try:
            activity = self.activity
            chunks = iter(body)
            while True:
                activity.producing = True
                try:
                    chunk = next(chunks, None)
                finally:
                    activity.producing = False
                    activity.touch()
                if chunk is None:
                    break
                if chunk:
                    self._write(chunk)
                    activity.touch()
        except BaseException as exc:  # reported by wait_sent(); the reader sees the hang-up
            self.write_error = exc
            try:
                self._close_write()
            except OSError:
                pass

    def request(self, body: Iterable[bytes]) -> PktReader:
        self.wait_sent()
        self.activity.touch()
        if self.packets is not None:
            body = self.packets.body(body)
        self._writer = threading.Thread(target=self._pump, args=(body,), daemon=True, name="relay-writer")
        self._writer.start()
        return self.reader

    def wait_sent(self) -> None:
        """Wait for the body writer; raise what stopped it."""
        if self._writer is not None:
            self._writer.join()
            self._writer = None
        if self.write_error is not None:
            exc, self.write_error = self.write_error, None
            if isinstance(exc, TransportError):
                raise exc
            if isinstance(exc, OSError):
                raise SendError(f"the {self.label} hung up while we were sending ({exc.strerror or exc})") from exc
            raise exc

    def close_write(self) -> None:
        """Tell the remote nothing more comes (its stdin closed, or the socket's write side shut)."""
        self._close_write()

    def send(self, data: bytes) -> None:
        """Write ``data`` now, before any request (a git:// request line)."""
        self._write(data)

    def close(self) -> None:
        try:
            self._close_write()
        except OSError:
            pass
        self.exit_status = self._close()


_PIPE_BUFFER = 1 << 18  # big reads: a 64 KiB pkt-line is read in one go


def child_stream(argv: list[str], env: Mapping[str, str], ctx: Context, label: str) -> StreamService:
    """Start ``argv`` and speak to it over its stdin and stdout (ssh, a local upload-pack, a
    git:// proxy command): the stream of one service."""
    from ..gitcmd import PIPE, kill_tree, spawn, wait_for, widen_pipe

    try:
        proc = spawn(argv, env=dict(env), cwd=ctx.git.cwd, stdin=PIPE, stdout=PIPE, bufsize=0)
    except OSError as exc:
        raise TransportError(f"cannot run {argv[0]}: {exc.strerror}", "check that it is installed and on PATH") from exc
    assert proc.stdin is not None and proc.stdout is not None
    widen_pipe(proc.stdout.fileno())
    widen_pipe(proc.stdin.fileno())
    activity = Activity()
    raw = IdleReader(proc.stdout.fileno(), ctx.timeout, label, activity)
    reader = io.BufferedReader(raw, buffer_size=_PIPE_BUFFER)
    stdin = proc.stdin
    stdout = proc.stdout

    def write_all(data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = stdin.write(view)
            view = view[n or 0 :]

    def close_write() -> None:
        if not stdin.closed:
            stdin.close()

    def close() -> int | None:
        if raw.timed_out:
            kill_tree(proc)  # a stalled ssh would wait for its server as long as we let it
        close_write()
        # Stop reading first: a child still writing a reply we abandoned gets EPIPE and ends,
        # instead of blocking on a full pipe until the wait below runs out.
        reader.close()
        stdout.close()
        status = wait_for(proc, 10)
        if status is None:
            kill_tree(proc)
        return status

    return StreamService(reader.read, write_all, close_write, close, label, reader.readinto, activity,
                         fds=(stdout.fileno(), stdin.fileno()))
