"""``connect`` and ``stateless-connect``: hand the raw service stream to git's own fetch-pack.

Used for what the engine does not implement (shallow clones, partial clones, refetch, a shallow
local repository) and for ``relay.mode=passthrough``. No byte is decoded on the way: for a child
process transport the child gets the helper's own stdin/stdout; for git:// and HTTP the bytes are
copied.
"""

from __future__ import annotations

import os
import selectors
import socket

from .gitcmd import spawn
from .transport import Remote
from .transport.base import stalled
from .url import InnerUrl

TYPE_CHECKING = False  # typing costs ~10 ms of start-up; mypy reads this as typing.TYPE_CHECKING

if TYPE_CHECKING:
    from typing import BinaryIO


__all__ = ["connect"]

_CHUNK = 1 << 16


def connect(remote: Remote, service: str, stdin: BinaryIO, stdout: BinaryIO) -> int:
    """Run ``service`` with the helper's stdio as its stream; return its exit status."""
    url: InnerUrl = remote.url
    want_v2 = service == "upload-pack" and remote.fetch_v2
    if url.scheme == "git":
        from .transport.daemon import DEFAULT_PORT, _connect, daemon_request

        sock = _connect(url.host, url.port or DEFAULT_PORT, remote.ctx.family, 30.0, say=remote.ctx.verbose)
        sock.sendall(daemon_request(url, service, remote.ctx, want_v2))
        _copy_both(sock, stdin, stdout, remote.ctx.timeout, f"remote end ({url.redacted})")
        return 0
    from .transport.process import service_command

    argv, env, _label = service_command(url, service, remote.ctx, want_v2)
    remote.ctx.trace(f"passthrough: {argv[0]} ... ({service})")
    stdout.flush()
    proc = spawn(argv, env=env, cwd=remote.ctx.git.cwd, stdin=stdin.fileno(), stdout=stdout.fileno())
    return proc.wait()


def _copy_both(sock: socket.socket, stdin: BinaryIO, stdout: BinaryIO, timeout: float | None, label: str) -> None:
    """Copy stdin -> socket and socket -> stdout until the socket closes (or nothing moves for ``timeout``).

    A server that resets the connection or stops reading ends the copy as a close does: git,
    which reads the stream, then says what it says without ``relay::`` (a remote that sent
    ``ERR`` and hung up has said its piece; a cut-off transfer is git's "hung up unexpectedly").
    git's own side going away (a broken pipe on stdout) is the caller's to handle."""
    in_fd, out_fd = stdin.fileno(), stdout.fileno()
    sel = selectors.DefaultSelector()
    sel.register(sock, selectors.EVENT_READ, "sock")
    sel.register(in_fd, selectors.EVENT_READ, "stdin")
    try:
        while True:
            events = sel.select(timeout)
            if not events:
                raise stalled(label, timeout or 0)
            for key, _ in events:
                if key.data == "sock":
                    try:
                        data = sock.recv(_CHUNK)
                    except ConnectionError:
                        return
                    if not data:
                        return
                    _write_all(out_fd, data)
                else:
                    data = os.read(in_fd, _CHUNK)
                    try:
                        if data:
                            sock.sendall(data)
                            continue
                        sock.shutdown(socket.SHUT_WR)
                    except ConnectionError:
                        pass  # it reads no more; what it sent before it hung up is still read
                    sel.unregister(in_fd)
    finally:
        sel.close()
        sock.close()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]

