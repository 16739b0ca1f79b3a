"""Transports by inner scheme, chosen from a registry: ssh and local paths (child process), git://
(TCP), http(s), and whatever a test registers (``transport.memory``).

A transport is one object per remote with ``open(service, want_v2) -> Service``; the registry
maps a scheme to the ``module:Class`` that makes it, imported only when that scheme is used, so
a run over ssh never imports the HTTP stack.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from ..errors import ObjectFormatError, UnsupportedError
from ..url import InnerUrl
from .base import Context, Service, StreamService

TYPE_CHECKING = False  # typing costs ~10 ms of start-up; mypy reads this as typing.TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Protocol

    class Transport(Protocol):
        def open(self, service: str, want_v2: bool) -> Service:
            """Open ``upload-pack`` or ``receive-pack``; nothing is read yet but the transport's framing."""
            ...


    from ..protocol import Advertisement

__all__ = ["Context", "Service", "StreamService", "Remote", "Transport", "register", "REGISTRY"]


TransportFactory = Callable[[InnerUrl, Context], "Transport"]

# scheme -> "module:factory" (relative to this package) or a factory registered at run time
REGISTRY: dict[str, str | TransportFactory] = {
    "ssh": "process:ProcessTransport",
    "file": "process:ProcessTransport",
    "git": "daemon:DaemonTransport",
    "http": "http:HttpTransport",
    "https": "http:HttpTransport",
}


def register(scheme: str, factory: TransportFactory) -> None:
    """Serve ``scheme`` with ``factory`` (tests use it for the in-memory transport)."""
    REGISTRY[scheme] = factory


def _factory(scheme: str) -> TransportFactory:
    entry = REGISTRY.get(scheme)
    if entry is None:
        raise UnsupportedError(f"no transport for '{scheme}'")
    if isinstance(entry, str):
        module, _, name = entry.partition(":")
        factory: TransportFactory = getattr(importlib.import_module(f"{__name__}.{module}"), name)
        return factory
    return entry


class Remote:
    """A remote repository: opens services on it through its scheme's transport (made once, so
    an HTTP connection pool and its credentials serve every request)."""

    def __init__(self, url: InnerUrl, ctx: Context) -> None:
        self.url = url
        self.ctx = ctx
        self._transport: Transport | None = None
        # git's default is v2 for fetch; a user who pinned v0/v1 gets v0 from us too. Like git,
        # GIT_TEST_PROTOCOL_VERSION stands in when protocol.version is not set.
        version = ctx.config.get("protocol.version") or ctx.env.get("GIT_TEST_PROTOCOL_VERSION") or None
        self.fetch_v2 = version is None or version.strip() == "2"
        ctx.v1 = version is not None and version.strip() == "1"  # asked for by every service, as git does

    def open(self, service: str, traced: bool = True) -> Service:
        """Open ``upload-pack`` or ``receive-pack`` and read nothing yet but the transport's framing.

        ``traced``: its packets go to ``GIT_TRACE_PACKET`` (not when git's own fetch-pack speaks
        on it: git traces those itself)."""
        if self._transport is None:
            self._transport = _factory(self.url.scheme)(self.url, self.ctx)
        svc = self._transport.open(service, service == "upload-pack" and self.fetch_v2)
        if traced and self.ctx.packets is not None:
            svc.traced(self.ctx.packets)
        return svc

    def connect(self, service: str, traced: bool = True, tape: bytearray | None = None) -> "tuple[Service, Advertisement]":
        """Open ``service`` and read its advertisement; nothing is left open on failure.
        ``tape``: gets the advertisement's bytes as they came."""
        from ..protocol import read_advertisement

        svc = self.open(service, traced)
        try:
            if tape is None:
                return svc, read_advertisement(svc.reader)
            taped = svc.reader.record()
            try:
                return svc, read_advertisement(svc.reader)
            finally:
                svc.reader.stop_recording()
                tape += taped
        except ObjectFormatError:
            svc.dismiss()  # a well-formed advertisement, just not ours to serve: end it quietly
            raise
        except BaseException:
            svc.close()
            raise
