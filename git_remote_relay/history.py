"""A remote's commit graph without its trees or blobs: one ``filter tree:0`` fetch into a scratch
repository that is removed afterwards. Used to prove fast-forwards and to cut a history into
steps (split pushes of ``git relay``, resumable fetches) without downloading the history itself.
"""

from __future__ import annotations

from collections.abc import Mapping

from .gitcmd import Git

__all__ = ["Scratch", "first_parent_chain"]


class Scratch:
    """A throw-away bare repository for commit-only fetches (commits, no trees or blobs)."""

    def __init__(self, env: Mapping[str, str]) -> None:
        import tempfile

        self.dir = tempfile.mkdtemp(prefix="git-relay-")
        base = {k: v for k, v in env.items() if not k.startswith("GIT_") or k in ("GIT_CONFIG_GLOBAL", "GIT_CONFIG_NOSYSTEM")}
        Git(base).run(["init", "-q", "--bare", self.dir])
        self.git = Git(dict(base, GIT_DIR=self.dir))
        self.warned = False

    def close(self) -> None:
        import shutil

        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "Scratch":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def parents(self) -> dict[str, list[str]]:
        """Every commit fetched so far -> its parents (which may be missing: the fetch's haves)."""
        listing = self.git.run(["cat-file", "--batch-all-objects", "--batch-check=%(objectname) %(objecttype)"]).decode().split("\n")
        commits = [line.split()[0] for line in listing if line.endswith(" commit")]
        if not commits:
            return {}
        out = self.git.run(["rev-list", "--no-walk", "--parents", "--stdin"], input=("\n".join(commits) + "\n").encode()).decode()
        return {words[0]: words[1:] for words in (line.split() for line in out.splitlines()) if words}


def first_parent_chain(parents: Mapping[str, list[str]], tip: str) -> list[str]:
    """Oldest-first first-parent line of ``tip`` within ``parents`` (stops where the graph does)."""
    chain, cur = [], tip
    while cur in parents:
        chain.append(cur)
        cur = parents[cur][0] if parents[cur] else ""
    return chain[::-1]
