"""mama-ssh's pure parts: argv grammar, ssh -G parsing, option decisions, socket budget, state."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from mama_ssh import cli, slots
from mama_ssh.argv import ArgvError, parse
from mama_ssh.cli import is_windows_openssh
from mama_ssh.master import MAX_SOCKET_PATH, socket_dir, socket_path
from mama_ssh.options import Probe, identity_key, needs_keepalive, user_multiplexes
from mama_ssh.state import State, UnsafeDirectory, private_dir


@pytest.mark.parametrize(
    "argv, options, dest, command",
    [
        (
            ["-o", "SendEnv=GIT_PROTOCOL", "-p", "2222", "git@host", "git-upload-pack '/r'"],
            ["-o", "SendEnv=GIT_PROTOCOL", "-p", "2222"],
            "git@host",
            ["git-upload-pack '/r'"],
        ),
        (["-4", "host", "cmd"], ["-4"], "host", ["cmd"]),
        (["-p22", "-oBatchMode=yes", "h", "c"], ["-p22", "-oBatchMode=yes"], "h", ["c"]),
        (["-F", "/dev/null", "-i", "k", "--", "u@h", "c"], ["-F", "/dev/null", "-i", "k"], "u@h", ["c"]),
        (["::1", "c"], [], "::1", ["c"]),
    ],
    ids=["git with port", "ipv4 flag", "attached values", "double dash", "ipv6 host"],
)
def test_git_ssh_argv(argv: list[str], options: list[str], dest: str, command: list[str]) -> None:
    parsed = parse(argv)
    assert (parsed.options, parsed.dest, parsed.command) == (options, dest, command)


@pytest.mark.parametrize(
    "argv",
    [["-oProxyCommand=x"], ["--", "-oProxyCommand=x", "c"], ["-u@h", "c"], ["-p", "-1", "h", "c"], ["-p", "99999", "h", "c"], ["-Z", "h"]],
    ids=["no destination", "dash destination", "dash user", "negative port", "port range", "unknown option"],
)
def test_refused_argv(argv: list[str]) -> None:
    with pytest.raises(ArgvError):
        parse(argv)


def test_probe_is_a_multimap() -> None:
    probe = Probe.parse("user git\nIdentityFile ~/.ssh/a\nidentityfile ~/.ssh/b\nserveraliveinterval 0\ncontrolmaster false\n")
    assert probe.values["identityfile"] == ["~/.ssh/a", "~/.ssh/b"]
    assert needs_keepalive(probe) and not user_multiplexes(probe)


@pytest.mark.parametrize(
    "lines, multiplexes",
    [
        ("controlmaster auto\ncontrolpath /tmp/cm-%C", True),
        ("controlmaster true\ncontrolpath /tmp/x", True),
        ("controlmaster false\ncontrolpath /tmp/x", False),
        ("controlmaster auto", False),  # ssh -G prints no controlpath line for "none"
        ("", False),
    ],
    ids=["auto with path", "yes with path", "no", "auto without path", "nothing"],
)
def test_user_multiplexing_detection(lines: str, multiplexes: bool) -> None:
    assert user_multiplexes(Probe.parse(lines)) is multiplexes


def test_keepalives_only_when_the_user_has_none() -> None:
    assert not needs_keepalive(Probe.parse("serveraliveinterval 30\n"))


def test_identities_never_share_a_master() -> None:
    a = Probe.parse("hostname github.com\nuser git\nidentityfile ~/.ssh/work\n")
    b = Probe.parse("hostname github.com\nuser git\nidentityfile ~/.ssh/me\n")
    assert identity_key(a, "gh-work", None) != identity_key(b, "gh-me", None)
    assert identity_key(a, "gh-work", None) != identity_key(a, "gh-work", "/run/agent2")
    assert identity_key(a, "gh-work", None) == identity_key(
        Probe.parse("hostname github.com\nuser git\nidentityfile ~/.ssh/work\n"), "gh-work", None
    )


def test_socket_paths_fit_the_budget(tmp_path: Path) -> None:
    long_dir = "/tmp/" + "x" * 80
    directory = socket_dir({"MAMA_SSH_SOCKET_DIR": long_dir})
    assert directory != long_dir and not os.path.exists(long_dir)
    path = socket_path(directory, "0123456789abcdef")
    assert len(path) <= MAX_SOCKET_PATH


def test_private_directories_are_verified(tmp_path: Path) -> None:
    open_dir = tmp_path / "open"
    open_dir.mkdir(mode=0o755)
    open_dir.chmod(0o755)
    with pytest.raises(UnsafeDirectory, match="open to other users"):
        private_dir(str(open_dir))
    target = tmp_path / "target"
    target.mkdir(mode=0o700)
    link = tmp_path / "link"
    link.symlink_to(target)
    with pytest.raises(UnsafeDirectory, match="symlink"):
        private_dir(str(link))
    assert private_dir(str(tmp_path / "fresh")) == str(tmp_path / "fresh")
    assert (os.stat(tmp_path / "fresh").st_mode & 0o777) == 0o700


def test_corrupt_state_is_recovered(tmp_path: Path) -> None:
    state = State(str(tmp_path / "state"))
    (tmp_path / "state" / "masters" / "k.json").write_text('{"socket": "/tm')  # a half-written record
    assert state.read("masters", "k") is None
    state.write("masters", "k", {"socket": "/tmp/s"})
    assert state.read("masters", "k") == {"socket": "/tmp/s"}


def test_windows_openssh_banner() -> None:
    assert is_windows_openssh("OpenSSH_for_Windows_8.1p1, LibreSSL 3.0.2")
    assert not is_windows_openssh("OpenSSH_9.2p1 Debian-2+deb12u3, OpenSSL 3.0.15 3 Sep 2024")


def test_a_freed_slot_is_handed_over_without_polling(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(slots, "_RECHECK", 60.0)  # a waiter that only polled would sleep for a minute
    pool = slots.Pool(str(tmp_path), "k", limit=1, max_masters=1)
    held = pool.take_slot([0])
    assert held is not None and pool.take_slot([0]) is None
    got: list[tuple[int, int] | None] = []

    def waiter() -> None:
        waker = pool.waker()
        try:
            while (slot := pool.take_slot([0])) is None:
                waker.wait(60.0)
            got.append(slot)
        finally:
            waker.close()

    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(0.2)
    assert not got, "the slot is still held"
    os.close(held[0])
    pool.wake(1)
    t.join(timeout=10)
    assert got and got[0] is not None and got[0][1] == 0, "the waiter was woken by the freed slot"


def test_pool_counts_waiters_and_free_slots(tmp_path: Path) -> None:
    pool = slots.Pool(str(tmp_path), "k", limit=2, max_masters=4)
    tickets = [pool.enqueue() for _ in range(3)]
    assert pool.waiters() == 3
    a = pool.take_slot([0])
    assert a is not None and pool.free([0]) == 1 and pool.free([0, 1]) == 3
    start = pool.try_start(1, str(tmp_path))
    assert start is not None and pool.try_start(1, str(tmp_path)) is None and pool.starting(str(tmp_path)) == [1]
    for fd in [*tickets, a[0], start]:
        assert fd is not None
        os.close(fd)
    assert pool.waiters() == 0 and pool.free([0]) == 2 and pool.starting(str(tmp_path)) == []


@pytest.mark.parametrize(
    "chunks, shown, dropped",
    [
        ([b"kex_exchange_identification: Connection closed by remote host\r\n", b"Connection closed by 127.0.0.1 port 22\r\n"], b"", True),
        ([b"kex_exch", b"ange_identification: read: Connection reset by peer\r\nConnection reset by ::1 port 22\r\n"], b"", True),
        ([b"remote: Counting objects:  50% (1/2)\r", b"remote: done.\n"], b"remote: Counting objects:  50% (1/2)\rremote: done.\n", False),
        ([b"Connection closed by 10.0.0.1 port 22\r\n"], b"Connection closed by 10.0.0.1 port 22\r\n", False),  # mid-session: shown
        ([b"Warning: Permanently added 'h' to known hosts.\r\n"], b"Warning: Permanently added 'h' to known hosts.\r\n", False),
    ],
)
def test_stderr_relay_holds_back_only_a_key_exchange_drop(chunks: list[bytes], shown: bytes, dropped: bool) -> None:
    relay = cli._StderrRelay()
    out = b"".join(relay.feed(c) for c in chunks)
    assert out == shown and relay.dropped == dropped
    assert b"".join(relay.held) + relay.partial == (b"".join(chunks) if dropped else b"")


def test_stderr_relay_of_the_multiplexed_path_holds_what_a_master_could_not_carry() -> None:
    relay = cli._StderrRelay(mux=True)
    lines = [b"mux_client_request_session: session request failed: Session open refused by peer\r\n",
             b"kex_exchange_identification: Connection closed by remote host\r\n"]
    assert b"".join(relay.feed(line) for line in lines) == b""
    assert relay.refused and relay.dropped
    relay = cli._StderrRelay(mux=True)
    assert relay.feed(b"mm_receive_fd: recvmsg: expected received 1 got 0\nproxy dialer did not pass back a connection\n") == b""
    assert relay.dropped and not relay.refused
    relay = cli._StderrRelay()  # off the multiplexed path, the user's own fd-passing proxy failing is shown
    assert relay.feed(b"proxy dialer did not pass back a connection\n") == b"proxy dialer did not pass back a connection\n"


def test_a_master_with_a_full_backlog_is_alive_and_a_closed_socket_is_not(tmp_path: Path) -> None:
    """Fifty processes looking at once fill a master's listen backlog: connect() then fails with
    EAGAIN, which must not read as a dead master (another would be started on its path)."""
    import socket

    from mama_ssh import master

    path = str(tmp_path / "m.sock")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(1)
    queued = []
    try:
        for _ in range(3):  # more than the backlog, nobody accepting
            s = socket.socket(socket.AF_UNIX)
            s.setblocking(False)
            try:
                s.connect(path)
            except BlockingIOError:
                pass
            queued.append(s)
        assert master.alive(path)
    finally:
        for s in queued:
            s.close()
        listener.close()
    assert not master.alive(path), "nobody listens on a closed socket's path"
    assert not master.alive(str(tmp_path / "missing.sock"))


def test_slots_of_a_master_being_started_are_taken_without_the_state_lock(tmp_path: Path) -> None:
    """The processes a starting master wakes take its slots before its starter has recorded it:
    that is not an adoption, and forty of them queueing for the state lock (filelock polls) cost
    a cold pool more than half a second."""
    from filelock import FileLock

    from mama_ssh.argv import parse

    state = State(str(tmp_path / "state"))
    pool = slots.Pool(os.path.join(state.root, "slots"), "k", limit=2, max_masters=2)
    parsed = parse(["h", "git-upload-pack 'r'"])
    sockets = [str(tmp_path / "k"), str(tmp_path / "k-1")]
    start = pool.try_start(1, state.root)
    assert start is not None
    with FileLock(os.path.join(state.root, "state.lock"), timeout=1):
        began = time.monotonic()
        cli._adopt(state, "k", 1, sockets, parsed, pool)  # must neither wait for the lock nor record
        assert time.monotonic() - began < 0.5
    assert not state.exists("masters", "k-1"), "its starter records it, as owned"
    os.close(start)
    cli._adopt(state, "k", 1, sockets, parsed, pool)  # nobody starting it: a master started by hand
    rec = state.read("masters", "k-1")
    assert rec is not None and rec["owned"] is False and rec["socket"] == sockets[1]


@pytest.mark.parametrize("waiting, starts", [(1, 1), (8, 1), (9, 2), (16, 2), (17, 3), (24, 3), (25, 4), (200, 4)])
def test_masters_start_staggered_before_the_first_is_up(tmp_path: Path, waiting: int, starts: int) -> None:
    """With no master up yet, master n+1 starts once the waiters are more than the n starting will
    serve: a burst gets all the masters it needs logging in at once, while a host that refuses
    masters sees one failed pre-warm from up to one master's sessions (8 slots here)."""
    state = State(str(tmp_path / "state"))
    pool = slots.Pool(os.path.join(state.root, "slots"), "k", limit=8, max_masters=4)
    sockets = [str(tmp_path / f"s{m}") for m in range(4)]  # nothing listens: no master is up
    tickets = [pool.enqueue() for _ in range(waiting)]
    held = []
    while (got := cli._claim_start(pool, sockets, "k", state)) is not None:
        held.append(got[0])
    assert len(held) == starts
    for fd in [*held, *tickets]:
        assert fd is not None
        os.close(fd)


def test_spawn_wait_passes_no_leaked_descriptor_reads_stderr_and_kills_at_the_timeout() -> None:
    """What pre-warms and ``-O check`` run through (instead of subprocess): a descriptor the caller
    leaked never reaches the child (a master lives on for minutes), stderr comes back when asked
    for, and a child past its time is killed, not waited for."""
    from mama_ssh import master

    r, w = os.pipe()
    os.set_inheritable(w, True)
    try:
        rc, _ = master.spawn_wait(["sh", "-c", f"test -e /dev/fd/{w} && exit 3; exit 0"], os.environ, 10.0)
        assert rc == 0, "the leaked pipe was passed on"
        rc, err = master.spawn_wait(["sh", "-c", "echo 'Master running (pid=4242)' >&2; exit 0"], os.environ, 10.0, capture=2)
        assert (rc, err) == (0, b"Master running (pid=4242)\n")
        rc, out = master.spawn_wait(["sh", "-c", "echo out; echo err >&2"], os.environ, 10.0, capture=1)
        assert (rc, out) == (0, b"out\n"), "what ssh -G prints is read from stdout"
        rc, err = master.spawn_wait(["sh", "-c", "exit 7"], os.environ, 10.0)
        assert (rc, err) == (7, b"")
        began = time.monotonic()
        rc, _ = master.spawn_wait(["sleep", "30"], os.environ, 0.3)
        assert rc is None and time.monotonic() - began < 5
    finally:
        os.close(r)
        os.close(w)


def test_a_learned_session_limit_is_trusted_for_a_day_then_learned_again(tmp_path: Path) -> None:
    """A server's MaxSessions may be raised, and one burst of refusals under load must not halve
    the pool forever: the learned limit applies for a day, is shown by --status, then lapses."""
    state = State(str(tmp_path / "state"))
    now = time.time()
    state.write("caps", "k", {"max": 2, "at": now - 60})
    got = cli._learned(state, "k")
    assert got is not None and got[0] == 2 and cli.LEARNED_FOR - 120 < got[1] <= cli.LEARNED_FOR - 60
    status = cli._status(state, 8)
    assert status["learned"] == [{"key": "k", "max_sessions": 2, "seconds_left": round(got[1])}]
    assert any("2 per master" in line for line in cli._status_text(status))
    state.write("caps", "k", {"max": 2, "at": now - cli.LEARNED_FOR - 1})
    assert cli._learned(state, "k") is None and cli._status(state, 8)["learned"] == []
    state.write("caps", "k", {"max": 2, "at": "yesterday"})
    assert cli._learned(state, "k") is None, "a record that cannot be read is no limit"
    # after it lapsed, a new refusal learns from the limit in use again (8 -> 4), not from the old 2
    p = cli.Plan(["ssh"], learn=(state, "k", 8))
    state.write("caps", "k", {"max": 2, "at": now - cli.LEARNED_FOR - 1})
    cli._learn_refusal(p)
    assert cli._learned(state, "k") is not None and cli._learned(state, "k")[0] == 4  # type: ignore[index]


def test_a_session_refused_once_is_retried_and_refused_twice_teaches_the_limit(tmp_path: Path) -> None:
    """A session that had only just closed may still count against the server's MaxSessions: one
    refusal costs a retry over the master and nothing more. The same session refused again is the
    server's limit, and the pool's slots are halved for the next runs."""
    import socket

    state = State(str(tmp_path / "state"))
    path = str(tmp_path / "m.sock")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(8)
    try:
        p = cli.Plan(["ssh", "-o", "ControlPath=x", "h", "cmd"], learn=(state, "k", 10), fallback=["ssh", "h", "cmd"], socket=path)
        runs = cli._Runs(p, {})

        def refused() -> cli._StderrRelay:
            relay = cli._StderrRelay(mux=True)
            relay.feed(b"channel 0: open failed: administratively prohibited: open failed\r\nSession open refused by peer\r\n")
            relay.feed(cli.GUARD_LINE + b"\n")
            return relay

        first = runs.again(refused(), 255)
        assert first is not None and 0 < first < 1 and runs.argv == p.argv, "over the master again, shortly"
        assert cli._learned(state, "k") is None, "one refusal teaches nothing"
        second = runs.again(refused(), 255)
        assert second is not None and runs.argv == p.argv
        learned = cli._learned(state, "k")
        assert learned is not None and learned[0] == 5
    finally:
        listener.close()
