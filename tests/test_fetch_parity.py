"""Fetch parity: relay:: fetches behave like native git's, because git's own fetch-pack runs them
on the helper's connection. Each test runs the same thing natively and through relay:: against
real servers and compares what git itself shows (refs, objects stored, traces, errors)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
from conftest import commit, fsck, git, make_source, objects, refs

pytestmark = pytest.mark.integration

STREAMS = ["file", "ssh", "git", "http"]


def count_objects(repo: Path) -> dict[str, int]:
    out = git("count-objects", "-v", cwd=repo).stdout
    return {k: int(v) for k, v in (line.split(": ") for line in out.splitlines()) if v.isdigit()}


@pytest.mark.parametrize("transport", STREAMS)
def test_clone_with_reference_stores_what_native_stores(transport: str, tmp_path: Path, make_remote) -> None:
    src = make_source(tmp_path / "src", commits=6, big=200_000)
    remote = make_remote(transport, source=src)
    reference = tmp_path / "reference.git"
    git("clone", "-q", "--bare", str(src), str(reference))
    stored = {}
    for name, url in (("native", remote.url), ("relay", remote.relay_url)):
        dest = tmp_path / name
        git("clone", "-q", "--bare", "--reference", str(reference), url, str(dest))
        counts = count_objects(dest)
        stored[name] = counts["count"] + counts["in-pack"]
        assert refs(dest) == refs(tmp_path / "native")
        fsck(dest)
    assert stored["relay"] == stored["native"] == 0, stored


@pytest.mark.parametrize("transport", ["file", "http"])
def test_fsck_skiplist_lets_a_known_bad_commit_in_as_natively(transport: str, tmp_path: Path, make_remote) -> None:
    src = make_source(tmp_path / "src")
    tree = git("rev-parse", "HEAD^{tree}", cwd=src).stdout.strip()
    head = git("rev-parse", "HEAD", cwd=src).stdout.strip()
    bogus = f"tree {tree}\nparent {head}\nauthor Bugs Bunny 1234567890 +0000\ncommitter C <c@d> 1234567890 +0000\n\nbad\n"
    bad = git("hash-object", "-t", "commit", "-w", "--literally", "--stdin", cwd=src, input=bogus.encode()).stdout.strip()
    git("update-ref", "refs/heads/bogus", bad, cwd=src)
    remote = make_remote(transport, source=src)
    skip = tmp_path / "skip"
    skip.write_text(bad + "\n")
    for name, url in (("native", remote.url), ("relay", remote.relay_url)):
        dest = tmp_path / name
        git("init", "-q", str(dest))
        strict = ["-c", "fetch.fsckObjects=true"]
        refused = git(*strict, "fetch", url, "refs/heads/*:refs/remotes/origin/*", cwd=dest, check=False)
        assert refused.returncode != 0 and "missingEmail" in refused.stderr, (name, refused.stderr)
        git(*strict, "-c", f"fetch.fsck.skipList={skip}", "fetch", url, "refs/heads/*:refs/remotes/origin/*", cwd=dest)
        assert refs(dest)["refs/remotes/origin/bogus"] == bad
        ok = git(*strict, "-c", "fetch.fsck.missingEmail=ignore", "fetch", url, "+refs/heads/*:refs/remotes/again/*", cwd=dest)
        assert ok.returncode == 0


@pytest.mark.parametrize("transport", STREAMS)
def test_packet_trace_shows_the_conversation(transport: str, tmp_path: Path, make_remote) -> None:
    remote = make_remote(transport, source=make_source(tmp_path / "src"))
    trace = tmp_path / "trace"
    env = dict(os.environ, GIT_TRACE_PACKET=str(trace))
    git("clone", "-q", remote.relay_url, str(tmp_path / "dest"), env=env)
    text = trace.read_text()
    assert "clone> command=fetch" in text and "clone> want " in text, text[-2000:]
    assert "clone< packfile" in text


@pytest.mark.parametrize("transport", ["file", "ssh", "http"])
def test_server_options_and_negotiation_settings_reach_the_server(transport: str, tmp_path: Path, make_remote) -> None:
    src = make_source(tmp_path / "src")
    remote = make_remote(transport, source=src)
    work = tmp_path / "work"
    git("clone", "-q", remote.relay_url, str(work))
    commit(src, "more.txt")
    git("push", "-q", str(remote.path), "main", cwd=src)
    trace = tmp_path / "trace"
    env = dict(os.environ, GIT_TRACE_PACKET=str(trace))
    git("-c", "fetch.negotiationAlgorithm=noop", "fetch", "-o", "hello=world", "origin", cwd=work, env=env)
    text = trace.read_text()
    assert "fetch> server-option=hello=world" in text
    assert "fetch> have " not in text, "the noop negotiator sends no haves"
    assert refs(work)["refs/remotes/origin/main"] == refs(src)["refs/heads/main"]


@pytest.mark.parametrize("transport", ["file", "http"])
def test_fetch_from_a_shallow_remote_does_what_native_does(transport: str, tmp_path: Path, make_remote) -> None:
    full = make_source(tmp_path / "full", commits=5)
    shallow_src = tmp_path / "shallow.git"
    git("clone", "-q", "--bare", "--depth", "2", f"file://{full}", str(shallow_src))
    remote = make_remote(transport, source=shallow_src)
    results = {}
    for name, url in (("native", remote.url), ("relay", remote.relay_url)):
        dest = tmp_path / name
        git("clone", "-q", "--bare", str(full), str(dest))  # complete, and behind nothing
        res = git("fetch", url, "+refs/heads/*:refs/remotes/r/*", cwd=dest, check=False)
        results[name] = (res.returncode, refs(dest), (dest / "shallow").exists())
    assert results["relay"] == results["native"]


def test_an_upload_pack_that_fails_after_its_pack_fails_the_clone(tmp_path: Path, make_remote) -> None:
    remote = make_remote("file", source=make_source(tmp_path / "src"))
    failing = 'f() { git-upload-pack "$@"; return 1; }; f'
    for name, url in (("native", remote.url), ("relay", remote.relay_url)):
        res = git("clone", "--no-local", "-u", failing, url, str(tmp_path / name), check=False)
        assert res.returncode != 0, (name, res.stderr)
        assert not (tmp_path / name).exists()


@pytest.mark.usefixtures("workspace")  # (the helper on PATH, when this test runs alone)
def test_git_url_with_a_newline_is_refused_in_gits_words(tmp_path: Path) -> None:
    res = git("clone", "relay::git://127.0.0.1:9/repo\n.git", str(tmp_path / "x"), check=False)
    assert res.returncode != 0 and "newline is forbidden" in res.stderr


def history(path: Path, commits: int, size: int) -> Path:
    git("init", "-q", str(path))
    for i in range(commits):
        commit(path, f"part{i}.bin", os.urandom(size))
    return path


def cache_entries(cache: Path) -> list[Path]:
    return [p for p in (cache / "fetch").iterdir() if p.is_dir()] if (cache / "fetch").exists() else []


@pytest.mark.parametrize("transport", ["ssh", "http"])
def test_an_interrupted_clone_resumes_from_the_user_cache(transport: str, tmp_path: Path, make_remote) -> None:
    src = history(tmp_path / "src", commits=24, size=8_000)
    remote = make_remote(transport, source=src)
    cache = tmp_path / "cache"
    env = dict(os.environ, GIT_RELAY_CACHE_DIR=str(cache))
    slow = remote.path / "relay-test-hook"  # the server thinks for a while before each pack
    slow.write_text("#!/bin/sh\nsleep 1\n")
    slow.chmod(0o755)
    dest = tmp_path / "clone"
    args = ["git", "-c", "relay.fetchStepObjects=15", "clone", "--bare", remote.relay_url, str(dest)]
    proc = subprocess.Popen(args, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, start_new_session=True)
    seen: list[str] = []
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            seen.append(line)
            if "step 3/" in line:
                break
        time.sleep(0.3)
    finally:
        os.killpg(proc.pid, 9)
        proc.wait()
    assert "step 3/" in "".join(seen), "".join(seen)
    entries = cache_entries(cache)
    assert len(entries) == 1
    kept = [line.split()[0] for line in (entries[0] / "steps").read_text().splitlines()]
    assert len(kept) == 2, "steps 1 and 2 were finished before the kill"
    import shutil

    shutil.rmtree(dest, ignore_errors=True)  # what git clone does when it fails
    slow.unlink()
    res = git("-c", "relay.fetchStepObjects=15", "clone", "--bare", remote.relay_url, str(dest), env=env)
    assert "resuming an interrupted clone (2 finished step(s)" in res.stderr, res.stderr
    again = [line.split("history up to ")[1].split()[0] for line in res.stderr.splitlines() if "history up to" in line]
    assert not [c for c in again for k in kept if k.startswith(c)], "a resumed clone does not fetch a finished step again"
    assert refs(dest) == refs(src)
    assert objects(dest) == objects(src)
    fsck(dest)
    assert cache_entries(cache) == [], "a completed clone empties its cache entry"
    assert not list((dest / "objects" / "pack").glob("*.keep"))


@pytest.mark.parametrize("transport", ["file", "ssh", "git"])
def test_a_fetch_with_nothing_new_is_quiet_and_a_void_clones(transport: str, tmp_path: Path, make_remote) -> None:
    remote = make_remote(transport, source=make_source(tmp_path / "src"))
    work = tmp_path / "work"
    git("clone", "-q", remote.relay_url, str(work))
    assert git("fetch", cwd=work).stderr == ""
    void = make_remote(transport)
    res = git("clone", void.relay_url, str(tmp_path / "void"))
    assert "fatal" not in res.stderr and "cloned an empty repository" in res.stderr


@pytest.mark.parametrize("transport", ["file", "ssh", "git"])
def test_protocol_version_1_is_asked_for_as_natively(transport: str, tmp_path: Path, make_remote) -> None:
    remote = make_remote(transport, source=make_source(tmp_path / "src"))
    trace = tmp_path / "trace"
    env = dict(os.environ, GIT_TRACE_PACKET=str(trace))
    git("-c", "protocol.version=1", "clone", "-q", remote.relay_url, str(tmp_path / "dest"), env=env)
    assert "version 1" in trace.read_text()


def test_git_minus_v_tells_how_it_reached_a_git_daemon(tmp_path: Path, make_remote) -> None:
    remote = make_remote("git", source=make_source(tmp_path / "src"))
    res = git("clone", "-v", remote.relay_url, str(tmp_path / "dest"))
    assert "Looking up 127.0.0.1 ... done." in res.stderr and "Connecting to 127.0.0.1 (port " in res.stderr


def test_http_failures_are_said_in_gits_words(tmp_path: Path, make_remote, http_server: int) -> None:
    """What git itself prints when an HTTP remote fails, the helper prints too (scripts grep for
    these lines): a 403, no credentials where prompts are off, nothing listening on the port."""
    import re
    import socket

    work = make_source(tmp_path / "work")
    remote = make_remote("http", source=work)
    git("config", "http.receivepack", "false", cwd=remote.path)  # pushes: 403
    with socket.socket() as s:  # a port where nothing listens
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    env = dict(os.environ, GIT_TERMINAL_PROMPT="0", GIT_ASKPASS="", SSH_ASKPASS="")
    cases = [("push", remote.url, "main"),
             ("ls-remote", remote.url.replace("/git/", "/auth/")),
             ("ls-remote", f"http://127.0.0.1:{closed}/nothing.git")]
    expected = ["The requested URL returned error: 403", "terminal prompts disabled", "Couldn't connect to server"]
    for args, words in zip(cases, expected, strict=True):
        said = {}
        for prefix in ("", "relay::"):
            res = git(args[0], prefix + args[1], *args[2:], cwd=work, env=env, check=False)
            assert res.returncode == 128, res.stderr
            lines = [line for line in res.stderr.replace(prefix, "").splitlines() if line.startswith(("fatal:", "error:"))]
            said[prefix] = [re.sub(r"after \d+ ms", "after N ms", line) for line in lines]
        assert said["relay::"] == said[""], (args, said)
        assert words in said[""][0], said  # (native git says it: the case is what it claims to be)


@pytest.mark.usefixtures("workspace")
def test_a_git_daemon_that_is_not_there_is_said_in_gits_words(tmp_path: Path) -> None:
    """connect.c's words for a git:// port where nothing listens: each address tried, and why."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    said = {}
    for prefix in ("", "relay::"):
        res = git("ls-remote", f"{prefix}git://127.0.0.1:{closed}/nothing.git", cwd=tmp_path, check=False)
        assert res.returncode == 128, res.stderr
        said[prefix] = [line for line in res.stderr.splitlines() if line and not line.startswith("hint:")]
    assert said[""] == ["fatal: unable to connect to 127.0.0.1:", "127.0.0.1[0: 127.0.0.1]: errno=Connection refused"], said
    assert said["relay::"] == said[""], said


def test_a_redirect_is_said_as_remote_curl_says_it(tmp_path: Path, make_remote, http_server: int) -> None:
    """'warning: redirecting to <url>/' when the server sends the first request elsewhere, as
    remote-curl says it; nothing under -q."""
    work = make_source(tmp_path / "work")
    remote = make_remote("http", source=work)
    moved = remote.url.replace("/git/", "/moved/")
    for quiet in ([], ["-q"]):
        said = {}
        for prefix in ("", "relay::"):
            res = git("fetch", *quiet, prefix + moved, "main", cwd=work, check=False)
            assert res.returncode == 0, res.stderr
            said[prefix] = [line for line in res.stderr.splitlines() if line.startswith("warning:")]
        assert said["relay::"] == said[""], said
        expected = [] if quiet else [f"warning: redirecting to {remote.url}/"]
        assert said[""] == expected, said


@pytest.mark.parametrize("transport", STREAMS)
def test_archive_from_the_remote_is_what_native_gets(transport: str, tmp_path: Path, make_remote) -> None:
    """``git archive --remote`` (upload-archive over ``connect``): the same tar where the server
    offers the service, the same one error where it does not (git daemon without
    upload-archive answers ERR and hangs up: git says so, and the helper adds nothing)."""
    src = make_source(tmp_path / "src", commits=3)
    remote = make_remote(transport, source=src)
    got = {}
    for name, url in (("native", remote.url), ("relay", remote.relay_url)):
        res = subprocess.run(["git", "archive", f"--remote={url}", "--format=tar", "main"], cwd=tmp_path, capture_output=True)
        said = res.stderr.decode().replace(url, "URL")
        got[name] = (res.returncode, res.stdout, said)
    assert got["relay"] == got["native"], got
    code, tar, said = got["native"]
    if transport in ("git", "http"):  # the test daemon offers no upload-archive; smart HTTP has none
        assert code != 0 and said.startswith("fatal:"), said
    else:
        import io
        import tarfile

        assert code == 0, said
        names = tarfile.open(fileobj=io.BytesIO(tar)).getnames()
        assert names == git("ls-tree", "-r", "--name-only", "main", cwd=src).stdout.split(), names


def test_transfer_credentials_in_url_is_honoured_as_natively(tmp_path: Path, make_remote, http_server: int) -> None:
    """git cannot check transfer.credentialsInUrl behind relay:: (its URL parser does not take the
    prefix), so the helper does: 'die' and 'warn' say git's words; unset, the helper warns that
    git prints a relay:: URL in full, password included; 'allow' is silent."""
    from conftest import HTTP_PASSWORD, HTTP_USER

    work = make_source(tmp_path / "work")
    remote = make_remote("http", source=work)
    url = remote.url.replace("/git/", "/auth/").replace("http://", f"http://{HTTP_USER}:{HTTP_PASSWORD}@")
    shown = f"URL '{url.replace(HTTP_PASSWORD, '<redacted>')}' uses plaintext credentials"
    said = {}
    for mode in ("die", "warn"):
        for prefix in ("", "relay::"):
            res = git("-c", f"transfer.credentialsInUrl={mode}", "ls-remote", prefix + url, "main", cwd=work, check=False)
            said[mode, prefix] = (res.returncode, sorted(set(res.stderr.splitlines())))
            assert HTTP_PASSWORD not in res.stderr
        assert said[mode, "relay::"] == said[mode, ""], said
    assert said["die", ""] == (128, [f"fatal: {shown}"]) and said["warn", ""] == (0, [f"warning: {shown}"]), said
    # unset: git prints the URL whole in its From/To lines, so the helper says so, once
    clone = git("clone", "-q", "relay::" + url, str(tmp_path / "c"))
    lines = clone.stderr.splitlines()
    assert lines[0].startswith(f"warning: {shown}, which git prints in full") and lines[1].startswith("hint:"), lines
    assert len(lines) == 2 and HTTP_PASSWORD not in clone.stderr
    allowed = git("-c", "transfer.credentialsInUrl=allow", "fetch", "-q", "origin", cwd=tmp_path / "c")
    assert allowed.stderr == ""


PROXY = """#!{python}
import os, socket, sys, threading
with open({log!r}, "a") as fh:
    fh.write(" ".join(sys.argv[1:]) + "\\n")
s = socket.create_connection(("127.0.0.1", int(sys.argv[2])))
def up():
    while True:
        data = os.read(0, 65536)
        if not data:
            s.shutdown(socket.SHUT_WR)
            return
        s.sendall(data)
threading.Thread(target=up, daemon=True).start()
while True:
    data = s.recv(65536)
    if not data:
        break
    os.write(1, data)
"""


def test_git_urls_go_through_core_gitproxy_as_natively(tmp_path: Path, make_remote) -> None:
    """git:// honours GIT_PROXY_COMMAND and core.gitProxy (first matching 'for <domain>', 'none'),
    running '<command> <host> <port>' as connect.c does, with the same words when it cannot."""
    import sys

    src = make_source(tmp_path / "src", commits=2)
    remote = make_remote("git", source=src)
    log = tmp_path / "proxy.log"
    proxy = tmp_path / "proxy"
    proxy.write_text(PROXY.format(python=sys.executable, log=str(log)))
    proxy.chmod(0o755)
    port = remote.url.split(":")[2].split("/")[0]
    cases = [
        ({"GIT_PROXY_COMMAND": str(proxy)}, [], 1),
        ({}, ["-c", f"core.gitProxy={proxy} for 0.0.1:{port}"], 1),  # ends with the URL's host:port
        ({}, ["-c", f"core.gitProxy=none for 127.0.0.1:{port}", "-c", f"core.gitProxy={proxy}"], 0),  # first match wins
        ({}, ["-c", f"core.gitProxy={proxy} for example.org"], 0),
        ({"GIT_PROXY_COMMAND": ""}, ["-c", f"core.gitProxy={proxy}"], 0),  # the variable, even empty, comes first
    ]
    for extra_env, config, runs in cases:
        seen = {}
        for prefix in ("", "relay::"):
            log.write_text("")
            res = git(*config, "ls-remote", prefix + remote.url, "main", cwd=tmp_path, env=dict(os.environ, **extra_env))
            seen[prefix] = (res.stdout, log.read_text().splitlines())
        assert seen["relay::"] == seen[""], (config, extra_env, seen)
        assert seen[""][1] == [f"127.0.0.1 {port}"] * runs, (config, extra_env, seen)
        assert seen[""][0].split()[0] == refs(src)["refs/heads/main"]
    # a clone through it, and a proxy that cannot start
    env = dict(os.environ, GIT_PROXY_COMMAND=str(proxy))
    git("clone", "-q", remote.relay_url, str(tmp_path / "c"), env=env)
    assert refs(tmp_path / "c")["refs/remotes/origin/main"] == refs(src)["refs/heads/main"]
    said = {}
    for prefix in ("", "relay::"):
        res = git("-c", "core.gitProxy=/nonexistent/proxy", "ls-remote", prefix + remote.url, cwd=tmp_path, check=False)
        said[prefix] = (res.returncode, res.stderr)
    assert said["relay::"] == said[""] == (128, "fatal: cannot run /nonexistent/proxy: No such file or directory\n"
                                                "fatal: cannot start proxy /nonexistent/proxy\n"), said


def _negotiate_only_server():  # type: ignore[no-untyped-def]
    """An HTTP server whose every answer is a 401 offering Negotiate and NTLM, not Basic."""
    import http.server

    class Negotiate(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self.send_response(401)
            self.send_header("WWW-Authenticate", "Negotiate")
            self.send_header("WWW-Authenticate", "NTLM")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    return http.server.ThreadingHTTPServer(("127.0.0.1", 0), Negotiate)


@pytest.mark.usefixtures("workspace")
def test_an_http_server_that_asks_only_for_negotiate_is_served_by_gits_own_http(tmp_path: Path) -> None:
    """A 401 offering Negotiate (Kerberos) or NTLM, not Basic: the helper cannot speak it, so the
    session goes to git's own remote-http (curl), which does, and the user gets exactly what git
    alone gives (here, with no Kerberos ticket: the same refusal). Not a Basic password prompt.
    git relay has no git code to hand it to: it says so, and what to do instead."""
    import threading

    server = _negotiate_only_server()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/repo.git"
        said = {}
        for prefix in ("", "relay::"):
            env = dict(os.environ, GIT_RELAY_TRACE="1")
            res = git("ls-remote", prefix + url, cwd=tmp_path, check=False, env=env)
            said[prefix] = (res.returncode, [line for line in res.stderr.splitlines() if not line.startswith("relay: ")])
            if prefix:
                assert "asks for Negotiate authentication" in res.stderr and "git remote-http takes over" in res.stderr, res.stderr
        assert said["relay::"] == said[""], said
        assert said[""][0] == 128, said
        res = git("relay", "plan", url, str(tmp_path / "target.git"), cwd=tmp_path, check=False)
        assert res.returncode == 128 and "asks for Negotiate authentication" in res.stderr, res.stderr
        assert "hint: git relay cannot use it; mirror this repository with git itself" in res.stderr, res.stderr
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.usefixtures("workspace")
def test_a_proxy_that_asks_only_for_ntlm_is_served_by_gits_own_http(tmp_path: Path) -> None:
    """A proxy whose 407 offers NTLM or Negotiate, not Basic (corporate proxies): for http:// (the
    request itself) and https:// (CONNECT) the session goes to git's own curl, which speaks them:
    relay:: then says exactly what git alone says."""
    import http.server
    import threading

    class NtlmProxy(http.server.BaseHTTPRequestHandler):
        def refuse(self) -> None:
            self.send_response(407)
            self.send_header("Proxy-Authenticate", "NTLM")
            self.send_header("Proxy-Authenticate", "Negotiate")
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_POST = do_CONNECT = refuse  # noqa: N815 - http.server's names

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NtlmProxy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        proxy = f"http://127.0.0.1:{server.server_address[1]}"
        for url in ("http://127.0.0.1:9/repo.git", "https://127.0.0.1:9/repo.git"):  # (nothing there: only the proxy answers)
            said = {}
            for prefix in ("", "relay::"):
                res = git("-c", f"http.proxy={proxy}", "ls-remote", prefix + url, cwd=tmp_path, check=False,
                          env=dict(os.environ, GIT_RELAY_TRACE="1"))
                said[prefix] = (res.returncode, [line for line in res.stderr.splitlines() if not line.startswith("relay: ")])
                if prefix:
                    assert "the proxy asks for NTLM authentication" in res.stderr and "takes over" in res.stderr, res.stderr
            assert said["relay::"] == said[""], (url, said)
            assert said[""][0] == 128, said
    finally:
        server.shutdown()
        server.server_close()
