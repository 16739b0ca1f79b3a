"""Test harness: a scrubbed environment and real servers on loopback, started and stopped here.

Servers (session scope, all serving one directory ``SERVER_ROOT``):
* ``git daemon`` with receive-pack enabled;
* ``lighttpd`` running ``git http-backend`` as CGI (it accepts chunked request bodies), with an
  open location ``/git/`` and a basic-auth location ``/auth/``;
* OpenSSH ``sshd`` with its own host key, ``authorized_keys`` and config (``LogLevel VERBOSE``,
  so its log counts authentications); never the machine's ``~/.ssh``.

Under ``CI=true`` a server that cannot start fails the tests that need it instead of skipping them.
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import pytest

HERE = Path(__file__).resolve().parent
BIN_DIR = str(Path(sys.executable).parent)
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
HTTP_USER, HTTP_PASSWORD = "alice", "s3cr3t-Pa55word"

# The hook upload-pack runs instead of pack-objects (protected config): repositories whose path
# contains "truncate" get their pack cut after some bytes and their upload-pack killed, which is
# what a server dying mid-transfer looks like from the client.
PACK_HOOK = r"""#!/bin/sh
case "$(pwd -P)" in
  *truncate*)
    "$@" | head -c 30000
    p=$PPID
    for _ in 1 2 3; do
      comm=$(cat /proc/$p/comm 2>/dev/null)
      case "$comm" in git|git-upload-pack) kill -9 "$p"; exit 1;; esac
      p=$(awk '{print $4}' /proc/$p/stat 2>/dev/null)
      [ -n "$p" ] || break
    done
    exit 1;;
esac
exec "$@"
"""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], what: str, log: Path | None = None, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    text = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
    stop(proc)
    unavailable(f"{what} did not start on port {port}: {text}")


def unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"test server unavailable under CI: {reason}")
    pytest.skip(reason)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """End a process we started, by its PID only."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def git(*args: str, cwd: str | Path | None = None, env: dict[str, str] | None = None, check: bool = True, input: bytes | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["git", *args], cwd=cwd, env=env, input=input.decode() if input else None, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="session")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A scrubbed environment: own HOME and global git config, no GIT_*/SSH_* from outside."""
    base = tmp_path_factory.mktemp("relay")
    home = base / "home"
    home.mkdir()
    saved = dict(os.environ)
    for key in list(os.environ):
        if key.startswith(("GIT_", "SSH_")) or key in ("EMAIL", "XDG_CONFIG_HOME"):
            del os.environ[key]
    hook = base / "pack-hook.sh"
    hook.write_text(PACK_HOOK)
    hook.chmod(0o755)
    gitconfig = base / "gitconfig"
    gitconfig.write_text(
        "[user]\n\tname = Relay Test\n\temail = relay@example.invalid\n"
        "[init]\n\tdefaultBranch = main\n"
        "[protocol \"file\"]\n\tallow = always\n"
        "[uploadpack]\n\tallowFilter = true\n\tallowAnySHA1InWant = true\n"
        f"\tpackObjectsHook = {hook}\n"
        "[http]\n\treceivepack = true\n"
        "[advice]\n\tdetachedHead = false\n"
        "[safe]\n\tdirectory = *\n"
    )
    os.environ.update(
        {
            "HOME": str(home),
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": str(gitconfig),
            "GIT_TERMINAL_PROMPT": "0",
            "PATH": BIN_DIR + os.pathsep + saved.get("PATH", "/usr/bin:/bin"),
            "LC_ALL": "C",
        }
    )
    (base / "srv").mkdir()
    assert shutil.which("git-remote-relay"), "git-remote-relay is not installed next to this Python"
    yield base
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="session")
def server_root(workspace: Path) -> Path:
    return workspace / "srv"


@pytest.fixture(scope="session")
def git_daemon(workspace: Path, server_root: Path) -> Iterator[int]:
    port = free_port()
    log = workspace / "daemon.log"
    proc = subprocess.Popen(
        ["git", "daemon", "--export-all", "--enable=receive-pack", "--informative-errors", "--reuseaddr",
         f"--base-path={server_root}", "--listen=127.0.0.1", f"--port={port}", str(server_root)],
        stdout=subprocess.DEVNULL, stderr=log.open("wb"),
    )
    wait_port(port, proc, "git daemon", log)
    yield port
    stop(proc)


LIGHTTPD_CONF = """
server.document-root = "{root}"
server.bind = "127.0.0.1"
server.port = {port}
server.pid-file = "{base}/lighttpd.pid"
server.errorlog = "{base}/lighttpd.log"
server.modules = ("mod_alias", "mod_setenv", "mod_cgi", "mod_auth", "mod_authn_file")
auth.backend = "plain"
auth.backend.plain.userfile = "{base}/htpasswd"
alias.url = ("/git/" => "{backend}/", "/auth/" => "{backend}/")
$HTTP["url"] =~ "^/(git|auth)/" {{
  cgi.assign = ("" => "")
  setenv.set-environment = ("GIT_PROJECT_ROOT" => "{root}", "GIT_HTTP_EXPORT_ALL" => "1",
                            "GIT_CONFIG_GLOBAL" => "{gitconfig}", "GIT_CONFIG_NOSYSTEM" => "1", "HOME" => "{home}")
}}
$HTTP["url"] =~ "^/auth/" {{
  auth.require = ("" => ("method" => "basic", "realm" => "relay", "require" => "valid-user"))
}}
"""


@pytest.fixture(scope="session")
def http_server(workspace: Path, server_root: Path) -> Iterator[int]:
    lighttpd = shutil.which("lighttpd") or ("/usr/sbin/lighttpd" if os.path.exists("/usr/sbin/lighttpd") else None)
    if not lighttpd:
        unavailable("lighttpd is not installed (run ./install.sh --dev)")
    backend = subprocess.run(["git", "--exec-path"], capture_output=True, text=True, check=True).stdout.strip() + "/git-http-backend"
    port = free_port()
    base = workspace / "http"
    base.mkdir(exist_ok=True)
    (base / "htpasswd").write_text(f"{HTTP_USER}:{HTTP_PASSWORD}\n")
    conf = base / "lighttpd.conf"
    conf.write_text(LIGHTTPD_CONF.format(root=server_root, port=port, base=base, backend=backend,
                                         gitconfig=os.environ["GIT_CONFIG_GLOBAL"], home=os.environ["HOME"]))
    proc = subprocess.Popen([lighttpd, "-D", "-f", str(conf)], stdout=subprocess.DEVNULL, stderr=(base / "stderr.log").open("wb"))
    wait_port(port, proc, "lighttpd", base / "stderr.log")
    yield port
    stop(proc)


@dataclass
class Sshd:
    port: int
    user: str
    log: Path
    ssh_command: str
    key: Path
    known_hosts: Path
    config: Path = field(default_factory=Path)

    def auth_count(self) -> int:
        return self.log.read_text(errors="replace").count("Accepted publickey")


@pytest.fixture(scope="session")
def sshd(workspace: Path) -> Iterator[Sshd]:
    sshd_bin = shutil.which("sshd") or ("/usr/sbin/sshd" if os.path.exists("/usr/sbin/sshd") else None)
    if not sshd_bin or not shutil.which("ssh-keygen"):
        unavailable("OpenSSH server is not installed (run ./install.sh --dev)")
    base = workspace / "ssh"
    base.mkdir(exist_ok=True)
    base.chmod(0o700)
    for name in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(base / name)], check=True)
    (base / "authorized_keys").write_text((base / "client_key.pub").read_text())
    (base / "authorized_keys").chmod(0o600)
    port = free_port()
    user = getpass.getuser()
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privilege separation directory
    config = base / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {base / 'host_key'}\nPidFile {base / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {base / 'authorized_keys'}\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "PubkeyAuthentication yes\nPermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\nLogLevel VERBOSE\n"
        "AcceptEnv GIT_PROTOCOL\nPrintMotd no\nMaxStartups 100:30:200\n"
        f"SetEnv GIT_CONFIG_GLOBAL={os.environ['GIT_CONFIG_GLOBAL']} GIT_CONFIG_NOSYSTEM=1\n"
    )
    log = base / "sshd.log"
    proc = subprocess.Popen([sshd_bin, "-D", "-e", "-f", str(config)], stdout=subprocess.DEVNULL, stderr=log.open("wb"))
    wait_port(port, proc, "sshd", log)
    known = base / "known_hosts"
    known.write_text(f"[127.0.0.1]:{port} " + (base / "host_key.pub").read_text().split(" ", 2)[0] + " "
                     + (base / "host_key.pub").read_text().split(" ", 2)[1] + "\n")
    command = (f"ssh -F /dev/null -i {base / 'client_key'} -o IdentitiesOnly=yes -o BatchMode=yes "
               f"-o UserKnownHostsFile={known} -o StrictHostKeyChecking=yes -o LogLevel=ERROR")
    yield Sshd(port=port, user=user, log=log, ssh_command=command, key=base / "client_key", known_hosts=known, config=config)
    stop(proc)


TRANSPORTS = ["path", "file", "ssh", "scp", "git", "http"]


@dataclass
class Remote:
    """A bare repository on the test servers and the URLs that reach it."""

    transport: str
    path: Path
    url: str  # the inner URL (what follows relay::)

    @property
    def relay_url(self) -> str:
        return "relay::" + self.url


@pytest.fixture
def make_remote(request: pytest.FixtureRequest, server_root: Path) -> Callable[..., Remote]:
    """``make_remote(transport, name=None, source=None, bare_init=True)`` -> Remote."""
    counter = iter(range(10_000))

    def make(transport: str, name: str | None = None, source: Path | None = None) -> Remote:
        repo_name = name or f"{request.node.name}-{transport}-{next(counter)}".replace("[", "-").replace("]", "")
        path = server_root / f"{repo_name}.git"
        if source is not None:
            git("clone", "-q", "--bare", str(source), str(path))
        else:
            git("init", "-q", "--bare", str(path))
        return Remote(transport, path, url_for(request, transport, path))

    return make


def url_for(request: pytest.FixtureRequest, transport: str, path: Path) -> str:
    root = request.getfixturevalue("server_root")
    rel = path.relative_to(root)
    if transport == "path":
        return str(path)
    if transport == "file":
        return f"file://{path}"
    if transport == "git":
        port = request.getfixturevalue("git_daemon")
        return f"git://127.0.0.1:{port}/{rel}"
    if transport == "http":
        port = request.getfixturevalue("http_server")
        return f"http://127.0.0.1:{port}/git/{rel}"
    if transport in ("ssh", "scp"):
        server: Sshd = request.getfixturevalue("sshd")
        os.environ["GIT_SSH_COMMAND"] = server.ssh_command
        request.addfinalizer(lambda: os.environ.pop("GIT_SSH_COMMAND", None))
        if transport == "ssh":
            return f"ssh://{server.user}@127.0.0.1:{server.port}{path}"
        return f"{server.user}@[127.0.0.1:{server.port}]:{path}"
    raise ValueError(transport)


def make_source(path: Path, commits: int = 3, big: int = 0) -> Path:
    """A small non-bare repository with a branch, an annotated and a lightweight tag."""
    git("init", "-q", str(path))
    for i in range(commits):
        (path / f"file{i}.txt").write_text(f"content {i}\n" * (i + 1))
        git("add", ".", cwd=path)
        git("commit", "-q", "-m", f"commit {i}", cwd=path)
    if big:
        (path / "blob.bin").write_bytes(os.urandom(big))
        git("add", ".", cwd=path)
        git("commit", "-q", "-m", "big blob", cwd=path)
    git("tag", "-a", "v1", "-m", "release 1", cwd=path)
    git("tag", "light", "HEAD~1", cwd=path)
    git("checkout", "-q", "-b", "topic", cwd=path)
    (path / "topic.txt").write_text("topic\n")
    git("add", ".", cwd=path)
    git("commit", "-q", "-m", "topic work", cwd=path)
    git("checkout", "-q", "main", cwd=path)
    return path


def refs(repo: Path) -> dict[str, str]:
    out = git("for-each-ref", "--format=%(objectname) %(refname)", cwd=repo).stdout
    return {name: oid for oid, name in (line.split(" ", 1) for line in out.splitlines())}


def objects(repo: Path) -> set[str]:
    out = git("rev-list", "--all", "--objects", cwd=repo).stdout
    return {line.split(" ", 1)[0] for line in out.splitlines()}


def fsck(repo: Path) -> None:
    git("fsck", "--strict", "--no-dangling", cwd=repo)
