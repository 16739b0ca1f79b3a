"""mama-ssh's pure parts: argv grammar, ssh -G parsing, option decisions, socket budget, state."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import pytest

from mama_ssh import plan, report, session, slots
from mama_ssh.argv import ArgvError, parse
from mama_ssh.master import MAX_SOCKET_PATH, socket_dir, socket_path
from mama_ssh.options import Probe, identity_key, needs_keepalive, passenger_problem, session_env, user_multiplexes
from mama_ssh.plan import is_windows_openssh
from mama_ssh.pool import LEARNED_FOR, adopt, claim_start, learned_limit
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
    relay = session.StderrRelay()
    out = b"".join(relay.feed(c) for c in chunks)
    assert out == shown and relay.dropped == dropped
    assert b"".join(relay.held) + relay.partial == (b"".join(chunks) if dropped else b"")


class ScriptedMaster:
    """A control socket that answers its clients, one after the other, the way ``answers`` say: the
    far end of mama_ssh.mux, for the protocol's edge cases (a real master is in test_mama_ssh.py)."""

    def __init__(self, path: str, *answers: str) -> None:
        import socket

        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        self.listener.listen(4)
        self.answers = answers
        self.request = b""
        self.fds: list[int] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @staticmethod
    def _message(kind: int, body: bytes = b"") -> bytes:
        data = kind.to_bytes(4, "big") + body
        return len(data).to_bytes(4, "big") + data

    def _read(self, conn) -> bytes:  # type: ignore[no-untyped-def]
        size = int.from_bytes(conn.recv(4, 0x100), "big")  # MSG_WAITALL
        return conn.recv(size, 0x100) if size else b""

    def _serve(self) -> None:
        for answer in self.answers:
            conn, _ = self.listener.accept()
            with conn:
                self._answer(conn, answer)

    def _answer(self, conn, answer: str) -> None:  # type: ignore[no-untyped-def]
        import socket

        self.fds = []
        if answer == "hang up":
            return
        self._read(conn)
        conn.sendall(self._message(1, (3 if answer == "old version" else 4).to_bytes(4, "big")))
        if answer == "old version":
            return
        self.request = self._read(conn)
        if answer == "alive":
            conn.sendall(self._message(0x80000005, self.request[4:8] + (4242).to_bytes(4, "big")))
            return
        for _ in range(3):
            _, ancillary, _, _ = conn.recvmsg(1, socket.CMSG_SPACE(4))
            self.fds.append(int.from_bytes(ancillary[0][2], sys.byteorder))
        rid = self.request[4:8]
        if answer in ("refuse", "deny"):
            reason = b"Session open refused by peer" if answer == "refuse" else b"Permission denied"
            conn.sendall(self._message(0x80000003 if answer == "refuse" else 0x80000002, rid + len(reason).to_bytes(4, "big") + reason))
        elif answer != "hang up after the descriptors":
            conn.sendall(self._message(0x80000006, rid + (7).to_bytes(4, "big")))
            if answer.startswith("exit "):
                if answer == "exit 3":  # (the other sessions were given the test's own stdout)
                    os.write(self.fds[1], b"out from the remote\n")
                conn.sendall(self._message(0x80000004, (7).to_bytes(4, "big") + int(answer[5:]).to_bytes(4, "big")))
        for fd in self.fds:
            os.close(fd)

    def close(self) -> None:
        self.thread.join(timeout=10)
        self.listener.close()


def test_mux_session_passes_command_environment_and_descriptors_and_returns_the_exit_status(tmp_path: Path) -> None:
    from mama_ssh import mux

    master = ScriptedMaster(str(tmp_path / "m"), "exit 3")
    r, w = os.pipe()
    try:
        request = mux.Request(str(tmp_path / "m"), b"git-upload-pack '/r.git'", [b"GIT_PROTOCOL=version=2"], want_agent=True)
        session = mux.Session(request, fds=(0, w, 2))
        os.close(w)
        assert session.wait() == 3
        assert os.read(r, 100) == b"out from the remote\n", "the master wrote to the descriptor we passed"
    finally:
        os.close(r)
        master.close()
    body = master.request
    assert body[:4] == (0x10000002).to_bytes(4, "big")
    # request id, reserved "", tty 0, X11 0, agent 1, subsystem 0, no escape character, TERM "", command, environment
    assert body[8:12] == b"\0\0\0\0" and body[12:28] == bytes.fromhex("00000000 00000000 00000001 00000000")
    assert body[28:32] == b"\xff\xff\xff\xff" and body[32:36] == b"\0\0\0\0"
    assert body[36:].endswith(len(b"git-upload-pack '/r.git'").to_bytes(4, "big") + b"git-upload-pack '/r.git'"
                              + (22).to_bytes(4, "big") + b"GIT_PROTOCOL=version=2")


@pytest.mark.parametrize("answer, outcome", [
    ("refuse", "Refused"), ("deny", "Unavailable"), ("hang up", "Unavailable"), ("old version", "Unavailable"),
    ("hang up after the descriptors", "Unavailable"), ("no exit message", 255),
])
def test_mux_session_tells_a_refusal_from_a_master_that_cannot_carry_it(tmp_path: Path, answer: str, outcome: object) -> None:
    """A refused session is retried over the master; one it cannot carry goes plain; a session that
    ran without an exit status ends with 255, as ssh's does."""
    from mama_ssh import mux

    master = ScriptedMaster(str(tmp_path / "m"), answer)
    try:
        session = mux.Session(mux.Request(str(tmp_path / "m"), b"true", []))
        got: object = session.wait()
    except (mux.Refused, mux.Unavailable) as exc:
        got = type(exc).__name__
        if answer == "refuse":
            assert str(exc) == "Session open refused by peer"
    finally:
        master.close()
    assert got == outcome
    with pytest.raises(mux.Unavailable):
        mux.Session(mux.Request(str(tmp_path / "nobody"), b"true", []))


def test_mux_alive_check_returns_the_master_pid(tmp_path: Path) -> None:
    from mama_ssh import master, mux

    scripted = ScriptedMaster(str(tmp_path / "m"), "alive")
    try:
        assert mux.alive_check(str(tmp_path / "m")) == 4242
    finally:
        scripted.close()
    assert master.find_pid(str(tmp_path / "m")) is None, "nobody answers any more"


@pytest.mark.parametrize("flags, config, problem", [
    (set("4p"), "", None),
    (set("A"), "forwardagent yes\n", None),
    (set("t"), "", "-t (a tty) given"),
    (set("v"), "", "-v (ssh's own debug output) given"),
    (set("L"), "", "-L (a forwarding) given"),
    (set(), "requesttty force\n", "RequestTTY force"),
    (set(), "requesttty no\n", None),
    (set(), "remotecommand ls\n", "remotecommand ls in the ssh config"),
    (set(), "tunnel point-to-point\n", "tunnel point-to-point in the ssh config"),
    (set(), "sessiontype subsystem\n", "sessiontype subsystem in the ssh config"),
    (set(), "localforward 8080 [localhost]:80\n", "localforward in the ssh config"),
])
def test_which_sessions_ride_a_master_without_an_ssh_client(flags: set[str], config: str, problem: str | None) -> None:
    defaults = "requesttty auto\nsessiontype default\nstdinnull no\nforkafterauthentication no\ntunnel false\n"
    assert passenger_problem(Probe.parse(config + defaults), flags) == problem  # (ssh -G prints each key once)


def test_session_environment_is_what_ssh_would_send() -> None:
    probe = Probe.parse("sendenv GIT_PROTOCOL\nsendenv LC_*\nsetenv FOO=bar baz\n")
    env = {"GIT_PROTOCOL": "version=2", "LC_ALL": "C", "LANG": "C", "LC": "x", "HOME": "/h"}
    assert session_env(probe, env) == [b"GIT_PROTOCOL=version=2", b"LC_ALL=C", b"FOO=bar baz"]
    assert session_env(Probe.parse(""), env) == []


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
        adopt(state, "k", 1, sockets, parsed, pool)  # must neither wait for the lock nor record
        assert time.monotonic() - began < 0.5
    assert not state.exists("masters", "k-1"), "its starter records it, as owned"
    os.close(start)
    adopt(state, "k", 1, sockets, parsed, pool)  # nobody starting it: a master started by hand
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
    while (got := claim_start(pool, sockets, "k", state)) is not None:
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
    got = learned_limit(state, "k")
    assert got is not None and got[0] == 2 and LEARNED_FOR - 120 < got[1] <= LEARNED_FOR - 60
    status = report.status(state, 8)
    assert status["learned"] == [{"key": "k", "max_sessions": 2, "seconds_left": round(got[1])}]
    assert any("2 per master" in line for line in report.status_text(status))
    state.write("caps", "k", {"max": 2, "at": now - LEARNED_FOR - 1})
    assert learned_limit(state, "k") is None and report.status(state, 8)["learned"] == []
    state.write("caps", "k", {"max": 2, "at": "yesterday"})
    assert learned_limit(state, "k") is None, "a record that cannot be read is no limit"
    # after it lapsed, a new refusal learns from the limit in use again (8 -> 4), not from the old 2
    p = plan.Plan(["ssh"], learn=(state, "k", 8))
    state.write("caps", "k", {"max": 2, "at": now - LEARNED_FOR - 1})
    session.learn_refusal(p)
    assert learned_limit(state, "k") is not None and learned_limit(state, "k")[0] == 4  # type: ignore[index]


def test_a_session_refused_once_is_retried_and_refused_twice_teaches_the_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A session that had only just closed may still count against the server's MaxSessions: one
    refusal costs a retry over the master and nothing more. The same session refused again is the
    server's limit, and the pool's slots are halved for the next runs."""
    from mama_ssh import mux

    state = State(str(tmp_path / "state"))
    path = str(tmp_path / "m.sock")
    for answers, learned in ((("refuse", "exit 0"), None), (("refuse", "refuse", "exit 0"), 5)):
        master = ScriptedMaster(path, *answers)
        try:
            p = plan.Plan(["ssh", "h", "cmd"], learn=(state, "k", 10), session=mux.Request(path, b"cmd", []))
            assert session.ride(p, {}) == 0, "over the master again, and the session ran there"
        finally:
            master.close()
            os.unlink(path)
        got = learned_limit(state, "k")
        assert (got and got[0]) == learned, "one refusal teaches nothing; a second halves the slots"
    monkeypatch.setattr(session, "REFUSED_BASE", 0.001)  # (the backoff of six refusals is 1.5 s)
    master = ScriptedMaster(path, *["refuse"] * (session.REFUSED_RETRIES + 1))
    try:
        assert session.ride(plan.Plan(["ssh", "h", "cmd"], session=mux.Request(path, b"cmd", [])), {}) is None, \
            "refused again and again: plain ssh"
    finally:
        master.close()


def test_state_lock_excludes_a_filelock_holder_and_times_out(tmp_path: Path) -> None:
    """mama-ssh's state lock is a flock of its own (filelock costs ~40 ms to import), and the same
    lock as filelock's on Unix: a holder of either keeps the other out, for at most the timeout."""
    from filelock import FileLock

    state = State(str(tmp_path / "state"))
    held = FileLock(os.path.join(state.root, "state.lock"))
    with held:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            with state.lock(timeout=0.2):
                pass
        assert 0.2 <= time.monotonic() - started < 2
    with state.lock(timeout=0.2):
        with pytest.raises(TimeoutError):
            with state.lock(timeout=0.05):
                pass
        assert not _acquired(held), "filelock waits for ours too"
    assert _acquired(held)
    held.release()


def _acquired(lock) -> bool:  # type: ignore[no-untyped-def]
    from filelock import Timeout

    try:
        lock.acquire(timeout=0.05)
    except Timeout:
        return False
    return True


@pytest.mark.parametrize("args", [["--explain", "-p", "22", "@host"], ["--explain", "-Q"], ["--explain", "--json", "-l"]])
def test_admin_verbs_end_in_one_line_that_says_what_was_wrong(args: list[str], tmp_path: Path) -> None:
    import subprocess

    env = dict(os.environ, XDG_STATE_HOME=str(tmp_path / "state"), XDG_RUNTIME_DIR=str(tmp_path / "run"))
    res = subprocess.run([sys.executable, "-c", "from mama_ssh.cli import main; main()", *args], env=env,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("mama-ssh --explain: ") and len(last) > len("mama-ssh --explain: ") + 10, res.stderr
