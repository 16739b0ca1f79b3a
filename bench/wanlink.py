#!/usr/bin/env python3
"""A loopback TCP proxy that behaves like a WAN link: latency, bandwidth, back pressure.

Every chunk read on one side is written to the other side one one-way delay (RTT/2) after it
finished crossing a per-connection link of the given bandwidth, so a handshake pays its round
trips and a transfer its bandwidth. At most about two bandwidth-delay products are in flight per
direction before the proxy stops reading (TCP-like back pressure). Loopback only.

    python bench/wanlink.py 127.0.0.1:LISTEN 127.0.0.1:UPSTREAM --rtt-ms 40 --mbit 50

or from Python: ``with WanLink(upstream_port, rtt_ms=40, mbit=50) as link: link.port``.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import threading
import time
from collections import deque


class _Direction:
    """One direction of one connection: a queue of (deliver_at, bytes) with a byte budget."""

    def __init__(self, delay: float, rate: float, window: int) -> None:
        self.delay = delay
        self.rate = rate
        self.window = window
        self.wire_free = 0.0  # when the link finishes sending what is queued
        self.inflight = 0
        self.queue: deque[tuple[float, bytes]] = deque()
        self.changed = asyncio.Event()

    async def pump_in(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                while self.inflight > self.window:
                    self.changed.clear()
                    await self.changed.wait()
                data = await reader.read(65536)
                if not data:
                    break
                now = time.monotonic()
                self.wire_free = max(now, self.wire_free) + (len(data) / self.rate if self.rate else 0.0)
                self.queue.append((self.wire_free + self.delay, data))
                self.inflight += len(data)
                self.changed.set()
        except (ConnectionError, OSError):
            pass
        self.queue.append((0.0, b""))  # end of stream
        self.changed.set()

    async def pump_out(self, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                while not self.queue:
                    self.changed.clear()
                    await self.changed.wait()
                at, data = self.queue.popleft()
                if not data:
                    break
                wait = at - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()
                self.inflight -= len(data)
                self.changed.set()
            if writer.can_write_eof():
                writer.write_eof()
        except (ConnectionError, OSError):
            pass


class WanLink:
    """The proxy on a free loopback port, run in a thread; ``port`` is where to connect."""

    def __init__(self, upstream_port: int, rtt_ms: float = 40.0, mbit: float = 50.0, host: str = "127.0.0.1",
                 listen_port: int = 0) -> None:
        self.upstream = (host, upstream_port)
        self.delay = rtt_ms / 2000.0
        self.rate = mbit * 1e6 / 8 if mbit > 0 else 0.0
        self.window = max(256 << 10, int(2 * self.rate * rtt_ms / 1000.0)) if self.rate else 8 << 20
        self.host = host
        self.listen_port = listen_port
        self.port = 0
        self.connections = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.connections += 1
        me = asyncio.current_task()
        if me is not None:  # held until it ends: asyncio drops its own reference when the peer hangs up
            self._handlers.add(me)
            me.add_done_callback(self._handlers.discard)
        try:
            up_r, up_w = await asyncio.open_connection(*self.upstream)
        except OSError:
            client_w.close()
            return
        for w in (client_w, up_w):
            sock = w.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        there = _Direction(self.delay, self.rate, self.window)
        back = _Direction(self.delay, self.rate, self.window)
        await asyncio.gather(there.pump_in(client_r), there.pump_out(up_w), back.pump_in(up_r), back.pump_out(client_w))
        for w in (client_w, up_w):
            try:
                w.close()
            except OSError:
                pass

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._handle, self.host, self.listen_port, reuse_address=True, backlog=512)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        async with server:
            await self._stop.wait()
        # end the connections still open (their peers are gone or going): no task left pending
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in others:
            t.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    def __enter__(self) -> "WanLink":
        def run() -> None:
            loop = self._loop = asyncio.new_event_loop()
            try:
                loop.run_until_complete(self._serve())
            finally:  # a connection that began while the link was closing: end it too, then the loop
                pending = asyncio.all_tasks(loop)
                for t in pending:
                    t.cancel()
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                loop.close()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the WAN proxy did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout=10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("listen", help="127.0.0.1:PORT to listen on")
    ap.add_argument("upstream", help="127.0.0.1:PORT to forward to")
    ap.add_argument("--rtt-ms", type=float, default=40.0)
    ap.add_argument("--mbit", type=float, default=50.0, help="per connection and direction; 0 = unlimited")
    a = ap.parse_args()
    host, _, port = a.listen.rpartition(":")
    up_host, _, up_port = a.upstream.rpartition(":")
    if {host, up_host} - {"127.0.0.1", "::1", "localhost"}:
        raise SystemExit("wanlink: loopback addresses only")
    with WanLink(int(up_port), a.rtt_ms, a.mbit, host=up_host, listen_port=int(port)) as link:
        print(f"wanlink: {host}:{link.port} -> {a.upstream}, RTT {a.rtt_ms:g} ms, {a.mbit:g} Mbit/s", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
