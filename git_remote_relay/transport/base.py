"""The transport interface: open one service (upload-pack or receive-pack) and exchange requests.

A ``Service`` starts with the server's advertisement in ``reader``. ``request(body)`` sends a
request (an iterable of byte chunks, streamed as it is produced) and returns the reader of the
reply. Stateful transports (ssh, local, git://) keep one byte stream: the body is written by a
thread so a reply that starts before the body ends (receive-pack's side-band progress) never
deadlocks. The stateless transport (http) turns each request into one POST.
"""

from __future__ import annotations

import threading
from typing import Callable, Iterable, Mapping

from ..errors import TransportError
from ..gitcmd import Config, Git
from ..pktline import PktReader

__all__ = ["Context", "Service", "StreamService", "SendError", "NOT_FOUND_HINT"]

NOT_FOUND_HINT = "Could not read from remote repository: check the URL, that the repository exists and that you have access."


class SendError(TransportError):
    """Writing the request to the remote failed (it stopped reading or hung up)."""


def _no_trace(_msg: str) -> None:
    return None


class Context:
    """What a transport needs from its caller; nothing here is read from the process directly."""

    def __init__(self, env: Mapping[str, str], git: Git, config: Config, remote_name: str | None = None,
                 family: str | None = None, trace: Callable[[str], None] = _no_trace) -> None:
        self.env = env
        self.git = git
        self.config = config
        self.remote_name = remote_name
        self.family = family  # "ipv4" / "ipv6" from `option family`
        self.trace = trace
        self.programs: dict[str, str] = {}  # service -> remote program given by git (servpath)


class Service:
    """One open conversation with a remote service."""

    version: int = 0
    stateless: bool = False
    reader: PktReader
    label: str = "remote"

    def request(self, body: Iterable[bytes]) -> PktReader:
        raise NotImplementedError

    def wait_sent(self) -> None:
        """Wait until the last request body is fully sent (stateful transports send it in a thread)."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> "Service":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class StreamService(Service):
    """A service over one full-duplex byte stream (a child process's pipes or a TCP socket)."""

    def __init__(self, read: Callable[[int], bytes], write: Callable[[bytes], object], close_write: Callable[[], None], close: Callable[[], None], label: str,
                 readinto: Callable[[memoryview], int | None] | None = None) -> None:
        self.reader = PktReader(read, label, readinto)
        self._write = write
        self._close_write = close_write
        self._close = close
        self.label = label
        self._writer: threading.Thread | None = None
        self.write_error: BaseException | None = None

    def _pump(self, body: Iterable[bytes]) -> None:
        try:
            for chunk in body:
                if chunk:
                    self._write(chunk)
        except BaseException as exc:  # reported by wait_sent(); the reader sees the hang-up
            self.write_error = exc
            try:
                self._close_write()
            except OSError:
                pass

    def request(self, body: Iterable[bytes]) -> PktReader:
        self.wait_sent()
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

    def close(self) -> None:
        try:
            self._close_write()
        except OSError:
            pass
        self._close()
