"""The error tree. Every error carries a message for people and, where one exists, the next step.

Library code raises these; only the entry points (``cli``) turn them into ``fatal:`` lines and exit
codes. Messages must never contain credentials: build them from redacted URLs (``url.redact``).
"""

from __future__ import annotations

__all__ = [
    "RelayError",
    "UrlError",
    "PolicyError",
    "TransportError",
    "AuthError",
    "StalledError",
    "TooLargeError",
    "ProtocolError",
    "RemoteError",
    "PackError",
    "UnsupportedError",
    "DumbHttpError",
    "ObjectFormatError",
    "ShallowRemoteError",
    "LocalGitError",
]


class RelayError(Exception):
    """Base class: ``message`` says what happened, ``hint`` what to do next (may be empty)."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UrlError(RelayError):
    """The inner URL cannot be parsed or names something git would refuse."""


class PolicyError(RelayError):
    """The inner transport is forbidden (GIT_ALLOW_PROTOCOL, protocol.<name>.allow, ext::, ...)."""


class TransportError(RelayError):
    """The connection to the remote could not be made or broke."""


class AuthError(TransportError):
    """The remote refused our credentials."""


class StalledError(TransportError):
    """No byte moved either way for longer than ``relay.timeout``: the server or the link stalled."""


class TooLargeError(TransportError):
    """The server refused a request body for its size (HTTP 413, or a 408/504 on a big upload)."""


class ProtocolError(RelayError):
    """The remote said something the git protocol does not allow."""


class RemoteError(RelayError):
    """The remote reported an error of its own (an ``ERR`` line or side-band channel 3)."""


class PackError(RelayError):
    """Producing or storing a pack failed (index-pack, pack-objects, size limits)."""


class UnsupportedError(RelayError):
    """A request the engine cannot honour; never silently ignored."""


class DumbHttpError(UnsupportedError):
    """The HTTP server is not a smart git server (a dumb one, or not git at all): the helper hands
    the session to git's own ``remote-http``, which reads dumb servers and names anything else."""


class AuthSchemeError(DumbHttpError):
    """The HTTP server or its proxy asks only for an authentication scheme the helper does not
    speak (Negotiate/Kerberos, NTLM, Digest), or the proxy is one it cannot use (SOCKS, HTTPS):
    git's own ``remote-http`` (curl) serves the session."""


class ObjectFormatError(UnsupportedError):
    """The remote repository's object format is not sha1 (the engine's): git's own transport serves it."""


class ShallowRemoteError(UnsupportedError):
    """The remote repository is itself shallow: its history stops at ``shallow`` commits."""

    def __init__(self, message: str, hint: str = "", shallow: list[str] | None = None) -> None:
        super().__init__(message, hint)
        self.shallow = list(shallow or [])


class LocalGitError(RelayError):
    """A local git plumbing command failed."""
