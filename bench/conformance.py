#!/usr/bin/env python3
"""Run git's own transport tests natively and forced through `relay::`, and compare.

Builds git v2.39.5 with ../shared/conformance/force-relay.patch once into a cache directory, then
runs each listed t-script twice -- natively and with GIT_TEST_FORCE_RELAY=1, which routes every
file/ssh/git/http URL through the `relay` remote helper -- and prints, per script, native
pass/total, relay pass/total and the tests that fail only through relay (number and title).

    .venv/bin/python bench/conformance.py --source /path/to/git.git
    .venv/bin/python bench/conformance.py --source URL --scripts t5516-fetch-push t5601-clone
    .venv/bin/python bench/conformance.py --only 12,15 --verbose t5516-fetch-push   # one test, with output

Needs a C toolchain and the libcurl, zlib and expat development packages (Debian:
libcurl4-openssl-dev zlib1g-dev libexpat1-dev); the http scripts need apache2. Not part of CI:
the build takes minutes.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PATCH = REPO.parent / "shared" / "conformance" / "force-relay.patch"
VERSION = "v2.39.5"
SCRIPTS = [
    "t5516-fetch-push",
    "t5601-clone",
    "t5510-fetch",
    "t5533-push-cas",
    "t5500-fetch-pack",
    "t5537-fetch-shallow",
    "t5702-protocol-v2",
    "t5543-atomic-push",
    "t5545-push-options",
    "t5551-http-fetch-smart",
    "t5541-http-push-smart",
    # fetch parity (issue 20): clones, references, fsck, shallow, negotiators, protocols, traces
    "t5501-fetch-push-alternates",
    "t5502-quickfetch",
    "t5503-tagfollow",
    "t5504-fetch-receive-strict",
    "t5512-ls-remote",
    "t5515-fetch-merge-logic",
    "t5518-fetch-exit-status",
    "t5527-fetch-odd-refs",
    "t5530-upload-pack-error",
    "t5535-fetch-push-symref",
    "t5536-fetch-conflicts",
    "t5538-push-shallow",
    "t5539-fetch-http-shallow",
    "t5549-fetch-push-http",
    "t5552-skipping-fetch-negotiator",
    "t5554-noop-fetch-negotiator",
    "t5570-git-daemon",
    "t5582-fetch-negative-refspec",
    "t5600-clone-fail-cleanup",
    "t5604-clone-reference",
    "t5605-clone-local",
    "t5606-clone-options",
    "t5609-clone-branch",
    "t5611-clone-config",
    "t5612-clone-refspec",
    "t5616-partial-clone",
    "t5618-alternate-refs",
    "t5700-protocol-v1",
    "t5703-upload-pack-ref-in-want",
    "t5704-protocol-violations",
    "t5811-proto-disable-git",
    "t5812-proto-disable-http",
    "t5813-proto-disable-ssh",
    # push parity (issue 21): push defaults, signed pushes
    "t5528-push-default",
    "t5534-push-signed",
]
RESULT = re.compile(r"^(not ok|ok) (\d+) - (.*)$")


def default_cache() -> Path:
    if os.geteuid() == 0:
        return Path("/var/tmp/git-remote-relay-conformance")  # the t-scripts run as another user: not under /root
    try:
        import platformdirs

        return Path(platformdirs.user_cache_dir("git-remote-relay")) / "conformance"
    except ImportError:
        return Path.home() / ".cache" / "git-remote-relay" / "conformance"


def build(source: str, cache: Path, jobs: int) -> Path:
    """The patched git's source tree, built; reused while the patch is unchanged."""
    digest = hashlib.sha256(PATCH.read_bytes()).hexdigest()[:12]
    tree = cache / f"git-{VERSION}-{digest}"
    stamp = tree / ".relay-built"
    if stamp.exists():
        return tree
    if not shutil.which("curl-config"):
        sys.exit("conformance: libcurl development files are missing (Debian: apt-get install libcurl4-openssl-dev)")
    if tree.exists():
        shutil.rmtree(tree)
    cache.mkdir(parents=True, exist_ok=True)
    print(f"building git {VERSION} with {PATCH.name} into {tree} ...", flush=True)
    subprocess.run(["git", "clone", "-q", "--depth", "1", "--branch", VERSION, source, str(tree)], check=True)
    subprocess.run(["patch", "-p1", "-i", str(PATCH)], cwd=tree, check=True, stdout=subprocess.DEVNULL)
    start = time.monotonic()
    log = tree / ".relay-build.log"
    with log.open("w") as out:
        done = subprocess.run(["make", f"-j{jobs}", "NO_GETTEXT=1", "NO_TCLTK=1", "all"], cwd=tree, stdout=out, stderr=subprocess.STDOUT)
    if done.returncode:
        sys.exit(f"conformance: make failed, see {log}")
    stamp.write_text(f"{time.monotonic() - start:.0f}s\n")
    return tree


def as_user(user: str | None, tree: Path, work: Path, bindir: Path) -> list[str]:
    """The command prefix that runs a t-script as ``user`` (git's httpd tests refuse to run as root)."""
    if not user:
        return []
    for path in (tree, work):
        subprocess.run(["chown", "-R", user, str(path)], check=True)
    prefix = ["runuser", "-u", user, "--"]
    if subprocess.run([*prefix, str(bindir / "git-remote-relay"), "--version"], capture_output=True).returncode:
        sys.exit(f"conformance: user {user} cannot run {bindir / 'git-remote-relay'}: is its Python under a private"
                 " directory such as /root? (chmod o+x that directory, or ./install.sh into a shared prefix and pass --bin)")
    return prefix


def run_script(tree: Path, script: str, forced: bool, bindir: Path, root: Path, extra: list[str],
               prefix: list[str]) -> tuple[dict[int, tuple[str, str]], str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env["PATH"] = f"{bindir}{os.pathsep}{env.get('PATH', '')}"
    env["GIT_TEST_HTTPD"] = env.get("RELAY_TEST_HTTPD", "true")
    if forced:
        env["GIT_TEST_FORCE_RELAY"] = "1"
        # the native run of the same script may run at the same time on the script's own port
        number = int(script[1:5])
        env["LIB_HTTPD_PORT"] = env["LIB_GIT_DAEMON_PORT"] = str(10000 + number)
    root.mkdir(parents=True, exist_ok=True)
    if prefix:
        shutil.chown(root, prefix[2])
        shutil.chown(root.parent, prefix[2])
    cmd = [*prefix, "env", *(f"{k}={v}" for k, v in env.items()), "bash", f"./{script}.sh", f"--root={root}", *extra]
    done = subprocess.run(cmd, cwd=tree / "t", env=env, capture_output=True, text=True, errors="replace")
    results: dict[int, tuple[str, str]] = {}
    for line in done.stdout.splitlines():
        m = RESULT.match(line)
        if not m:
            continue
        status, number, title = m.groups()
        if "# skip" in line and status == "ok":
            status = "skip"
        elif "# TODO" in title:
            status = "todo"
        results[int(number)] = (status, title)
    return results, done.stdout + done.stderr


def counts(results: dict[int, tuple[str, str]]) -> tuple[int, int]:
    graded = [s for s, _ in results.values() if s in ("ok", "not ok")]
    return sum(1 for s in graded if s == "ok"), len(graded)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("scripts", nargs="*", default=SCRIPTS)
    parser.add_argument("--source", default=os.environ.get("GIT_SOURCE"), help="a clone or URL of git.git (needs tag %s)" % VERSION)
    parser.add_argument("--cache", type=Path, default=default_cache())
    parser.add_argument("--bin", type=Path, default=Path(sys.executable).parent, help="directory with git-remote-relay")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--only", help="run only these tests (git's --run=)")
    parser.add_argument("--verbose", action="store_true", help="print the forced run's output (use with --only); it is always in the logs")
    parser.add_argument("--forced-only", action="store_true", help="skip the native runs")
    parser.add_argument("--user", default="nobody" if os.geteuid() == 0 else "",
                        help="run the t-scripts as this user (default as root: nobody; git's httpd tests refuse root)")
    args = parser.parse_args()
    if not (args.bin / "git-remote-relay").exists():
        sys.exit(f"conformance: no git-remote-relay in {args.bin} (pass --bin)")
    tree = None
    for candidate in args.cache.glob(f"git-{VERSION}-*/.relay-built"):
        digest = hashlib.sha256(PATCH.read_bytes()).hexdigest()[:12]
        if candidate.parent.name.endswith(digest):
            tree = candidate.parent
    if tree is None:
        if not args.source:
            sys.exit("conformance: no built git in the cache; pass --source (a clone or URL of git.git)")
        tree = build(args.source, args.cache, args.jobs)
    extra = ["-v"]  # the logs carry each test's output
    if args.only:
        extra.append(f"--run={args.only}")
    work = Path(tempfile.mkdtemp(prefix="relay-conformance-"))
    work.chmod(0o755)
    prefix = as_user(args.user, tree, work, args.bin.resolve())
    jobs = [(s, forced) for s in args.scripts for forced in ((True,) if args.forced_only else (False, True))]

    def one(job: tuple[str, bool]) -> tuple[str, bool, dict[int, tuple[str, str]], str, float]:
        script, forced = job
        start = time.monotonic()
        where = work / ("relay" if forced else "native") / script
        results, output = run_script(tree, script, forced, args.bin.resolve(), where, extra, prefix)
        return script, forced, results, output, time.monotonic() - start

    table: dict[str, dict[bool, dict[int, tuple[str, str]]]] = {}
    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        for script, forced, results, output, took in pool.map(one, jobs):
            table.setdefault(script, {})[forced] = results
            log = work / f"{script}.{'relay' if forced else 'native'}.log"
            log.write_text(output)
            if args.verbose and forced:
                print(output)
            passed, total = counts(results)
            print(f"  {script} {'relay' if forced else 'native'}: {passed}/{total} in {took:.0f}s", file=sys.stderr, flush=True)

    print("\n| script | native pass/total | relay pass/total | relay-only failures |\n|---|---|---|---|")
    gaps = 0
    for script in args.scripts:
        native = table[script].get(False, {})
        relayed = table[script][True]
        only = [n for n, (s, _) in sorted(relayed.items()) if s == "not ok" and (not native or native.get(n, ("",))[0] == "ok")]
        gaps += len(only)
        np, nt = counts(native) if native else (0, 0)
        fp, ft = counts(relayed)
        listed = "; ".join(f"{n} {relayed[n][1]}" for n in only) or "none"
        print(f"| {script} | {np}/{nt} | {fp}/{ft} | {listed} |")
    print(f"\nlogs: {work}")
    return 1 if gaps else 0


if __name__ == "__main__":
    sys.exit(main())
