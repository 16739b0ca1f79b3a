"""relay:: and git relay against a server git did not write: dulwich's smart HTTP and git:// servers.

Hosted services often run their own protocol code (JGit, Gerrit, forges' own). A helper that only
ever met git's upload-pack and receive-pack leans on their quirks without knowing it; dulwich is
a second, independent implementation. Each test compares with native git against the same server.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import servers
from conftest import commit, fsck, git, make_source, refs, unavailable

LIMIT = 300_000  # bytes of a receive-pack request body the limited HTTP front end accepts


@pytest.fixture(scope="session")
def dulwich_root(workspace: Path) -> Path:
    root = workspace / "dulwich"
    root.mkdir()
    return root


def _serve(kind: str, root: Path, base: Path, limit: int | None = None) -> Iterator[int]:
    try:
        with servers.dulwich_server(kind, root, base, limit) as port:
            yield port
    except servers.ServerUnavailable as exc:
        unavailable(str(exc))


@pytest.fixture(scope="session")
def dulwich_http(dulwich_root: Path, workspace: Path) -> Iterator[int]:
    yield from _serve("http", dulwich_root, workspace)


@pytest.fixture(scope="session")
def dulwich_http_limited(dulwich_root: Path, workspace: Path) -> Iterator[int]:
    yield from _serve("http", dulwich_root, workspace, LIMIT)


@pytest.fixture(scope="session")
def dulwich_git(dulwich_root: Path, workspace: Path) -> Iterator[int]:
    yield from _serve("git", dulwich_root, workspace)


@pytest.fixture
def dulwich(request: pytest.FixtureRequest, dulwich_root: Path):  # type: ignore[no-untyped-def]
    """``dulwich(kind, name, source=None, limited=False)`` -> (repository path, inner URL)."""

    def make(kind: str, name: str, source: Path | None = None, limited: bool = False) -> tuple[Path, str]:
        path = dulwich_root / f"{name}.git"
        if source is not None:
            git("clone", "-q", "--bare", str(source), str(path))
        else:
            git("init", "-q", "--bare", str(path))
        if kind == "git":
            return path, f"git://127.0.0.1:{request.getfixturevalue('dulwich_git')}/{path.name}"
        port = request.getfixturevalue("dulwich_http_limited" if limited else "dulwich_http")
        return path, f"http://127.0.0.1:{port}/{path.name}"

    return make


KINDS = ["http", "git"]


@pytest.mark.parametrize("kind", KINDS)
def test_clone_ls_remote_and_fetch_as_native(kind: str, tmp_path: Path, dulwich) -> None:  # type: ignore[no-untyped-def]
    src = make_source(tmp_path / "src", commits=4)
    path, url = dulwich(kind, f"read-{kind}", source=src)
    assert git("ls-remote", "relay::" + url).stdout == git("ls-remote", url).stdout
    for name, address in (("native", url), ("relay", "relay::" + url)):
        git("clone", "-q", address, str(tmp_path / name))
    assert refs(tmp_path / "relay") == refs(tmp_path / "native")
    fsck(tmp_path / "relay")
    # new history on the server, fetched into both clones
    commit(src, "later.txt")
    git("push", "-q", str(path), "main", cwd=src)
    for name in ("native", "relay"):
        git("fetch", "-q", "origin", cwd=tmp_path / name)
    assert refs(tmp_path / "relay")["refs/remotes/origin/main"] == refs(src)["refs/heads/main"]
    assert refs(tmp_path / "relay") == refs(tmp_path / "native")
    fsck(tmp_path / "relay")


@pytest.mark.parametrize("kind", KINDS)
def test_push_new_branch_update_and_delete(kind: str, tmp_path: Path, dulwich) -> None:  # type: ignore[no-untyped-def]
    work = make_source(tmp_path / "work")
    path, url = dulwich(kind, f"push-{kind}")
    git("push", "-q", "relay::" + url, "main", "refs/tags/*:refs/tags/*", cwd=work)
    assert refs(path) == {k: v for k, v in refs(work).items() if k.startswith(("refs/heads/main", "refs/tags/"))}
    git("checkout", "-q", "-b", "feature", cwd=work)
    commit(work, "topic.txt")
    res = git("push", "relay::" + url, "feature", cwd=work)
    assert "feature -> feature" in res.stderr
    commit(work, "more.txt")
    git("push", "-q", "relay::" + url, "feature", cwd=work)
    assert refs(path)["refs/heads/feature"] == refs(work)["refs/heads/feature"]
    git("push", "-q", "relay::" + url, ":feature", cwd=work)
    assert "refs/heads/feature" not in refs(path)
    # a non-fast-forward is refused as git refuses it, and nothing moves
    git("checkout", "-q", "main", cwd=work)
    git("reset", "-q", "--hard", "HEAD~1", cwd=work)
    commit(work, "other.txt")
    before = refs(path)
    relay = git("push", "relay::" + url, "HEAD:main", cwd=work, check=False)
    native = git("push", url, "HEAD:main", cwd=work, check=False)
    assert relay.returncode == native.returncode == 1
    assert "[rejected]" in relay.stderr and refs(path) == before
    fsck(path)


def test_push_too_big_for_the_front_end_is_split(tmp_path: Path, dulwich) -> None:  # type: ignore[no-untyped-def]
    work = make_source(tmp_path / "work")
    for i in range(8):
        commit(work, f"chunk{i}.bin", os.urandom(90_000))  # ~720 KB, over twice the front end's limit
    path, url = dulwich("http", "split-http", limited=True)
    native = git("push", url, "main", cwd=work, check=False)
    assert native.returncode != 0, "plain git must fail against this target"
    res = git("push", "relay::" + url, "main", cwd=work)
    assert "step" in res.stderr
    assert refs(path)["refs/heads/main"] == refs(work)["refs/heads/main"]
    assert not [r for r in refs(path) if r.startswith("refs/relay/")], "the helper ref is removed"
    fsck(path)


def test_push_over_git_in_steps_by_setting(tmp_path: Path, dulwich) -> None:  # type: ignore[no-untyped-def]
    work = make_source(tmp_path / "work")
    for i in range(4):
        commit(work, f"chunk{i}.bin", os.urandom(60_000))
    path, url = dulwich("git", "split-git")
    res = git("-c", "relay.maxPushBytes=100k", "push", "relay::" + url, "main", cwd=work)
    assert "step 1/" in res.stderr
    assert refs(path)["refs/heads/main"] == refs(work)["refs/heads/main"]
    assert not [r for r in refs(path) if r.startswith("refs/relay/")]
    fsck(path)


@pytest.mark.parametrize(("source_kind", "target_kind"), [("git", "http"), ("http", "git")])
def test_git_relay_sync_between_dulwich_servers(source_kind: str, target_kind: str, tmp_path: Path, dulwich) -> None:  # type: ignore[no-untyped-def]
    work = make_source(tmp_path / "work", commits=5)
    source, source_url = dulwich(source_kind, f"sync-src-{source_kind}", source=work)
    target, target_url = dulwich(target_kind, f"sync-dst-{target_kind}")
    proc = subprocess.run(["git", "relay", "sync", "--tags", source_url, target_url], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert refs(target) == refs(source)
    commit(work, "next.txt")
    git("push", "-q", str(source), "main", cwd=work)
    again = subprocess.run(["git", "relay", "sync", "--tags", source_url, target_url], capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert refs(target) == refs(source)
    fsck(target)


@pytest.mark.parametrize("transport", ["file", "ssh"])
def test_a_v0_upload_pack_is_run_once_per_fetch_as_natively(transport: str, tmp_path: Path, make_remote) -> None:  # type: ignore[no-untyped-def]
    """dulwich's upload-pack speaks protocol v0 only. The helper learns that from the
    advertisement it asked for, and git's fetch-pack carries on on that same connection: one
    upload-pack per clone or fetch, as natively, not a second one (and a second advertisement)."""
    import shutil

    dul = shutil.which("dul-upload-pack")
    assert dul, "dulwich's dul-upload-pack is installed with the test dependencies"
    src = make_source(tmp_path / "src", commits=3)
    remote = make_remote(transport, source=src)
    runs = tmp_path / "runs"
    counting = tmp_path / "counting-upload-pack"
    counting.write_text(f"#!/bin/sh\necho run >> {runs}\nexec {dul} \"$@\"\n")
    counting.chmod(0o755)
    counted = {}
    for name, url in (("native", remote.url), ("relay", remote.relay_url)):
        runs.write_text("")
        git("clone", "-q", "-u", str(counting), url, str(tmp_path / name))
        commit(src, f"more-{name}.txt")
        git("push", "-q", str(remote.path), "main", cwd=src)
        res = git("-c", f"remote.origin.uploadpack={counting}", "fetch", "origin", cwd=tmp_path / name)
        counted[name] = len(runs.read_text().splitlines())
        assert refs(tmp_path / name)["refs/remotes/origin/main"] == refs(src)["refs/heads/main"], res.stderr
        fsck(tmp_path / name)
    assert counted == {"native": 2, "relay": 2}, counted


def test_a_hand_over_that_git_ends_does_not_crash_the_helper(tmp_path: Path, dulwich) -> None:  # type: ignore[no-untyped-def]
    """A v0 HTTP server is handed to git's remote-http; when git's fetch fails there (dulwich has
    no --deepen), git says so and the helper ends with it, not with "died of signal 6"."""
    src = make_source(tmp_path / "src", commits=4)
    _path, url = dulwich("http", "deepen-http", source=src)
    said = {}
    for name, address in (("native", url), ("relay", "relay::" + url)):
        git("clone", "-q", "--depth", "1", address, str(tmp_path / name))
        res = git("fetch", "-q", "--deepen", "2", cwd=tmp_path / name, check=False)
        said[name] = (res.returncode, res.stderr)
    assert said["relay"] == said["native"], said
    assert said["native"][0] == 128 and "does not support --deepen" in said["native"][1]


def test_a_v0_http_server_is_asked_for_its_refs_once_per_fetch_from_the_second_on(tmp_path: Path, dulwich) -> None:  # type: ignore[no-untyped-def]
    """dulwich's smart HTTP speaks v0 only. The first fetch learns it from the helper's own
    info/refs request and hands the session to git's remote-http, which asks again; the helper
    remembers, so every later fetch makes the one request git alone makes."""
    src = make_source(tmp_path / "src", commits=3)
    _path, url = dulwich("http", "v0-memory-http", source=src)
    env = dict(os.environ, GIT_TRACE_CURL="1", GIT_TRACE_CURL_NO_DATA="1")

    def gets(args: list[str], cwd: Path) -> int:
        res = git(*args, cwd=cwd, env=env)
        return sum("=> Send header: GET " in line for line in res.stderr.splitlines())

    git("init", "-q", str(tmp_path / "n"))
    git("init", "-q", str(tmp_path / "r"))
    native = gets(["fetch", url], tmp_path / "n")
    first = gets(["fetch", "relay::" + url], tmp_path / "r")
    later = [gets(["fetch", "relay::" + url], tmp_path / "r") for _ in range(2)]
    assert native == 1 and first == 2 and later == [1, 1], (native, first, later)
    remembered = (Path(os.environ["GIT_RELAY_STATE_DIR"]) / "http-v0").read_text()
    assert url.rstrip("/") + " " in remembered
