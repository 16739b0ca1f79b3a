"""Unit tests for the pure parts: URL grammar and policy, pkt-line, quoting, protocol lines."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from git_remote_relay.errors import PolicyError, ProtocolError, RemoteError, TransportError, UrlError
from git_remote_relay.gitcmd import Config, Git
from git_remote_relay.helper import c_quote, c_unquote
from git_remote_relay.pktline import DELIM, FLUSH, PktReader, pkt, pkt_text
from git_remote_relay.protocol import Advertisement, fetch_request, read_advertisement, read_ls_refs
from git_remote_relay.push import PushOptions, parse_push_lines
from git_remote_relay.transport.base import Context
from git_remote_relay.transport.process import sq_quote, ssh_argv
from git_remote_relay.url import check_allowed, parse, redact

A, B, C = "a" * 40, "b" * 40, "c" * 40


@pytest.mark.parametrize(
    "address, scheme, host, port, user, path",
    [
        ("ssh://git@example.com/srv/repo.git", "ssh", "example.com", None, "git", "/srv/repo.git"),
        ("ssh://example.com:2222/~alice/repo", "ssh", "example.com", 2222, None, "~alice/repo"),
        ("git+ssh://[::1]:22/r", "ssh", "::1", 22, None, "/r"),
        ("git@example.com:org/repo.git", "ssh", "example.com", None, "git", "org/repo.git"),
        ("[example.com:2222]:repo", "ssh", "example.com", 2222, None, "repo"),
        ("git@[example.com:2222]:/abs", "ssh", "example.com", 2222, "git", "/abs"),
        ("user@[::1]:repo", "ssh", "::1", None, "user", "repo"),
        ("[user@::1]:repo", "ssh", "::1", None, "user", "repo"),
        ("git://example.com/repo.git", "git", "example.com", None, None, "/repo.git"),
        ("https://example.com/a/b.git/", "https", "example.com", None, None, "/a/b.git/"),
        ("file:///srv/repo%20x.git", "file", "", None, None, "/srv/repo x.git"),
        ("/srv/repo.git", "file", "", None, None, "/srv/repo.git"),
        ("./a:b", "file", "", None, None, "./a:b"),
        ("relative/dir", "file", "", None, None, "relative/dir"),
    ],
    ids=lambda v: str(v),
)
def test_url_grammar_follows_git(address: str, scheme: str, host: str, port: int | None, user: str | None, path: str) -> None:
    url = parse(address)
    assert (url.scheme, url.host, url.port, url.user, url.path) == (scheme, host, port, user, path)


@pytest.mark.parametrize(
    "address",
    [
        "ext::sh -c x",
        "fd::3",
        "ssh://-oProxyCommand=x/r",
        "ssh://-u@h/r",
        "-oProxyCommand=x:r",
        "h:-r",
        "ssh://h:99999/r",
        "ftp://h/r",
        "",
        "a\nb",
        "ssh://h:x/r",
    ],
    ids=[
        "ext",
        "fd",
        "dash host",
        "dash user",
        "dash scp host",
        "dash scp path",
        "port range",
        "ftp",
        "empty",
        "newline",
        "non-numeric port",
    ],
)
def test_url_refusals(address: str) -> None:
    with pytest.raises((UrlError, PolicyError)):
        parse(address)


def test_redact_removes_credentials_everywhere() -> None:
    text = "failed https://bob:pw@h/x and http://tok@h2/y and ssh://u@h3/z"
    assert redact(text) == "failed https://h/x and http://h2/y and ssh://h3/z"
    url = parse("https://bob:pw@h/x.git")
    assert url.redacted == "https://h/x.git"
    assert url.http_base == "https://h/x.git"
    assert "pw" not in repr(url.redacted)


@pytest.mark.parametrize(
    "scheme, env, config, allowed",
    [
        ("https", {}, {}, True),
        ("file", {"GIT_ALLOW_PROTOCOL": "https:ssh"}, {}, False),
        ("ssh", {"GIT_ALLOW_PROTOCOL": "https:ssh"}, {}, True),
        ("file", {}, {"protocol.file.allow": ["never"]}, False),
        ("file", {}, {"protocol.allow": ["never"]}, False),
        ("file", {}, {"protocol.allow": ["never"], "protocol.file.allow": ["always"]}, True),
        ("ssh", {"GIT_PROTOCOL_FROM_USER": "0"}, {"protocol.ssh.allow": ["user"]}, False),
        ("ssh", {}, {"protocol.ssh.allow": ["user"]}, True),
    ],
)
def test_transport_policy(scheme: str, env: dict[str, str], config: dict[str, list[str]], allowed: bool) -> None:
    if allowed:
        check_allowed(scheme, env, config)
    else:
        with pytest.raises(PolicyError):
            check_allowed(scheme, env, config)


def reader(data: bytes) -> PktReader:
    return PktReader(io.BytesIO(data).read, "test peer")


def test_pktline_roundtrip_and_specials() -> None:
    r = reader(pkt_text("hello") + DELIM.wire + pkt(b"") + FLUSH.wire)
    assert r.read_line() == "hello"
    assert r.read_pkt() is DELIM
    assert r.read_pkt() == b""
    assert r.read_pkt() is FLUSH


def test_pktline_truncation_and_errors() -> None:
    with pytest.raises(TransportError, match="Could not read from remote repository"):
        reader(b"").read_pkt()
    with pytest.raises(TransportError, match="truncated"):
        reader(b"0010abc").read_pkt()
    with pytest.raises(ProtocolError):
        reader(b"zzzz").read_pkt()
    with pytest.raises(RemoteError, match="access denied"):
        reader(pkt_text("ERR access denied")).read_line()


def test_sideband_demux_and_remote_error() -> None:
    data = pkt(b"\x01PACK") + pkt(b"\x02progress\r") + FLUSH.wire
    assert list(reader(data).sideband()) == [(1, b"PACK"), (2, b"progress\r")]
    with pytest.raises(RemoteError, match="disk full"):
        list(reader(pkt(b"\x03disk full\n")).sideband())


@pytest.mark.parametrize("quoted, plain", [('"x\\"y"', 'x"y'), ('"\\303\\274"', "ü"), ("plain", "plain"), ('"a\\nb"', "a\nb")])
def test_c_unquote(quoted: str, plain: str) -> None:
    assert c_unquote(quoted) == plain


def test_c_quote_only_when_needed() -> None:
    assert c_quote("pre-receive hook declined") == "pre-receive hook declined"
    assert c_quote("two\nlines") == '"two\\nlines"'


def test_v0_advertisement_with_symref_peeled_and_have() -> None:
    data = (
        pkt(f"{A} HEAD\0report-status symref=HEAD:refs/heads/main agent=git/2.39 ofs-delta\n".encode())
        + pkt_text(f"{A} refs/heads/main")
        + pkt_text(f"{B} refs/tags/v1")
        + pkt_text(f"{C} refs/tags/v1^{{}}")
        + pkt_text(f"{C} .have")
        + FLUSH.wire
    )
    adv = read_advertisement(reader(data))
    assert adv.version == 0
    assert adv.symrefs == {"HEAD": "refs/heads/main"}
    assert adv.refs == {"HEAD": A, "refs/heads/main": A, "refs/tags/v1": B}
    assert adv.peeled == {"refs/tags/v1": C}
    assert adv.extra_haves == [C]
    assert adv.has("ofs-delta")


def test_empty_repository_advertisement() -> None:
    adv = read_advertisement(reader(pkt(f"{'0' * 40} capabilities^{{}}\0report-status delete-refs\n".encode()) + FLUSH.wire))
    assert adv.refs == {} and adv.has("delete-refs")


def test_sha256_remote_is_refused_clearly() -> None:
    data = pkt_text("version 2") + pkt_text("ls-refs") + pkt_text("object-format=sha256") + FLUSH.wire
    with pytest.raises(Exception, match="sha256"):
        read_advertisement(reader(data))


def test_v2_ls_refs_and_fetch_request() -> None:
    adv = read_advertisement(
        reader(pkt_text("version 2") + pkt_text("agent=git/2.39") + pkt_text("ls-refs=unborn") + pkt_text("fetch=shallow") + FLUSH.wire)
    )
    assert adv.version == 2
    read_ls_refs(reader(pkt_text(f"{A} HEAD symref-target:refs/heads/main") + pkt_text(f"{B} refs/tags/v1 peeled:{C}") + FLUSH.wire), adv)
    assert adv.symrefs == {"HEAD": "refs/heads/main"} and adv.peeled == {"refs/tags/v1": C}
    req = fetch_request(adv, [A, B], [C], progress=False, include_tag=True)
    lines = [line for line in req.split(b"\n")]
    assert req.startswith(pkt_text("command=fetch"))
    assert b"no-progress" in req and b"include-tag" in req and b"done" in req
    assert req.endswith(b"0000")
    assert len([x for x in lines if b"want " in x]) == 2


def test_v0_fetch_request_puts_capabilities_on_first_want() -> None:
    adv = Advertisement(version=0, caps={"side-band-64k": None, "ofs-delta": None, "thin-pack": None, "include-tag": None})
    req = fetch_request(adv, [A, B], [], progress=True, include_tag=True)
    first = reader(req).read_line()
    assert first == f"want {A} side-band-64k thin-pack ofs-delta include-tag"


def test_push_options_and_lines() -> None:
    opts = PushOptions()
    assert opts.set("cas", f"refs/heads/main:{A}") == "ok"
    assert opts.set("push-option", "x") == "ok"
    assert opts.set("pushcert", "true") == "ok" and opts.signed == "true"  # git send-pack signs (signedpush)
    assert opts.set("cas", "garbage").startswith("error")
    assert opts.cas == {"refs/heads/main": A} and opts.push_options == ["x"]
    ups = parse_push_lines(["push +refs/heads/a:refs/heads/b", "push :refs/heads/gone", f"push {A}:refs/heads/c"])
    assert [(u.src, u.dst, u.force, u.delete) for u in ups] == [
        ("refs/heads/a", "refs/heads/b", True, False),
        ("", "refs/heads/gone", False, True),
        (A, "refs/heads/c", False, False),
    ]


def test_config_snapshot() -> None:
    cfg = Config.parse_z(b"relay.maxpackbytes\n10k\0remote.My.Remote.url\nx\0core.bare\0")
    assert cfg.get_size("relay.maxPackBytes") == 10240
    assert cfg.get("remote.My.Remote.URL") == "x"
    assert cfg.get_bool("core.bare") is True


def test_sq_quote_matches_git() -> None:
    assert sq_quote("/srv/it's!.git") == "'/srv/it'\\''s'\\!'.git'"


def _ctx(env: dict[str, str]) -> Context:
    return Context(env=env, git=Git(env), config=Config({}))


@pytest.mark.parametrize(
    "variant, expect",
    [
        ("ssh", ["ssh", "-o", "SendEnv=GIT_PROTOCOL", "-p", "2222", "git@h", "git-upload-pack '/r'"]),
        ("plink", ["ssh", "-P", "2222", "git@h", "git-upload-pack '/r'"]),
        ("tortoiseplink", ["ssh", "-batch", "-P", "2222", "git@h", "git-upload-pack '/r'"]),
    ],
)
def test_ssh_argv_by_variant(variant: str, expect: list[str]) -> None:
    argv = ssh_argv(_ctx({"GIT_SSH_VARIANT": variant}), parse("ssh://git@h:2222/r"), "git-upload-pack '/r'", want_v2=True)
    assert argv == expect


def test_ssh_command_runs_through_the_shell_with_safe_arguments() -> None:
    argv = ssh_argv(
        _ctx({"GIT_SSH_COMMAND": "ssh -i 'my key'", "GIT_SSH_VARIANT": "ssh"}), parse("h:r"), "git-upload-pack 'r'", want_v2=False
    )
    assert argv[:3] == ["/bin/sh", "-c", "ssh -i 'my key' \"$@\""]
    assert argv[-2:] == ["h", "git-upload-pack 'r'"]


def test_pump_sideband_without_copies_and_with_fallback() -> None:
    from git_remote_relay.pktline import pump_sideband

    data = pkt(b"\x01PACK0000") + pkt(b"\x02Counting\r") + pkt(b"\x01tail") + FLUSH.wire
    for with_readinto in (True, False):
        stream = io.BufferedReader(io.BytesIO(data))
        r = PktReader(stream.read, "peer", stream.readinto if with_readinto else None)
        got: list[bytes] = []
        progress: list[bytes] = []

        def keep(view: memoryview, into: list[bytes] = got) -> None:
            into.append(bytes(view))

        assert pump_sideband(r, keep, progress.append) == 12
        assert got == [b"PACK0000", b"tail"] and progress == [b"Counting\r"]
    cut = io.BufferedReader(io.BytesIO(pkt(b"\x01PACK0000")[:-3]))
    with pytest.raises(TransportError, match="truncated"):
        pump_sideband(PktReader(cut.read, "peer", cut.readinto), lambda v: None, lambda b: None)


def test_http_body_peek_keeps_small_bodies_replayable() -> None:
    from git_remote_relay.transport.http import _peek

    head, rest = _peek(iter([b"a" * 10, b"b" * 10]), 100)
    assert head == b"a" * 10 + b"b" * 10 and rest is None
    head, rest = _peek(iter([b"a" * 60, b"b" * 60, b"c"]), 100)
    assert head == b"a" * 60 + b"b" * 60 and rest is not None and list(rest) == [b"c"]


def test_redact_is_the_userinfo_regex_without_re() -> None:
    """url.redact avoids `re` for start-up time; it must remove exactly what the regex removes."""
    import random
    import re

    from git_remote_relay.url import redact, unquote

    reference = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/@?#]*@")
    rng = random.Random(1234)
    for _ in range(20_000):
        text = "".join(rng.choice("ab:/@?#%1.+-hs") for _ in range(rng.randint(0, 18)))
        assert redact(text) == reference.sub(lambda m: m.group("scheme"), text), text
    assert redact("fatal: 'https://bob:s3cret@host/r.git' and ssh://al@h/x") == "fatal: 'https://host/r.git' and ssh://h/x"
    import urllib.parse

    for _ in range(5_000):
        text = "".join(rng.choice("%41zé2fF0g ") for _ in range(rng.randint(0, 10)))
        assert unquote(text) == urllib.parse.unquote(text), text


def test_child_can_be_waited_for_from_two_threads() -> None:
    """The writer thread and its owner may both wait for pack-objects: one reaps, both see 0."""
    import os
    import threading

    from git_remote_relay.gitcmd import DEVNULL, PIPE, run_command, spawn

    child = spawn(["sleep", "0.2"], env=dict(os.environ), cwd=None, stdin=DEVNULL, stdout=DEVNULL)
    results: list[int] = []
    threads = [threading.Thread(target=lambda: results.append(child.wait())) for _ in range(3)]
    for t in threads:
        t.start()
    while child.poll() is None:
        pass
    for t in threads:
        t.join()
    assert results == [0, 0, 0] and child.returncode == 0
    done = run_command(["sh", "-c", "cat; echo err >&2; exit 3"], env=dict(os.environ), cwd="/", input=b"in", stderr=PIPE)
    assert (done.returncode, done.stdout, done.stderr) == (3, b"in", b"err\n")


def test_children_get_their_pipes_even_when_our_stdin_is_closed() -> None:
    """With fd 0 closed, a new pipe can be numbered 0; it must still reach the child's stdin."""
    import subprocess
    import sys

    script = ("import os; os.close(0)\n"
              "from git_remote_relay.gitcmd import run_command\n"
              "done = run_command(['cat'], env=dict(os.environ), cwd=None, input=b'through the pipe')\n"
              "print(done.returncode, done.stdout.decode())\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "0 through the pipe"


def test_cookie_jar_matches_and_parses_like_curl(tmp_path: Path) -> None:
    from git_remote_relay.transport.cookies import CookieJar

    path = tmp_path / "jar"
    path.write_text("# Netscape HTTP Cookie File\n127.0.0.1\tFALSE\t/a/\tFALSE\t0\tk\tv\n"
                    "#HttpOnly_.example.org\tTRUE\t/\tTRUE\t0\ts\t1\nexample.com\tFALSE\t/\tFALSE\t1\told\tgone\n")
    jar = CookieJar(str(path), save=True)
    assert jar.header("http", "127.0.0.1", "/a/b.git/info/refs") == "k=v"
    assert jar.header("http", "127.0.0.1", "/ab") is None, "a path prefix is not a path match"
    assert jar.header("http", "git.example.org", "/x") is None, "secure cookies only over https"
    assert jar.header("https", "git.example.org", "/x") == "s=1"
    assert jar.header("http", "example.com", "/") is None, "expired"
    jar.receive("127.0.0.1", "/a/b.git/git-upload-pack", ["n=1; Path=/a", "evil=1; Domain=other.net", "k=w; Path=/a/"])
    assert jar.header("http", "127.0.0.1", "/a/b.git/x") == "k=w; n=1"
    saved = path.read_text()
    assert "127.0.0.1\tFALSE\t/a\tFALSE\t0\tn\t1" in saved and "evil" not in saved and "#HttpOnly_example.org" in saved


@pytest.mark.parametrize(
    "text, limit",
    [
        ("remote: fatal: pack exceeds maximum allowed size (2.86 MiB)", int(2.86 * 2**20)),
        ("fatal: pack exceeds maximum allowed size (500.00 KiB)", 500 * 1024),
        ("pack exceeds maximum allowed size (100 bytes)", 100),
        ("unpack-objects abnormal exit", None),
        ("HTTP 413 Request Entity Too Large", None),
    ],
)
def test_the_limit_a_server_states_is_read(text: str, limit: int | None) -> None:
    from git_remote_relay.push import stated_limit

    assert stated_limit(text) == limit


# -- Git LFS: pointers and endpoints (pure) -----------------------------------------------------
def test_lfs_pointer_files_are_read_as_the_spec_says() -> None:
    from git_remote_relay.lfs import Pointer, parse_pointer

    oid = "4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393"
    good = f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize 12345\n".encode()
    assert parse_pointer(good) == Pointer(oid, 12345)
    assert parse_pointer(good.replace(b"size 12345", b"size -1")) is None
    assert parse_pointer(good.replace(b"sha256:", b"sha1:")) is None
    assert parse_pointer(good.replace(oid.encode(), oid[:-1].encode())) is None
    assert parse_pointer(good.replace(b"4d7a", b"4D7A")) is None
    assert parse_pointer(b"version https://git-lfs.github.com/spec/v1\n") is None
    assert parse_pointer(good + b"x" * 1024) is None, "larger than any pointer"
    assert parse_pointer(b"just a file\n") is None


def test_lfs_endpoints_are_derived_as_git_lfs_derives_them() -> None:
    from git_remote_relay.lfs import http_endpoint, lfs_url_for

    assert http_endpoint("https://h/org/repo.git") == "https://h/org/repo.git/info/lfs"
    assert http_endpoint("https://h/org/repo") == "https://h/org/repo.git/info/lfs"
    assert http_endpoint("https://h/org/repo/") == "https://h/org/repo.git/info/lfs"
    assert lfs_url_for("git://h/r", "git") == "git://h/r.git/info/lfs"
    assert lfs_url_for("git@h:org/r.git", "ssh") == "git@h:org/r.git"
    assert lfs_url_for("/srv/r.git", "file") == "/srv/r.git"


def test_a_password_in_a_url_is_shown_as_gits_url_normalize_shows_it() -> None:
    from git_remote_relay.errors import PolicyError
    from git_remote_relay.url import credentials_in_url

    warn = {"transfer.credentialsinurl": ["warn"]}
    assert credentials_in_url("HTTP://bob:pw@Example.COM:80/r.git", warn) == \
        "URL 'http://bob:<redacted>@example.com/r.git' uses plaintext credentials"
    assert credentials_in_url("https://bob:pw@[::1]:0443", warn) == "URL 'https://bob:<redacted>@[::1]/' uses plaintext credentials"
    assert credentials_in_url("ssh://bob:pw@h:2222/p", warn) == "URL 'ssh://bob:<redacted>@h:2222/p' uses plaintext credentials"
    for no_password in ("https://bob@h/r.git", "git@h:r.git", "/srv/r.git", "https://h/r.git?x=a:b@c", "https://h?x=a:b@c"):
        assert credentials_in_url(no_password, warn) is None, no_password
    assert credentials_in_url("https://bob:pw@h/r", {}) is None  # unset, and nothing shows the URL
    assert credentials_in_url("https://bob:pw@h/r", {"transfer.credentialsinurl": ["allow"]}, shown_by_git=True) is None
    with pytest.raises(PolicyError, match=r"^URL 'https://bob:<redacted>@h/r' uses plaintext credentials$"):
        credentials_in_url("https://bob:pw@h/r", {"transfer.credentialsinurl": ["die"]})
    with pytest.raises(PolicyError, match="unrecognized value transfer.credentialsInUrl: 'maybe'"):
        credentials_in_url("https://bob:pw@h/r", {"transfer.credentialsinurl": ["maybe"]})


def test_the_v0_http_memory_holds_for_a_week_and_survives_a_bad_file(tmp_path: Path) -> None:
    import time

    from git_remote_relay.v0http import DAYS, V0Memory

    memory = V0Memory({"GIT_RELAY_STATE_DIR": str(tmp_path)})
    assert not memory.speaks_v0("https://h/r.git")
    memory.remember("https://h/r.git")
    assert memory.speaks_v0("https://h/r.git"), "remembered at once (a timestamp is never ahead of now)"
    assert not memory.speaks_v0("https://h/other.git")
    old = int(time.time()) - DAYS * 86400 - 5
    (tmp_path / "http-v0").write_text(f"https://h/old.git {old}\nno-time-here\nhttps://h/r.git {int(time.time())}\n")
    assert not memory.speaks_v0("https://h/old.git") and memory.speaks_v0("https://h/r.git")
    memory.remember("https://h/new.git")
    kept = (tmp_path / "http-v0").read_text()
    assert "old.git" not in kept and "https://h/new.git " in kept and "https://h/r.git " in kept
