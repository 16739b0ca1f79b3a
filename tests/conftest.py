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

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import pytest
import servers
from servers import HTTP_PASSWORD, HTTP_USER, Sshd  # noqa: F401 - re-exported for the tests

HERE = Path(__file__).resolve().parent
BIN_DIR = str(Path(sys.executable).parent)
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# The hook upload-pack runs instead of pack-objects (protected config): repositories whose path
# contains "truncate" get their pack cut after some bytes and their upload-pack killed, which is
# what a server dying mid-transfer looks like from the client. A repository holding an executable
# ``relay-test-hook`` runs it first (to move a ref while a relay is under way).
PACK_HOOK = r"""#!/bin/sh
# a repository may carry a script to run before its pack is made (tests that need a race)
[ -x ./relay-test-hook ] && ./relay-test-hook
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


def unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"test server unavailable under CI: {reason}")
    pytest.skip(reason)


def git(
    *args: str, cwd: str | Path | None = None, env: dict[str, str] | None = None, check: bool = True, input: bytes | None = None
) -> subprocess.CompletedProcess[str]:
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
        '[protocol "file"]\n\tallow = always\n'
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
    try:
        with servers.git_daemon(server_root, workspace) as port:
            yield port
    except servers.ServerUnavailable as exc:
        unavailable(str(exc))


@pytest.fixture(scope="session")
def http_server(workspace: Path, server_root: Path) -> Iterator[int]:
    try:
        with servers.http_server(server_root, workspace / "http", os.environ["GIT_CONFIG_GLOBAL"], os.environ["HOME"]) as port:
            yield port
    except servers.ServerUnavailable as exc:
        unavailable(str(exc))


@pytest.fixture(scope="session")
def sshd(workspace: Path) -> Iterator[Sshd]:
    try:
        with servers.sshd(workspace / "ssh", os.environ["GIT_CONFIG_GLOBAL"]) as server:
            yield server
    except servers.ServerUnavailable as exc:
        unavailable(str(exc))


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


def commit(work: Path, name: str, data: bytes | None = None) -> str:
    (work / name).write_bytes(data if data is not None else f"{name}\n".encode())
    git("add", name, cwd=work)
    git("commit", "-q", "-m", name, cwd=work)
    return git("rev-parse", "HEAD", cwd=work).stdout.strip()


def refs(repo: Path) -> dict[str, str]:
    out = git("for-each-ref", "--format=%(objectname) %(refname)", cwd=repo).stdout
    return {name: oid for oid, name in (line.split(" ", 1) for line in out.splitlines())}


def objects(repo: Path) -> set[str]:
    out = git("rev-list", "--all", "--objects", cwd=repo).stdout
    return {line.split(" ", 1)[0] for line in out.splitlines()}


def fsck(repo: Path) -> None:
    git("fsck", "--strict", "--no-dangling", cwd=repo)


@pytest.fixture(autouse=True)
def own_relay_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test learns size limits in a state directory of its own (no test sees another's)."""
    monkeypatch.setenv("GIT_RELAY_STATE_DIR", str(tmp_path / "relay-state"))
