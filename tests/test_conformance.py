"""Regression tests for what git's own test suite found when forced through relay:: (bench/conformance.py).

Each test is one class of difference from native git, checked against native git's behaviour
in the same run where that is observable.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from conftest import commit, git, make_source, refs, url_for

pytestmark = pytest.mark.integration


@pytest.fixture
def work(tmp_path: Path) -> Path:
    return make_source(tmp_path / "work")


def test_force_defeats_a_stale_lease_and_says_forced_update(work: Path, make_remote) -> None:  # type: ignore[no-untyped-def]
    remote = make_remote("file")
    git("push", "-q", remote.relay_url, "main", cwd=work)
    old = commit(work, "old.txt")
    git("push", "-q", remote.relay_url, "main", cwd=work)
    git("reset", "-q", "--hard", "HEAD~1", cwd=work)
    new = commit(work, "rewritten.txt")
    # the lease names our own (new) main, which the remote does not have: stale, but --force wins (as in git)
    res = git("push", "--force", "--force-with-lease=main:main", remote.relay_url, "main", cwd=work)
    assert "forced update" in res.stderr
    assert refs(remote.path)["refs/heads/main"] == new != old
    # without --force the same lease is refused and nothing moves
    commit(work, "again.txt")
    git("reset", "-q", "--hard", "HEAD~2", cwd=work)
    commit(work, "third.txt")
    res = git("push", "--force-with-lease=main:main", remote.relay_url, "main", cwd=work, check=False)
    assert res.returncode != 0 and "stale info" in res.stderr
    assert refs(remote.path)["refs/heads/main"] == new
    # a delete: refused with a stale lease, done with --force (git sends no "+" for it)
    git("push", "-q", remote.relay_url, "main:refs/heads/gone", cwd=work)
    res = git("push", "--force-with-lease=gone:main^", remote.relay_url, ":gone", cwd=work, check=False)
    assert res.returncode != 0 and "stale info" in res.stderr and "refs/heads/gone" in refs(remote.path)
    git("push", "--force", "--force-with-lease=gone:main^", remote.relay_url, ":gone", cwd=work)
    assert "refs/heads/gone" not in refs(remote.path)


def test_atomic_push_to_a_server_without_atomic_fails_before_sending(work: Path, make_remote) -> None:  # type: ignore[no-untyped-def]
    remote = make_remote("file")
    git("push", "-q", remote.relay_url, "main", cwd=work)
    git("config", "receive.advertiseAtomic", "false", cwd=remote.path)
    before = refs(remote.path)
    commit(work, "next.txt")
    for url in (remote.relay_url, remote.url):
        res = git("push", "--atomic", url, "main", "main:refs/heads/other", cwd=work, check=False)
        assert res.returncode != 0 and "the receiving end does not support --atomic push" in res.stderr, url
        assert refs(remote.path) == before, "nothing moved"


def test_push_options_to_a_server_without_them_fail_like_git(work: Path, make_remote) -> None:  # type: ignore[no-untyped-def]
    remote = make_remote("file")
    before = refs(remote.path)
    for url in (remote.relay_url, remote.url):
        res = git("push", "-o", "ci.skip", url, "main", cwd=work, check=False)
        assert res.returncode != 0 and "the receiving end does not support push options" in res.stderr, url
        assert refs(remote.path) == before


def test_deleting_a_ref_the_remote_lacks_reaches_its_hooks(work: Path, make_remote) -> None:  # type: ignore[no-untyped-def]
    results = {}
    for kind in ("relay", "native"):
        remote = make_remote("file")
        git("push", "-q", remote.url, "main", cwd=work)
        hook = remote.path / "hooks" / "pre-receive"
        hook.write_text(f"#!/bin/sh\ncat > {remote.path}/pre-receive.seen\n")
        hook.chmod(hook.stat().st_mode | stat.S_IXUSR)
        url = remote.relay_url if kind == "relay" else remote.url
        git("push", url, ":refs/heads/nonexistent", cwd=work)
        results[kind] = (remote.path / "pre-receive.seen").read_text()
    assert results["relay"] == results["native"] and "refs/heads/nonexistent" in results["relay"]


def _pack_objects_argv(trace: Path) -> list[list[str]]:
    runs = []
    for line in trace.read_text().splitlines():
        event = json.loads(line)
        argv = event.get("argv") or []
        if event.get("event") == "start" and argv[1:2] == ["pack-objects"]:
            runs.append(argv)
    return runs


def test_push_usebitmaps_reaches_pack_objects(work: Path, make_remote, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    remote = make_remote("file")
    git("push", "-q", remote.relay_url, "main", cwd=work)
    trace = tmp_path / "trace"
    env = dict(os.environ, GIT_TRACE2_EVENT=str(trace))
    commit(work, "a.txt")
    git("-c", "push.useBitmaps=false", "push", "-q", remote.relay_url, "main", cwd=work, env=env)
    commit(work, "b.txt")
    git("push", "-q", remote.relay_url, "main", cwd=work, env=env)
    first, second = _pack_objects_argv(trace)
    assert "--no-use-bitmap-index" in first
    assert second[1:] == ["pack-objects", "--all-progress-implied", "--revs", "--stdout", "--thin", "--delta-base-offset", "-q"], \
        "git's own pack-objects arguments for a push"


def test_git_test_protocol_version_is_honoured_like_git(work: Path, make_remote, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    remote = make_remote("file")
    git("push", "-q", remote.url, "main", cwd=work)
    for version in ("0", "2"):
        trace = tmp_path / f"packets-{version}"
        env = dict(os.environ, GIT_TEST_PROTOCOL_VERSION=version, GIT_TRACE_PACKET=str(trace))
        git("ls-remote", remote.relay_url, env=env)
        assert ("version 2" in trace.read_text()) == (version == "2"), "the server's upload-pack spoke the version git would"


def test_v0_refuses_an_unadvertised_object_like_git(work: Path, make_remote) -> None:  # type: ignore[no-untyped-def]
    remote = make_remote("file")
    git("push", "-q", remote.url, "main", "main~1:refs/hidden/one", cwd=work)
    git("config", "uploadpack.allowAnySHA1InWant", "false", cwd=remote.path)
    git("config", "transfer.hideRefs", "refs/hidden", cwd=remote.path)
    hidden = git("rev-parse", "main~1", cwd=work).stdout.strip()
    env = dict(os.environ, GIT_TEST_PROTOCOL_VERSION="0")
    for url in (remote.relay_url, remote.url):
        child = work.parent / f"child-{url.startswith('relay')}"
        git("init", "-q", str(child))
        res = git("fetch", url, f"{hidden}:refs/heads/copy", cwd=child, env=env, check=False)
        assert res.returncode != 0 and "Server does not allow request for unadvertised object" in res.stderr, url
    git("config", "uploadpack.allowTipSHA1InWant", "true", cwd=remote.path)
    child = work.parent / "child-allowed"
    git("init", "-q", str(child))
    git("fetch", "-q", remote.relay_url, f"{hidden}:refs/heads/copy", cwd=child, env=env)
    assert refs(child)["refs/heads/copy"] == hidden


@pytest.mark.parametrize(
    "address, expect",
    [
        ("ssh://[user@::1]/home/user/repo", "user@::1 git-upload-pack '/home/user/repo'"),
        ("ssh://[user@::1]:22/~repo", "-p 22 user@::1 git-upload-pack '~repo'"),
        ("host:/~repo", "host git-upload-pack '~repo'"),
        ("[::1]:rep", "::1 git-upload-pack 'rep'"),
    ],
)
def test_ssh_addresses_reach_ssh_as_git_sends_them(address: str, expect: str, tmp_path: Path, workspace: Path) -> None:
    log = tmp_path / "ssh-output"
    fake = tmp_path / "ssh"
    fake.write_text(f'#!/bin/sh\necho "ssh: $*" >> {log}\nexit 1\n')
    fake.chmod(0o755)
    env = dict(os.environ, GIT_SSH=str(fake), GIT_TEST_PROTOCOL_VERSION="0")
    env.pop("GIT_SSH_COMMAND", None)
    for url in ("relay::" + address, address):
        git("ls-remote", url, env=env, check=False)
    relayed, native = log.read_text().splitlines()
    assert relayed == native == f"ssh: {expect}"


def test_ssh_variant_auto_goes_by_the_basename(tmp_path: Path, workspace: Path) -> None:
    log = tmp_path / "ssh-output"
    plink = tmp_path / "plink"
    plink.write_text(f'#!/bin/sh\necho "ssh: $*" >> {log}\nexit 1\n')
    plink.chmod(0o755)
    env = dict(os.environ, GIT_SSH=str(plink))
    env.pop("GIT_SSH_COMMAND", None)
    for url in ("relay::[myhost:123]:src", "[myhost:123]:src"):
        git("-c", "ssh.variant=auto", "ls-remote", url, env=env, check=False)
    relayed, native = log.read_text().splitlines()
    assert relayed == native and "-P 123" in relayed


def test_clone_of_a_shallow_repository_with_fsck_objects(tmp_path: Path, workspace: Path) -> None:
    full = make_source(tmp_path / "full", commits=4)
    shallow = tmp_path / "shallow"
    git("clone", "-q", "--depth=2", f"file://{full}", str(shallow))
    for kind, url in (("relay", f"relay::{shallow}"), ("native", str(shallow))):
        dst = tmp_path / kind
        git("-c", "transfer.fsckObjects=true", "clone", "-q", "--no-local", url, str(dst))
        git("fsck", cwd=dst)
    assert git("log", "--format=%s", cwd=tmp_path / "relay").stdout == git("log", "--format=%s", cwd=tmp_path / "native").stdout
    shallow_at = {kind: set((tmp_path / kind / ".git" / "shallow").read_text().split()) for kind in ("relay", "native")}
    assert shallow_at["relay"] == shallow_at["native"]
    assert not list((tmp_path / "relay" / ".git").glob("relay/shallow-*")), "the temporary shallow file is gone"


def test_clone_of_a_remote_whose_head_names_a_missing_branch(tmp_path: Path, workspace: Path) -> None:
    parent = tmp_path / "parent"
    git("init", "-q", "-b", "stuff", str(parent))
    git("commit", "-q", "--allow-empty", "-m", "stuff", cwd=parent)
    git("symbolic-ref", "HEAD", "refs/heads/mydefault", cwd=parent)
    for kind, url in (("relay", f"relay::file://{parent}"), ("native", f"file://{parent}")):
        res = git("-c", "protocol.version=2", "clone", url, str(tmp_path / kind))
        assert "remote HEAD refers to nonexistent ref" in res.stderr
        assert (tmp_path / kind / ".git" / "HEAD").read_text() == "ref: refs/heads/mydefault\n", kind
        assert refs(tmp_path / kind) == refs(tmp_path / "relay")


def test_smart_http_switched_off_behaves_as_git_does(work: Path, make_remote) -> None:  # type: ignore[no-untyped-def]
    """GIT_SMART_HTTP=0 asks for dumb HTTP, which git's own remote-http speaks: relay:: hands over."""
    remote = make_remote("http")
    git("push", "-q", remote.relay_url, "main", cwd=work)
    off = dict(os.environ, GIT_SMART_HTTP="0")
    res = git("ls-remote", remote.relay_url, env=off, check=False)
    native = git("ls-remote", remote.url, env=off, check=False)
    assert (res.returncode, res.stdout) == (native.returncode, native.stdout), (res.stderr, native.stderr)
    git("update-server-info", cwd=remote.path)  # now a dumb client finds the refs
    res = git("ls-remote", remote.relay_url, env=off)
    assert refs(remote.path)["refs/heads/main"] in res.stdout


def test_http_curlopt_resolve_names_the_address(work: Path, make_remote) -> None:  # type: ignore[no-untyped-def]
    remote = make_remote("http")
    git("push", "-q", remote.relay_url, "main", cwd=work)
    port = remote.url.split(":")[2].split("/")[0]
    bogus = remote.url.replace("127.0.0.1", "relay-test-host.invalid")
    res = git("-c", f"http.curloptResolve=relay-test-host.invalid:{port}:127.0.0.1", "ls-remote", "relay::" + bogus)
    assert refs(remote.path)["refs/heads/main"] in res.stdout


def test_credentials_are_asked_for_where_a_redirect_leads(work: Path, make_remote, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from conftest import HTTP_PASSWORD, HTTP_USER

    remote = make_remote("http")
    git("push", "-q", remote.relay_url, "main", cwd=work)
    url = remote.url.replace("/git/", "/moved-auth/")
    prompts = tmp_path / "prompts"
    askpass = tmp_path / "askpass"
    askpass.write_text(f'#!/bin/sh\necho "$1" >> {prompts}\ncase "$1" in Username*) echo {HTTP_USER};; *) echo {HTTP_PASSWORD};; esac\n')
    askpass.chmod(0o755)
    env = dict(os.environ, GIT_ASKPASS=str(askpass))
    seen = {}
    for kind, address in (("relay", "relay::" + url), ("native", url)):
        prompts.write_text("")
        git("-c", "credential.useHttpPath=true", "clone", "-q", address, str(tmp_path / kind), env=env)
        seen[kind] = prompts.read_text()
    assert seen["relay"] == seen["native"] and "/auth/" in seen["relay"], seen


@pytest.mark.parametrize("settings", [[], ["-c", "protocol.http.allow=user"], ["-c", "http.followRedirects=false"],
                                      ["-c", "http.followRedirects=true"]])
def test_redirects_are_followed_as_git_follows_them(settings: list[str], work: Path, make_remote, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    remote = make_remote("http")
    git("push", "-q", remote.relay_url, "main", cwd=work)
    url = remote.url.replace("/git/", "/moved/")
    codes = {}
    for kind, address in (("relay", "relay::" + url), ("native", url)):
        res = git(*settings, "clone", "-q", address, str(tmp_path / kind), check=False)
        codes[kind] = res.returncode
        if res.returncode:
            assert not (tmp_path / kind).exists(), "a failed clone leaves nothing"
    assert codes["relay"] == codes["native"], codes
    assert codes["native"] == (0 if settings in ([], ["-c", "http.followRedirects=true"]) else 128)


def test_reject_shallow_refuses_a_shallow_remote_like_git(tmp_path: Path, workspace: Path) -> None:
    full = make_source(tmp_path / "full", commits=4)
    shallow = tmp_path / "shallow"
    git("clone", "-q", "--depth=2", f"file://{full}", str(shallow))
    for kind, url in (("relay", f"relay::file://{shallow}"), ("native", f"file://{shallow}")):
        res = git("-c", "protocol.version=2", "clone", "--reject-shallow", url, str(tmp_path / kind), check=False)
        assert res.returncode != 0 and "source repository is shallow, reject to clone." in res.stderr, kind
        assert not (tmp_path / kind).exists()


def test_http_cookie_file_is_sent_and_saved_like_curl(work: Path, make_remote, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    remote = make_remote("http")
    git("push", "-q", remote.relay_url, "main", cwd=work)
    url = remote.url.replace("/git/", "/cookies/")
    path = url.split(":", 2)[2].split("/", 1)[1]  # "cookies/<repo>.git"
    results = {}
    for kind, address in (("relay", "relay::" + url), ("native", url)):
        jar = tmp_path / f"cookies-{kind}.txt"
        jar.write_text("127.0.0.1\tFALSE\t/cookies/\tFALSE\t0\tothername\tothervalue\n")
        git("-c", f"http.cookieFile={jar}", "-c", "http.saveCookies=true", "ls-remote", address)
        results[kind] = sorted(line for line in jar.read_text().splitlines() if line and not line.startswith("#"))
    assert results["relay"] == results["native"], results
    assert f"127.0.0.1\tFALSE\t/{path}/info/\tFALSE\t0\tname\tvalue" in results["relay"]
    assert "127.0.0.1\tFALSE\t/cookies/\tFALSE\t0\tothername\tothervalue" in results["relay"]


def test_dumb_http_server_is_read_by_gits_own_http_transport(work: Path, tmp_path: Path, server_root: Path, http_server: int) -> None:
    """A server that only serves files (t5551 "dumb clone"): relay:: hands the session to git's own
    remote-http, so clone and fetch work as they do without relay::."""
    bare = server_root / "dumb-static.git"
    git("clone", "-q", "--bare", str(work), str(bare))
    git("update-server-info", cwd=bare)
    url = f"http://127.0.0.1:{http_server}/dumb-static.git"  # lighttpd's static files, not http-backend
    clone = tmp_path / "clone"
    res = git("clone", "relay::" + url, str(clone), env=dict(os.environ, GIT_RELAY_TRACE="1"))
    assert "takes over" in res.stderr
    assert refs(clone)["refs/heads/main"] == refs(work)["refs/heads/main"]
    git("fsck", "--strict", cwd=clone)
    new = commit(work, "later.txt")
    git("push", "-q", str(bare), "main", cwd=work)
    git("update-server-info", cwd=bare)
    git("fetch", "-q", "relay::" + url, "main", cwd=clone)
    assert git("rev-parse", "FETCH_HEAD", cwd=clone).stdout.strip() == new
    # a push cannot go to a dumb server (no WebDAV here): git's own error, and nothing moves
    res = git("push", "relay::" + url, "HEAD:refs/heads/other", cwd=clone, check=False)
    native = git("push", url, "HEAD:refs/heads/other", cwd=clone, check=False)
    assert res.returncode == native.returncode != 0, (res.stderr, native.stderr)
    assert "refs/heads/other" not in refs(bare)


@pytest.mark.parametrize("transport", ["file", "ssh", "git", "http"])
def test_sha256_repository_is_served_by_gits_own_code(transport: str, request: pytest.FixtureRequest, server_root: Path,
                                                      tmp_path: Path) -> None:
    """t5601 "clone with sha256": the engine speaks sha1, so for a sha256 remote the helper hands
    the work to git's own code (connect over a stream, git's remote-http over HTTP)."""
    src = tmp_path / "s256"
    git("init", "-q", "--object-format=sha256", str(src))
    commit(src, "a.txt")
    path = server_root / f"sha256-{transport}.git"
    git("init", "-q", "--bare", "--object-format=sha256", str(path))
    git("push", "-q", str(path), "main", cwd=src)
    url = "relay::" + url_for(request, transport, path)
    clone = tmp_path / "clone"
    res = git("clone", url, str(clone))
    assert "fatal" not in res.stderr and "hung up" not in res.stderr, res.stderr
    assert git("rev-parse", "--show-object-format", cwd=clone).stdout.strip() == "sha256"
    assert refs(clone)["refs/heads/main"] == refs(src)["refs/heads/main"]
    new = commit(clone, "b.txt")
    res = git("push", url, "main", cwd=clone)
    assert "fatal" not in res.stderr, res.stderr
    assert refs(path)["refs/heads/main"] == new
    git("fetch", "-q", url, "main", cwd=src)
    assert git("rev-parse", "FETCH_HEAD", cwd=src).stdout.strip() == new
    git("fsck", "--strict", cwd=path)


def test_packfile_uris_are_downloaded_by_gits_own_fetch(work: Path, tmp_path: Path, server_root: Path, http_server: int) -> None:
    """t5702 "part of packfile response provided as URI": a server that offers a blob as a pack at
    a URI, and a client that accepts them (fetch.uriProtocols), get git's own fetch-pack, which
    downloads that pack, checks it and keeps it beside the rest, as without relay::."""
    parent = server_root / "uris-parent.git"
    git("clone", "-q", "--bare", str(work), str(parent))
    blob_file = tmp_path / "excluded.bin"
    blob_file.write_bytes(b"a blob served from a packfile URI\n" * 100)
    blob = git("hash-object", "-w", str(blob_file), cwd=parent).stdout.strip()
    tree = git("mktree", cwd=parent, input=f"100644 blob {blob}\texcluded.bin\n".encode()).stdout.strip()
    head = git("rev-parse", "main", cwd=parent).stdout.strip()
    new = git("commit-tree", tree, "-p", head, "-m", "excluded blob", cwd=parent).stdout.strip()
    git("update-ref", "refs/heads/main", new, cwd=parent)
    pack = git("pack-objects", str(server_root / "uripack"), cwd=parent, input=f"{blob}\n".encode()).stdout.strip()
    git("config", "uploadpack.allowsidebandall", "true", cwd=parent)  # upload-pack sends URIs only then
    git("config", "--add", "uploadpack.blobpackfileuri", f"{blob} {pack} http://127.0.0.1:{http_server}/uripack-{pack}.pack", cwd=parent)
    url = f"http://127.0.0.1:{http_server}/git/uris-parent.git"
    for kind, where in (("native", url), ("relay", "relay::" + url)):
        child = tmp_path / kind
        git("-c", "protocol.version=2", "-c", "fetch.uriprotocols=http", "clone", "-q", where, str(child))
        packs = sorted(p.name for p in (child / ".git" / "objects" / "pack").glob("*.pack"))
        assert f"pack-{pack}.pack" in packs and len(packs) == 2, (kind, packs)
        assert refs(child)["refs/heads/main"] == new
        git("fsck", "--strict", cwd=child)
