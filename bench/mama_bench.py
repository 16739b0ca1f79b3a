#!/usr/bin/env python3
"""Benchmark mama-ssh against plain ssh on a loopback sshd, in one run.

Scenarios: 20 concurrent clones of a small repository; 40 `git ls-remote` operations 8 at a time.
For each: failures, new authentications (sshd's `Accepted publickey` lines) and wall time, plain
ssh vs mama-ssh, and the ratio. Then mama-ssh's own per-invocation overhead with a warm cache:
the same multiplexed session run through mama-ssh and through ssh directly (median of 20).

    .venv/bin/python bench/mama_bench.py
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import servers  # noqa: E402


def sh(*args: str, **kw) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    return subprocess.run(args, check=True, capture_output=True, text=True, **kw)


def timed_batch(cmds: list[list[str]], env: dict[str, str], parallel: int) -> tuple[float, int]:
    def one(cmd: list[str]) -> int:
        return subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode

    start = time.monotonic()
    with ThreadPoolExecutor(parallel) as pool:
        codes = list(pool.map(one, cmds))
    return time.monotonic() - start, sum(1 for c in codes if c != 0)


def main() -> int:
    if not shutil.which("mama-ssh"):
        os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"]
    with tempfile.TemporaryDirectory(prefix="mama-bench-") as tmp:
        base = Path(tmp)
        gitconfig = base / "gitconfig"
        gitconfig.write_text("[user]\n\tname = B\n\temail = b@example.invalid\n[init]\n\tdefaultBranch = main\n[safe]\n\tdirectory = *\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "SSH_"))}
        env.update(GIT_CONFIG_GLOBAL=str(gitconfig), GIT_CONFIG_NOSYSTEM="1", HOME=str(base), GIT_SSH_VARIANT="ssh")
        os.environ.update(GIT_CONFIG_GLOBAL=str(gitconfig))
        sock = tempfile.mkdtemp(prefix="mb", dir="/tmp")
        rows = []
        with servers.sshd(base / "ssh", str(gitconfig)) as server:
            src = base / "src"
            sh("git", "init", "-q", str(src))
            for i in range(20):
                (src / f"f{i}").write_text(f"{i}\n" * 200)
            sh("git", "add", ".", cwd=src)
            sh("git", "commit", "-q", "-m", "x", cwd=src, env=env)
            sh("git", "clone", "-q", "--bare", str(src), str(base / "r.git"), env=env)
            url = f"ssh://{server.user}@127.0.0.1:{server.port}{base}/r.git"
            opts = server.ssh_command[len("ssh "):]
            plain = dict(env, GIT_SSH_COMMAND="ssh " + opts)
            mama = dict(env, GIT_SSH_COMMAND="mama-ssh " + opts, MAMA_SSH_STATE_DIR=str(base / "state"), MAMA_SSH_SOCKET_DIR=sock)
            scenarios = [
                ("20 concurrent clones", lambda tag: [["git", "clone", "-q", url, str(base / f"{tag}-c{i}")] for i in range(20)], 20),
                ("40 ls-remote, 8 at a time", lambda tag: [["git", "ls-remote", url] for _ in range(40)], 8),
            ]
            for name, make, parallel in scenarios:
                results = {}
                for tag, e in (("plain", plain), ("mama", mama)):
                    subprocess.run(["mama-ssh", "--cleanup"], env=mama, capture_output=True)
                    before = server.auth_count()
                    wall, failures = timed_batch(make(tag + name[:2]), e, parallel)
                    results[tag] = (wall, failures, server.auth_count() - before)
                (pw, pf, pa), (mw, mf, ma) = results["plain"], results["mama"]
                rows.append([name, f"{pw:.2f}", f"{mw:.2f}", f"{mw / pw:.2f}", f"{pa} / {ma}", f"{pf} / {mf}"])
            # overhead per invocation, warm cache and warm master: wrapper vs the same ssh client
            dest = f"{server.user}@127.0.0.1"
            mama_cmd = ["mama-ssh", *opts.split(), "-p", str(server.port), dest, "true"]
            subprocess.run(mama_cmd, env=mama, check=True)
            status = sh("mama-ssh", "--status", env=mama).stdout
            socket_path = status.split()[-1]
            direct_cmd = [
                "ssh",
                "-o",
                "ControlMaster=no",
                "-o",
                f"ControlPath={socket_path}",
                *opts.split(),
                "-p",
                str(server.port),
                dest,
                "true",
            ]

            def median_time(cmd: list[str], e: dict[str, str]) -> float:
                times = []
                for _ in range(20):
                    t = time.monotonic()
                    subprocess.run(cmd, env=e, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    times.append(time.monotonic() - t)
                return statistics.median(times)

            t_mama, t_direct = median_time(mama_cmd, mama), median_time(direct_cmd, env)
            subprocess.run(["mama-ssh", "--cleanup"], env=mama, capture_output=True)
        shutil.rmtree(sock, ignore_errors=True)
    print("\nloopback sshd (MaxSessions 10), OpenSSH client; auths = sshd 'Accepted publickey' lines\n")
    head = ["scenario", "plain ssh s", "mama-ssh s", "ratio", "auths plain / mama", "failures plain / mama"]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    for row in [head, ["-" * w for w in widths], *rows]:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) + " |")
    print(
        f"\nper-invocation overhead (warm cache, warm master): mama-ssh {t_mama * 1000:.0f} ms vs ssh {t_direct * 1000:.0f} ms "
        f"= +{(t_mama - t_direct) * 1000:.0f} ms"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
