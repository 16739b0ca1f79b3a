#!/usr/bin/env python3
"""mama-ssh against plain ssh over an emulated WAN link, with sshd's default limits.

A loopback sshd with its defaults (MaxStartups 10:30:100, MaxSessions 10) behind bench/wanlink.py
(default 40 ms RTT, 50 Mbit/s per connection). Scenario: 40 git operations started at once,
20 `git ls-remote` and 20 clones of a small repository. For plain ssh and for mama-ssh (cold:
no master running): failed operations, authentications (sshd's "Accepted publickey" lines) and
wall time; then mama-ssh again with its masters still up (warm). Prints the table and the targets
(0 failures, at most ceil(ops / sessions per master) + 1 authentications, wall at most 0.6x plain).

    .venv/bin/python bench/mama_wan_bench.py [--rtt-ms 40] [--mbit 50] [--runs 3] [--bin DIR] [--dir DIR]
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import servers  # noqa: E402
from wanlink import WanLink  # noqa: E402

SESSIONS_PER_MASTER = 10  # mama-ssh's default (MAMA_SSH_MAX_SESSIONS)


def sh(*args: str, **kw) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    return subprocess.run(args, check=True, capture_output=True, text=True, **kw)


def batch(url: str, env: dict[str, str], base: Path, tag: str, n_ls: int, n_clone: int) -> tuple[float, int, list[str]]:
    """Start every operation at once; (wall seconds, failures, first error lines)."""
    start = time.monotonic()
    procs = [subprocess.Popen(["git", "ls-remote", url], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for _ in range(n_ls)]
    procs += [subprocess.Popen(["git", "clone", "-q", url, str(base / f"{tag}-{i}")], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE) for i in range(n_clone)]
    errors = []
    for p in procs:
        _, err = p.communicate(timeout=300)
        if p.returncode:
            errors.append(err.decode(errors="replace").strip().splitlines()[-1:][0] if err.strip() else f"exit {p.returncode}")
    return time.monotonic() - start, len(errors), errors[:3]


def ssh_version() -> str:
    """ssh's version: it decides what a login costs (OpenSSH 9.0-9.9 default to sntrup761x25519, about
    50 ms of client CPU per login here; curve25519 alone is about 8 ms)."""
    done = subprocess.run(["ssh", "-V"], capture_output=True, text=True)
    return (done.stderr or done.stdout).strip().split(",")[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rtt-ms", type=float, default=40.0)
    ap.add_argument("--mbit", type=float, default=50.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--ls-remote", type=int, default=20)
    ap.add_argument("--clones", type=int, default=20)
    ap.add_argument("--bin", type=Path, help="the directory with mama-ssh (an ./install.sh install starts faster than the editable .venv)")
    ap.add_argument("--ssh-option", "-o", action="append", default=[], metavar="OPTION",
                    help="an ssh -o option for plain ssh and mama-ssh alike, e.g. KexAlgorithms=curve25519-sha256 "
                         "(close to a login's cost with OpenSSH 10's default ML-KEM exchange); repeatable")
    ap.add_argument("--dir", type=Path, default=Path("/dev/shm") if os.access("/dev/shm", os.W_OK) else None,
                    help="where the repositories, clones and state go (default: /dev/shm, a tmpfs, when there is one)")
    a = ap.parse_args()
    ops = a.ls_remote + a.clones
    if a.bin:
        os.environ["PATH"] = str(a.bin.resolve()) + os.pathsep + os.environ["PATH"]
    elif not shutil.which("mama-ssh"):
        os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"]
    # On a tmpfs by default: on ext4, each file a batch creates first skips every inode freed in
    # the last seconds (perf: recently_deleted, find_inode_bit), so a clean-up before a run (a
    # previous run's, the test suite's) cost the 20 clones up to a second of CPU and made the
    # walls depend on what happened before, not on ssh.
    with tempfile.TemporaryDirectory(prefix="mama-wan-", dir=a.dir) as tmp:
        base = Path(tmp)
        gitconfig = base / "gitconfig"
        gitconfig.write_text("[user]\n\tname = B\n\temail = b@example.invalid\n[init]\n\tdefaultBranch = main\n[safe]\n\tdirectory = *\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "SSH_", "MAMA_SSH_"))}
        env.update(GIT_CONFIG_GLOBAL=str(gitconfig), GIT_CONFIG_NOSYSTEM="1", HOME=str(base), GIT_SSH_VARIANT="ssh")
        src = base / "src"
        sh("git", "init", "-q", str(src), env=env)
        for i in range(20):
            (src / f"f{i}").write_text(f"{i}\n" * 200)
        sh("git", "add", ".", cwd=src, env=env)
        sh("git", "commit", "-q", "-m", "x", cwd=src, env=env)
        sh("git", "clone", "-q", "--bare", str(src), str(base / "r.git"), env=env)
        results: dict[str, list[tuple[float, int, int, list[str]]]] = {"plain": [], "mama cold": [], "mama warm": []}
        with servers.sshd(base / "ssh", str(gitconfig), max_startups="10:30:100") as server, \
                WanLink(server.port, rtt_ms=a.rtt_ms, mbit=a.mbit) as link:
            keytype, key = (base / "ssh" / "host_key.pub").read_text().split(" ", 2)[:2]
            with server.known_hosts.open("a") as fh:
                fh.write(f"[127.0.0.1]:{link.port} {keytype} {key}\n")
            url = f"ssh://{server.user}@127.0.0.1:{link.port}{base}/r.git"
            opts = server.ssh_command[len("ssh "):] + "".join(f" -o {o}" for o in a.ssh_option)
            plain = dict(env, GIT_SSH_COMMAND="ssh " + opts)
            for run in range(a.runs):
                sock = tempfile.mkdtemp(prefix="mw", dir="/tmp")
                mama = dict(env, GIT_SSH_COMMAND="mama-ssh " + opts, MAMA_SSH_STATE_DIR=str(base / f"state{run}"), MAMA_SSH_SOCKET_DIR=sock)
                for label, e in (("plain", plain), ("mama cold", mama), ("mama warm", mama)):
                    time.sleep(1.0)  # let sshd count the last batch's connections out
                    before = server.auth_count()
                    wall, failed, errors = batch(url, e, base, f"{label[:6].strip()}{run}", a.ls_remote, a.clones)
                    results[label].append((wall, failed, server.auth_count() - before, errors))
                    # The clones stay until the end: deleting a thousand files just before the next
                    # batch makes ext4 skip their recently freed inodes in every file that batch
                    # creates (seen in perf as recently_deleted), which taxes whichever batch is next.
                subprocess.run(["mama-ssh", "--cleanup"], env=mama, capture_output=True)
                shutil.rmtree(sock, ignore_errors=True)
    print(f"\n{ops} operations at once ({a.ls_remote} ls-remote + {a.clones} clones) over a {a.rtt_ms:g} ms RTT, "
          f"{a.mbit:g} Mbit/s link; sshd defaults (MaxStartups 10:30:100, MaxSessions 10); {a.runs} runs, median wall; "
          f"{os.cpu_count()} cores; {ssh_version()}{''.join(f' -o {o}' for o in a.ssh_option)}; "
          f"files in {a.dir or tempfile.gettempdir()}\n")
    print("| | wall s (median) | wall / plain | failures (per run) | authentications (per run) |")
    print("|---|---|---|---|---|")
    plain_wall = statistics.median(r[0] for r in results["plain"])
    for label, rows in results.items():
        wall = statistics.median(r[0] for r in rows)
        print(f"| {label} | {wall:.2f} | {wall / plain_wall:.2f} | {', '.join(str(r[1]) for r in rows)} | "
              f"{', '.join(str(r[2]) for r in rows)} |")
    for label, rows in results.items():
        for r in rows:
            for err in r[3]:
                print(f"  {label}: {err}")
    cold = results["mama cold"]
    limit = math.ceil(ops / SESSIONS_PER_MASTER) + 1
    ok_fail = all(r[1] == 0 for r in cold + results["mama warm"])
    ok_auth = all(r[2] <= limit for r in cold)
    ratio = statistics.median(r[0] for r in cold) / plain_wall
    print(f"\ntargets (mama-ssh cold): 0 failures: {'met' if ok_fail else 'NOT met'}; at most {limit} authentications: "
          f"{'met' if ok_auth else 'NOT met'}; wall at most 0.6x plain: {ratio:.2f}x, {'met' if ratio <= 0.6 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
