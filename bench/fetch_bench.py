#!/usr/bin/env python3
"""Fetch parity on a real repository (git.git): relay:: and native git side by side, one run.

    .venv/bin/python bench/fetch_bench.py --source /path/to/git.git [--transports file,git,http,ssh]

Scenarios (``--scenarios``, default all):

* ``reference``: ``git clone --bare --reference <local copy>`` over http: seconds and bytes stored.
* ``negotiate``: a branch of 1500 local commits on v2.30.0, with no ref the server knows,
  fetching master over http: size of the pack received.
* ``fsck``: ``fetch.fsckObjects`` with ``fetch.fsck.skipList`` naming a known-bad commit.
* ``trace``: ``GIT_TRACE_PACKET`` of a relay fetch shows the ``want`` lines.
* ``clone``: bare clone per transport: seconds, helper peak RSS, bytes.
* ``noop``: a fetch with nothing new: milliseconds added (median of 9).
* ``v0noop``: the same from git.git served by a protocol v0 upload-pack (dulwich's), over file
  and ssh, and by dulwich's smart HTTP server: one advertisement per fetch as natively, or two.
* ``resume``: a relay clone in steps of 100000 objects SIGKILLed after its first finished step,
  run again: what the second run received against a whole clone.

Servers are the tests' own (tests/servers.py) on loopback. Nothing is asserted: it prints a table.
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
from contextlib import ExitStack
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
import servers  # noqa: E402
from relay_bench import run_measured, sh  # noqa: E402

MiB = 1 << 20


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


class FetchBench:
    def __init__(self, base: Path, env: dict[str, str], args: argparse.Namespace, stack: ExitStack) -> None:
        self.base = base
        self.stack = stack
        self.env = env
        self.args = args
        self.root = base / "srv"
        self.root.mkdir()
        self.rows: list[list[str]] = []
        self.stats = base / "stats.jsonl"
        self.env["GIT_RELAY_STATS_FILE"] = str(self.stats)
        self.ports: dict[str, int] = {}
        self.ssh: servers.Sshd | None = None

    def url(self, transport: str, name: str) -> str:
        path = self.root / name
        if transport == "file":
            return f"file://{path}"
        if transport == "git":
            return f"git://127.0.0.1:{self.ports['git']}/{name}"
        if transport == "http":
            return f"http://127.0.0.1:{self.ports['http']}/git/{name}"
        assert self.ssh is not None
        return f"ssh://{self.ssh.user}@127.0.0.1:{self.ssh.port}{path}"

    def last_stats(self) -> dict:  # type: ignore[type-arg]
        return json.loads(self.stats.read_text().splitlines()[-1])

    def row(self, *cells: str) -> None:
        self.rows.append(list(cells))
        print("  " + " | ".join(cells), file=sys.stderr, flush=True)

    def fresh(self, name: str) -> Path:
        path = self.base / name
        shutil.rmtree(path, ignore_errors=True)
        return path

    # -- scenarios ------------------------------------------------------------------------------
    def reference(self) -> None:
        ref = self.root / "git.git"
        url = self.url("http", "git.git")
        out = {}
        for kind, u in (("native", url), ("relay", "relay::" + url)):
            dest = self.fresh(f"ref-{kind}")
            wall, _ = run_measured(["git", "clone", "-q", "--bare", "--reference", str(ref), u, str(dest)], env=self.env)
            out[kind] = (wall, du(dest / "objects"))
        (nw, nb), (rw, rb) = out["native"], out["relay"]
        self.row("clone --reference (http)", f"{nw:.2f} s, {nb / 1024:.0f} KiB", f"{rw:.2f} s, {rb / 1024:.0f} KiB",
                 f"+{rw - nw:.2f} s, +{(rb - nb) / 1024:.0f} KiB")

    def negotiate(self) -> None:
        work = self.fresh("neg-base")
        sh("git", "init", "-q", "--bare", str(work))
        sh("git", "fetch", "-q", "--no-tags", str(self.root / "git.git"), "refs/tags/v2.30.0:refs/tags/base", cwd=work, env=self.env)
        # 1500 local commits on v2.30.0 (fast-import: no worktree needed); no ref the server knows
        base = sh("git", "rev-parse", "refs/tags/base^{commit}", cwd=work).strip()
        sh("git", "update-ref", "-d", "refs/tags/base", cwd=work)
        stream = [f"reset refs/heads/local\nfrom {base}\n"]
        for i in range(1500):
            msg = f"local {i}"
            stream.append(f"commit refs/heads/local\nmark :{i + 1}\ncommitter B <b@b> {1600000000 + i} +0000\ndata {len(msg)}\n{msg}\n"
                          f"M 644 inline local.txt\ndata {len(str(i)) + 1}\n{i}\n\n")
        subprocess.run(["git", "fast-import", "--quiet"], cwd=work, env=self.env, input="".join(stream).encode(), check=True)
        url = self.url("http", "git.git")
        sizes = {}
        for kind, u in (("native", url), ("relay", "relay::" + url)):
            dest = self.fresh(f"neg-{kind}")
            shutil.copytree(work, dest, symlinks=True)
            before = {p.name for p in (dest / "objects" / "pack").glob("*.pack")}
            start = time.monotonic()
            sh("git", "-c", "fetch.unpackLimit=1", "fetch", "-q", "--no-tags", u, "master:refs/remotes/origin/master",
               cwd=dest, env=self.env)
            wall = time.monotonic() - start
            new = [p for p in (dest / "objects" / "pack").glob("*.pack") if p.name not in before]
            sizes[kind] = (sum(p.stat().st_size for p in new), wall)
        (nb, nw), (rb, rw) = sizes["native"], sizes["relay"]
        self.row("1500 local commits on v2.30.0, fetch master (http)", f"{nb / MiB:.1f} MiB, {nw:.1f} s",
                 f"{rb / MiB:.1f} MiB, {rw:.1f} s", f"{rb / nb:.3f}x bytes")

    def fsck(self) -> None:
        src = self.root / "bad.git"
        sh("git", "init", "-q", "--bare", str(src))
        tree = sh("git", "hash-object", "-t", "tree", "-w", "--stdin", cwd=src, env=self.env).strip()
        body = f"tree {tree}\nauthor Bugs Bunny 1234567890 +0000\ncommitter C <c@d> 1234567890 +0000\n\nbad\n"
        bad = subprocess.run(["git", "hash-object", "-t", "commit", "-w", "--literally", "--stdin"], cwd=src, env=self.env,
                             input=body.encode(), capture_output=True, check=True).stdout.decode().strip()
        sh("git", "update-ref", "refs/heads/main", bad, cwd=src)
        skip = self.base / "skiplist"
        skip.write_text(bad + "\n")
        results = []
        for u in (self.url("http", "bad.git"), "relay::" + self.url("http", "bad.git")):
            dest = self.fresh("fsck")
            sh("git", "init", "-q", str(dest))
            res = subprocess.run(["git", "-c", "fetch.fsckObjects=true", "-c", f"fetch.fsck.skipList={skip}", "fetch", u, "main:bad"],
                                 cwd=dest, env=self.env, capture_output=True, text=True)
            results.append("fetched" if res.returncode == 0 else "refused")
        self.row("fetch.fsck.skipList names a bad commit (http)", results[0], results[1], "same" if results[0] == results[1] else "DIFF")

    def trace(self) -> None:
        dest = self.fresh("trace")
        log = self.base / "packet.trace"
        env = dict(self.env, GIT_TRACE_PACKET=str(log))
        sh("git", "clone", "-q", "--bare", "relay::" + self.url("http", "small.git"), str(dest), env=env)
        wants = sum(1 for line in log.read_text().splitlines() if "clone> want " in line)
        self.row("GIT_TRACE_PACKET of a relay clone (http)", "-", f"{wants} 'clone> want' lines", "shown" if wants else "MISSING")

    def clone(self, transport: str) -> None:
        url = self.url(transport, "git.git")
        out = {}
        for kind, u in (("native", url), ("relay", "relay::" + url)):
            dest = self.fresh(f"clone-{kind}")
            wall, peak = run_measured(["git", "clone", "-q", "--bare", u, str(dest)], env=self.env)
            out[kind] = (wall, peak)
        st = self.last_stats()
        (nw, _), (rw, _) = out["native"], out["relay"]
        self.row(f"clone git.git ({transport})", f"{nw:.1f} s", f"{rw:.1f} s, helper RSS {st['peak_rss_helper'] / MiB:.0f} MiB, "
                 f"{st['bytes'] / MiB:.0f} MiB", f"{rw / nw:.3f}x")

    def noop(self, transport: str) -> None:
        url = self.url(transport, "small.git")
        times: dict[str, list[float]] = {"native": [], "relay": []}
        for kind, u in (("native", url), ("relay", "relay::" + url)):
            dest = self.fresh(f"noop-{kind}")
            sh("git", "clone", "-q", u, str(dest), env=self.env)
            for _ in range(9):
                start = time.monotonic()
                sh("git", "fetch", "-q", "origin", cwd=dest, env=self.env)
                times[kind].append(time.monotonic() - start)
        n, r = statistics.median(times["native"]), statistics.median(times["relay"])
        self.row(f"no-op fetch ({transport})", f"{n * 1000:.0f} ms", f"{r * 1000:.0f} ms", f"+{(r - n) * 1000:.0f} ms")

    def v0noop(self, transport: str) -> None:
        """A fetch with nothing new from git.git served by a protocol v0 upload-pack (dulwich's,
        as servers that never learnt v2 answer): what the helper adds to git's own cost."""
        if transport == "git":
            return  # git daemon runs git's own upload-pack
        dul = shutil.which("dul-upload-pack") or str(Path(sys.executable).parent / "dul-upload-pack")
        if transport == "http":  # dulwich's own smart HTTP server over the same repositories
            if "dulwich-http" not in self.ports:
                self.ports["dulwich-http"] = self.stack.enter_context(servers.dulwich_server("http", self.root, self.base))
            url = f"http://127.0.0.1:{self.ports['dulwich-http']}/git.git"
        else:
            url = self.url(transport, "git.git")
        times: dict[str, list[float]] = {"native": [], "relay": []}
        for kind, u in (("native", url), ("relay", "relay::" + url)):
            dest = self.fresh(f"v0-{kind}")
            sh("git", "clone", "-q", "--mirror", "--local", str(self.root / "git.git"), str(dest), env=self.env)
            sh("git", "remote", "set-url", "origin", u, cwd=dest, env=self.env)
            for _ in range(5):
                start = time.monotonic()
                sh("git", "-c", f"remote.origin.uploadpack={dul}", "fetch", "-q", "origin", cwd=dest, env=self.env)
                times[kind].append(time.monotonic() - start)
        n, r = statistics.median(times["native"]), statistics.median(times["relay"])
        self.row(f"no-op fetch, v0 server ({transport})", f"{n * 1000:.0f} ms", f"{r * 1000:.0f} ms", f"{r / n:.2f}x")

    def resume(self, transport: str) -> None:
        url = "relay::" + self.url(transport, "git.git")
        cache = self.base / "cache"
        env = dict(self.env, GIT_RELAY_CACHE_DIR=str(cache))
        dest = self.fresh("resume")
        steps = ["-c", "relay.fetchStepObjects=100000"]  # git.git is below the default threshold
        proc = subprocess.Popen(["git", *steps, "clone", "--bare", url, str(dest)], env=env, stderr=subprocess.PIPE,
                                stdout=subprocess.DEVNULL, text=True, start_new_session=True)
        assert proc.stderr is not None
        for line in proc.stderr:
            if "step 2/" in line:  # step 1 is finished and kept
                break
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        shutil.rmtree(dest, ignore_errors=True)
        kept = du(cache)
        start = time.monotonic()
        res = subprocess.run(["git", *steps, "clone", "--bare", url, str(dest)], env=env, capture_output=True, text=True, check=True)
        wall = time.monotonic() - start
        again = self.last_stats()["bytes"]
        whole = du(self.root / "git.git" / "objects" / "pack")
        said = [line for line in res.stderr.splitlines() if "resuming" in line]
        self.row(f"clone killed after step 1, run again ({transport})", f"whole pack {whole / MiB:.0f} MiB",
                 f"second run received {again / MiB:.0f} MiB in {wall:.0f} s ({kept / MiB:.0f} MiB kept)",
                 said[0].strip() if said else "NOT RESUMED")

    def print(self) -> None:
        head = ["scenario", "native", "relay", "relay vs native"]
        widths = [max(len(r[i]) for r in [head, *self.rows]) for i in range(len(head))]
        for row in [head, ["-" * w for w in widths], *self.rows]:
            print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) + " |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", required=True, help="a local clone of git.git (with master and v2.30.0)")
    ap.add_argument("--transports", default="file,git,http,ssh")
    ap.add_argument("--scenarios", default="reference,negotiate,fsck,trace,clone,noop,v0noop,resume")
    ap.add_argument("--bin", help="directory of the git-remote-relay to measure (an ./install.sh install)")
    args = ap.parse_args()
    if args.bin:
        os.environ["PATH"] = args.bin + os.pathsep + os.environ["PATH"]
    if not shutil.which("git-remote-relay"):
        os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"]
    scenarios = args.scenarios.split(",")
    transports = args.transports.split(",")
    with tempfile.TemporaryDirectory(prefix="relay-fetch-bench-") as tmp, ExitStack() as stack:
        base = Path(tmp)
        gitconfig = base / "gitconfig"
        gitconfig.write_text("[user]\n\tname = Bench\n\temail = bench@example.invalid\n[safe]\n\tdirectory = *\n"
                             "[uploadpack]\n\tallowFilter = true\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "SSH_"))}
        env.update(GIT_CONFIG_GLOBAL=str(gitconfig), GIT_CONFIG_NOSYSTEM="1", HOME=str(base))
        os.environ.update(GIT_CONFIG_GLOBAL=str(gitconfig), HOME=str(base))
        bench = FetchBench(base, env, args, stack)
        print("copying the source ...", file=sys.stderr)
        sh("git", "clone", "-q", "--bare", args.source, str(bench.root / "git.git"))
        sh("git", "clone", "-q", "--bare", "--depth", "3", f"file://{bench.root / 'git.git'}", str(bench.root / "small.git"))
        needs_http = {"reference", "negotiate", "fsck", "trace"} & set(scenarios) or "http" in transports
        if needs_http:
            bench.ports["http"] = stack.enter_context(servers.http_server(bench.root, base / "http", str(gitconfig), str(base)))
        if "git" in transports:
            bench.ports["git"] = stack.enter_context(servers.git_daemon(bench.root, base))
        if "ssh" in transports:
            bench.ssh = stack.enter_context(servers.sshd(base / "ssh", str(gitconfig)))
            env["GIT_SSH_COMMAND"] = bench.ssh.ssh_command
        for scenario in ("reference", "negotiate", "fsck", "trace"):
            if scenario in scenarios:
                getattr(bench, scenario)()
        for transport in transports:
            for scenario in ("clone", "noop", "v0noop"):
                if scenario in scenarios:
                    getattr(bench, scenario)(transport)
        if "resume" in scenarios:
            bench.resume("http" if "http" in transports else transports[0])
        print(f"\ngit {sh('git', '--version').split()[-1]}, {os.cpu_count()} CPUs, source {args.source}\n")
        bench.print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
