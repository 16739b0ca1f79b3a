"""curl's low-speed limit as git sets it (``http.lowSpeedLimit`` / ``http.lowSpeedTime``): a reply
that comes slower than the limit for that long is given up, with curl's words. Pure: it is told
what moved and when a read timed out.
"""

from __future__ import annotations

import time

from ..errors import TransportError

__all__ = ["Pace", "TooSlow", "read_wait"]


class TooSlow(TransportError):
    """http.lowSpeedLimit / http.lowSpeedTime: slower than the limit for that long (curl's error 28)."""


def read_wait(read_timeout: float | None, low_speed: tuple[int, int] | None) -> float | None:
    """How long one read may wait: a low-speed window with no byte at all is already too slow."""
    if low_speed is None:
        return read_timeout
    return low_speed[1] if read_timeout is None else min(read_timeout, low_speed[1])


class Pace:
    """curl's low-speed check for one reply: abort when fewer than ``limit`` bytes per second
    arrived over ``seconds`` seconds (the window restarts whenever the pace was good)."""

    def __init__(self, low_speed: tuple[int, int] | None) -> None:
        self.low_speed = low_speed
        self.start = time.monotonic()
        self.bytes = 0

    def moved(self, n: int) -> None:
        if self.low_speed is None:
            return
        self.bytes += n
        elapsed = time.monotonic() - self.start
        limit, seconds = self.low_speed
        if elapsed < seconds:
            return
        if self.bytes < limit * elapsed:
            self._fail()
        self.start, self.bytes = time.monotonic(), 0

    def waited_out(self, read_timeout: float | None) -> None:
        """A read timed out. When it waited the low-speed time (see ``_wait``), no byte came for
        that long: slower than any limit, as curl says it; else it is the stall it seems."""
        if self.low_speed is not None and (read_timeout is None or self.low_speed[1] <= read_timeout):
            self._fail()

    def _fail(self) -> None:
        assert self.low_speed is not None
        limit, seconds = self.low_speed
        raise TooSlow(f"Operation too slow. Less than {limit} bytes/sec transferred the last {seconds} seconds",
                      "the link is slower than http.lowSpeedLimit for http.lowSpeedTime: raise them, or try again")
