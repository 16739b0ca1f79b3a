"""Git LFS facts the relay needs: where git-lfs looks for a remote's LFS server, and what a
pointer file says.

git-lfs derives a remote's LFS endpoint from its URL. For ``relay::<inner>`` that derivation
gives ``relay::<inner>/info/lfs``, which no LFS server answers. The helper therefore writes
``remote.<name>.lfsurl`` (a setting git-lfs reads before it derives anything) with the value
from which git-lfs derives for the inner URL exactly what it derives without ``relay::``, and
only where nothing chose an LFS URL already. Pure logic except ``ensure_lfs_url``.
"""

from __future__ import annotations

from .errors import LocalGitError
from .gitcmd import Config, Git

__all__ = ["POINTER_PREFIX", "Pointer", "parse_pointer", "lfs_url_for", "http_endpoint", "ensure_lfs_url"]

POINTER_PREFIX = b"version https://git-lfs.github.com/spec/v1\n"
POINTER_MAX = 1024  # git-lfs never reads a blob larger than this as a pointer
MARK = "relaylfsurl"  # remote.<name>.relaylfsurl: the value the helper last wrote, so it may update it


class Pointer:
    __slots__ = ("oid", "size")

    def __init__(self, oid: str, size: int) -> None:
        self.oid, self.size = oid, size

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Pointer) and (self.oid, self.size) == (other.oid, other.size)

    def __hash__(self) -> int:
        return hash(self.oid)

    def __repr__(self) -> str:
        return f"Pointer({self.oid[:12]}, {self.size})"


def parse_pointer(data: bytes) -> Pointer | None:
    """The object a Git LFS pointer file names, or None if ``data`` is not one (spec v1:
    ``version`` first, then keys in order, ``oid sha256:<64 hex>`` and ``size <n>``)."""
    if len(data) > POINTER_MAX or not data.startswith(POINTER_PREFIX):
        return None
    fields: dict[str, str] = {}
    for line in data[len(POINTER_PREFIX):].decode("ascii", "replace").splitlines():
        key, sep, value = line.partition(" ")
        if not sep:
            return None
        fields[key] = value
    oid, size = fields.get("oid", ""), fields.get("size", "")
    if not oid.startswith("sha256:") or not size.isdigit():
        return None
    digest = oid[len("sha256:"):]
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        return None
    return Pointer(digest, int(size))


def http_endpoint(url: str) -> str:
    """git-lfs's endpoint for an http(s) or git:// clone URL: ``<url>.git/info/lfs``, or
    ``<url>/info/lfs`` where the URL already ends in ``.git`` (a trailing slash dropped)."""
    url = url[:-1] if url.endswith("/") else url
    return url + ("/info/lfs" if url.endswith(".git") else ".git/info/lfs")


def lfs_url_for(inner: str, scheme: str) -> str:
    """The ``remote.<name>.lfsurl`` from which git-lfs finds what it finds for ``inner`` itself.
    For http(s) and git:// the derived endpoint (git-lfs turns git:// into ``lfs.gitprotocol``,
    https by default, when it reads it). For ssh, scp-like, file and local paths the inner URL
    as it is: git-lfs reads the same ssh path (for ``git-lfs-authenticate`` and
    ``git-lfs-transfer``) and the same local repository from it."""
    if scheme in ("http", "https", "git"):
        return http_endpoint(inner)
    return inner


def _uses_lfs(config: Config) -> bool:
    """git-lfs is set up for this user or repository (``git lfs install`` sets these filters)."""
    return any(config.get(f"filter.lfs.{key}") for key in ("process", "smudge", "clean"))


def ensure_lfs_url(git: Git, config: Config, remote: str | None, inner: str, scheme: str) -> str | None:
    """Write ``remote.<remote>.lfsurl`` for a relay remote where git-lfs would otherwise derive a
    ``relay::`` endpoint: only for a named remote, only where git-lfs is set up, never over an
    LFS URL that someone else chose (``lfs.url``, ``remote.<name>.lfsurl``), and again only when
    the remote's URL changed since the helper wrote it. Returns the value written, or None.
    A failure to write is not the fetch's failure: git-lfs then says what it says without it."""
    if not remote or not _uses_lfs(config) or config.get("lfs.url") is not None:
        return None
    value = lfs_url_for(inner, scheme)
    current = config.get(f"remote.{remote}.lfsurl")
    written = config.get(f"remote.{remote}.{MARK}")
    if current == value or (current is not None and current != written):
        return None
    try:
        git.run(["config", "--local", f"remote.{remote}.lfsurl", value])
        git.run(["config", "--local", f"remote.{remote}.{MARK}", value])
    except LocalGitError:  # no repository (ls-remote outside one), a locked config: leave it
        return None
    return value
