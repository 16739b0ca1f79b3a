"""The client side of OpenSSH's multiplexing protocol (PROTOCOL.mux, version 4), spoken to our masters.

A session of git's rides a master without an ssh client of its own: mama-ssh connects to the
control socket, asks for a session with git's remote command, passes its own stdin, stdout and
stderr (git's pipes) to the master, and waits for the exit status. That is what ``ssh -S <socket>``
does as a "passenger" client; doing it here spares every git operation the start of an ssh process
(about 5 ms of CPU, and that much of latency), and a refused session is told by the master's reply,
not read from ssh's messages.

Every message is ``uint32 length, uint32 type, body``; integers big-endian, strings length-prefixed.
"""

import _socket  # not `socket`: its enums cost ~9 ms of start-up on the warm path
import sys

__all__ = ["Request", "Session", "Unavailable", "Refused", "alive_check"]

VERSION = 4
MUX_MSG_HELLO = 0x00000001
MUX_C_NEW_SESSION = 0x10000002
MUX_C_ALIVE_CHECK = 0x10000004
MUX_S_PERMISSION_DENIED = 0x80000002
MUX_S_FAILURE = 0x80000003
MUX_S_EXIT_MESSAGE = 0x80000004
MUX_S_ALIVE = 0x80000005
MUX_S_SESSION_OPENED = 0x80000006
MUX_S_TTY_ALLOC_FAIL = 0x80000008
NO_ESCAPE = 0xFFFFFFFF
_MAX_MESSAGE = 256 * 1024  # a master's replies are a few bytes; anything larger is not a master


class Unavailable(Exception):
    """The master could not be asked: nobody listens, it is no master of ours, or it hung up.
    Nothing reached the server for this session."""


class Refused(Exception):
    """The master asked the server for the session and was refused (sshd's MaxSessions): worth
    asking again shortly. ``str()`` is the master's reason."""


def _u32(n: int) -> bytes:
    return n.to_bytes(4, "big")


def _string(data: bytes) -> bytes:
    return _u32(len(data)) + data


class _Conn:
    """One connection to a control socket. The connect blocks: a master's backlog may be full for a
    moment when fifty processes arrive at once, and a connect that waits is what ssh's own client
    does. ``timeout`` bounds each read and write after it (None: a session, which lasts as long as
    git's transfer)."""

    def __init__(self, path: str, timeout: float | None = None) -> None:
        self.sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            self.sock.connect(path)
            self.sock.settimeout(timeout)
        except OSError as exc:
            self.sock.close()
            raise Unavailable(f"cannot connect to {path}: {exc.strerror or exc}") from None
        try:
            self.send(_u32(MUX_MSG_HELLO) + _u32(VERSION))
            kind, body = self.read()
        except Unavailable:
            self.close()
            raise
        if kind != MUX_MSG_HELLO or body[:4] != _u32(VERSION):
            self.close()
            raise Unavailable(f"{path} does not speak multiplexing protocol {VERSION}")

    def send(self, message: bytes) -> None:
        try:
            self.sock.sendall(_u32(len(message)) + message)
        except OSError as exc:
            raise Unavailable(f"the master hung up: {exc.strerror or exc}") from None

    def _exactly(self, n: int) -> bytes:
        parts, left = [], n
        while left:
            try:
                chunk = self.sock.recv(left)
            except OSError as exc:
                raise Unavailable(f"the master hung up: {exc.strerror or exc}") from None
            if not chunk:
                raise Unavailable("the master hung up")
            parts.append(chunk)
            left -= len(chunk)
        return b"".join(parts)

    def read(self) -> "tuple[int, bytes]":
        """(type, body) of the next message; ``Unavailable`` at end of stream."""
        size = int.from_bytes(self._exactly(4), "big")
        if not 4 <= size <= _MAX_MESSAGE:
            raise Unavailable(f"a message of {size} bytes from the master")
        message = self._exactly(size)
        return int.from_bytes(message[:4], "big"), message[4:]

    def close(self) -> None:
        self.sock.close()


def _reason(body: bytes) -> str:
    """The reason string of MUX_S_FAILURE / MUX_S_PERMISSION_DENIED (after the request id)."""
    size = int.from_bytes(body[4:8], "big")
    return body[8 : 8 + size].decode(errors="replace") or "no reason given"


def alive_check(path: str, timeout: float = 10.0) -> int:
    """The pid of the master on ``path`` (``ssh -O check`` without starting ssh). Raises ``Unavailable``."""
    conn = _Conn(path, timeout)
    try:
        conn.send(_u32(MUX_C_ALIVE_CHECK) + _u32(1))
        kind, body = conn.read()
    finally:
        conn.close()
    if kind != MUX_S_ALIVE or len(body) < 8:
        raise Unavailable(f"no alive reply from {path}")
    return int.from_bytes(body[4:8], "big")


class Request:
    """What a session asks of the master: what ssh's passenger client would send for git's argv."""

    __slots__ = ("socket", "command", "env", "want_agent", "want_x11", "term")

    def __init__(self, socket: str, command: bytes, env: "list[bytes]", want_agent: bool = False, want_x11: bool = False,
                 term: bytes = b"") -> None:
        self.socket = socket
        self.command = command
        self.env = env
        self.want_agent = want_agent
        self.want_x11 = want_x11
        self.term = term

    def message(self, request_id: int) -> bytes:
        flags = _u32(0) + _u32(self.want_x11) + _u32(self.want_agent) + _u32(0)  # tty, X11, agent, subsystem
        return (_u32(MUX_C_NEW_SESSION) + _u32(request_id) + _string(b"") + flags + _u32(NO_ESCAPE) + _string(self.term)
                + _string(self.command) + b"".join(_string(e) for e in self.env))


class Session:
    """A session the master opened for us on our stdin, stdout and stderr.

    ``Session(request)`` raises ``Unavailable`` (nothing reached the server: run it another way)
    or ``Refused``; ``wait()`` returns its exit status, 255 when it ended without one (the master
    or the connection died, or the remote command was killed by a signal), as ssh does."""

    def __init__(self, request: Request, fds: "tuple[int, int, int]" = (0, 1, 2)) -> None:
        self.conn = _Conn(request.socket)
        try:
            self.conn.send(request.message(1))
            for fd in fds:  # one message each, as the master's mm_receive_fd reads them
                try:
                    self.conn.sock.sendmsg([b"\0"], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, fd.to_bytes(4, sys.byteorder))])
                except OSError as exc:
                    raise Unavailable(f"cannot pass descriptor {fd} to the master: {exc.strerror or exc}") from None
            kind, body = self.conn.read()
        except Unavailable:
            self.conn.close()
            raise
        if kind == MUX_S_SESSION_OPENED and len(body) >= 8:
            self.id = int.from_bytes(body[4:8], "big")
            return
        self.conn.close()
        if kind == MUX_S_FAILURE and len(body) >= 8:
            raise Refused(_reason(body))
        if kind == MUX_S_PERMISSION_DENIED and len(body) >= 8:  # a master of ControlMaster=ask, adopted: it won't change its mind
            raise Unavailable(f"the master denied the session: {_reason(body)}")
        raise Unavailable(f"unexpected reply 0x{kind:08x} from the master")

    def wait(self) -> int:
        """Block until the master closes the session; its exit status (255 without one)."""
        status = 255
        try:
            while True:
                kind, body = self.conn.read()
                if kind == MUX_S_EXIT_MESSAGE and len(body) >= 8 and body[:4] == _u32(self.id):
                    status = int.from_bytes(body[4:8], "big") & 0xFF
                elif kind != MUX_S_TTY_ALLOC_FAIL:
                    break  # ssh's client gives up on anything else too
        except Unavailable:
            pass  # the master closes the connection once the session is over: the normal end
        finally:
            self.conn.close()
        return status
