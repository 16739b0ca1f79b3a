#!/usr/bin/env python3
"""``git relay sync`` of a Git LFS repository vs the native way to mirror one, in one run.

    .venv/bin/python bench/lfs_bench.py [--mb 200] [--files 40] [--bin DIR]

Two hosts on loopback, each lighttpd in front of ``git http-backend`` and giftless (a real LFS
server), as tests/servers.py starts them. The source holds a repository whose ``*.bin`` files
(incompressible, ``--mb`` in all over ``--files`` files) are in LFS. Measured:

* native: ``git clone --mirror``, ``git lfs fetch --all``, ``git push --mirror``,
  ``git lfs push --all``, one after another, into a fresh target;
* relay: ``git relay sync`` into another fresh target (wall time, peak RSS of the relay
  process, LFS bytes it copied);
* the floor: native's ``git lfs push --all`` step alone, the time the target takes to ingest
  the objects (relay downloads and uploads at once, so it cannot finish before that);
* the check: a native ``git clone`` of the relay's target plus ``git lfs pull`` gets every file;
* a second sync (LFS bytes moved: 0 expected);
* a sync killed when about half of the objects are at a third target, then run again: what the
  second run copies.

giftless's own local storage sends an object in writes of ~256 bytes (see tests/lfs_server.py);
the test server sends 1 MiB blocks, as object stores do, for native git-lfs and relay alike.
On a 2-core machine both giftless servers, both web servers and the client share the CPU, so
the overlap of download and upload that relay buys is partly eaten by that contention; runs
vary by ±20 %, hence the medians. Nothing is asserted: it prints a table.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
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
sys.path.insert(0, str(HERE))
import servers  # noqa: E402
from wanlink import WanLink  # noqa: E402

MiB = 1 << 20


def run(args: list[str], env: dict[str, str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def bare(host: servers.LfsHost, name: str, env: dict[str, str]) -> str:
    path = host.root / f"{name}.git"
    run(["git", "init", "-q", "--bare", str(path)], env)
    run(["git", "symbolic-ref", "HEAD", "refs/heads/main"], env, cwd=path)
    return host.url(name)


def settle() -> None:
    """Write out what came before, so that no row pays for another's disk writes (git's index-pack
    fsyncs its pack, and on a journaled file system that waits for every dirty page before it)."""
    os.sync()
    time.sleep(1)


def relay_sync(source: str, target: str, env: dict[str, str]) -> tuple[float, int, dict[str, object]]:
    """Run ``git relay sync --json``: (seconds, the relay process's own peak RSS, its record)."""
    started = time.monotonic()
    proc = subprocess.Popen(["git-relay", "sync", "--json", source, target], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"git relay sync failed ({proc.returncode}):\n{err.decode()}")
    record = json.loads(out)
    return time.monotonic() - started, int(record["peak_rss"]), record


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=int, default=200, help="LFS content in all, MiB")
    ap.add_argument("--files", type=int, default=40)
    ap.add_argument("--repeat", type=int, default=3, help="runs of each (the table shows the medians)")
    ap.add_argument("--wan-mbit", type=float, default=0.0,
                    help="reach each host through bench/wanlink.py at this many Mbit/s per connection (0: loopback as it is)")
    ap.add_argument("--rtt-ms", type=float, default=40.0, help="with --wan-mbit: the link's round trip")
    ap.add_argument("--bin", help="directory with git-relay / git-remote-relay (default: next to this Python)")
    args = ap.parse_args()
    for sig in (signal.SIGTERM, signal.SIGHUP):  # killed, it still removes its data (the finally below)
        signal.signal(sig, lambda *_: sys.exit(143))
    bindir = args.bin or str(Path(sys.executable).parent)
    base = Path(tempfile.mkdtemp(prefix="lfs-bench-"))
    home = base / "home"
    home.mkdir()
    config = base / "gitconfig"
    config.write_text("[user]\n\tname = Bench\n\temail = bench@example.invalid\n[init]\n\tdefaultBranch = main\n"
                      "[http]\n\treceivepack = true\n[safe]\n\tdirectory = *\n[uploadpack]\n\tallowFilter = true\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "SSH_"))}
    env.update(HOME=str(home), GIT_CONFIG_GLOBAL=str(config), GIT_CONFIG_NOSYSTEM="1", GIT_TERMINAL_PROMPT="0",
               PATH=bindir + os.pathsep + env.get("PATH", "/usr/bin:/bin"), LC_ALL="C")
    run(["git", "lfs", "install", "--skip-repo"], env)
    try:
        with contextlib.ExitStack() as stack:
            src = stack.enter_context(servers.lfs_host(base / "src" / "srv", base / "src", str(config), str(home)))
            dst = stack.enter_context(servers.lfs_host(base / "dst" / "srv", base / "dst", str(config), str(home)))
            if args.wan_mbit:  # every request to a host, LFS transfers included, crosses the link
                src = dataclasses.replace(src, port=stack.enter_context(WanLink(src.port, args.rtt_ms, args.wan_mbit)).port)
                dst = dataclasses.replace(dst, port=stack.enter_context(WanLink(dst.port, args.rtt_ms, args.wan_mbit)).port)
                print(f"each host behind a link of {args.wan_mbit:g} Mbit/s per connection, RTT {args.rtt_ms:g} ms", flush=True)
            source = bare(src, "big", env)
            work = base / "work"
            run(["git", "init", "-q", str(work)], env)
            run(["git", "lfs", "track", "*.bin"], env, cwd=work)
            each = args.mb * MiB // args.files
            digests = {}
            for i in range(args.files):
                data = os.urandom(each)
                (work / f"f{i:03}.bin").write_bytes(data)
                digests[f"f{i:03}.bin"] = hashlib.sha256(data).hexdigest()
                if i % 10 == 9 or i == args.files - 1:  # a few commits, as a history has
                    run(["git", "add", "."], env, cwd=work)
                    run(["git", "commit", "-q", "-m", f"files up to {i}"], env, cwd=work)
            run(["git", "push", "-q", source, "main"], env, cwd=work)
            total = sum(src.stored("big").values())
            print(f"source: {args.files} LFS files, {total / MiB:.0f} MiB of LFS objects", flush=True)

            natives, relays, uploads = [], [], []  # uploads: native's `git lfs push --all` alone
            for r in range(args.repeat):
                # native: mirror clone, LFS fetch, mirror push, LFS push, into a fresh target
                native_target = bare(dst, f"native{r}", env)
                mirror = base / f"mirror{r}.git"
                settle()
                started = time.monotonic()
                run(["git", "clone", "-q", "--mirror", source, str(mirror)], env)
                run(["git", "lfs", "fetch", "--all", "origin"], env, cwd=mirror)
                run(["git", "remote", "add", "target", native_target], env, cwd=mirror)
                run(["git", "push", "-q", "--mirror", "target"], env, cwd=mirror)
                pushing = time.monotonic()
                run(["git", "lfs", "push", "--all", "target"], env, cwd=mirror)
                natives.append(time.monotonic() - started)
                uploads.append(time.monotonic() - pushing)
                shutil.rmtree(mirror)
                assert sum(dst.stored(f"native{r}").values()) == total, "the native mirror did not copy every LFS object"
                # relay, into another fresh target
                relayed_target = bare(dst, f"relayed{r}", env)
                settle()
                seconds, rss, record = relay_sync(source, relayed_target, env)
                relays.append(seconds)
                print(f"run {r + 1}: native {natives[-1]:.2f} s, relay {seconds:.2f} s ({seconds / natives[-1]:.2f}x)", flush=True)
            native, seconds = statistics.median(natives), statistics.median(relays)
            lfs = record["lfs"]
            assert isinstance(lfs, dict)

            # the check: a native clone of the relay's target gets every file
            check = base / "check"
            run(["git", "clone", "-q", relayed_target, str(check)], env)
            run(["git", "lfs", "pull"], env, cwd=check)
            good = sum(1 for name, digest in digests.items() if hashlib.sha256((check / name).read_bytes()).hexdigest() == digest)

            again_s, _, again = relay_sync(source, relayed_target, env)
            again_lfs = again["lfs"] or {}

            # killed when about half is there, then run again
            killed_target = bare(dst, "killed", env)
            proc = subprocess.Popen(["git-relay", "sync", "-q", source, killed_target], env=env, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            while proc.poll() is None and sum(dst.stored("killed").values()) < total // 2:
                time.sleep(0.02)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            there = sum(v for v in dst.stored("killed").values())
            resumed_s, _, resumed = relay_sync(source, killed_target, env)
            resumed_lfs = resumed["lfs"] or {}
            complete = sum(dst.stored("killed").values()) == total

            print(f"\n{'scenario (median of ' + str(args.repeat) + ')':<44} {'seconds':>8} {'ratio':>7}")
            print(f"{'native: clone --mirror, lfs fetch --all,':<44}")
            print(f"{'        push --mirror, lfs push --all':<44} {native:>8.2f} {1.0:>7.2f}")
            print(f"{'relay: git relay sync':<44} {seconds:>8.2f} {seconds / native:>7.2f}")
            upload = statistics.median(uploads)
            print(f"{'  the floor: native lfs push --all alone':<44} {upload:>8.2f} {upload / native:>7.2f}")
            print("  (every byte has to reach the target, so no copy beats the target's own ingest;\n"
                  "   relay's wall time is that plus the look, the batch requests and the pack)")
            print(f"\nrelay copied {lfs['copied']} LFS objects, {lfs['copied_bytes'] / MiB:.1f} MiB; "
                  f"peak RSS of git relay: {rss / MiB:.1f} MiB")
            print(f"native clone + git lfs pull of the relay's target: {good}/{len(digests)} files with their content")
            print(f"second sync: {again_s:.2f} s, {again_lfs.get('copied_bytes', 0)} LFS bytes, {again['bytes']} pack bytes")
            print(f"killed sync: {there / MiB:.1f} of {total / MiB:.1f} MiB at the target when killed; the re-run copied "
                  f"{resumed_lfs.get('copied', 0)} objects ({resumed_lfs.get('copied_bytes', 0) / MiB:.1f} MiB) in {resumed_s:.2f} s; "
                  f"target complete: {complete}")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
