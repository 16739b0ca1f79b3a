"""Which refs ``git relay`` manages and where they go (pure; validated before any network traffic)."""

from __future__ import annotations

from collections.abc import Mapping

from .errors import UrlError

__all__ = ["Selection", "kind", "FORGE_NAMESPACES"]

# Namespaces forges write themselves and refuse pushes to (pull and merge requests, Gerrit's
# changes, GitLab's keep-arounds): --all-refs leaves them out, with a warning, instead of failing
# on each of them; a --map that names one still relays it.
FORGE_NAMESPACES = ("refs/pull/", "refs/merge-requests/", "refs/changes/", "refs/keep-around/")


def kind(ref: str) -> str:
    return "branch" if ref.startswith("refs/heads/") else "tag" if ref.startswith("refs/tags/") else "other"


def _full(name: str) -> str:
    if name.startswith("refs/"):
        return name
    if not name or name.startswith(("heads/", "tags/", "-")):
        raise UrlError(f"ambiguous ref name '{name}'", "use a branch name like 'main' or a full ref like 'refs/tags/v1'")
    return "refs/heads/" + name


class Selection:
    """Which refs are managed and where they go. Validated before any network traffic."""

    def __init__(
        self,
        branches: list[str] | None = None,
        maps: list[str] | None = None,
        tags: bool = False,
        all_refs: bool = False,
        excludes: list[str] | None = None,
    ) -> None:
        self.branches = [_full(b) for b in (branches or [])]
        self.tags = tags
        self.all_refs = all_refs
        self.excludes = list(excludes or [])
        self.maps: list[tuple[str, str]] = []
        seen: dict[str, str] = {}
        for spec in maps or []:
            src, sep, dst = spec.partition(":")
            if not sep or not src or not dst:
                raise UrlError(f"bad --map '{spec}'", "write it as SRC:DST, e.g. --map main:stable")
            if src.startswith("refs/") != dst.startswith("refs/"):
                raise UrlError(
                    f"ambiguous --map '{spec}': mixes a short name and a full ref", "use two short branch names or two full refs"
                )
            full_src, full_dst = _full(src), _full(dst)
            if kind(full_src) != kind(full_dst):
                raise UrlError(f"--map '{spec}' maps a {kind(full_src)} to a {kind(full_dst)}", "map branches to branches and tags to tags")
            if full_dst in seen:
                raise UrlError(f"--map '{spec}' and --map '{seen[full_dst]}' both write {full_dst}", "each target ref can have one source")
            seen[full_dst] = spec
            self.maps.append((full_src, full_dst))

    def managed(self, ref: str) -> bool:
        """Is this target ref ours to create, update or prune?"""
        if ref == "HEAD" or ref.endswith("^{}") or ref.startswith("refs/relay/") or any(ref.startswith(p) for p in self.excludes):
            return False
        if self.maps:
            return any(ref == dst for _, dst in self.maps)
        if self.all_refs:
            return ref.startswith("refs/") and not ref.startswith(FORGE_NAMESPACES)
        if self.branches:
            return ref in self.branches or (self.tags and ref.startswith("refs/tags/"))
        return ref.startswith("refs/heads/") or (self.tags and ref.startswith("refs/tags/"))

    def forge_owned(self, source_refs: Mapping[str, str]) -> dict[str, int]:
        """With --all-refs: how many source refs each forge namespace holds (left out)."""
        counts: dict[str, int] = {}
        if self.all_refs and not self.maps:
            for ref in source_refs:
                for prefix in FORGE_NAMESPACES:
                    if ref.startswith(prefix):
                        counts[prefix] = counts.get(prefix, 0) + 1
        return counts

    def pairs(self, source_refs: Mapping[str, str]) -> list[tuple[str, str]]:
        if self.maps:
            missing = [src for src, _ in self.maps if src not in source_refs]
            if missing:
                raise UrlError(f"the source has no {', '.join(missing)}", "check the --map source names (git relay probe SOURCE)")
            return list(self.maps)
        if self.branches:
            missing = [b for b in self.branches if b not in source_refs]
            if missing:
                raise UrlError(f"the source has no {', '.join(missing)}", "check --branch (git relay probe SOURCE)")
        return [(ref, ref) for ref in source_refs if self.managed(ref)]
