"""``connect`` and ``stateless-connect``: hand the raw service stream to git's own fetch-pack.

Used for ``relay.mode=passthrough``, a pinned protocol v0/v1 and what else git's own code must
serve. No byte is decoded on the way: for a child process transport the child gets the helper's
own stdin/stdout; for git:// the kernel moves the bytes (splice). ``carry_on`` hands git a
connection the helper already opened (a server that answered v0 to its v2 request), from what
the helper read of it on.
"""

from __future__ import annotations

import errno
import os
import selectors
from collections.abc import Callable

from .gitcmd import spawn
from .transport import Remote
from .transport.base import StreamService, stalled
from .url import InnerUrl

TYPE_CHECKING = False  # typing costs ~10 ms of start-up; mypy reads this as typing.TYPE_CHECKING

if TYPE_CHECKING:
    from typing import BinaryIO


__all__ = ["connect", "carry_on", "copy_both", "unbuffered"]

_CHUNK = 1 << 20


def connect(remote: Remote, service: str, stdin: BinaryIO, stdout: BinaryIO) -> int:
    """Run ``service`` with the helper's stdio as its stream; return its exit status."""
    url: InnerUrl = remote.url
    want_v2 = service == "upload-pack" and remote.fetch_v2
    if url.scheme == "git":  # a socket, or core.gitProxy's command: the kernel moves the bytes
        from .transport.daemon import open_daemon_service

        carry_on(open_daemon_service(url, service, remote.ctx, want_v2), b"", stdin, stdout, remote.ctx.timeout)
        return 0
    from .transport.process import service_command

    argv, env, _label = service_command(url, service, remote.ctx, want_v2)
    remote.ctx.trace(f"passthrough: {argv[0]} ... ({service})")
    stdout.flush()
    proc = spawn(argv, env=env, cwd=remote.ctx.git.cwd, stdin=stdin.fileno(), stdout=stdout.fileno())
    return proc.wait()


def carry_on(service: StreamService, already: bytes, stdin: BinaryIO, stdout: BinaryIO, timeout: float | None) -> int:
    """Hand git the stream the helper opened, as it is: ``already`` (what the helper read of it,
    a v0 advertisement) first, then the rest both ways until the remote ends; its exit status.
    No second connection, no second advertisement: what git's own transport would have cost."""
    assert service.fds is not None
    stdout.write(already)
    stdout.flush()
    try:
        copy_both(stdin, stdout, service.fds, service.close_write, timeout, service.label)
    finally:
        service.close()
    return service.exit_status or 0


def copy_both(stdin: BinaryIO, stdout: BinaryIO, remote: tuple[int, int], close_write: Callable[[], object],
              timeout: float | None, label: str) -> None:
    """Copy git -> remote and remote -> git until the remote's side ends (or nothing moves for
    ``timeout``). ``remote``: its (read, write) descriptors; ``close_write`` tells it git is done.

    The kernel moves the bytes (splice) where it can, so a pack costs no copy through Python.
    A server that resets the connection or stops reading ends the copy as a close does: git,
    which reads the stream, then says what it says without ``relay::`` (a remote that sent
    ``ERR`` and hung up has said its piece; a cut-off transfer is git's "hung up unexpectedly").
    git going away (a broken pipe towards it) ends the copy the same way: nobody is left to tell."""
    held, _ = unbuffered(stdin)
    in_fd, out_fd = stdin.fileno(), stdout.fileno()
    r_fd, w_fd = remote
    sending = True
    try:
        if held:
            _write_all(w_fd, held)
    except ConnectionError:
        sending = False
    sel = selectors.DefaultSelector()
    sel.register(r_fd, selectors.EVENT_READ, "remote")
    if sending:
        sel.register(in_fd, selectors.EVENT_READ, "git")
    else:
        _quietly(close_write)
    try:
        while True:
            events = sel.select(timeout)
            if not events:
                raise stalled(label, timeout or 0)
            for key, _ in events:
                if key.data == "remote":
                    try:
                        moved = _move(r_fd, out_fd)
                    except ConnectionError:
                        return
                    if not moved:
                        return
                    continue
                try:
                    if _move(in_fd, w_fd):
                        continue
                    close_write()  # git is done: the remote sees the end and finishes
                except ConnectionError:
                    pass  # it reads no more; what it sent before it hung up is still read
                sel.unregister(in_fd)
    finally:
        sel.close()


def _quietly(call: Callable[[], object]) -> None:
    try:
        call()
    except OSError:
        pass


_splice_works = hasattr(os, "splice")


def _move(src: int, dst: int) -> int:
    """Move what ``src`` has (at most 1 MiB) to ``dst``; 0 at its end. One of the two is a pipe
    here (git's), so splice moves it inside the kernel; read and write where it cannot."""
    global _splice_works
    if _splice_works:
        try:
            return os.splice(src, dst, _CHUNK)
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.ENOSYS, errno.EBADF):
                raise
            _splice_works = False  # not a pipe on either side (a test's files): plain copies
    data = os.read(src, _CHUNK)
    if data:
        _write_all(dst, data)
    return len(data)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def unbuffered(stdin: BinaryIO) -> tuple[bytes, Callable[[], bytes]]:
    """What ``stdin`` has buffered, and a reader of the rest straight from its file descriptor.

    Reading through the buffered object would hold its lock while it waits, and a thread that
    waits there for git's next command (a hand-over's feeder) makes Python's exit abort on that
    lock ("could not acquire lock for <stdin> at interpreter shutdown", signal 6). os.read holds
    none; the bytes already buffered are taken first, without waiting."""
    try:
        fd = stdin.fileno()
    except (AttributeError, OSError, ValueError):  # not a real file (tests): its own reads then
        return stdin.read1(65536), lambda: stdin.read1(65536)  # type: ignore[attr-defined]
    blocking = os.get_blocking(fd)
    os.set_blocking(fd, False)
    try:
        held = stdin.read1(65536) or b""  # type: ignore[attr-defined]  # the buffer only: the pipe says EAGAIN
    except BlockingIOError:
        held = b""
    finally:
        os.set_blocking(fd, blocking)
    return held, lambda: os.read(fd, 65536)
