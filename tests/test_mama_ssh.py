"""mama-ssh against a real sshd on loopback, counting authentications in its log."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest
import servers
from conftest import git, unavailable

pytestmark = pytest.mark.integration


@pytest.fixture
def mama(tmp_path: Path, sshd) -> Iterator[dict[str, str]]:  # type: ignore[no-untyped-def]
    """An environment whose git ssh command is mama-ssh with the test server's options."""
    sock = tempfile.mkdtemp(prefix="ms", dir="/tmp")  # short: socket paths have a budget
    os.rmdir(sock)
    env = dict(os.environ)
    env.update(
        GIT_SSH_COMMAND="mama-ssh " + sshd.ssh_command[len("ssh "):],
        GIT_SSH_VARIANT="ssh",
        MAMA_SSH_STATE_DIR=str(tmp_path / "state"),
        MAMA_SSH_SOCKET_DIR=sock,
        MAMA_SSH_SLOT_WAIT="60",  # a slow CI machine must not turn a long wait into an extra login
    )
    yield env
    subprocess.run(["mama-ssh", "--cleanup"], env=env, capture_output=True)
    shutil.rmtree(sock, ignore_errors=True)


def bare(root: Path, name: str) -> Path:
    path = root / f"{name}.git"
    if not path.exists():
        git("init", "-q", "--bare", str(path))
    return path


def one_commit_repo(server_root: Path, tmp_path: Path, name: str) -> Path:
    """A bare repository on the server with one small commit on main."""
    src = tmp_path / f"{name}-src"
    git("init", "-q", str(src))
    (src / "f").write_text("x\n")
    git("add", ".", cwd=src)
    git("commit", "-q", "-m", "x", cwd=src)
    repo = bare(server_root, name)
    git("push", "-q", str(repo), "main", cwd=src)
    return repo


def ssh_url(server, path: Path) -> str:  # type: ignore[no-untyped-def]
    return f"ssh://{server.user}@127.0.0.1:{server.port}{path}"


def run_many(args: list[str], env: dict[str, str], n: int, cwd: Path | None = None) -> list[subprocess.CompletedProcess[str]]:
    procs = [subprocess.Popen(args, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(n)]
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=120)
        out.append(subprocess.CompletedProcess(args, p.returncode, stdout, stderr))
    return out


@contextlib.contextmanager
def private_sshd(base: Path, extra_config: str, max_startups: str = "100:30:200") -> Iterator[tuple[servers.Sshd, dict[str, str]]]:
    """A second sshd with its own config, and a mama-ssh environment for it."""
    try:
        ctx = servers.sshd(base / "ssh-private", os.environ["GIT_CONFIG_GLOBAL"], extra_config=extra_config, max_startups=max_startups)
        server = ctx.__enter__()
    except servers.ServerUnavailable as exc:
        unavailable(str(exc))
    sock = tempfile.mkdtemp(prefix="ms", dir="/tmp")
    env = dict(os.environ, GIT_SSH_COMMAND="mama-ssh " + server.ssh_command[4:], GIT_SSH_VARIANT="ssh",
               MAMA_SSH_STATE_DIR=str(base / "state-private"), MAMA_SSH_SOCKET_DIR=sock, MAMA_SSH_SLOT_WAIT="60")
    env.pop("MAMA_SSH_MAX_SESSIONS", None)
    try:
        yield server, env
    finally:
        subprocess.run(["mama-ssh", "--cleanup"], env=env, capture_output=True)
        ctx.__exit__(None, None, None)
        shutil.rmtree(sock, ignore_errors=True)


def masters(env: dict[str, str]) -> dict[str, dict]:  # type: ignore[type-arg]
    root = Path(env["MAMA_SSH_STATE_DIR"]) / "masters"
    return {p.stem: json.loads(p.read_text()) for p in root.glob("*.json")} if root.exists() else {}


def test_twenty_concurrent_operations_share_a_small_pool(sshd, mama, server_root: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    url = ssh_url(sshd, one_commit_repo(server_root, tmp_path, "mama-twenty"))
    before = sshd.auth_count()
    results = run_many(["git", "ls-remote", url], mama, 20)
    assert [r.returncode for r in results] == [0] * 20, [r.stderr for r in results if r.returncode]
    assert all("refs/heads/main" in r.stdout for r in results)
    clones = run_many_clones(url, mama, tmp_path, 20)
    assert clones == [0] * 20
    pool = masters(mama)
    assert sshd.auth_count() - before == len(pool), "every session rides a master of the pool"
    assert 1 <= len(pool) <= 4, "20 operations at 8 sessions a master: ceil(20/8) + 1 at most"


def run_many_clones(url: str, env: dict[str, str], base: Path, n: int) -> list[int]:
    procs = [
        subprocess.Popen(["git", "clone", "-q", url, str(base / f"clone{i}")], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for i in range(n)
    ]
    return [p.wait(timeout=120) for p in procs]


def test_low_max_sessions_server_never_refuses_a_session(workspace: Path, server_root: Path, tmp_path: Path) -> None:
    with private_sshd(tmp_path, "MaxSessions 3\n") as (server, env):
        env["MAMA_SSH_MAX_SESSIONS"] = "2"
        url = ssh_url(server, bare(server_root, "mama-low"))
        results = run_many(["git", "ls-remote", url], env, 20)
        assert [r.returncode for r in results] == [0] * 20, [r.stderr for r in results if r.returncode]
        assert not any("refused" in r.stderr for r in results)
        assert server.auth_count() == len(masters(env)) <= 4


def test_refused_session_waits_for_the_master_instead_of_logging_in_again(workspace: Path, tmp_path: Path) -> None:
    """More slots than sshd's MaxSessions: the session it refuses is run over the master again once
    one ends, with what git wrote to it intact, and never becomes a second authentication."""
    with private_sshd(tmp_path, "MaxSessions 2\n") as (server, env):
        env.update(MAMA_SSH_MAX_SESSIONS="3", MAMA_SSH_MAX_MASTERS="1")
        argv = ["mama-ssh", *env["GIT_SSH_COMMAND"].split()[1:], "-p", str(server.port), f"{server.user}@127.0.0.1"]
        subprocess.run([*argv, "true"], env=env, check=True, timeout=60)
        procs = [subprocess.Popen([*argv, "sleep 0.4; cat"], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(3)]
        for i, p in enumerate(procs):  # every session gets its input (and EOF) before any is waited for
            assert p.stdin is not None
            p.stdin.write(f"payload {i}\n")
            p.stdin.close()
            p.stdin = None
        results = [p.communicate(timeout=60) + (p.returncode,) for p in procs]
        assert [r[2] for r in results] == [0, 0, 0], [r[1] for r in results]
        assert [r[0] for r in results] == [f"payload {i}\n" for i in range(3)]
        assert not any(r[1] for r in results), "nothing about the refusal reaches git's stderr"
        log = server.log.read_text()
        assert "refused" in log.lower() or "no more sessions" in log.lower(), "sshd really refused a session"
        assert server.auth_count() == 1, "the refused session rode the master when it could"


def test_fifty_processes_racing_start_one_master_each_slot(sshd, mama) -> None:  # type: ignore[no-untyped-def]
    before = sshd.auth_count()
    argv = ["mama-ssh", *mama["GIT_SSH_COMMAND"].split()[1:], "-p", str(sshd.port), f"{sshd.user}@127.0.0.1", "true"]
    results = run_many(argv, mama, 50)
    assert [r.returncode for r in results] == [0] * 50, [r.stderr for r in results if r.returncode][:3]
    assert sshd.auth_count() - before == len(masters(mama)) <= 4, "no master is started twice, the pool stays at 4"
    with_one = dict(mama, MAMA_SSH_STATE_DIR=mama["MAMA_SSH_STATE_DIR"] + "-one",
                    MAMA_SSH_SOCKET_DIR=mama["MAMA_SSH_SOCKET_DIR"] + "1", MAMA_SSH_MAX_MASTERS="1")
    before = sshd.auth_count()
    results = run_many(argv, with_one, 50)
    assert [r.returncode for r in results] == [0] * 50, [r.stderr for r in results if r.returncode][:3]
    assert sshd.auth_count() - before == 1 and len(masters(with_one)) == 1
    subprocess.run(["mama-ssh", "--cleanup"], env=with_one, capture_output=True)
    shutil.rmtree(with_one["MAMA_SSH_SOCKET_DIR"], ignore_errors=True)


def test_stalled_prewarm_of_one_host_does_not_delay_another(sshd, mama, server_root: Path) -> None:  # type: ignore[no-untyped-def]
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    stall_port = listener.getsockname()[1]  # accepts and never speaks: a pre-warm that hangs
    held: list[socket.socket] = []

    def accept() -> None:
        try:
            while True:
                held.append(listener.accept()[0])
        except OSError:
            return  # the listener was closed at the end of the test

    threading.Thread(target=accept, daemon=True).start()
    env = dict(mama, MAMA_SSH_PREWARM_TIMEOUT="20")
    stalled = subprocess.Popen(
        ["mama-ssh", *mama["GIT_SSH_COMMAND"].split()[1:], "-o", "ConnectTimeout=60", "-p", str(stall_port), "stall@127.0.0.1", "true"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not list(Path(mama["MAMA_SSH_STATE_DIR"]).glob("prewarm-*.lock")) and time.monotonic() < deadline:
            time.sleep(0.05)
        url = ssh_url(sshd, bare(server_root, "mama-other"))
        other = subprocess.run(["git", "ls-remote", url], env=env, capture_output=True, text=True, timeout=60)
        assert other.returncode == 0, other.stderr
        assert stalled.poll() is None, "the other host finished while the stalled pre-warm still runs"
    finally:
        stalled.kill()
        stalled.wait()
        listener.close()
        for s in held:
            s.close()


def test_a_master_that_cannot_carry_the_session_means_plain_ssh_never_a_silent_failure(sshd, mama, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Something listens on the first master's socket but hangs up on every session (a master
    going away between mama-ssh's look and its request): every run goes plain and succeeds, and
    nothing about it reaches git."""
    import socket

    dest = ["-p", str(sshd.port), f"{sshd.user}@127.0.0.1"]
    options = mama["GIT_SSH_COMMAND"].split()[1:]
    explained = subprocess.run(["mama-ssh", "--explain", "--json", *options, *dest], env=mama, capture_output=True, text=True, check=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(json.loads(explained.stdout)["socket"])
    listener.listen(64)
    stop = threading.Event()

    def hang_up() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError):
                conn, _ = listener.accept()
                conn.close()

    thread = threading.Thread(target=hang_up, daemon=True)
    thread.start()
    try:
        before = sshd.auth_count()
        results = run_many(["mama-ssh", *options, *dest, "echo ran"], mama, 12)
        assert [r.returncode for r in results] == [0] * 12, [r.stderr for r in results if r.returncode][:3]
        assert [r.stdout for r in results] == ["ran\n"] * 12
        assert not any(r.stderr for r in results), [r.stderr for r in results if r.stderr][:3]
        assert sshd.auth_count() - before >= 1, "someone logged in: the hang-ups were not taken for sessions"
    finally:
        stop.set()
        with contextlib.suppress(OSError):
            socket.socket(socket.AF_UNIX).connect(listener.getsockname())  # wake the accept
        thread.join(timeout=10)
        listener.close()


def test_failed_prewarm_makes_everyone_connect_plainly(sshd, mama, server_root: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    log = tmp_path / "prewarms.log"
    fake = tmp_path / "ssh-no-master"
    real = shutil.which("ssh")
    fake.write_text(f'#!/bin/sh\ncase " $* " in *ControlMaster=yes*) echo attempt >> {log}; exit 255;; esac\nexec {real} "$@"\n')
    fake.chmod(0o755)
    env = dict(mama, MAMA_SSH_SSH=str(fake))
    url = ssh_url(sshd, bare(server_root, "mama-fail"))
    before = sshd.auth_count()
    results = run_many(["git", "ls-remote", url], env, 10)
    assert [r.returncode for r in results] == [0] * 10
    assert log.read_text().count("attempt") == 1, "one failed pre-warm, then nobody races to become master"
    assert sshd.auth_count() - before == 10
    assert list((Path(mama["MAMA_SSH_STATE_DIR"]) / "failed").glob("*.json"))
    assert masters(env) == {}


def test_user_multiplexing_is_left_alone(sshd, mama, server_root: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    own = tempfile.mkdtemp(prefix="own", dir="/tmp")
    env = dict(mama, MAMA_SSH_DEBUG="1")
    env["GIT_SSH_COMMAND"] += f" -o ControlMaster=auto -o ControlPath={own}/%C -o ControlPersist=5"
    url = ssh_url(sshd, bare(server_root, "mama-own"))
    res = git("ls-remote", url, env=env)
    assert "the user's own multiplexing" in res.stderr
    assert masters(env) == {}
    subprocess.run(
        ["ssh", "-o", f"ControlPath={own}/%C", "-O", "exit", "-p", str(sshd.port), f"{sshd.user}@127.0.0.1"], capture_output=True
    )
    shutil.rmtree(own, ignore_errors=True)


def test_a_new_master_is_recorded_even_when_git_is_interrupted(sshd, mama, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The starter leaves the new master's record to a child and goes to its session. A ^C to git
    (SIGINT to the whole process group) while that child still waits to write must not lose the
    record: an unrecorded master would be adopted as not ours, and --cleanup would never stop it."""
    from filelock import FileLock

    state = Path(mama["MAMA_SSH_STATE_DIR"])
    state.mkdir(mode=0o700, parents=True)
    held = FileLock(str(state / "state.lock"))
    held.acquire()  # the recorder waits for the state lock until the test lets it go
    try:
        argv = ["mama-ssh", *mama["GIT_SSH_COMMAND"].split()[1:], "-p", str(sshd.port), f"{sshd.user}@127.0.0.1", "sleep 2"]
        proc = subprocess.Popen(argv, env=mama, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        sockets = Path(mama["MAMA_SSH_SOCKET_DIR"])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (sockets.exists() and any(sockets.iterdir())):
            time.sleep(0.02)
        assert sockets.exists() and any(sockets.iterdir()), "the master came up"
        time.sleep(0.2)  # the session runs; the recorder waits for the state lock
        assert masters(mama) == {}, "not recorded yet: the test would prove nothing"
        os.killpg(proc.pid, signal.SIGINT)
        time.sleep(0.3)  # the signal has landed on every process of the group
    finally:
        held.release()
    proc.wait(timeout=30)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not masters(mama):
        time.sleep(0.05)
    ((_, rec),) = masters(mama).items()
    assert rec["owned"] and rec["pid"], rec


def test_killed_master_and_stale_socket_recover(sshd, mama, server_root: Path) -> None:  # type: ignore[no-untyped-def]
    url = ssh_url(sshd, bare(server_root, "mama-kill"))
    git("ls-remote", url, env=mama)
    ((key, rec),) = masters(mama).items()
    os.kill(rec["pid"], signal.SIGKILL)  # the master dies; its socket file stays behind
    time.sleep(0.2)
    assert Path(rec["socket"]).exists()
    git("ls-remote", url, env=mama)
    new = masters(mama)[key]
    assert new["pid"] != rec["pid"] and new["owned"]
    os.kill(new["pid"], signal.SIGKILL)
    git("ls-remote", url, env=mama)  # and once more after a second death
    assert masters(mama)[key]["pid"] not in (rec["pid"], new["pid"])


def test_cleanup_stops_only_our_masters(sshd, mama, server_root: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    url = ssh_url(sshd, bare(server_root, "mama-clean"))
    git("ls-remote", url, env=mama)
    ((key, ours),) = masters(mama).items()
    # a master started by hand for another identity, at a socket mama-ssh will find and adopt
    other_env = dict(mama, SSH_AUTH_SOCK="/nonexistent/other-agent")
    explain = subprocess.run(
        ["mama-ssh", "--explain", *mama["GIT_SSH_COMMAND"].split()[1:], "-p", str(sshd.port), f"{sshd.user}@127.0.0.1"],
        env=other_env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    theirs = explain.split("socket ", 1)[1].split(",", 1)[0]
    opts = mama["GIT_SSH_COMMAND"].split()[1:]
    subprocess.run(
        [
            "ssh",
            *opts,
            "-f",
            "-N",
            "-o",
            "ControlMaster=yes",
            "-o",
            f"ControlPath={theirs}",
            "-o",
            "ControlPersist=60",
            "-p",
            str(sshd.port),
            f"{sshd.user}@127.0.0.1",
        ],
        check=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    git("ls-remote", url, env=other_env)
    adopted = [r for r in masters(mama).values() if not r["owned"]]
    assert len(adopted) == 1 and adopted[0]["socket"] == theirs
    status = subprocess.run(["mama-ssh", "--status"], env=mama, capture_output=True, text=True, check=True).stdout
    assert "adopted" in status and "started by mama-ssh" in status
    subprocess.run(["mama-ssh", "--cleanup"], env=mama, capture_output=True, check=True)
    time.sleep(0.5)
    alive = lambda path: subprocess.run(["ssh", "-o", f"ControlPath={path}", "-O", "check", "x"], capture_output=True).returncode == 0  # noqa: E731
    assert not alive(ours["socket"]), "our master is stopped"
    assert alive(theirs), "a master mama-ssh did not start is never touched"
    assert gone(ours["pid"]), "no ssh process of ours is left behind"
    subprocess.run(["ssh", "-o", f"ControlPath={theirs}", "-O", "exit", "x"], capture_output=True)


def gone(pid: int) -> bool:
    """The process has exited (a zombie waiting for a non-reaping init counts as exited)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.1)
    return False


def test_protocol_v2_survives_the_master(sshd, mama, server_root: Path) -> None:  # type: ignore[no-untyped-def]
    url = ssh_url(sshd, bare(server_root, "mama-v2"))
    git("ls-remote", url, env=mama)  # warm the master first: the traced run is a mux client
    res = git("ls-remote", url, env=dict(mama, GIT_TRACE_PACKET="1"))
    assert "< version 2" in res.stderr


def test_relay_over_mama_ssh(sshd, mama, server_root: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src = tmp_path / "src"
    git("init", "-q", str(src))
    (src / "f").write_text("x\n")
    git("add", ".", cwd=src)
    git("commit", "-q", "-m", "x", cwd=src)
    url = ssh_url(sshd, bare(server_root, "mama-relay"))
    before = sshd.auth_count()
    git("push", "-q", "relay::" + url, "main", cwd=src, env=mama)
    git("clone", "-q", "relay::" + url, str(tmp_path / "c"), env=mama)
    git("fetch", "-q", cwd=tmp_path / "c", env=mama)
    assert sshd.auth_count() - before == 1


def test_push_and_clone_of_megabytes_over_the_master_are_byte_exact(sshd, mama, server_root: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """git's own push and clone, with a few MiB of incompressible data each way, through sessions
    that mama-ssh carries over one master: every byte arrives, and one login serves them all."""
    src = tmp_path / "big-src"
    git("init", "-q", str(src))
    (src / "blob").write_bytes(os.urandom(3 * 1024 * 1024))
    git("add", ".", cwd=src)
    git("commit", "-q", "-m", "big", cwd=src)
    url = ssh_url(sshd, bare(server_root, "mama-big"))
    before = sshd.auth_count()
    git("push", "-q", url, "main", cwd=src, env=mama)
    git("clone", "-q", url, str(tmp_path / "big-clone"), env=mama)
    assert (tmp_path / "big-clone" / "blob").read_bytes() == (src / "blob").read_bytes()
    assert sshd.auth_count() - before == 1


def test_no_module_shadowing_from_the_working_directory(tmp_path: Path) -> None:
    for name in ("json", "types", "subprocess"):
        (tmp_path / f"{name}.py").write_text("raise SystemExit('shadowed stdlib module imported')\n")
    res = subprocess.run(["mama-ssh", "--version"], cwd=tmp_path, capture_output=True, text=True)
    assert res.returncode == 0 and "mama-ssh" in res.stdout, res.stderr
    res = subprocess.run(["git-remote-relay", "--version"], cwd=tmp_path, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_low_max_sessions_is_learned_without_configuration(workspace: Path, tmp_path: Path) -> None:
    """sshd allows 2 sessions a connection, mama-ssh plans 10: sessions refused twice halve the slots
    it uses (10 -> 5 -> 2, once per burst, not once per refused session), and then nothing is refused."""
    with private_sshd(tmp_path, "MaxSessions 2\n") as (server, env):
        env["MAMA_SSH_MAX_MASTERS"] = "1"  # one master, so that only learning can stop the refusals
        argv = ["mama-ssh", *env["GIT_SSH_COMMAND"].split()[1:], "-p", str(server.port), f"{server.user}@127.0.0.1", "sleep 0.3"]

        def learned() -> int:
            caps = list((tmp_path / "state-private" / "caps").glob("*.json"))
            return json.loads(caps[0].read_text())["max"] if caps else 10

        def refusals() -> int:
            return sum(1 for line in server.log.read_text().splitlines() if "no more sessions" in line.lower() or "refused" in line.lower())

        for expected in (5, 2):  # as many sessions at once as the slots: more than sshd takes
            results = run_many(argv, env, learned())
            assert [r.returncode for r in results] == [0] * len(results), [r.stderr for r in results if r.returncode]
            assert learned() == expected
        assert refusals() > 0
        before, refused = server.auth_count(), refusals()
        results = run_many(argv, env, 6)
        assert [r.returncode for r in results] == [0] * 6
        assert refusals() == refused, "the learned limit is the server's: nothing is refused any more"
        assert server.auth_count() == before, "once learned, every session rides the master"
        explained = subprocess.run(["mama-ssh", "--explain", "--json", *argv[1:-1]], env=env, capture_output=True, text=True, check=True)
        data = json.loads(explained.stdout)
        assert (data["session_slots"], data["session_slots_configured"]) == (2, 10) and data["learned_for_seconds"] > 0


def test_status_and_explain_as_json_for_scripts(sshd, mama, server_root: Path) -> None:  # type: ignore[no-untyped-def]
    import json

    url = ssh_url(sshd, bare(server_root, "mama-json"))
    git("ls-remote", url, env=mama)
    status = json.loads(subprocess.run(["mama-ssh", "--status", "--json"], env=mama, capture_output=True, text=True, check=True).stdout)
    assert status["state"] == mama["MAMA_SSH_STATE_DIR"]
    (entry,) = status["masters"]
    assert entry["up"] and entry["owned"] and entry["dest"].endswith("@127.0.0.1") and entry["limit"] == 10
    assert status["failed"] == []
    opts = mama["GIT_SSH_COMMAND"].split()[1:]
    explain = json.loads(subprocess.run(["mama-ssh", "--explain", "--json", *opts, "-p", str(sshd.port), f"{sshd.user}@127.0.0.1"],
                                        env=mama, capture_output=True, text=True, check=True).stdout)
    assert explain["multiplexing"] == "mama-ssh" and explain["socket"] == entry["socket"]
    assert explain["would_run"][0] == "ssh" and explain["destination"] == f"{sshd.user}@127.0.0.1"
    assert explain["plain_ssh_because"] is None
    verbose = json.loads(subprocess.run(["mama-ssh", "--explain", "--json", "-v", *opts, "-p", str(sshd.port), f"{sshd.user}@127.0.0.1"],
                                        env=mama, capture_output=True, text=True, check=True).stdout)
    assert verbose["plain_ssh_because"] == "-v (ssh's own debug output) given"


def test_a_session_over_the_master_is_what_ssh_would_have_run(sshd, mama, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """mama-ssh carries the session itself: the command (its words joined by spaces, as ssh does),
    stdin, stdout, stderr and the exit status all go through the master as with ssh; SendEnv'd
    variables arrive; a signal ends the session with 255; -v runs plain ssh, whose words are shown."""
    base = [*mama["GIT_SSH_COMMAND"].split()[1:], "-p", str(sshd.port), f"{sshd.user}@127.0.0.1"]
    subprocess.run(["mama-ssh", *base, "true"], env=mama, check=True, timeout=60)  # the master is up
    before = sshd.auth_count()
    words = ["read line; echo \"$line\" $GIT_PROTOCOL;", "echo", "oops >&2;", "exit", "7"]
    ran = subprocess.run(["mama-ssh", "-o", "SendEnv=GIT_PROTOCOL", *base, *words], env=dict(mama, GIT_PROTOCOL="version=2"),
                         input="hello\n", capture_output=True, text=True, timeout=60)
    assert (ran.returncode, ran.stdout, ran.stderr) == (7, "hello version=2\n", "oops\n")
    assert sshd.auth_count() == before, "over the master"
    proc = subprocess.Popen(["mama-ssh", *base, "sleep 30"], env=mama, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 255
    assert sshd.auth_count() == before
    verbose = subprocess.run(["mama-ssh", "-v", *base, "true"], env=mama, capture_output=True, text=True, timeout=60)
    assert verbose.returncode == 0 and "debug1:" in verbose.stderr
    assert sshd.auth_count() == before + 1, "-v: plain ssh"


@contextlib.contextmanager
def startups_full(server: servers.Sshd, release_after: float) -> Iterator[None]:
    """Fill sshd's MaxStartups with unauthenticated connections that never send a byte, for
    ``release_after`` seconds: sshd drops every other new connection meanwhile."""
    blockers: list[socket.socket] = []

    def release() -> None:
        for b in blockers:
            b.close()

    for _ in range(20):
        b = socket.create_connection(("127.0.0.1", server.port))
        b.settimeout(10)
        if b.recv(4) != b"SSH-":  # "Exceeded MaxStartups": full
            b.close()
            break
        blockers.append(b)
    else:
        raise AssertionError("sshd never refused a connection: MaxStartups not reached")
    timer = threading.Timer(release_after, release)
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        release()


def test_connection_dropped_by_max_startups_is_retried(workspace: Path, server_root: Path, tmp_path: Path) -> None:
    with private_sshd(tmp_path, "", max_startups="3:100:3") as (server, env):
        url = ssh_url(server, bare(server_root, "mama-startups"))
        plain = dict(env, GIT_SSH_COMMAND=server.ssh_command)
        with startups_full(server, 30):
            res = subprocess.run(["git", "ls-remote", url], env=plain, capture_output=True, text=True, timeout=60)
            assert res.returncode != 0 and "kex_exchange_identification" in res.stderr, "plain ssh is dropped"
        time.sleep(0.5)  # sshd counts the closed blocker out
        for multiplex in ("0", "1"):
            with startups_full(server, 0.6):
                res = subprocess.run(["git", "ls-remote", url], env=dict(env, MAMA_SSH_MULTIPLEX=multiplex, MAMA_SSH_DEBUG="1"),
                                     capture_output=True, text=True, timeout=60)
            assert res.returncode == 0, res.stderr
            assert "refs/heads" in res.stdout or res.stdout == ""
            if multiplex == "0":
                assert "dropped the connection during key exchange" in res.stderr, "the plain connection was retried"
            shown = [line for line in res.stderr.splitlines() if not line.startswith("mama-ssh:")]
            assert not any("kex_exchange_identification" in line for line in shown), "a retried drop is not reported"
            time.sleep(0.5)
        assert "past MaxStartups" in server.log.read_text(), "the server really dropped connections"
        assert len(masters(env)) == 1, "the pre-warm was retried too"
        (log,) = (Path(env["MAMA_SSH_STATE_DIR"]) / "logs").glob("*.log")
        assert "kex_exchange_identification" in log.read_text(), "the pre-warm was dropped once, then retried"


def test_forty_operations_under_default_server_limits(workspace: Path, server_root: Path, tmp_path: Path) -> None:
    """sshd's defaults (MaxStartups 10:30:100, MaxSessions 10): a pool of masters, no failures."""
    with private_sshd(tmp_path, "", max_startups="10:30:100") as (server, env):
        url = ssh_url(server, one_commit_repo(server_root, tmp_path, "mama-forty"))
        procs = [subprocess.Popen(["git", "ls-remote", url], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for _ in range(20)]
        procs += [subprocess.Popen(["git", "clone", "-q", url, str(tmp_path / f"c{i}")], env=env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE) for i in range(20)]
        codes = [p.wait(timeout=120) for p in procs]
        assert codes == [0] * 40, [p.stderr.read() for p in procs if p.returncode][:3]  # type: ignore[union-attr]
        pool = masters(env)
        assert server.auth_count() <= 40 // 8 + 1, "ceil(ops / sessions per master) + 1 authentications at most"
        assert len(pool) <= 4


def test_interrupted_while_a_master_logs_in_ends_quietly_and_takes_the_login_along(sshd, mama, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """^C while mama-ssh waits for its pre-warm: no Python traceback on git's terminal, the exit
    status ssh gives (255), and the login it started does not live on unrecorded."""
    pidfile = tmp_path / "login.pid"
    slow = tmp_path / "ssh-slow-login"
    real = shutil.which("ssh")
    slow.write_text(f'#!/bin/sh\ncase " $* " in *ControlMaster=yes*) echo $$ > {pidfile}; exec sleep 30;; esac\nexec {real} "$@"\n')
    slow.chmod(0o755)
    argv = ["mama-ssh", *mama["GIT_SSH_COMMAND"].split()[1:], "-p", str(sshd.port), f"{sshd.user}@127.0.0.1", "true"]
    proc = subprocess.Popen(argv, env=dict(mama, MAMA_SSH_SSH=str(slow)), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not pidfile.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    login = int(pidfile.read_text())
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert (proc.returncode, err) == (255, "")
    with pytest.raises(ProcessLookupError):
        os.kill(login, 0)
