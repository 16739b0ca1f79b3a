"""Transports by inner scheme: ssh and local paths (child process), git:// (TCP), http(s)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..url import InnerUrl
from .base import Context, Service, StreamService

if TYPE_CHECKING:
    from ..protocol import Advertisement

__all__ = ["Context", "Service", "StreamService", "Remote"]


class Remote:
    """A remote repository: opens services on it, reusing the HTTP connection pool."""

    def __init__(self, url: InnerUrl, ctx: Context) -> None:
        self.url = url
        self.ctx = ctx
        self._http: object | None = None
        version = ctx.config.get("protocol.version")
        # git's default is v2 for fetch; a user who pinned v0/v1 gets v0 from us too.
        self.fetch_v2 = version is None or version.strip() == "2"

    def open(self, service: str) -> Service:
        """Open ``upload-pack`` or ``receive-pack`` and read nothing yet but the transport's framing."""
        want_v2 = service == "upload-pack" and self.fetch_v2
        scheme = self.url.scheme
        if scheme in ("http", "https"):
            from .http import HttpTransport

            if self._http is None:
                self._http = HttpTransport(self.url, self.ctx)
            assert isinstance(self._http, HttpTransport)
            return self._http.open(service, want_v2)
        if scheme == "git":
            from .daemon import open_daemon_service

            return open_daemon_service(self.url, service, self.ctx, want_v2)
        from .process import open_process_service

        return open_process_service(self.url, service, self.ctx, want_v2)

    def connect(self, service: str) -> "tuple[Service, Advertisement]":
        """Open ``service`` and read its advertisement; nothing is left open on failure."""
        from ..protocol import read_advertisement

        svc = self.open(service)
        try:
            return svc, read_advertisement(svc.reader)
        except BaseException:
            svc.close()
            raise
