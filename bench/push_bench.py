#!/usr/bin/env python3
"""Push parity on a real repository (git.git): relay:: and native git side by side, one run.

    .venv/bin/python bench/push_bench.py --source /path/to/git.git [--bin DIR]

Scenario ``initial``: git.git's master pushed into an empty target over file, git://, http and
ssh, native and relay in turn: seconds and the ratio.

Scenario ``negotiate``: the target's only branch, master, has moved one commit past what we have
(so none of its tips is ours), and we push a 3-commit branch made on our master. Pushed over
git:// through a counting loopback proxy, which measures every byte the client sends upstream
(the negotiation's request included): native and relay with ``push.negotiate=true``, and both
without it (native git then sends the whole history; relay negotiates on its own).

Servers are the tests' own (tests/servers.py) on loopback. Nothing is asserted: it prints a table.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
import servers  # noqa: E402

KiB = 1 << 10


def sh(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    return subprocess.run(args, cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout.strip()


def commit_on(repo: Path, parent: str, message: str, env: dict[str, str]) -> str:
    tree = sh("git", "rev-parse", f"{parent}^{{tree}}", cwd=repo, env=env)
    return sh("git", "commit-tree", tree, "-p", parent, "-m", message, cwd=repo, env=env)


def initial(local: Path, root: Path, base: Path, env: dict[str, str], transports: list[str]) -> None:
    """git.git's master into an empty target, per transport: native, then relay."""
    from contextlib import ExitStack

    rows = []
    (base / "http").mkdir(exist_ok=True)
    (base / "ssh").mkdir(exist_ok=True)
    with ExitStack() as stack:
        urls: dict[str, str] = {}
        if "git" in transports:
            urls["git"] = f"git://127.0.0.1:{stack.enter_context(servers.git_daemon(root, base))}/"
        if "http" in transports:
            port = stack.enter_context(servers.http_server(root, base / "http", env["GIT_CONFIG_GLOBAL"], env["HOME"]))
            urls["http"] = f"http://127.0.0.1:{port}/git/"
        if "ssh" in transports:
            sshd = stack.enter_context(servers.sshd(base / "ssh", env["GIT_CONFIG_GLOBAL"]))
            env = dict(env, GIT_SSH_COMMAND=sshd.ssh_command)
            urls["ssh"] = f"ssh://{sshd.user}@127.0.0.1:{sshd.port}{root}/"
        if "file" in transports:
            urls["file"] = f"file://{root}/"
        for transport in transports:
            times = {}
            for kind in ("native", "relay"):
                name = f"initial-{transport}-{kind}.git"
                sh("git", "init", "-q", "--bare", str(root / name), env=env)
                url = ("relay::" if kind == "relay" else "") + urls[transport] + name
                os.sync()  # no row pays for the disk writes of the one before (the target's fsync waits for them)
                time.sleep(1)
                start = time.monotonic()
                sh("git", "push", "-q", url, "master", cwd=local, env=env)
                times[kind] = time.monotonic() - start
                shutil.rmtree(root / name)
            rows.append((transport, times["native"], times["relay"]))
    print("\n| initial push of git.git master | native | relay | relay vs native |\n|---|---|---|---|")
    for transport, n, r in rows:
        print(f"| {transport} | {n:.1f} s | {r:.1f} s | {r / n:.3f}x |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", required=True, help="a local clone of git.git (with master)")
    ap.add_argument("--bin", help="directory of the git-remote-relay to measure (an ./install.sh install)")
    ap.add_argument("--scenarios", default="initial,negotiate")
    ap.add_argument("--transports", default="file,git,http,ssh", help="for the initial push")
    args = ap.parse_args()
    for sig in (signal.SIGTERM, signal.SIGHUP):  # killed, it still removes its data (the finally below)
        signal.signal(sig, lambda *_: sys.exit(143))
    base = Path(tempfile.mkdtemp(prefix="relay-push-bench-"))
    env = dict(os.environ, GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL=str(base / "gitconfig"), HOME=str(base),
               GIT_AUTHOR_NAME="b", GIT_AUTHOR_EMAIL="b@example.com", GIT_COMMITTER_NAME="b", GIT_COMMITTER_EMAIL="b@example.com")
    if args.bin:
        env["PATH"] = f"{args.bin}:{env['PATH']}"
    (base / "gitconfig").write_text("[protocol]\n\tallow = always\n[http]\n\treceivepack = true\n[safe]\n\tdirectory = *\n")
    try:
        root = base / "srv"
        root.mkdir()
        local = base / "local.git"
        print("copying the source ...", file=sys.stderr)
        sh("git", "clone", "-q", "--bare", "--single-branch", "--no-tags", "-b", "master", args.source, str(local), env=env)
        ours = sh("git", "rev-parse", "master~1", cwd=local, env=env)
        sh("git", "update-ref", "refs/heads/master", ours, cwd=local, env=env)
        theirs_base = base / "theirs.git"  # the target: master one commit past ours, a commit we never had
        sh("git", "clone", "-q", "--bare", str(local), str(theirs_base), env=env)
        theirs = commit_on(theirs_base, ours, "theirs", env)
        sh("git", "update-ref", "refs/heads/master", theirs, cwd=theirs_base, env=env)
        sh("git", "repack", "-adq", cwd=theirs_base, env=env)
        # our branch: 3 commits on our master (each with a new file)
        tip = ours
        for i in range(3):
            blob = subprocess.run(["git", "hash-object", "-w", "--stdin"], cwd=local, env=env, input=f"feature {i}\n", check=True,
                                  capture_output=True, text=True).stdout.strip()
            listing = sh("git", "ls-tree", tip, cwd=local, env=env) + f"\n100644 blob {blob}\tfeature{i}.txt\n"
            tree = subprocess.run(["git", "mktree"], cwd=local, env=env, check=True, capture_output=True, text=True,
                                  input=listing).stdout.strip()
            tip = sh("git", "commit-tree", tree, "-p", tip, "-m", f"feature {i}", cwd=local, env=env)
        sh("git", "update-ref", "refs/heads/feature", tip, cwd=local, env=env)
        if "initial" in args.scenarios:
            initial(local, root, base, env, args.transports.split(","))
        if "negotiate" not in args.scenarios:
            return
        rows = []
        with servers.git_daemon(root, base) as port, servers.tcp_proxy(port) as proxy:
            for name, settings, relay in (("native, push.negotiate", ["-c", "push.negotiate=true"], False),
                                          ("relay, push.negotiate", ["-c", "push.negotiate=true"], True),
                                          ("native, not asked", [], False),
                                          ("relay, not asked", [], True)):
                target = root / "target.git"
                shutil.rmtree(target, ignore_errors=True)
                shutil.copytree(theirs_base, target)
                url = f"git://127.0.0.1:{proxy.port}/target.git"
                before = proxy.up_bytes
                start = time.monotonic()
                sh("git", *settings, "push", "-q", ("relay::" if relay else "") + url, "feature", cwd=local, env=env)
                wall = time.monotonic() - start
                sent = proxy.up_bytes - before
                assert sh("git", "rev-parse", "feature", cwd=target, env=env) == tip
                rows.append((name, sent, wall))
        native = rows[0][1]
        print(f"\ngit {sh('git', 'version').split()[-1]}, {os.cpu_count()} CPUs, source {args.source}\n")
        print("| 3-commit branch, target moved ahead (git://) | bytes sent upstream | seconds | vs native push.negotiate |")
        print("|---|---|---|---|")
        for name, sent, wall in rows:
            print(f"| {name} | {sent / KiB:,.1f} KiB | {wall:.2f} s | {sent / native:.2f}x |")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
