"""git's traces through relay:: -- GIT_TRACE_PACKET and GIT_TRACE_CURL show what native git's show.

Each test runs the same command natively and through the helper, against the real servers, and
compares what a user debugging a fetch or push looks for.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from conftest import HTTP_PASSWORD, HTTP_USER, git, make_source

from git_remote_relay.gittrace import _command_of, _redact_header
from git_remote_relay.transport.httpoptions import accept_language

_STAMP = re.compile(r"^\d\d:\d\d:\d\d\.\d{6} \S+:\d+ +")


def packet_lines(text: str) -> list[str]:
    return [_STAMP.sub("", line) for line in text.splitlines() if "packet:" in line]


@pytest.mark.parametrize("transport", ["file", "ssh", "git"])
def test_ls_remote_packet_trace_is_natives_line_for_line(transport: str, tmp_path: Path, make_remote) -> None:
    remote = make_remote(transport, source=make_source(tmp_path / "src"))
    seen = {}
    for name, url in (("native", remote.url), ("relay", remote.relay_url)):
        trace = tmp_path / f"{name}.trace"
        git("ls-remote", "--symref", url, env=dict(os.environ, GIT_TRACE_PACKET=str(trace)))
        seen[name] = packet_lines(trace.read_text())
    relay = seen["relay"]
    # the same lines; their order only as far as git orders them (a local upload-pack traces too, concurrently)
    assert sorted(relay) == sorted(seen["native"])
    if transport == "git":
        assert any(re.search(r"ls-remote> git-upload-pack \S+\\0host=.*\\0\\0version=2\\0$", line) for line in relay), relay


def test_http_packet_trace_names_the_advertisement_as_remote_curl_does(tmp_path: Path, make_remote) -> None:
    remote = make_remote("http", source=make_source(tmp_path / "src"))
    for name, url in (("native", remote.url), ("relay", remote.relay_url)):
        trace = tmp_path / f"{name}.trace"
        git("clone", "-q", url, str(tmp_path / name), env=dict(os.environ, GIT_TRACE_PACKET=str(trace)))
        lines = packet_lines(trace.read_text())
        assert "packet:          git< version 2" in lines, (name, lines[:5])
        assert "packet:        clone> command=fetch" in lines, name
        assert any(line.startswith("packet:        clone> want ") for line in lines), name


def curl_requests(text: str) -> list[tuple[str, list[str]]]:
    """(request line, header names in order) of each request in a GIT_TRACE_CURL text."""
    out: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        line = _STAMP.sub("", line)
        if not line.startswith("=> Send header: "):
            continue
        value = line[len("=> Send header: ") :]
        if value.startswith(("GET ", "POST ")):
            out.append((value, []))
        elif out and ":" in value:
            out[-1][1].append(value.split(":", 1)[0].lower())
    return out


def test_curl_trace_shows_natives_requests_and_headers(tmp_path: Path, make_remote) -> None:
    remote = make_remote("http", source=make_source(tmp_path / "src"))
    seen = {}
    env = dict(os.environ, GIT_TRACE_CURL=str(tmp_path / "x"), LANGUAGE="ko_KR.UTF-8")
    for name, url in (("native", remote.url), ("relay", remote.relay_url)):
        trace = tmp_path / f"{name}.curl"
        env["GIT_TRACE_CURL"] = str(trace)
        git("clone", "-q", url, str(tmp_path / name), env=env)
        text = trace.read_text()
        seen[name] = curl_requests(text)
        assert "Accept-Language: ko-KR, *;q=0.9" in text, name
        assert "<= Recv header: HTTP/1.1 200 OK" in text, name
        assert "=> Send data" in text and "<= Recv data" in text, name
    assert [r for r, _ in seen["relay"]] == [r for r, _ in seen["native"]]
    for (_, relay), (_, native) in zip(seen["relay"], seen["native"], strict=True):
        assert relay == [h for h in native if h != "expect"], (relay, native)


def test_curl_trace_redacts_credentials_and_cookies_unless_told_not_to(tmp_path: Path, make_remote, http_server: int) -> None:
    remote = make_remote("http", source=make_source(tmp_path / "src"))
    url = "relay::" + remote.url.replace("/git/", "/auth/").replace("http://", f"http://{HTTP_USER}:{HTTP_PASSWORD}@")
    cookies = tmp_path / "cookies"
    cookies.write_text("Set-Cookie: Foo=1\nSet-Cookie: Bar=\n")
    base = ["-c", f"http.cookieFile={cookies}", "clone", "-q", url]
    res = git(*base, str(tmp_path / "a"), env=dict(os.environ, GIT_TRACE_CURL="1"))
    assert "Authorization: Basic <redacted>" in res.stderr
    assert re.search(r"Cookie: (Foo|Bar)=<redacted>; (Foo|Bar)=<redacted>", res.stderr), res.stderr[-3000:]
    assert HTTP_PASSWORD not in res.stderr and "Foo=1" not in res.stderr
    assert not re.search(r"Authorization: Basic [0-9a-zA-Z+/]", res.stderr)
    bare = git(*base, str(tmp_path / "b"), env=dict(os.environ, GIT_TRACE_CURL="1", GIT_TRACE_REDACT="0"))
    assert re.search(r"Authorization: Basic [0-9a-zA-Z+/]", bare.stderr) and "Foo=1" in bare.stderr
    quiet = git(*base, str(tmp_path / "c"), env=dict(os.environ, GIT_CURL_VERBOSE="1"))
    assert "=> Send header: GET " in quiet.stderr and "=> Send data" not in quiet.stderr
    assert "Authorization: Basic <redacted>" in quiet.stderr


def test_a_request_over_http_postbuffer_is_sent_chunked_and_traced(tmp_path: Path, make_remote) -> None:
    src = make_source(tmp_path / "src")
    lines = []
    for i in range(1500):  # 1500 refs: a list of wants larger than the smallest http.postBuffer
        lines += [f"commit refs/heads/many-{i}", f"committer git <git@example.com> {i} +0000", "data 0",
                  "M 644 inline a.txt", "data 4", "bla", ""]
    git("fast-import", "--quiet", cwd=src, input="\n".join(lines).encode())
    remote = make_remote("http", source=src)
    for name, url in (("native", remote.url), ("relay", remote.relay_url)):
        res = git("-c", "http.postBuffer=65536", "clone", "-q", "--bare", url, str(tmp_path / name),
                  env=dict(os.environ, GIT_TRACE_CURL="1", GIT_TRACE_CURL_NO_DATA="1"))
        assert "=> Send header: Transfer-Encoding: chunked" in res.stderr, name
    assert git("for-each-ref", cwd=tmp_path / "relay").stdout == git("for-each-ref", cwd=tmp_path / "native").stdout


def test_a_v0_http_fetch_is_gits_own(tmp_path: Path, make_remote) -> None:
    remote = make_remote("http", source=make_source(tmp_path / "src"))
    trace = tmp_path / "trace"
    env = dict(os.environ, GIT_TRACE_PACKET=str(trace))
    git("-c", "protocol.version=0", "clone", "-q", remote.relay_url, str(tmp_path / "dest"), env=env)
    text = trace.read_text()
    assert "symref=HEAD:refs/heads/" in text
    assert "fetch-pack> want " in text, "git's own fetch-pack negotiates"
    assert git("rev-parse", "HEAD", cwd=tmp_path / "dest").stdout == git("rev-parse", "HEAD", cwd=tmp_path / "src").stdout


# -- pure parts ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("argv", "command"), [
    (["git", "clone", "x"], "clone"),
    (["git", "-c", "protocol.version=2", "ls-remote", "--symref", "u"], "ls-remote"),
    (["git", "-C", "dir", "--git-dir", "g", "fetch"], "fetch"),
    (["/usr/lib/git-core/git-fetch", "origin"], "fetch"),
    (["git", "--bare", "push"], "push"),
    (["git"], ""),
])
def test_the_command_of_a_git_command_line(argv: list[str], command: str) -> None:
    assert _command_of([a.encode() for a in argv]) == command


@pytest.mark.parametrize(("line", "shown"), [
    ("Authorization: Basic dXNlcjpwYXNz", "Authorization: Basic <redacted>"),
    ("proxy-authorization:  Bearer abc def", "proxy-authorization:  Bearer <redacted>"),
    ("Cookie: a=1; b=; c=3", "Cookie: a=<redacted>; b=<redacted>; c=<redacted>"),
    ("Accept: */*", "Accept: */*"),
])
def test_header_redaction_is_gits(line: str, shown: str) -> None:
    assert _redact_header(line) == shown


@pytest.mark.parametrize(("env", "value"), [
    ({"LANGUAGE": "ko_KR.UTF-8"}, "ko-KR, *;q=0.9"),
    ({"LANGUAGE": "ko_KR.UTF-8:sr@latin"}, "ko-KR, sr;q=0.9, *;q=0.8"),
    ({"LANG": "en_US.UTF-8"}, "en-US, *;q=0.9"),
    ({"LANG": "C"}, None),
    ({}, None),
    ({"LANGUAGE": ":".join(f"l{i}" for i in range(12))}, ", ".join(["l0"] + [f"l{i};q=0.{100 - i:02d}" for i in range(1, 12)])
     + ", *;q=0.88"),
])
def test_accept_language_is_gits(env: dict[str, str], value: str | None) -> None:
    assert accept_language(env) == value


def test_curl_trace_of_an_authenticated_push_redacts_the_credentials(tmp_path: Path, make_remote) -> None:
    work = make_source(tmp_path / "work")
    remote = make_remote("http")
    url = "relay::" + remote.url.replace("/git/", "/auth/").replace("http://", f"http://{HTTP_USER}:{HTTP_PASSWORD}@")
    res = git("push", url, "main", cwd=work, env=dict(os.environ, GIT_TRACE_CURL="1"))
    assert "=> Send header: POST " in res.stderr and "/git-receive-pack HTTP/1.1" in res.stderr
    assert "Content-Type: application/x-git-receive-pack-request" in res.stderr
    # (git itself prints a helper URL as given in its "To <url>" line: its anonymizer stops at "relay::")
    ours = "\n".join(line for line in res.stderr.splitlines() if not line.startswith("To relay::"))
    assert "Authorization: Basic <redacted>" in ours and HTTP_PASSWORD not in ours
    assert not re.search(r"Authorization: Basic [0-9a-zA-Z+/]", ours)
    git("checkout", "-q", "-b", "more", cwd=work)
    shown = git("push", url, "more", cwd=work, env=dict(os.environ, GIT_TRACE_CURL="1", GIT_TRACE_REDACT="0"))
    assert re.search(r"Authorization: Basic [0-9a-zA-Z+/]", shown.stderr)


def test_a_request_body_is_traced_packet_by_packet_up_to_the_pack(tmp_path: Path) -> None:
    from git_remote_relay.gittrace import PacketTrace, TraceKey

    out = tmp_path / "trace"
    tracer = PacketTrace(TraceKey({"GIT_TRACE_BARE": "1"}, "GIT_TRACE_PACKET", str(out)), "push")
    body = b"000ahello\n" + b"0000" + b"PACK\x00\x00\x00\x02rest"
    for given in (body, [body[:3], body[3:15], body[15:]]):  # whole bytes, and split anywhere
        out.write_text("")
        assert b"".join(tracer.body(given)) == body
        assert out.read_text().splitlines() == ["packet:         push> hello", "packet:         push> 0000"]
