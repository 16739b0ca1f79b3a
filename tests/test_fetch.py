"""Clone, fetch and ls-remote through relay:: against real servers, compared with native git."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import HTTP_PASSWORD, HTTP_USER, TRANSPORTS, fsck, git, make_source, objects, refs

pytestmark = pytest.mark.integration


@contextlib.contextmanager
def https_front(http_server: int, base: Path, **options: object) -> Iterator[tuple[int, Path]]:
    """``servers.tls_proxy`` before the test server: (port, CA file); a skip (a failure under CI)
    when it cannot start."""
    import servers
    from conftest import unavailable

    try:
        proxy = servers.tls_proxy(http_server, base, **options)  # type: ignore[arg-type]
        front = proxy.__enter__()
    except servers.ServerUnavailable as exc:
        unavailable(str(exc))
        raise
    try:
        yield front
    finally:
        proxy.__exit__(None, None, None)



@pytest.fixture
def source(tmp_path: Path) -> Path:
    return make_source(tmp_path / "source")


def clone_pair(tmp_path: Path, url: str, *extra: str) -> tuple[Path, Path, str]:
    """Clone ``url`` natively and through relay:: with the same arguments."""
    native, relayed = tmp_path / "native", tmp_path / "relayed"
    git("clone", *extra, url, str(native))
    res = git("clone", *extra, "relay::" + url, str(relayed))
    return native, relayed, res.stderr


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_clone_matches_native(transport: str, source: Path, make_remote, tmp_path: Path) -> None:
    remote = make_remote(transport, source=source)
    native, relayed, _ = clone_pair(tmp_path, remote.url)
    assert refs(relayed) == {k: v for k, v in refs(native).items()}
    assert objects(relayed) == objects(native)
    assert git("rev-parse", "--abbrev-ref", "HEAD", cwd=relayed).stdout.strip() == "main"
    assert git("config", "remote.origin.url", cwd=relayed).stdout.strip() == remote.relay_url
    assert (relayed / "file2.txt").read_text() == (source / "file2.txt").read_text()
    fsck(relayed)
    assert not list((relayed / ".git" / "objects" / "pack").glob("*.keep")), "git removes the lock after the clone"


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_bare_clone_and_ls_remote(transport: str, source: Path, make_remote, tmp_path: Path) -> None:
    remote = make_remote(transport, source=source)
    native, relayed, _ = clone_pair(tmp_path, remote.url, "--bare")
    assert refs(relayed) == refs(native)
    assert objects(relayed) == objects(native)
    fsck(relayed)
    ours = git("ls-remote", remote.relay_url, cwd=tmp_path).stdout
    theirs = git("ls-remote", remote.url, cwd=tmp_path).stdout
    assert ours == theirs
    assert "refs/tags/v1^{}" in ours


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_fetch_new_commits_and_follow_tags(transport: str, source: Path, make_remote, tmp_path: Path) -> None:
    remote = make_remote(transport, source=source)
    work = tmp_path / "work"
    git("clone", "-q", remote.relay_url, str(work))
    (source / "new.txt").write_text("new\n")
    git("add", ".", cwd=source)
    git("commit", "-q", "-m", "new", cwd=source)
    git("tag", "-a", "v2", "-m", "release 2", cwd=source)
    git("push", "-q", str(remote.path), "main", "v2", cwd=source)
    res = git("fetch", cwd=work)
    assert "v2" in res.stderr
    assert refs(work)["refs/remotes/origin/main"] == refs(source)["refs/heads/main"]
    assert refs(work)["refs/tags/v2"] == refs(source)["refs/tags/v2"]
    fsck(work)
    # nothing new: a fetch that changes nothing
    before = refs(work)
    git("fetch", cwd=work)
    assert refs(work) == before


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_non_default_head_is_checked_out(transport: str, source: Path, make_remote, tmp_path: Path) -> None:
    remote = make_remote(transport, source=source)
    git("symbolic-ref", "HEAD", "refs/heads/topic", cwd=remote.path)
    work = tmp_path / "work"
    git("clone", "-q", remote.relay_url, str(work))
    assert git("rev-parse", "--abbrev-ref", "HEAD", cwd=work).stdout.strip() == "topic"
    assert (work / "topic.txt").exists()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_clone_empty_repository(transport: str, make_remote, tmp_path: Path) -> None:
    remote = make_remote(transport)
    work = tmp_path / "work"
    res = git("clone", remote.relay_url, str(work))
    assert "empty repository" in res.stderr
    assert refs(work) == {}
    # and pushing into it with native git afterwards works from that clone
    assert git("rev-parse", "--git-dir", cwd=work).stdout.strip() == ".git"


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_shallow_clone_is_really_shallow(transport: str, source: Path, make_remote, tmp_path: Path) -> None:
    remote = make_remote(transport, source=source)
    work = tmp_path / "work"
    git("clone", "-q", "--depth", "1", remote.relay_url, str(work))
    assert (work / ".git" / "shallow").exists()
    assert git("rev-list", "--count", "HEAD", cwd=work).stdout.strip() == "1"
    # and deepening it later goes through the same passthrough
    git("fetch", "-q", "--unshallow", cwd=work)
    assert git("rev-list", "--count", "HEAD", cwd=work).stdout.strip() == "3"


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_partial_clone_omits_blobs(transport: str, source: Path, make_remote, tmp_path: Path) -> None:
    remote = make_remote(transport, source=source)
    work = tmp_path / "work"
    git("clone", "-q", "--no-checkout", "--filter=blob:none", remote.relay_url, str(work))
    missing = git("rev-list", "--objects", "--all", "--missing=print", cwd=work).stdout
    assert any(line.startswith("?") for line in missing.splitlines()), "blobs should be left on the server"
    git("checkout", "-q", "main", cwd=work)  # lazy fetch of the blobs through relay:: again
    assert (work / "file2.txt").read_text() == (source / "file2.txt").read_text()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_missing_repository_is_a_clear_error(transport: str, make_remote, tmp_path: Path) -> None:
    remote = make_remote(transport)
    url = remote.url.replace(remote.path.name, "does-not-exist.git")
    work = tmp_path / "work"
    res = git("clone", "relay::" + url, str(work), check=False)
    assert res.returncode != 0
    assert "fatal:" in res.stderr
    assert not work.exists(), "a failed clone leaves no directory behind"


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_server_dying_mid_pack_leaves_nothing(transport: str, tmp_path: Path, make_remote) -> None:
    src = make_source(tmp_path / "src", big=400_000)
    remote = make_remote(transport, name=f"truncate-{transport}", source=src)
    for version in ("2", "0"):  # v0: git's fetch-pack on the helper's plain pipe (or copied socket)
        work = tmp_path / f"work-v{version}"
        git("init", "-q", str(work))
        git("remote", "add", "origin", remote.relay_url, cwd=work)
        res = git("-c", f"protocol.version={version}", "fetch", "origin", cwd=work, check=False)
        assert res.returncode != 0, res.stderr
        assert "fatal:" in res.stderr or "error:" in res.stderr
        assert "internal error" not in res.stderr and "cannot use" not in res.stderr, res.stderr
        assert refs(work) == {}, "no ref may appear after a failed fetch"
        packdir = work / ".git" / "objects" / "pack"
        assert not [p.name for p in packdir.iterdir() if p.name.startswith("tmp_")], "no half-written pack"
        assert not list(packdir.glob("*.pack"))
        fsck(work)


def test_http_basic_auth_with_credential_helper(source: Path, make_remote, tmp_path: Path, http_server: int) -> None:
    remote = make_remote("http", source=source)
    url = remote.url.replace("/git/", "/auth/")
    store = tmp_path / "creds"
    store.write_text(f"http://{HTTP_USER}:{HTTP_PASSWORD}@127.0.0.1:{http_server}\n")
    store.chmod(0o600)
    work = tmp_path / "work"
    env = dict(os.environ, GIT_RELAY_TRACE="1")
    res = git("-c", f"credential.helper=store --file={store}", "clone", "relay::" + url, str(work), env=env)
    assert refs(work)["refs/remotes/origin/main"] == refs(source)["refs/heads/main"]
    assert HTTP_PASSWORD not in res.stderr + res.stdout
    # without credentials: git's own words (prompts are off in the tests), nothing cloned, no hang
    bad = git("clone", "relay::" + url, str(tmp_path / "nocreds"), check=False)
    assert bad.returncode != 0
    assert "fatal: could not read Username for" in bad.stderr and "terminal prompts disabled" in bad.stderr
    # wrong password in the URL: refused, and the password is never echoed
    wrong = url.replace("http://", f"http://{HTTP_USER}:wrong-Secret-9@")
    bad = git("clone", "relay::" + wrong, str(tmp_path / "wrong"), check=False, env=env)
    assert bad.returncode != 0
    assert "wrong-Secret-9" not in bad.stderr
    assert "Authentication failed" in bad.stderr


def test_progress_is_shown_and_quiet_is_quiet(source: Path, make_remote, tmp_path: Path) -> None:
    remote = make_remote("file", source=source)
    loud = git("clone", "--progress", remote.relay_url, str(tmp_path / "a"))
    assert "Receiving objects" in loud.stderr or "Indexing objects" in loud.stderr
    quiet = git("clone", "-q", remote.relay_url, str(tmp_path / "b"))
    assert quiet.stderr == ""


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_default_output_is_what_native_git_prints(transport: str, source: Path, make_remote, tmp_path: Path) -> None:
    """No transfer summary unless asked: a relay clone says what a native clone says, -v adds it."""
    remote = make_remote(transport, source=source)
    (tmp_path / "n").mkdir()
    (tmp_path / "r").mkdir()
    # --no-local: a native clone of a path would hardlink instead of talking to upload-pack
    native = git("clone", "--no-local", remote.url, "same", cwd=tmp_path / "n").stderr
    relayed = git("clone", remote.relay_url, "same", cwd=tmp_path / "r").stderr
    assert relayed == native
    verbose = git("clone", "-v", remote.relay_url, str(tmp_path / "v")).stderr
    assert "relay: received" in verbose and "peak RSS" in verbose


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_clone_of_empty_repository_keeps_its_unborn_head(transport: str, make_remote, tmp_path: Path) -> None:
    remote = make_remote(transport)
    git("symbolic-ref", "HEAD", "refs/heads/trunk", cwd=remote.path)
    native, relayed = tmp_path / "native", tmp_path / "relayed"
    git("clone", remote.url, str(native))
    git("clone", remote.relay_url, str(relayed))
    head = git("symbolic-ref", "HEAD", cwd=native).stdout.strip()
    assert head == "refs/heads/trunk", "native git carries the unborn HEAD (protocol v2)"
    assert git("symbolic-ref", "HEAD", cwd=relayed).stdout.strip() == head
    assert git("config", "remote.origin.url", cwd=relayed).stdout.strip() == remote.relay_url


def make_shallow_remote(make_remote, transport: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    """A remote whose repository is itself shallow (a --depth 2 clone of a 5-commit history)."""
    full = make_source(tmp_path / "full", commits=5)
    remote = make_remote(transport)
    shutil.rmtree(remote.path)
    git("clone", "-q", "--bare", "--depth", "2", "--no-single-branch", f"file://{full}", str(remote.path))
    assert (remote.path / "shallow").exists()
    return remote


@pytest.mark.parametrize("protocol", ["2", "0"])
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_clone_of_a_shallow_remote_is_shallow_like_native(transport: str, protocol: str, make_remote, tmp_path: Path) -> None:
    remote = make_shallow_remote(make_remote, transport, tmp_path)
    native, relayed = tmp_path / "native", tmp_path / "relayed"
    git("-c", f"protocol.version={protocol}", "clone", "-q", remote.url, str(native))
    git("-c", f"protocol.version={protocol}", "clone", "-q", remote.relay_url, str(relayed))
    # (git's fetch-pack may write a boundary commit twice; the set is what counts)
    assert set((relayed / ".git" / "shallow").read_text().split()) == set((native / ".git" / "shallow").read_text().split())
    assert refs(relayed) == refs(native)
    assert git("rev-list", "--count", "HEAD", cwd=relayed).stdout == git("rev-list", "--count", "HEAD", cwd=native).stdout
    fsck(relayed)


def test_http_connections_are_kept_alive(source: Path, make_remote, tmp_path: Path, http_server: int) -> None:
    """Discovery, ls-refs and the fetch of a clone share one TCP connection (like git's curl)."""
    import servers

    remote = make_remote("http", source=source)
    with servers.tcp_proxy(http_server) as proxy:
        url = remote.url.replace(f":{http_server}/", f":{proxy.port}/")
        git("clone", "-q", "relay::" + url, str(tmp_path / "work"))
        connections = proxy.connections
    assert refs(tmp_path / "work")["refs/remotes/origin/main"] == refs(source)["refs/heads/main"]
    assert connections == 1, f"{connections} TCP connections for one clone"


def test_http_proxy_from_git_config(source: Path, make_remote, tmp_path: Path, http_server: int) -> None:
    import servers

    remote = make_remote("http", source=source)
    with servers.forward_proxy() as proxy:
        git("-c", f"http.proxy=http://127.0.0.1:{proxy.port}", "clone", "-q", remote.relay_url, str(tmp_path / "work"))
        seen = list(proxy.requests)
    assert refs(tmp_path / "work")["refs/remotes/origin/main"] == refs(source)["refs/heads/main"]
    assert seen and all(line.split(" ")[1].startswith(f"http://127.0.0.1:{http_server}/") for line in seen), seen


def test_https_verifies_the_server_and_honours_ssl_settings(source: Path, make_remote, tmp_path: Path, http_server: int,
                                                             workspace: Path) -> None:
    remote = make_remote("http", source=source)
    with https_front(http_server, workspace / "tls") as (port, ca):
        url = f"relay::https://127.0.0.1:{port}/git/{remote.path.name}"
        untrusted = git("clone", url, str(tmp_path / "untrusted"), check=False)
        assert untrusted.returncode != 0 and "TLS" in untrusted.stderr and "sslCAInfo" in untrusted.stderr, untrusted.stderr
        git("-c", f"http.sslCAInfo={ca}", "clone", "-q", url, str(tmp_path / "trusted"))
        assert refs(tmp_path / "trusted")["refs/remotes/origin/main"] == refs(source)["refs/heads/main"]
        git("-c", "http.sslVerify=false", "clone", "-q", url, str(tmp_path / "unverified"))
        (source / "https.txt").write_text("over https\n")
        git("add", ".", cwd=source)
        git("commit", "-q", "-m", "https", cwd=source)
        git("-c", f"http.sslCAInfo={ca}", "push", "-q", url, "main", cwd=source)
        assert refs(remote.path)["refs/heads/main"] == refs(source)["refs/heads/main"]


def test_https_client_certificates_as_natively(source: Path, make_remote, tmp_path: Path, http_server: int, workspace: Path) -> None:
    """TLS client authentication: http.sslCert / http.sslKey (and GIT_SSL_CERT / GIT_SSL_KEY); an
    encrypted key's passphrase from git credential under http.sslCertPasswordProtected, as git
    asks for it (cert:///<path>); no certificate, no access."""

    def openssl(*args: str) -> None:
        made = subprocess.run(["openssl", *args], capture_output=True, text=True)
        assert made.returncode == 0, made.stderr

    keys = tmp_path / "keys"
    keys.mkdir()
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(keys / "ca.key"), "-out", str(keys / "ca.pem"),
            "-days", "2", "-subj", "/CN=relay test client CA")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(keys / "client.key"), "-out", str(keys / "client.csr"),
            "-subj", "/CN=relay test client")
    openssl("x509", "-req", "-in", str(keys / "client.csr"), "-CA", str(keys / "ca.pem"), "-CAkey", str(keys / "ca.key"),
            "-CAcreateserial", "-out", str(keys / "client.pem"), "-days", "2")
    openssl("pkey", "-in", str(keys / "client.key"), "-aes256", "-passout", "pass:Key-Phrase-7", "-out", str(keys / "locked.key"))
    remote = make_remote("http", source=source)
    with https_front(http_server, workspace / "tls-client-auth", client_ca=keys / "ca.pem") as (port, ca):
        url = f"https://127.0.0.1:{port}/git/{remote.path.name}"
        trust = ["-c", f"http.sslCAInfo={ca}"]
        cert = ["-c", f"http.sslCert={keys / 'client.pem'}"]
        for prefix in ("", "relay::"):
            name = prefix.rstrip(":") or "native"
            refused = git(*trust, "ls-remote", prefix + url, cwd=tmp_path, check=False)
            assert refused.returncode == 128, (name, refused.stderr)
            git(*trust, *cert, "-c", f"http.sslKey={keys / 'client.key'}", "clone", "-q", prefix + url, str(tmp_path / f"{name}-config"))
            env = dict(os.environ, GIT_SSL_CERT=str(keys / "client.pem"), GIT_SSL_KEY=str(keys / "client.key"))
            git(*trust, "clone", "-q", prefix + url, str(tmp_path / f"{name}-env"), env=env)
            # an encrypted key: its passphrase from a credential helper, asked for cert:///<path>
            asked = tmp_path / f"{name}-asked"
            helper = tmp_path / f"{name}-helper.sh"
            helper.write_text(f"#!/bin/sh\ncat > {asked}\necho password=Key-Phrase-7\n")
            helper.chmod(0o755)
            locked = [*trust, *cert, "-c", f"http.sslKey={keys / 'locked.key'}", "-c", "http.sslCertPasswordProtected=true",
                      "-c", f"credential.helper={helper}"]
            git(*locked, "clone", "-q", prefix + url, str(tmp_path / f"{name}-locked"))
            assert f"path={keys / 'client.pem'}" in asked.read_text() and "protocol=cert" in asked.read_text(), asked.read_text()
            for made in ("config", "env", "locked"):
                assert refs(tmp_path / f"{name}-{made}")["refs/remotes/origin/main"] == refs(source)["refs/heads/main"]
        # an encrypted key without being told: refused, and the hint says what to set
        res = git(*trust, *cert, "-c", f"http.sslKey={keys / 'locked.key'}", "ls-remote", "relay::" + url, cwd=tmp_path, check=False)
        assert res.returncode == 128 and "sslCertPasswordProtected" in res.stderr, res.stderr


def test_http_proxy_precedence_is_gits(source: Path, make_remote, tmp_path: Path, http_server: int) -> None:
    """remote.<name>.proxy comes before http.proxy, which comes before the environment; an empty
    value turns proxying off (http.c): relay:: goes through the same proxy as native, or none."""
    import servers

    remote = make_remote("http", source=source)
    with servers.forward_proxy() as used, servers.forward_proxy() as unused:
        for prefix in ("", "relay::"):
            work = tmp_path / f"work-{prefix.rstrip(':') or 'native'}"
            git("clone", "-q", "-c", f"http.proxy=http://127.0.0.1:{unused.port}", "-c", f"remote.origin.proxy=http://127.0.0.1:{used.port}",
                prefix + remote.url, str(work))
            env = dict(os.environ, http_proxy=f"http://127.0.0.1:{unused.port}")
            git("-c", "http.proxy=", "fetch", "-q", "origin", cwd=work, env=env)  # empty: no proxy, not the environment's
            git("config", "remote.origin.proxy", "", cwd=work)
            git("-c", f"http.proxy=http://127.0.0.1:{unused.port}", "fetch", "-q", "origin", cwd=work)  # empty per remote wins
        assert used.requests and not unused.requests, (used.requests, unused.requests)
    assert refs(tmp_path / "work-relay") == refs(tmp_path / "work-native")


def test_http_low_speed_limit_aborts_a_crawling_transfer_as_natively(make_remote, tmp_path: Path, http_server: int) -> None:
    """http.lowSpeedLimit / http.lowSpeedTime (and GIT_HTTP_LOW_SPEED_*): a reply that crawls
    below the limit for that long is given up, with curl's words, where relay.timeout alone
    would wait for minutes."""
    import servers

    src = make_source(tmp_path / "src", big=300_000)
    remote = make_remote("http", source=src)
    with servers.tcp_proxy(http_server, trickle_after=20_000) as proxy:
        url = remote.url.replace(f":{http_server}/", f":{proxy.port}/")
        for prefix in ("", "relay::"):
            dest = tmp_path / f"clone-{prefix.rstrip(':') or 'native'}"
            res = subprocess.run(["git", "-c", "http.lowSpeedLimit=1000", "-c", "http.lowSpeedTime=2", "clone", prefix + url, str(dest)],
                                 capture_output=True, text=True, timeout=120)
            assert res.returncode != 0 and not dest.exists(), res.stderr
            assert "Operation too slow. Less than 1000 bytes/sec transferred the last 2 seconds" in res.stderr, res.stderr
        env = dict(os.environ, GIT_HTTP_LOW_SPEED_LIMIT="1000", GIT_HTTP_LOW_SPEED_TIME="2")
        res = subprocess.run(["git", "ls-remote", "relay::" + url], capture_output=True, text=True, timeout=60, env=env)
        assert res.returncode == 0, res.stderr  # a small reply that comes at once is no trouble


def test_https_pinned_public_key_as_natively(source: Path, make_remote, tmp_path: Path, http_server: int, workspace: Path) -> None:
    """http.pinnedPubkey: the server's key must be the pinned one (sha256//<base64>, or a public
    key file); a wrong pin is refused with curl's words, by relay:: as natively."""
    import base64
    import hashlib


    remote = make_remote("http", source=source)
    with https_front(http_server, workspace / "tls") as (port, ca):
        pem = subprocess.run(["openssl", "x509", "-in", str(ca), "-pubkey", "-noout"], capture_output=True, check=True).stdout
        (tmp_path / "key.pem").write_bytes(pem)
        der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "der"], input=pem, capture_output=True, check=True).stdout
        right = "sha256//" + base64.b64encode(hashlib.sha256(der).digest()).decode()
        wrong = "sha256//" + base64.b64encode(hashlib.sha256(b"another key").digest()).decode()
        url = f"https://127.0.0.1:{port}/git/{remote.path.name}"
        for pin in (right, f"{wrong};{right}", str(tmp_path / "key.pem")):
            for prefix in ("", "relay::"):
                res = git("-c", f"http.sslCAInfo={ca}", "-c", f"http.pinnedPubkey={pin}", "ls-remote", prefix + url, "main", cwd=tmp_path)
                assert res.stdout.split()[0] == refs(source)["refs/heads/main"]
        said = {}
        for prefix in ("", "relay::"):
            res = git("-c", f"http.sslCAInfo={ca}", "-c", f"http.pinnedPubkey={wrong}", "ls-remote", prefix + url, cwd=tmp_path,
                      check=False)
            said[prefix] = (res.returncode, res.stderr.splitlines()[0] if res.stderr else "")
        assert said["relay::"] == said[""] == (128, f"fatal: unable to access '{url}/' with http.pinnedPubkey configuration: "
                                                    "SSL: public key does not match pinned public key"), said


def test_https_tls_version_and_ciphers_as_natively(source: Path, make_remote, tmp_path: Path, http_server: int, workspace: Path) -> None:
    """http.sslVersion is the lowest TLS version accepted (as curl takes it), http.sslCipherList
    OpenSSL's list; an unknown version is warned about in git's words and the default kept."""
    remote = make_remote("http", source=source)
    with https_front(http_server, workspace / "tls") as (port, ca):
        url = f"https://127.0.0.1:{port}/git/{remote.path.name}"
        trust = ["-c", f"http.sslCAInfo={ca}"]
        for settings in (["-c", "http.sslVersion=tlsv1.2"], ["-c", "http.sslCipherList=ECDHE+AESGCM"], ["-c", "http.sslVersion=tlsv1.3"]):
            for prefix in ("", "relay::"):
                res = git(*trust, *settings, "ls-remote", prefix + url, "main", cwd=tmp_path)
                assert res.stdout.split()[0] == refs(source)["refs/heads/main"], (settings, prefix)
        said = {}
        for prefix in ("", "relay::"):
            res = git(*trust, "-c", "http.sslVersion=tlsv9", "ls-remote", prefix + url, "main", cwd=tmp_path)
            said[prefix] = [line for line in res.stderr.splitlines() if line.startswith("warning:")]
        assert said["relay::"][:1] == said[""][:1] == ["warning: unsupported ssl version tlsv9: using default"], said
    with https_front(http_server, workspace / "tls", tls_1_2_only=True) as (port, ca):
        url = f"https://127.0.0.1:{port}/git/{remote.path.name}"
        for prefix in ("", "relay::"):
            git("-c", f"http.sslCAInfo={ca}", "-c", "http.sslVersion=tlsv1.2", "ls-remote", prefix + url, cwd=tmp_path)
            refused = git("-c", f"http.sslCAInfo={ca}", "-c", "http.sslVersion=tlsv1.3", "ls-remote", prefix + url, cwd=tmp_path,
                          check=False)
            assert refused.returncode == 128 and "unable to access" in refused.stderr, (prefix, refused.stderr)


def test_a_socks_proxy_is_used_through_gits_own_http(source: Path, make_remote, tmp_path: Path, http_server: int) -> None:
    """http.proxy=socks5://…: the helper's client speaks only HTTP proxies, so the session goes to
    git's own remote-http (curl speaks SOCKS) at the first request, and the clone works as natively."""
    import socket
    import struct
    import threading

    remote = make_remote("http", source=source)
    listener = socket.create_server(("127.0.0.1", 0))
    seen: list[int] = []

    def pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def serve(client: socket.socket) -> None:  # SOCKS5, no authentication, CONNECT to an IPv4 address
        try:
            client.recv(262)
            client.sendall(b"\x05\x00")
            head = client.recv(4)
            if head[3] == 1:
                host = socket.inet_ntoa(client.recv(4))
            else:
                host = client.recv(client.recv(1)[0]).decode()
            port = struct.unpack(">H", client.recv(2))[0]
            seen.append(port)
            if host not in ("127.0.0.1", "localhost"):
                raise OSError("loopback only")
            upstream = socket.create_connection(("127.0.0.1", port))
            client.sendall(b"\x05\x00\x00\x01" + socket.inet_aton("127.0.0.1") + struct.pack(">H", port))
        except (OSError, IndexError):
            client.close()
            return
        threading.Thread(target=pipe, args=(upstream, client), daemon=True).start()
        pipe(client, upstream)

    def accept() -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(client,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        proxy = f"socks5://127.0.0.1:{listener.getsockname()[1]}"
        for prefix in ("", "relay::"):
            name = prefix.rstrip(":") or "native"
            git("-c", f"http.proxy={proxy}", "clone", "-q", prefix + remote.url, str(tmp_path / name))
            assert refs(tmp_path / name)["refs/remotes/origin/main"] == refs(source)["refs/heads/main"]
        assert seen and set(seen) == {http_server}, seen
    finally:
        listener.close()


def test_a_proxy_user_without_password_is_asked_through_git_credential(source: Path, make_remote, tmp_path: Path,
                                                                      http_server: int) -> None:
    """http.proxy=http://user@host:port (no password): git asks git credential for it (http.c),
    and so does the helper, once; without it the proxy refuses, as natively."""
    import servers

    remote = make_remote("http", source=source)
    with servers.forward_proxy(login="carol:Proxy-Pass-3") as proxy:
        url = f"http://carol@127.0.0.1:{proxy.port}"
        for prefix in ("", "relay::"):
            name = prefix.rstrip(":") or "native"
            asked = tmp_path / f"{name}-asked"
            helper = tmp_path / f"{name}-helper.sh"
            helper.write_text(f"#!/bin/sh\ncat >> {asked}\necho password=Proxy-Pass-3\n")
            helper.chmod(0o755)
            git("-c", f"http.proxy={url}", "-c", f"credential.helper={helper}", "clone", "-q", prefix + remote.url, str(tmp_path / name))
            assert refs(tmp_path / name)["refs/remotes/origin/main"] == refs(source)["refs/heads/main"]
            told = asked.read_text()
            assert "username=carol" in told and f"host=127.0.0.1:{proxy.port}" in told, told
            refused = git("-c", f"http.proxy={url}", "ls-remote", prefix + remote.url, cwd=tmp_path, check=False)
            assert refused.returncode == 128, refused.stderr
        assert "Proxy-Pass-3" not in str(proxy.requests)
