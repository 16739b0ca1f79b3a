#!/usr/bin/env python3
"""A fleet: N small repositories plus git.git, from ssh sources to http targets, on loopback.

    .venv/bin/python bench/fleet_bench.py --source /path/to/git.git [--small 50] [--jobs 8] [--bin DIR]

In one run, into fresh targets each time:
* a shell loop of ``git clone --mirror`` + ``git push --mirror`` per pair (plain ssh);
* the same pairs one after another with ``git relay sync --tags`` (ssh through mama-ssh);
* ``git relay sync --manifest --jobs N`` (ssh through mama-ssh);
* the manifest again with nothing new: seconds per pair and pack bytes;
* two shards at once (``--shard 0/2`` and ``1/2``): every pair exactly once?
and the ssh authentications the fleet run cost (sshd's log) against the masters mama-ssh may
start. The sources are packed with bitmaps, as hosts keep them; the targets are behind lighttpd,
which (like nginx by default) takes a whole request body before the CGI starts. Nothing is
asserted: it prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
import servers  # noqa: E402


def sh(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    return subprocess.run(args, cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout


def settle() -> None:
    """Write out what came before, so that no row pays for another's disk writes (a target's
    index-pack fsyncs its pack, and that fsync also waits for every dirty page written before it)."""
    os.sync()
    time.sleep(1)


def small_repo(path: Path, i: int, env: dict[str, str]) -> None:
    sh("git", "init", "-q", str(path), env=env)
    for c in range(5):
        (path / f"f{c}.txt").write_text(f"repo {i} commit {c}\n" * 200)
        sh("git", "add", ".", cwd=path, env=env)
        sh("git", "commit", "-q", "-m", f"c{c}", cwd=path, env=env)
    sh("git", "tag", "v1", cwd=path, env=env)


def fresh_targets(root: Path, names: list[str], env: dict[str, str]) -> None:
    for name in names:
        target = root / f"dst-{name}.git"
        shutil.rmtree(target, ignore_errors=True)
        sh("git", "init", "-q", "--bare", str(target), env=env)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", required=True, help="a local clone of git.git")
    ap.add_argument("--small", type=int, default=50)
    ap.add_argument("--jobs", type=int, default=8)
    ap.add_argument("--bin", help="directory of the git-relay / mama-ssh to measure (an ./install.sh install)")
    args = ap.parse_args()
    for sig in (signal.SIGTERM, signal.SIGHUP):  # killed, it still removes its data (the finally below)
        signal.signal(sig, lambda *_: sys.exit(143))
    base = Path(tempfile.mkdtemp(prefix="relay-fleet-bench-"))
    gitconfig = base / "gitconfig"
    gitconfig.write_text("[user]\n\tname = b\n\temail = b@example.com\n[http]\n\treceivepack = true\n[safe]\n\tdirectory = *\n"
                         "[protocol]\n\tallow = always\n[init]\n\tdefaultBranch = main\n"
                         # as GitHub and GitLab serve: filters allowed, so git relay's LFS look runs (and costs)
                         "[uploadpack]\n\tallowFilter = true\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "SSH_", "MAMA_"))}
    env.update(GIT_CONFIG_GLOBAL=str(gitconfig), GIT_CONFIG_NOSYSTEM="1", HOME=str(base))
    if args.bin:
        env["PATH"] = f"{args.bin}:{env['PATH']}"
    os.environ.update(GIT_CONFIG_GLOBAL=str(gitconfig), HOME=str(base))
    root = base / "srv"
    root.mkdir()
    (base / "http").mkdir()
    (base / "ssh").mkdir()
    try:
        print("making the sources ...", file=sys.stderr)
        names = [f"small{i:02d}" for i in range(args.small)] + ["git"]
        for i, name in enumerate(names[:-1]):
            work = base / "work" / name
            small_repo(work, i, env)
            sh("git", "clone", "-q", "--bare", str(work), str(root / f"src-{name}.git"), env=env)
        source = root / "src-git.git"
        sh("git", "clone", "-q", "--bare", "--no-local", args.source, str(source), env=env)
        # as hosts keep their repositories: packed with a reachability bitmap, so that serving a
        # clone does not start with a walk of every object (4 s for git.git on 2 cores)
        sh("git", "repack", "-adbq", cwd=source, env=env)
        http = servers.http_server(root, base / "http", str(gitconfig), str(base))
        with servers.sshd(base / "ssh", str(gitconfig)) as sshd, http as port:
            opts = sshd.ssh_command[len("ssh "):]
            plain = dict(env, GIT_SSH_COMMAND="ssh " + opts)
            mama = dict(env, GIT_SSH_COMMAND="mama-ssh " + opts, MAMA_SSH_STATE_DIR=str(base / "mama-state"),
                        MAMA_SSH_SOCKET_DIR=str(base / "mama-sock"))
            src = {n: f"ssh://{sshd.user}@127.0.0.1:{sshd.port}{root}/src-{n}.git" for n in names}
            dst = {n: f"http://127.0.0.1:{port}/git/dst-{n}.git" for n in names}
            rows: list[tuple[str, str]] = []

            fresh_targets(root, names, env)
            settle()
            start = time.monotonic()
            for n in names:
                mirror = base / "mirror" / n
                shutil.rmtree(mirror, ignore_errors=True)
                sh("git", "clone", "-q", "--mirror", src[n], str(mirror), env=plain)
                sh("git", "push", "-q", "--mirror", dst[n], cwd=mirror, env=plain)
            loop = time.monotonic() - start
            rows.append(("shell loop: clone --mirror + push --mirror", f"{loop:.1f} s"))

            fresh_targets(root, names, env)
            settle()
            start = time.monotonic()
            took: dict[str, float] = {}
            for n in names:
                began = time.monotonic()
                sh("git", "relay", "sync", "-q", "--tags", src[n], dst[n], env=mama)
                took[n] = time.monotonic() - began
            sequential = time.monotonic() - start
            rows.append(("git relay sync, one pair after another", f"{sequential:.1f} s, of which the git.git pair {took['git']:.1f} s "
                         f"and each small pair {statistics.median(took[n] for n in names[:-1]):.2f} s (median)"))

            manifest = base / "fleet.toml"
            pairs = "".join(f'[[pair]]\nsource = "{src[n]}"\ntarget = "{dst[n]}"\n' for n in names)
            manifest.write_text("[defaults]\ntags = true\n" + pairs)
            fresh_targets(root, names, env)
            subprocess.run(["mama-ssh", "--cleanup"], env=mama, capture_output=True)
            auths = sshd.auth_count()
            settle()
            start = time.monotonic()
            out = sh("git", "relay", "sync", "--manifest", str(manifest), "--jobs", str(args.jobs), env=mama)
            fleet = time.monotonic() - start
            auths = sshd.auth_count() - auths
            summary = json.loads(out.splitlines()[-1])
            rows.append((f"git relay sync --manifest --jobs {args.jobs}", f"{fleet:.1f} s ({summary['ok']} of {summary['pairs']} ok); "
                         f"{fleet / loop:.2f}x the loop, {fleet / sequential:.2f}x one after another"))
            rows.append(("ssh authentications in the fleet run", f"{auths} (mama-ssh masters allowed per host: 4)"))

            start = time.monotonic()
            out = sh("git", "relay", "sync", "--manifest", str(manifest), "--jobs", str(args.jobs), env=mama)
            again = time.monotonic() - start
            moved = sum(json.loads(line).get("bytes") or 0 for line in out.splitlines()[:-1])
            rows.append(("second run, nothing new", f"{again:.1f} s, {again / len(names):.3f} s per pair, {moved} pack bytes"))

            fresh_targets(root, names, env)
            settle()
            start = time.monotonic()
            sh("git", "relay", "sync", "--manifest", str(manifest), "--jobs", str(args.jobs), env=mama)
            learned = time.monotonic() - start
            rows.append(("the manifest again into fresh targets (slowest pair first, learned)",
                         f"{learned:.1f} s; {learned / loop:.2f}x the loop, {learned / sequential:.2f}x one after another"))

            fresh_targets(root, names, env)
            procs = [subprocess.Popen(["git", "relay", "sync", "--manifest", str(manifest), "--jobs", str(args.jobs // 2),
                                       "--shard", f"{k}/2"], env=mama, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
                     for k in range(2)]
            seen: list[str] = []
            for p in procs:
                stdout, _ = p.communicate()
                seen += [json.loads(line)["name"] for line in stdout.splitlines() if '"summary"' not in line]
            exact = sorted(seen) == sorted(set(seen)) and len(seen) == len(names)
            rows.append(("two shards at once", f"{len(seen)} pairs relayed, each exactly once: {exact}"))
            subprocess.run(["mama-ssh", "--cleanup"], env=mama, capture_output=True)
        print(f"\n{args.small} small repositories + git.git, ssh sources -> http targets, {os.cpu_count()} CPUs\n")
        print("| scenario | result |\n|---|---|")
        for name, value in rows:
            print(f"| {name} | {value} |")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
