"""Robust transfers against real servers: stalls end with a clear error, interrupted fetches resume."""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import pytest
import servers
from conftest import fsck, git, make_source, refs

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("workspace")]

# A hang guard for the test itself, far above the 2 s relay.timeout the tests set: reaching it
# means the relay hung, which is the failure under test. It is not a speed assertion.
HANG_GUARD = 120


def run_git(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=HANG_GUARD)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"git {' '.join(args)} hung for {HANG_GUARD} s: relay.timeout did not work") from exc


def stall_url(transport: str, port: int) -> str:
    return {
        "ssh": f"ssh://nobody@127.0.0.1:{port}/srv/repo.git",
        "git": f"git://127.0.0.1:{port}/repo.git",
        "http": f"http://127.0.0.1:{port}/git/repo.git",
    }[transport]


def ssh_env() -> dict[str, str]:
    # a plain ssh that cannot prompt: it connects, then waits for a banner that never comes
    return dict(os.environ, GIT_SSH_COMMAND="ssh -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null")


@pytest.mark.parametrize("transport", ["ssh", "git", "http"])
def test_a_server_that_never_answers_times_out_clearly(transport: str, tmp_path: Path) -> None:
    with servers.tcp_proxy(None) as proxy:
        res = run_git("-c", "relay.timeout=2", "ls-remote", "relay::" + stall_url(transport, proxy.port), env=ssh_env())
    assert res.returncode != 0
    assert "relay.timeout" in res.stderr and "stalled" in res.stderr, res.stderr
    assert len([line for line in res.stderr.splitlines() if line.startswith("fatal:")]) == 1, res.stderr


def test_a_local_service_that_never_answers_times_out(tmp_path: Path, make_remote) -> None:
    remote = make_remote("path")
    res = run_git("-c", "relay.timeout=2", "ls-remote", "--upload-pack=exec sleep 600 #", remote.relay_url)
    assert res.returncode != 0
    assert "relay.timeout" in res.stderr, res.stderr


@pytest.mark.parametrize("transport", ["git", "http"])
def test_a_link_that_dies_mid_pack_fails_cleanly(transport: str, tmp_path: Path, make_remote, request: pytest.FixtureRequest) -> None:
    src = make_source(tmp_path / "src", big=2_000_000)
    remote = make_remote(transport, source=src)
    upstream = request.getfixturevalue("git_daemon" if transport == "git" else "http_server")
    work = tmp_path / "work"
    git("init", "-q", str(work))
    with servers.tcp_proxy(upstream, stall_after=200_000) as proxy:
        url = remote.url.replace(f":{upstream}/", f":{proxy.port}/")
        res = run_git("-c", "relay.timeout=2", "fetch", "relay::" + url, "refs/heads/*:refs/remotes/origin/*", cwd=work)
    assert res.returncode != 0
    assert "stalled" in res.stderr, res.stderr
    assert refs(work) == {}
    packdir = work / ".git" / "objects" / "pack"
    assert not [p.name for p in packdir.iterdir() if p.name.startswith("tmp_")]
    fsck(work)


def test_timeout_zero_means_wait_and_bad_values_are_refused(tmp_path: Path, make_remote) -> None:
    remote = make_remote("path", source=make_source(tmp_path / "src"))
    ok = run_git("-c", "relay.timeout=0", "ls-remote", remote.relay_url)
    assert ok.returncode == 0 and "refs/heads/main" in ok.stdout
    bad = run_git("-c", "relay.timeout=soon", "ls-remote", remote.relay_url)
    assert bad.returncode != 0 and "bad relay.timeout 'soon'" in bad.stderr


def history(path: Path, commits: int, size: int) -> Path:
    git("init", "-q", str(path))
    for i in range(commits):
        (path / f"part{i}.bin").write_bytes(os.urandom(size))
        git("add", ".", cwd=path)
        git("commit", "-q", "-m", f"part {i}", cwd=path)
    git("tag", "-a", "v1", "-m", "v1", cwd=path)
    return path


def relay_state(work: Path) -> list[str]:
    state = work / ".git" / "relay"
    return sorted(p.name for p in state.iterdir()) if state.exists() else []


def pack_leftovers(work: Path) -> list[str]:
    packdir = work / ".git" / "objects" / "pack"
    return sorted(p.name for p in packdir.iterdir() if p.name.startswith("tmp_") or p.suffix == ".keep")


@pytest.mark.parametrize("transport", ["file", "ssh", "git", "http"])
def test_a_big_fetch_goes_in_steps_and_ends_like_native(transport: str, tmp_path: Path, make_remote) -> None:
    src = history(tmp_path / "src", commits=24, size=8_000)
    remote = make_remote(transport, source=src)
    work = tmp_path / "work"
    git("init", "-q", str(work))
    res = git(
        "-c",
        "relay.fetchStepObjects=15",
        "fetch",
        remote.relay_url,
        "refs/heads/*:refs/remotes/origin/*",
        "refs/tags/*:refs/tags/*",
        cwd=work,
    )
    assert "relay: step 1/" in res.stderr and "the rest" in res.stderr, res.stderr
    assert refs(work)["refs/remotes/origin/main"] == refs(src)["refs/heads/main"]
    assert refs(work)["refs/tags/v1"] == refs(src)["refs/tags/v1"]
    fsck(work)
    assert pack_leftovers(work) == [] and relay_state(work) == []
    # the default threshold is far above a repository this small: one plain fetch, no steps
    plain = tmp_path / "plain"
    git("init", "-q", str(plain))
    res = git("fetch", remote.relay_url, "refs/heads/*:refs/remotes/origin/*", cwd=plain)
    assert "relay: step" not in res.stderr
    assert relay_state(plain) == []


def wait_for(proc: subprocess.Popen[str], needle: str, seen: list[str]) -> None:
    assert proc.stderr is not None
    for line in proc.stderr:
        seen.append(line)
        if needle in line:
            return
    raise AssertionError(f"'{needle}' never came: {''.join(seen)}")


@pytest.mark.parametrize("transport", ["ssh", "http"])
def test_a_fetch_killed_at_a_step_resumes_and_cleans_up(transport: str, tmp_path: Path, make_remote) -> None:
    src = history(tmp_path / "src", commits=24, size=8_000)
    remote = make_remote(transport, source=src)
    slow = remote.path / "relay-test-hook"  # the server thinks for a while before each pack
    slow.write_text("#!/bin/sh\nsleep 1\n")
    slow.chmod(0o755)
    work = tmp_path / "work"
    git("init", "-q", str(work))
    args = ["git", "-c", "relay.fetchStepObjects=15", "fetch", remote.relay_url, "refs/heads/*:refs/remotes/origin/*"]
    proc = subprocess.Popen(args, cwd=work, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, start_new_session=True)
    seen: list[str] = []
    try:
        wait_for(proc, "step 3/", seen)
        time.sleep(0.3)  # inside step 3: index-pack is waiting for the server's pack
    finally:
        os.killpg(proc.pid, 9)  # like a closed laptop: git, the helper and index-pack die at once
        proc.wait()
    assert refs(work) == {}, "an interrupted fetch moves no ref"
    fsck(work)
    left = [n for n in pack_leftovers(work) if n.startswith("tmp_")]
    assert left, "the killed step should have left index-pack's temporary pack behind"
    assert any(n.endswith(".state") for n in relay_state(work))
    slow.unlink()
    res = git("-c", "relay.fetchStepObjects=15", "fetch", "-v", remote.relay_url, "refs/heads/*:refs/remotes/origin/*", cwd=work)
    assert "resuming an interrupted fetch (2 finished step(s) kept)" in res.stderr, res.stderr
    assert refs(work)["refs/remotes/origin/main"] == refs(src)["refs/heads/main"]
    fsck(work)
    assert pack_leftovers(work) == [] and relay_state(work) == []


def big_history(path: Path, commits: int, size: int) -> Path:
    return history(path, commits, size)


def test_a_reset_during_a_push_is_taken_as_a_size_limit_and_split(tmp_path: Path, make_remote, git_daemon: int) -> None:
    """A front end that resets any upload over 300 KB (like git daemon on receive.maxInputSize)."""
    work = big_history(tmp_path / "work", commits=8, size=90_000)
    remote = make_remote("git")
    with servers.tcp_proxy(git_daemon, reset_after=300_000) as proxy:
        url = remote.url.replace(f":{git_daemon}/", f":{proxy.port}/")
        assert run_git("push", url, "main", cwd=work).returncode != 0, "plain git cannot get through"
        res = run_git("push", "relay::" + url, "main", cwd=work)
    assert res.returncode == 0, res.stderr
    assert "reset the connection" in res.stderr and "step 1/" in res.stderr, res.stderr
    assert refs(remote.path)["refs/heads/main"] == refs(work)["refs/heads/main"]
    assert not [r for r in refs(remote.path) if r.startswith("refs/relay/")]
    fsck(remote.path)


def test_a_link_that_always_resets_ends_in_a_clear_error_not_a_loop(tmp_path: Path, make_remote, git_daemon: int) -> None:
    work = big_history(tmp_path / "work", commits=8, size=90_000)
    remote = make_remote("git")
    with servers.tcp_proxy(git_daemon, reset_after=2_000) as proxy:
        url = remote.url.replace(f":{git_daemon}/", f":{proxy.port}/")
        res = run_git("push", "relay::" + url, "main", cwd=work)
        connections = proxy.connections
    assert res.returncode != 0
    assert re.search(r"fatal: the target reset the connection \d+ times", res.stderr) and "relay.maxPushBytes" in res.stderr, res.stderr
    assert connections <= 12, f"{connections} connections: the retries must be bounded"
    assert refs(remote.path) == {}, "nothing of the user's refs moved"
    fsck(remote.path)


def test_http_429_with_retry_after_is_waited_for_a_bounded_number_of_times(tmp_path: Path, make_remote, http_server: int) -> None:
    remote = make_remote("http", source=make_source(tmp_path / "src"))
    with servers.tcp_proxy(http_server, busy_first=2) as proxy:
        url = remote.url.replace(f":{http_server}/", f":{proxy.port}/")
        res = run_git("clone", "relay::" + url, str(tmp_path / "work"))
    assert res.returncode == 0, res.stderr
    assert "asks to wait 1 s (HTTP 429); retrying (2/3)" in res.stderr, res.stderr
    with servers.tcp_proxy(http_server, busy_first=100) as proxy:
        url = remote.url.replace(f":{http_server}/", f":{proxy.port}/")
        res = run_git("clone", "relay::" + url, str(tmp_path / "never"))
        connections = proxy.connections
    assert res.returncode != 0 and "HTTP 429" in res.stderr and "try again later" in res.stderr, res.stderr
    assert connections == 4, "three waits, then the refusal is the answer"


def _files_at_most(limit: int) -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))  # a write past it fails (EFBIG), as on a full disk


def test_a_spool_that_cannot_be_written_fails_clearly_and_pushes_nothing(tmp_path: Path, make_remote) -> None:
    """git relay --spool where the pack does not fit (here: a file-size limit stands in for a
    full disk): exit 128 with what failed, where, and what to do; no traceback; the target is
    untouched. Room again, the same command completes."""
    source = make_remote("file", source=make_source(tmp_path / "work", big=300_000))
    target = make_remote("file")
    argv = ["git", "relay", "sync", "--spool", "--no-lfs", "--tags", source.url, target.url]
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    env = dict(os.environ, TMPDIR=str(spool_dir))
    res = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=HANG_GUARD, preexec_fn=lambda: _files_at_most(64 * 1024))
    assert res.returncode == 128, res.stderr
    assert f"fatal: cannot spool the source's pack in {spool_dir} after" in res.stderr, res.stderr
    assert "set TMPDIR to a directory with room" in res.stderr and "Traceback" not in res.stderr
    assert refs(target.path) == {}
    res = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=HANG_GUARD)
    assert res.returncode == 0, res.stderr
    assert refs(target.path) == refs(source.path)
    fsck(target.path)


def test_a_local_io_failure_is_reported_as_such_not_as_a_bug() -> None:
    import errno

    from git_remote_relay.cli import _os_failure

    message, hint = _os_failure(OSError(errno.ENOSPC, "No space left on device", "/repo/.git/objects/pack/tmp_pack_x"))
    assert message == "cannot use '/repo/.git/objects/pack/tmp_pack_x': No space left on device"
    assert hint.startswith("free some disk space")
    message, hint = _os_failure(OSError(errno.EROFS, "Read-only file system"))
    assert message == "cannot use: Read-only file system" and "permissions" in hint
    # a broken connection is the network's, not a path's permissions or space
    message, hint = _os_failure(ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"))
    assert message == "the connection to the remote broke (Connection reset by peer)" and "network" in hint
