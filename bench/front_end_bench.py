#!/usr/bin/env python3
"""A push through an apache front end with a body limit (``LimitRequestBody``), vs native git's
unlimited push of the same data, in one run.

    .venv/bin/python bench/front_end_bench.py [--size-mb 1024] [--limit-mb 150] [--bin DIR]

apache2 (Debian's, as git's own http tests use it) runs ``git http-backend`` as CGI on loopback:
``/git/`` without a limit, ``/small/`` with ``LimitRequestBody``, which answers 413 once a body
passes it. Native git can only push to ``/git/``; relay pushes to ``/small/`` twice, into fresh
repositories: first with nothing learned (the refused attempt is paid), then with the limit
learned. The data is incompressible, in files of 1 MiB over 10 commits (so every step holds
more objects than receive.unpackLimit and is kept as a pack, as hosts keep them). A row of native
git pushing the same history one commit at a time shows what the steps cost the host itself. Each row starts
after ``sync``, so none pays for the disk writes of the rows before it. Needs root
(apache runs the CGI as nobody). Nothing is asserted: it prints a table.
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

MiB = 1 << 20
MODULES = "/usr/lib/apache2/modules"
CONF = """ServerRoot "{base}"
ServerName localhost
Listen 127.0.0.1:{port}
PidFile "{base}/apache.pid"
ErrorLog "{base}/apache-error.log"
LogLevel warn
LoadModule mpm_prefork_module {modules}/mod_mpm_prefork.so
LoadModule authz_core_module {modules}/mod_authz_core.so
LoadModule alias_module {modules}/mod_alias.so
LoadModule cgi_module {modules}/mod_cgi.so
LoadModule env_module {modules}/mod_env.so
User nobody
Group nogroup
Timeout 600
SetEnv GIT_PROJECT_ROOT "{root}"
SetEnv GIT_HTTP_EXPORT_ALL 1
SetEnv GIT_CONFIG_GLOBAL "{gitconfig}"
SetEnv GIT_CONFIG_NOSYSTEM 1
ScriptAlias /git/ /usr/lib/git-core/git-http-backend/
ScriptAlias /small/ /usr/lib/git-core/git-http-backend/
<Directory /usr/lib/git-core>
  Require all granted
</Directory>
# apache's own default is 1 GiB since 2.4.54: /git/ has no limit
LimitRequestBody 0
<Location /small/>
  LimitRequestBody {limit}
</Location>
"""


def sh(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    return subprocess.run(args, cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout


def settle() -> None:
    """Write out what the rows before wrote, so that no row pays for another's disk writes: the
    target's index-pack fsyncs its pack, and on a journaled file system that fsync also waits for
    every dirty page written before it (a 1 GiB row left unsynced cost the next row up to 1.7x)."""
    os.sync()
    time.sleep(1)


def make_data(path: Path, size_mb: int, env: dict[str, str]) -> None:
    sh("git", "init", "-q", str(path), env=env)
    for c in range(10):
        for f in range(c * size_mb // 10, (c + 1) * size_mb // 10):
            (path / f"d{f:05d}.bin").write_bytes(os.urandom(MiB))
        sh("git", "add", ".", cwd=path, env=env)
        sh("git", "commit", "-q", "-m", f"c{c}", cwd=path, env=env)
    sh("git", "repack", "-adq", cwd=path, env=env)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mb", type=int, default=1024)
    ap.add_argument("--limit-mb", type=int, default=150)
    ap.add_argument("--bin", help="directory of the git-remote-relay to measure (an ./install.sh install)")
    args = ap.parse_args()
    for sig in (signal.SIGTERM, signal.SIGHUP):  # killed, it still removes its data (the finally below)
        signal.signal(sig, lambda *_: sys.exit(143))
    apache = shutil.which("apache2") or "/usr/sbin/apache2"
    base = Path(tempfile.mkdtemp(prefix="relay-front-end-bench-"))
    base.chmod(0o755)
    gitconfig = base / "gitconfig"
    gitconfig.write_text("[user]\n\tname = b\n\temail = b@example.com\n[http]\n\treceivepack = true\n[safe]\n\tdirectory = *\n"
                         "[init]\n\tdefaultBranch = main\n")
    gitconfig.chmod(0o644)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "SSH_"))}
    env.update(GIT_CONFIG_GLOBAL=str(gitconfig), GIT_CONFIG_NOSYSTEM="1", HOME=str(base))
    if args.bin:
        env["PATH"] = f"{args.bin}:{env['PATH']}"
    root = base / "srv"
    root.mkdir()
    proc = None
    try:
        print(f"making {args.size_mb} MiB of history ...", file=sys.stderr)
        src = base / "src"
        make_data(src, args.size_mb, env)
        port = servers.free_port()
        (base / "apache.conf").write_text(CONF.format(base=base, port=port, modules=MODULES, root=root, gitconfig=gitconfig,
                                                      limit=args.limit_mb * MiB))
        # its own session: apache's prefork sends its SIGTERM at shutdown to its whole process group,
        # which would otherwise be ours and the shell's that started the bench
        proc = subprocess.Popen([apache, "-f", str(base / "apache.conf"), "-DFOREGROUND"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        servers.wait_port(port, proc, "apache2", base / "apache-error.log")
        rows = []

        def target(name: str) -> Path:
            repo = root / name
            sh("git", "init", "-q", "--bare", str(repo), env=env)
            subprocess.run(["chmod", "-R", "a+rwX", str(repo)], check=True)
            return repo

        target("native.git")
        settle()
        start = time.monotonic()
        sh("git", "push", "-q", f"http://127.0.0.1:{port}/git/native.git", "HEAD:refs/heads/main", cwd=src, env=env)
        native = time.monotonic() - start
        rows.append(("native git, /git/ (no limit)", native, ""))
        # what the host itself costs for the same history in steps: native git, one push per commit
        target("native-steps.git")
        settle()
        start = time.monotonic()
        for k in range(9, -1, -1):
            sh("git", "push", "-q", f"http://127.0.0.1:{port}/git/native-steps.git", f"HEAD~{k}:refs/heads/main", cwd=src, env=env)
        rows.append(("native git, /git/, one push per commit (10)", time.monotonic() - start, ""))
        state = dict(env, GIT_RELAY_STATE_DIR=str(base / "state"))
        runs = (("first.git", "relay, /small/, first push (nothing learned)"), ("learned.git", "relay, /small/, limit learned"))
        for name, label in runs:
            target(name)
            settle()
            start = time.monotonic()
            res = subprocess.run(["git", "push", "-v", f"relay::http://127.0.0.1:{port}/small/{name}", "HEAD:refs/heads/main"],
                                 cwd=src, env=state, capture_output=True, text=True, check=True)
            wall = time.monotonic() - start
            said = [line for line in res.stderr.splitlines() if "refused" in line or "steps of" in line]
            rows.append((label, wall, "; ".join(said)[:160]))
            assert sh("git", "rev-parse", "main", cwd=root / name, env=env) == sh("git", "rev-parse", "HEAD", cwd=src, env=env)
        print(f"\n{args.size_mb} MiB through apache LimitRequestBody {args.limit_mb} MiB, git {sh('git', 'version').split()[-1]}, "
              f"{os.cpu_count()} CPUs\n")
        print("| push | seconds | vs native unlimited | what relay said |\n|---|---|---|---|")
        for label, wall, said in rows:
            print(f"| {label} | {wall:.1f} s | {wall / native:.2f}x | {said} |")
    finally:
        if proc is not None:
            servers.stop(proc)
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
