"""Git LFS objects of a local repository (a path or ``file://`` URL), where git-lfs keeps them
for a local remote: ``<git dir>/lfs/objects/<oid[0:2]>/<oid[2:4]>/<oid>`` (the layout git-lfs's
standalone file transfer reads and writes, so a native ``git lfs pull`` from that path finds
them). Answers in the batch API's shape, with ``file://`` hrefs the copier opens itself.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Iterable
from urllib.parse import unquote, urlsplit

from .errors import RelayError
from .lfs import Pointer

__all__ = ["LocalLfs", "is_local", "open_object", "LocalUpload"]


def is_local(href: str) -> bool:
    return href.startswith("file://")


def _path(href: str) -> str:
    return unquote(urlsplit(href).path)


def open_object(href: str) -> io.BufferedReader:
    try:
        return open(_path(href), "rb")
    except OSError as exc:
        raise RelayError(f"cannot read the LFS object {_path(href)}: {exc.strerror or exc}") from exc


class LocalLfs:
    """The LFS store of a repository on this machine."""

    def __init__(self, repo: str, side: str) -> None:
        git_dir = os.path.join(repo, ".git") if os.path.isdir(os.path.join(repo, ".git")) else repo
        self.objects = os.path.join(os.path.abspath(git_dir), "lfs", "objects")
        self.side = side
        self.api = "file://" + self.objects

    def where(self, oid: str) -> str:
        return os.path.join(self.objects, oid[0:2], oid[2:4], oid)

    def batch(self, operation: str, objects: list[Pointer]) -> dict[str, dict[str, object]]:
        answers: dict[str, dict[str, object]] = {}
        for p in objects:
            path = self.where(p.oid)
            try:
                present = os.stat(path).st_size == p.size
            except OSError:
                present = False
            href = {"href": "file://" + path}
            if operation == "upload":
                answers[p.oid] = {"oid": p.oid, "size": p.size, **({} if present else {"actions": {"upload": href}})}
            elif present:
                answers[p.oid] = {"oid": p.oid, "size": p.size, "actions": {"download": href}}
            else:
                answers[p.oid] = {"oid": p.oid, "size": p.size, "error": {"code": 404, "message": "Object does not exist"}}
        return answers


class LocalUpload:
    """An object written beside its place (``<oid>.<pid>.<random>.incomplete``) and renamed there
    only once complete: a reader never sees half of it, and a failed copy leaves nothing behind.
    What a killed run left (its process is gone) is removed by the next copy of that object."""

    def __init__(self, href: str) -> None:
        self.path = _path(href)
        directory, name = os.path.split(self.path)
        try:
            os.makedirs(directory, exist_ok=True)
            _remove_orphans(directory, name)
            fd, self.tmp = tempfile.mkstemp(prefix=f"{name}.{os.getpid()}.", suffix=".incomplete", dir=directory)
        except OSError as exc:
            raise RelayError(f"cannot write the LFS object {self.path}: {exc.strerror or exc}") from exc
        self.file = os.fdopen(fd, "wb")

    def write_all(self, pieces: Iterable[bytes | memoryview]) -> None:
        try:
            try:
                for piece in pieces:
                    self.file.write(piece)
                self.file.close()
                os.replace(self.tmp, self.path)
            except OSError as exc:
                raise RelayError(f"cannot write the LFS object {self.path}: {exc.strerror or exc}",
                                 "free some space (or fix the permissions) there, then run the sync again") from exc
        except BaseException:
            self.file.close()
            try:
                os.unlink(self.tmp)
            except OSError:
                pass
            raise


def _remove_orphans(directory: str, name: str) -> None:
    """Remove ``name``'s unfinished copies whose writer (the pid in their name) has died."""
    for entry in os.listdir(directory):
        parts = entry.split(".")
        if len(parts) != 4 or parts[0] != name or parts[3] != "incomplete" or not parts[1].isdigit():
            continue
        try:
            os.kill(int(parts[1]), 0)
            continue  # its writer is alive (another run copying the same object): leave it
        except ProcessLookupError:
            pass
        except OSError:
            continue  # alive, and someone else's
        try:
            os.unlink(os.path.join(directory, entry))
        except OSError:
            pass
