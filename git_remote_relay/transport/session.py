"""One remote repository and the services open on it: connect, advertise, reuse, close.

Shared by the helper and ``git relay``, so connection lifecycle is written once:

* upload-pack: HTTP posts each request anew and a v2 stream serves many, so both are reused; a
  v0 stream serves one fetch and is replaced after it. ``upload(listed=True)`` also reads the
  refs (one v2 ``ls-refs`` round per connection).
* receive-pack: ``receive()`` keeps one connection, so a push reuses the one ``list for-push``
  opened (consistent old values, one ssh handshake); ``new_receive()`` opens another (split
  steps, re-checks).
* ``close()`` ends everything politely: a flush tells a waiting stateful service we are done.
"""

from __future__ import annotations

from ..protocol import Advertisement, ls_refs_request, read_ls_refs
from ..url import InnerUrl
from . import Remote
from .base import Context, Service

__all__ = ["Session"]


class Session:
    """The services of one remote; see the module docstring."""

    def __init__(self, url: InnerUrl, ctx: Context) -> None:
        self.url = url
        self.ctx = ctx
        self.remote = Remote(url, ctx)
        self._upload: tuple[Service, Advertisement] | None = None
        self._fresh = False  # the open v0 upload-pack still awaits its one request
        self._receive: tuple[Service, Advertisement] | None = None
        # commits a push negotiation found the remote to have: every receive-pack advertisement
        # counts them as ".have"s, so each pack (and each split step) leaves them out
        self.commons: list[str] = []

    @property
    def stateless(self) -> bool:
        return self.url.scheme in ("http", "https")

    # -- upload-pack ----------------------------------------------------------------------------
    def upload(self, listed: bool = False) -> tuple[Service, Advertisement]:
        """upload-pack, reused where the transport allows; ``listed``: with its refs read."""
        if self._upload is not None:
            service, adv = self._upload
            if not (service.stateless or adv.version == 2 or self._fresh):
                self.close_upload()
        if self._upload is None:
            self._upload = self.remote.connect("upload-pack")
            self._fresh = True
        service, adv = self._upload
        if listed and not adv.listed:
            read_ls_refs(service.request([ls_refs_request(adv)]), adv)
        return service, adv

    def take_upload(self) -> tuple[Service, Advertisement]:
        """upload-pack for one fetch request (after which a v0 stream is used up)."""
        service, adv = self.upload()
        self._fresh = False
        return service, adv

    def done_upload(self, aborted: bool = False) -> None:
        """After one fetch request: drop a stream that cannot serve another (v0, or a reply abandoned)."""
        if self._upload is None:
            return
        service, adv = self._upload
        if aborted:
            self._upload = None
            service.abort()
        elif adv.version == 0 and not service.stateless:
            self.close_upload()

    def hand_over_upload(self) -> tuple[Service, Advertisement]:
        """Give the open upload-pack away (stateless-connect passthrough closes it itself)."""
        pair = self.upload()
        self._upload = None
        return pair

    def close_upload(self) -> None:
        if self._upload is not None:
            service, adv = self._upload
            self._upload = None
            if self._fresh and adv.version == 0:
                service.goodbye()
            service.close()

    # -- receive-pack ---------------------------------------------------------------------------
    def receive(self) -> tuple[Service, Advertisement]:
        """The receive-pack connection of this session (opened once, until ``release_receive``)."""
        if self._receive is None:
            self._receive = self._with_commons(self.remote.connect("receive-pack"))
        return self._receive

    def new_receive(self) -> tuple[Service, Advertisement]:
        """Another receive-pack connection, owned by the caller (who closes it)."""
        return self._with_commons(self.remote.connect("receive-pack"))

    def add_commons(self, oids: list[str]) -> None:
        """Commits the remote has (found by negotiation): from now on part of every advertisement."""
        self.commons += [o for o in oids if o not in self.commons]
        if self._receive is not None:
            self._with_commons(self._receive)

    def _with_commons(self, pair: tuple[Service, Advertisement]) -> tuple[Service, Advertisement]:
        adv = pair[1]
        adv.extra_haves += [c for c in self.commons if c not in adv.extra_haves]
        return pair

    def release_receive(self, used: bool = True) -> None:
        """Close the session's receive-pack; ``used=False``: it got no command, so say goodbye."""
        if self._receive is not None:
            service = self._receive[0]
            self._receive = None
            if used:
                service.close()
            else:
                service.dismiss()

    def close(self) -> None:
        self.close_upload()
        self.release_receive(used=False)
