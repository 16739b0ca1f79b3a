"""Everything the relay says to people: stderr only, with git's look.

``Reporter`` owns the stderr stream (injected, so tests can capture it). Remote side-band text is
shown as git's ``sideband.c`` shows it: each ``\\r``/``\\n``-terminated piece prefixed ``remote: ``
and followed by ``ESC[K`` on a terminal. Traces (``GIT_RELAY_TRACE=1``) are redacted.
"""

from __future__ import annotations

import os
import resource
import sys
import time

from .url import redact

TYPE_CHECKING = False  # typing costs ~10 ms of start-up; mypy reads this as typing.TYPE_CHECKING
if TYPE_CHECKING:
    from typing import BinaryIO

__all__ = ["Reporter", "peak_rss"]


def peak_rss() -> tuple[int, int]:
    """(this process, its waited-for children) peak resident set size in bytes.

    Our own peak is Linux's ``VmHWM``, the high-water mark of this program's memory: getrusage's
    ``ru_maxrss`` also counts the parent's resident memory at the fork that started us (Linux
    keeps it across exec), so a helper started by a big git process, or a ``git relay`` started
    by a script holding data, would report the parent's size as its own."""
    scale = 1 if sys.platform == "darwin" else 1024
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    own = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        pass
    return own, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * scale


class Reporter:
    """The one way the relay talks to people; every line it writes is redacted."""

    def quiet(self) -> "Reporter":
        """A reporter for side work (proofs, commit graphs): no progress, no lines, the same trace."""
        return Reporter(self.stream, verbosity=0, progress=False, trace=self.tracing, tty=self.tty)

    def __init__(self, stream: BinaryIO, *, verbosity: int = 1, progress: bool = False, trace: bool = False, tty: bool | None = None,
                 term: str | None = None) -> None:
        """``tty``: whether ``stream`` is a terminal (found out when None); ``term``: ``$TERM``, given by the entry point."""
        self.stream = stream
        self.verbosity = verbosity
        self.progress = progress
        self.tracing = trace
        if tty is None:
            try:
                tty = os.isatty(stream.fileno()) and term != "dumb"
            except (OSError, ValueError, AttributeError):
                tty = False
        self.tty = tty
        self._suffix = b"\033[K" if tty else b"        "
        self._partial = b""
        self.started = time.monotonic()

    def _write(self, data: bytes) -> None:
        try:
            self.stream.write(data)
            self.stream.flush()
        except (OSError, ValueError):
            pass  # a closed stderr must not turn a good transfer into a failure

    def say(self, text: str) -> None:
        """A line for people at the default verbosity (suppressed by -q)."""
        if self.verbosity >= 1:
            self._write(redact(text).encode("utf-8", "replace") + b"\n")

    def info(self, text: str) -> None:
        """A line only for who asked for more (``-v``, or ``GIT_RELAY_TRACE``): statistics and the like.

        Native git prints no transfer summary by default, and neither do we.
        """
        if self.verbosity >= 2 or self.tracing:
            self._write(redact(text).encode("utf-8", "replace") + b"\n")

    def out(self, text: str) -> None:
        """A line that is always shown (a report the user asked for, like ``git relay plan``)."""
        self._write(redact(text).encode("utf-8", "replace") + b"\n")

    def raw(self, text: str) -> None:
        """Text exactly as given (no line end added): git's own partial lines, such as connect.c's."""
        self._write(redact(text).encode("utf-8", "replace"))

    def warn(self, text: str) -> None:
        self._write(b"warning: " + redact(text).encode() + b"\n")

    def error(self, text: str) -> None:
        self._write(redact(text).encode() + b"\n")

    def trace(self, text: str) -> None:
        if self.tracing:
            self._write(b"relay: " + redact(text).encode("utf-8", "replace") + b"\n")

    def sideband(self, data: bytes) -> None:
        """Show side-band channel-2 text from the remote."""
        data = self._partial + data
        start = 0
        for i, ch in enumerate(data):
            if ch in (10, 13):
                piece = data[start:i]
                if piece:
                    self._write(b"remote: " + piece + self._suffix + bytes((ch,)))
                else:
                    self._write(bytes((ch,)))
                start = i + 1
        self._partial = data[start:]

    def flush_sideband(self) -> None:
        if self._partial:
            self._write(b"remote: " + self._partial + self._suffix + b"\n")
            self._partial = b""
