#!/usr/bin/env python3
"""Benchmark relay:: against native git on the same generated data in the same run.

For each transport it times (median of --runs) a bare clone and an initial push into an empty
target through relay:: and natively, and reports the ratio, the helper's own peak RSS (from its
stats record), the peak RSS of the whole process tree (sampled from /proc), and bytes sent. It
also measures the second-branch push (bytes, relay vs native), a split push against a target
with receive.maxInputSize vs native's unlimited push, and (``noop``) the latency the helper adds
to a fetch and a push that find nothing to do.

    .venv/bin/python bench/relay_bench.py --size-mb 200 --transports file,git,http,ssh

Servers are started on loopback by tests/servers.py and stopped at the end. Nothing here asserts
a time: it prints a table.
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
sys.path.insert(0, str(HERE.parent / "tests"))
import servers  # noqa: E402  (the same loopback servers the tests use)

MiB = 1 << 20


def sh(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    return subprocess.run(args, cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(entry))
        except (OSError, IndexError, ValueError):
            continue
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += children.get(pid, [])
    return out


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def run_measured(args: list[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> tuple[float, int]:
    """(wall seconds, peak summed RSS of the process tree) of one command; raises on failure."""
    peak = 0
    start = time.monotonic()
    proc = subprocess.Popen(args, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, sum(_rss(p) for p in _descendants(proc.pid)))
            done.wait(0.02)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    _, err = proc.communicate()
    wall = time.monotonic() - start
    done.set()
    t.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {err.decode(errors='replace')[-800:]}")
    return wall, peak


def make_repo(path: Path, size_mb: int) -> None:
    sh("git", "init", "-q", str(path))
    files = max(8, size_mb // 5)
    per = size_mb * MiB // files
    commits = 10
    for c in range(commits):
        for f in range(c * files // commits, (c + 1) * files // commits):
            (path / f"data{f:04d}.bin").write_bytes(os.urandom(per))
        (path / "log.txt").write_text("".join(f"line {i} of commit {c}\n" for i in range(1000)))
        sh("git", "add", ".", cwd=path)
        sh("git", "commit", "-q", "-m", f"commit {c}", cwd=path)
    sh("git", "repack", "-adq", cwd=path)


class Bench:
    def __init__(self, args: argparse.Namespace, base: Path, env: dict[str, str]) -> None:
        self.args = args
        self.base = base
        self.env = env
        self.root = base / "srv"
        self.root.mkdir()
        self.rows: list[list[str]] = []
        self.stats = base / "stats.jsonl"

    def url(self, transport: str, name: str) -> str:
        path = self.root / name
        return {
            "file": f"file://{path}",
            "git": f"git://127.0.0.1:{self.ports.get('git')}/{name}",
            "http": f"http://127.0.0.1:{self.ports.get('http')}/git/{name}",
            "ssh": f"ssh://{self.ssh.user if self.ssh else ''}@127.0.0.1:{self.ssh.port if self.ssh else 0}{path}",
        }[transport]

    def last_stats(self) -> dict:  # type: ignore[type-arg]
        lines = self.stats.read_text().splitlines()
        return json.loads(lines[-1])

    def median(self, fn, runs: int) -> tuple[float, int, dict]:  # type: ignore[no-untyped-def,type-arg]
        walls, peaks, stat = [], [], {}
        for _ in range(runs):
            wall, peak, stat = fn()
            walls.append(wall)
            peaks.append(peak)
        return statistics.median(walls), max(peaks), stat

    def clone(self, transport: str, name: str) -> None:
        url = self.url(transport, name)

        def native():  # type: ignore[no-untyped-def]
            dest = self.base / "clone-native"
            shutil.rmtree(dest, ignore_errors=True)
            w, p = run_measured(["git", "clone", "-q", "--bare", url, str(dest)], env=self.env)
            return w, p, {}

        def relay():  # type: ignore[no-untyped-def]
            dest = self.base / "clone-relay"
            shutil.rmtree(dest, ignore_errors=True)
            w, p = run_measured(["git", "clone", "-q", "--bare", "relay::" + url, str(dest)], env=self.env)
            return w, p, self.last_stats()

        nw, np_, _ = self.median(native, self.args.runs)
        rw, rp, st = self.median(relay, self.args.runs)
        self.rows.append([f"clone {self.args.size_mb} MB", transport, f"{nw:.2f}", f"{rw:.2f}", f"{rw / nw:.3f}",
                          f"{st['peak_rss_helper'] / MiB:.1f}", f"{np_ / MiB:.0f} / {rp / MiB:.0f}", f"{st['bytes'] / MiB:.1f} MiB"])

    def push(self, transport: str, source: Path) -> None:
        counter = iter(range(1000))

        def target() -> str:
            name = f"push-{transport}-{next(counter)}.git"
            sh("git", "init", "-q", "--bare", str(self.root / name))
            return name

        def native():  # type: ignore[no-untyped-def]
            w, p = run_measured(["git", "push", "-q", self.url(transport, target()), "main"], cwd=source, env=self.env)
            return w, p, {}

        def relay():  # type: ignore[no-untyped-def]
            w, p = run_measured(["git", "push", "-q", "relay::" + self.url(transport, target()), "main"], cwd=source, env=self.env)
            return w, p, self.last_stats()

        nw, np_, _ = self.median(native, self.args.runs)
        rw, rp, st = self.median(relay, self.args.runs)
        self.rows.append([f"push {self.args.size_mb} MB", transport, f"{nw:.2f}", f"{rw:.2f}", f"{rw / nw:.3f}",
                          f"{st['peak_rss_helper'] / MiB:.1f}", f"{np_ / MiB:.0f} / {rp / MiB:.0f}", f"{st['bytes'] / MiB:.1f} MiB"])
        # second branch: only its new objects; native's bytes from GIT_TRACE_PACK
        name = target()
        sh("git", "push", "-q", self.url(transport, name), "main", cwd=source, env=self.env)
        sh("git", "checkout", "-q", "-B", "second", "main", cwd=source)
        (source / "second.txt").write_text("second branch\n")
        sh("git", "add", ".", cwd=source)
        sh("git", "commit", "-q", "-m", "second", cwd=source)
        # native bytes: receive-pack's whole input (commands + pack) counted by a wrapper; only
        # where git lets us choose the remote program (file and ssh)
        count = self.base / "native-count"
        count.unlink(missing_ok=True)
        wrapper = self.base / "counting-receive-pack"
        wrapper.write_text(
            "#!/usr/bin/env python3\nimport os, subprocess, sys\n"
            "p = subprocess.Popen(['git-receive-pack', *sys.argv[1:]], stdin=subprocess.PIPE)\n"
            "n = 0\nwhile True:\n    b = os.read(0, 65536)\n    if not b:\n        break\n"
            "    n += len(b)\n    p.stdin.write(b)\n    p.stdin.flush()\n"
            f"p.stdin.close()\nrc = p.wait()\nopen('{count}', 'w').write(str(n))\nsys.exit(rc)\n"
        )
        wrapper.chmod(0o755)
        extra = [f"--receive-pack={wrapper}"] if transport in ("file", "ssh") else []
        w_n, _ = run_measured(["git", "push", "-q", *extra, self.url(transport, name), "second"], cwd=source, env=self.env)
        native_bytes = int(count.read_text()) if count.exists() else -1
        sh("git", "push", "-q", self.url(transport, name), ":second", cwd=source, env=self.env)
        w_r, p_r = run_measured(["git", "push", "-q", "relay::" + self.url(transport, name), "second"], cwd=source, env=self.env)
        st = self.last_stats()
        self.rows.append(
            [
                "second-branch push",
                transport,
                f"{w_n:.2f}",
                f"{w_r:.2f}",
                f"{w_r / w_n:.3f}",
                f"{st['peak_rss_helper'] / MiB:.1f}",
                "",
                f"{st['bytes']} B vs native " + (f"{native_bytes} B (with commands)" if native_bytes >= 0 else "n/a"),
            ]
        )
        sh("git", "checkout", "-q", "main", cwd=source)
        # split push: target limited to a quarter of the pack, vs native unlimited
        limited = target()
        limit = max(self.args.size_mb * MiB // 4, 1 * MiB)
        sh("git", "config", "receive.maxInputSize", str(limit), cwd=self.root / limited)
        w_s, p_s = run_measured(["git", "push", "-q", "relay::" + self.url(transport, limited), "main"], cwd=source, env=self.env)
        st = self.last_stats()
        self.rows.append(
            [
                f"split push (limit {limit // MiB} MiB)",
                transport,
                f"{nw:.2f}",
                f"{w_s:.2f}",
                f"{w_s / nw:.3f}",
                f"{st['peak_rss_helper'] / MiB:.1f}",
                f"- / {p_s / MiB:.0f}",
                f"{st['bytes'] / MiB:.1f} MiB (last step)",
            ]
        )
        # the same into another target with the same limit: the refused size is known now, so the
        # push goes to steps at once (what a user's second big push to this host costs)
        learned = target()
        sh("git", "config", "receive.maxInputSize", str(limit), cwd=self.root / learned)
        w_l, _ = run_measured(["git", "push", "-q", "relay::" + self.url(transport, learned), "main"], cwd=source, env=self.env)
        self.rows.append(["  same, limit learned", transport, f"{nw:.2f}", f"{w_l:.2f}", f"{w_l / nw:.3f}", "", "", ""])
        mama = shutil.which("mama-ssh")
        if transport == "ssh" and mama and self.ssh is not None:  # type: ignore[attr-defined]
            # the same split push with every step's ssh session riding one mama-ssh master
            again = target()
            sh("git", "config", "receive.maxInputSize", str(limit), cwd=self.root / again)
            env = dict(self.env, GIT_SSH_COMMAND=f"{mama} {self.ssh.ssh_command.split(' ', 1)[1]}",  # type: ignore[attr-defined]
                       MAMA_SSH_STATE_DIR=str(self.base / "mama-state"), MAMA_SSH_SOCKET_DIR=str(self.base / "mama-sock"))
            (self.base / "mama-sock").mkdir(mode=0o700, exist_ok=True)
            w_m, _ = run_measured(["git", "push", "-q", "relay::" + self.url(transport, again), "main"], cwd=source, env=env)
            self.rows.append(["  same, ssh through mama-ssh", transport, f"{nw:.2f}", f"{w_m:.2f}", f"{w_m / nw:.3f}", "", "", ""])
            subprocess.run([mama, "--cleanup"], env=env, capture_output=True)

    def noop(self, transport: str) -> None:
        """A fetch and a push that find nothing to do: what the helper adds to every git operation."""
        name = f"noop-{transport}.git"
        small = self.base / "noop-src"
        if not small.exists():
            make_repo(small, 1)
        sh("git", "clone", "-q", "--bare", str(small), str(self.root / name))
        work = self.base / f"noop-work-{transport}"
        sh("git", "clone", "-q", str(self.root / name), str(work))
        url = self.url(transport, name)
        runs = max(self.args.runs, 11)
        for what, argv in (("fetch", ["git", "fetch", "-q", url]), ("push", ["git", "push", "-q", url, "main"])):
            relayed = [*argv[:3], "relay::" + url, *argv[4:]]
            nn = statistics.median(run_measured(argv, cwd=work, env=self.env)[0] for _ in range(runs))
            rr = statistics.median(run_measured(relayed, cwd=work, env=self.env)[0] for _ in range(runs))
            self.rows.append([f"no-op {what} (median of {runs})", transport, f"{nn * 1000:.0f} ms", f"{rr * 1000:.0f} ms",
                              f"+{(rr - nn) * 1000:.0f} ms", "", "", "0"])

    def split413(self, source: Path) -> None:
        """A push through an HTTP front end that answers 413 over a quarter of the pack, vs native
        git's unlimited push of the same data (native cannot push through the front end at all)."""
        name = "split-413.git"
        sh("git", "init", "-q", "--bare", str(self.root / name))
        native_target = "native-413.git"
        sh("git", "init", "-q", "--bare", str(self.root / native_target))
        nw, _ = run_measured(["git", "push", "-q", self.url("http", native_target), "main"], cwd=source, env=self.env)
        url = self.url("http", name).replace("/git/", "/small/")
        env = dict(self.env, GIT_RELAY_STATE_DIR=str(self.base / "state-413"))
        rw, rp = run_measured(["git", "push", "-q", "relay::" + url, "main"], cwd=source, env=env)
        st = self.last_stats()
        self.rows.append([f"split push, 413 over {self.small_kb} KiB", "http", f"{nw:.2f}", f"{rw:.2f}", f"{rw / nw:.3f}",  # type: ignore[attr-defined]
                          f"{st['peak_rss_helper'] / MiB:.1f}", f"- / {rp / MiB:.0f}", f"{st['bytes'] / MiB:.1f} MiB (last push)"])
        # the same again into a fresh repository: the limit is known now, so no refused attempt
        sh("git", "init", "-q", "--bare", str(self.root / "split-413-again.git"))
        url = self.url("http", "split-413-again.git").replace("/git/", "/small/")
        lw, _ = run_measured(["git", "push", "-q", "relay::" + url, "main"], cwd=source, env=env)
        self.rows.append(["  same, limit learned", "http", f"{nw:.2f}", f"{lw:.2f}", f"{lw / nw:.3f}", "", "", ""])

    def print(self) -> None:
        head = ["scenario", "transport", "native s", "relay s", "ratio", "helper RSS MiB", "tree RSS MiB native/relay", "bytes"]
        widths = [max(len(r[i]) for r in [head, *self.rows]) for i in range(len(head))]
        for row in [head, ["-" * w for w in widths], *self.rows]:
            print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) + " |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mb", type=int, default=50, help="size of the generated repository (incompressible data)")
    ap.add_argument("--runs", type=int, default=3, help="repetitions per measurement (median)")
    ap.add_argument("--transports", default="file,git,http,ssh")
    ap.add_argument("--scenarios", default="clone,push,413,noop",
                    help="any of clone, push (with second-branch and split), 413 (http front end), noop")
    ap.add_argument("--bin", help="directory of the git-remote-relay to measure (e.g. a venv made by ./install.sh, whose "
                    "non-editable install starts faster than the editable one in .venv)")
    args = ap.parse_args()
    if args.bin:
        os.environ["PATH"] = args.bin + os.pathsep + os.environ["PATH"]
    if not shutil.which("git-remote-relay"):
        print("git-remote-relay is not on PATH (run ./install.sh --dev and use .venv/bin/python)", file=sys.stderr)
        os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"]
    transports = args.transports.split(",")
    with tempfile.TemporaryDirectory(prefix="relay-bench-") as tmp, ExitStack() as stack:
        base = Path(tmp)
        gitconfig = base / "gitconfig"
        gitconfig.write_text(
            "[user]\n\tname = Bench\n\temail = bench@example.invalid\n[init]\n\tdefaultBranch = main\n"
            "[http]\n\treceivepack = true\n[safe]\n\tdirectory = *\n"
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "SSH_"))}
        env.update(GIT_CONFIG_GLOBAL=str(gitconfig), GIT_CONFIG_NOSYSTEM="1", HOME=str(base))
        bench = Bench(args, base, env)
        env["GIT_RELAY_STATS_FILE"] = str(bench.stats)
        os.environ.update(GIT_CONFIG_GLOBAL=str(gitconfig), HOME=str(base))
        bench.ports = {}  # type: ignore[attr-defined]
        bench.ssh = None  # type: ignore[attr-defined]
        if "git" in transports:
            bench.ports["git"] = stack.enter_context(servers.git_daemon(bench.root, base))  # type: ignore[attr-defined]
        if "http" in transports:
            small_kb = max(args.size_mb * 1024 // 4, 1024)  # the 413 front end: a quarter of the pack
            bench.ports["http"] = stack.enter_context(  # type: ignore[attr-defined]
                servers.http_server(bench.root, base / "http", str(gitconfig), str(base), small_kb=small_kb))
            bench.small_kb = small_kb  # type: ignore[attr-defined]
        if "ssh" in transports:
            bench.ssh = stack.enter_context(servers.sshd(base / "ssh", str(gitconfig)))  # type: ignore[attr-defined]
            env["GIT_SSH_COMMAND"] = bench.ssh.ssh_command  # type: ignore[attr-defined]
        source = base / "source"
        print(f"generating a {args.size_mb} MB repository ...", file=sys.stderr)
        make_repo(source, args.size_mb)
        sh("git", "clone", "-q", "--bare", str(source), str(bench.root / "clone-src.git"))
        pack = sum(p.stat().st_size for p in (bench.root / "clone-src.git" / "objects" / "pack").glob("*.pack"))
        print(f"pack size {pack / MiB:.1f} MiB; {args.runs} runs each", file=sys.stderr)
        for transport in transports:
            if "clone" in args.scenarios:
                print(f"clone over {transport} ...", file=sys.stderr)
                bench.clone(transport, "clone-src.git")
            if "push" in args.scenarios:
                print(f"push over {transport} ...", file=sys.stderr)
                bench.push(transport, source)
            if "413" in args.scenarios and transport == "http":
                print("split push through a 413 front end ...", file=sys.stderr)
                bench.split413(source)
            if "noop" in args.scenarios:
                print(f"no-op fetch and push over {transport} ...", file=sys.stderr)
                bench.noop(transport)
        print(f"\npack {pack / MiB:.1f} MiB, git {sh('git', '--version').split()[-1]}, {os.cpu_count()} CPUs, median of {args.runs}\n")
        bench.print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
