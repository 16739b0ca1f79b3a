#!/usr/bin/env python3
"""Benchmark `git relay sync` (bootstrap) against `git clone --mirror` + `git push --mirror`.

Same generated source, same empty targets, one run. Prints wall time (median of --runs), the
ratio, the relay process's own peak RSS (from its --json record), the peak RSS of each whole
process tree (sampled from /proc), and the peak local disk used (sampled under the work directory,
which is also TMPDIR for the commands).

    .venv/bin/python bench/sync_bench.py --size-mb 200 --pairs git:http,file:file
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
import servers  # noqa: E402
from relay_bench import MiB, _descendants, _rss, make_repo, sh  # noqa: E402


def du(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def measured(cmds: list[list[str]], env: dict[str, str], workdir: Path) -> tuple[float, int, int, str]:
    """Run commands in sequence; (wall, peak tree RSS, peak disk under workdir, last stdout)."""
    peak_rss = peak_disk = 0
    out = ""
    start = time.monotonic()
    for cmd in cmds:
        proc = subprocess.Popen(cmd, env=env, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        done = threading.Event()

        def sample(pid: int = proc.pid, done: threading.Event = done) -> None:
            nonlocal peak_rss, peak_disk
            while not done.is_set():
                peak_rss = max(peak_rss, sum(_rss(p) for p in _descendants(pid)))
                peak_disk = max(peak_disk, du(workdir))
                done.wait(0.05)

        t = threading.Thread(target=sample, daemon=True)
        t.start()
        out, err = proc.communicate()
        done.set()
        t.join()
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed: {err[-800:]}")
    return time.monotonic() - start, peak_rss, peak_disk, out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mb", type=int, default=50)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--pairs", default="git:http,file:file", help="source:target transports (file, git, http)")
    args = ap.parse_args()
    if not shutil.which("git-relay"):
        os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"]
    pairs = [tuple(p.split(":")) for p in args.pairs.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="sync-bench-") as tmp, ExitStack() as stack:
        base = Path(tmp)
        root = base / "srv"
        root.mkdir()
        gitconfig = base / "gitconfig"
        gitconfig.write_text("[user]\n\tname = B\n\temail = b@example.invalid\n[init]\n\tdefaultBranch = main\n"
                             "[http]\n\treceivepack = true\n[uploadpack]\n\tallowFilter = true\n[safe]\n\tdirectory = *\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "SSH_"))}
        env.update(GIT_CONFIG_GLOBAL=str(gitconfig), GIT_CONFIG_NOSYSTEM="1", HOME=str(base))
        os.environ.update(GIT_CONFIG_GLOBAL=str(gitconfig))
        kinds = {k for pair in pairs for k in pair}
        ports = {}
        if "git" in kinds:
            ports["git"] = stack.enter_context(servers.git_daemon(root, base))
        if "http" in kinds:
            ports["http"] = stack.enter_context(servers.http_server(root, base / "http", str(gitconfig), str(base)))

        def url(kind: str, name: str) -> str:
            return {"file": f"file://{root / name}", "git": f"git://127.0.0.1:{ports.get('git')}/{name}",
                    "http": f"http://127.0.0.1:{ports.get('http')}/git/{name}"}[kind]

        print(f"generating a {args.size_mb} MB repository ...", file=sys.stderr)
        work = base / "gen"
        make_repo(work, args.size_mb)
        sh("git", "clone", "-q", "--bare", str(work), str(root / "source.git"))
        pack = sum(p.stat().st_size for p in (root / "source.git" / "objects" / "pack").glob("*.pack"))
        counter = iter(range(10_000))
        for skind, tkind in pairs:
            results: dict[str, list[tuple[float, int, int, int]]] = {"native": [], "relay": []}
            for _ in range(args.runs):
                for how in ("native", "relay"):
                    name = f"t{next(counter)}.git"
                    sh("git", "init", "-q", "--bare", str(root / name))
                    wd = base / f"wd-{how}"
                    shutil.rmtree(wd, ignore_errors=True)
                    wd.mkdir()
                    e = dict(env, TMPDIR=str(wd))
                    if how == "native":
                        cmds = [["git", "clone", "-q", "--mirror", url(skind, "source.git"), "m.git"],
                                ["git", "-C", "m.git", "push", "-q", "--mirror", url(tkind, name)]]
                        wall, rss, disk, _ = measured(cmds, e, wd)
                        results[how].append((wall, rss, disk, 0))
                    else:
                        wall, rss, disk, out = measured(
                            [["git", "relay", "sync", "-q", "--tags", "--json", url(skind, "source.git"), url(tkind, name)]], e, wd
                        )
                        own = json.loads(out)["peak_rss"]
                        results[how].append((wall, rss, disk, own))
            nat, rel = results["native"], results["relay"]
            nw, rw = statistics.median(r[0] for r in nat), statistics.median(r[0] for r in rel)
            rows.append(
                [
                    f"{skind} -> {tkind}",
                    f"{nw:.2f}",
                    f"{rw:.2f}",
                    f"{rw / nw:.2f}",
                    f"{max(r[3] for r in rel) / MiB:.1f}",
                    f"{max(r[1] for r in nat) / MiB:.0f} / {max(r[1] for r in rel) / MiB:.0f}",
                    f"{max(r[2] for r in nat) / MiB:.1f} / {max(r[2] for r in rel) / MiB:.1f}",
                ]
            )
    print(f"\nbootstrap of a {pack / MiB:.1f} MiB pack, median of {args.runs}, {os.cpu_count()} CPUs\n")
    head = [
        "source -> target",
        "mirror clone+push s",
        "git relay sync s",
        "ratio",
        "relay RSS MiB",
        "tree RSS MiB native/relay",
        "local disk MiB native/relay",
    ]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    for row in [head, ["-" * w for w in widths], *rows]:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
