"""Git LFS through relay:: and git relay, against giftless (a real LFS server) behind the same
lighttpd as ``git http-backend``, checked with Debian's git-lfs as the client.

Two hosts, a source and a target, each serving git and LFS at one URL as hosting services do,
so git-lfs needs no ``lfs.url``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Iterator

import pytest
import servers
from conftest import git, refs, unavailable

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def lfs_config(workspace: Path) -> str:
    """A global git config like the tests' own, plus what ``git lfs install`` adds (its filters)."""
    if not shutil.which("git-lfs"):
        unavailable("git-lfs is not installed (run ./install.sh --dev)")
    config = workspace / "gitconfig-lfs"
    config.write_text(Path(os.environ["GIT_CONFIG_GLOBAL"]).read_text())
    subprocess.run(["git", "lfs", "install", "--skip-repo"], env=dict(os.environ, GIT_CONFIG_GLOBAL=str(config)), check=True,
                   capture_output=True)
    return str(config)


@pytest.fixture(scope="session")
def lfs_hosts(workspace: Path, lfs_config: str) -> Iterator[tuple[servers.LfsHost, servers.LfsHost]]:
    try:
        import giftless  # noqa: F401
    except ImportError as exc:
        unavailable(f"giftless is not installed (run ./install.sh --dev): {exc}")
    try:
        with contextlib.ExitStack() as stack:
            hosts = [stack.enter_context(servers.lfs_host(workspace / f"lfs-{side}" / "srv", workspace / f"lfs-{side}", lfs_config,
                                                          os.environ["HOME"])) for side in ("source", "target")]
            yield hosts[0], hosts[1]
    except servers.ServerUnavailable as exc:
        unavailable(str(exc))


@pytest.fixture
def env(lfs_config: str) -> dict[str, str]:
    return dict(os.environ, GIT_CONFIG_GLOBAL=lfs_config)


def bare(host: servers.LfsHost, name: str) -> str:
    path = host.root / f"{name}.git"
    git("init", "-q", "--bare", str(path))
    git("symbolic-ref", "HEAD", "refs/heads/main", cwd=path)
    return host.url(name)


def lfs_work(path: Path, env: dict[str, str], files: int, size: int = 20_000, seed: str = "") -> dict[str, bytes]:
    """A work tree whose ``*.bin`` files are in LFS: ``files`` of them, ``size`` bytes each, committed."""
    git("init", "-q", str(path), env=env)
    git("lfs", "track", "*.bin", cwd=path, env=env)
    contents = {}
    for i in range(files):
        data = hashlib.sha256(f"{seed}{path.name}{i}".encode()).digest() * (size // 32)
        (path / f"f{i:02}.bin").write_bytes(data)
        contents[f"f{i:02}.bin"] = data
    (path / "README").write_text("an LFS repository\n")
    git("add", ".", cwd=path, env=env)
    git("commit", "-q", "-m", f"{files} LFS files", cwd=path, env=env)
    return contents


def oid_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def published(host: servers.LfsHost, name: str, tmp: Path, env: dict[str, str], files: int, size: int = 20_000) -> dict[str, bytes]:
    """A repository ``name`` on ``host`` with ``files`` LFS files, pushed there by native git."""
    url = bare(host, name)
    work = tmp / f"{name}-work"
    contents = lfs_work(work, env, files, size)
    git("push", "-q", url, "main", cwd=work, env=env)
    assert set(host.stored(name)) == {oid_of(d) for d in contents.values()}
    return contents


def checked_out(work: Path, contents: dict[str, bytes]) -> None:
    for name, data in contents.items():
        assert (work / name).read_bytes() == data, f"{name} is not its LFS content"


# -- relay:: remotes ---------------------------------------------------------------------------
def test_clone_through_relay_checks_out_lfs_content(lfs_hosts: tuple[servers.LfsHost, servers.LfsHost], tmp_path: Path,
                                                    env: dict[str, str]) -> None:
    host = lfs_hosts[0]
    contents = published(host, "clone20", tmp_path, env, files=20)
    native = git("clone", host.url("clone20"), str(tmp_path / "native"), env=env)
    relayed = git("clone", "relay::" + host.url("clone20"), str(tmp_path / "relayed"), env=env)
    assert "checkout failed" not in native.stderr + relayed.stderr
    checked_out(tmp_path / "native", contents)
    checked_out(tmp_path / "relayed", contents)
    # git-lfs finds the server git-lfs finds without relay::
    endpoint = git("lfs", "env", cwd=tmp_path / "relayed", env=env).stdout
    assert f"Endpoint={host.url('clone20')}/info/lfs" in endpoint
    assert git("config", "remote.origin.lfsurl", cwd=tmp_path / "relayed").stdout.strip() == host.url("clone20") + "/info/lfs"
    git("lfs", "fsck", cwd=tmp_path / "relayed", env=env)


def test_push_through_relay_uploads_lfs_objects(lfs_hosts: tuple[servers.LfsHost, servers.LfsHost], tmp_path: Path,
                                               env: dict[str, str]) -> None:
    host = lfs_hosts[0]
    contents = published(host, "push", tmp_path, env, files=2)
    work = tmp_path / "relayed"
    git("clone", "-q", "relay::" + host.url("push"), str(work), env=env)
    new = {f"new{i}.bin": os.urandom(30_000) for i in range(3)}
    for name, data in new.items():
        (work / name).write_bytes(data)
    git("add", ".", cwd=work, env=env)
    git("commit", "-q", "-m", "three more", cwd=work, env=env)
    git("push", "origin", "main", cwd=work, env=env)
    assert {oid_of(d) for d in new.values()} <= set(host.stored("push"))
    fresh = tmp_path / "fresh"
    git("clone", "-q", host.url("push"), str(fresh), env=env)
    assert "Git LFS fsck OK" in git("lfs", "fsck", cwd=fresh, env=env).stdout
    checked_out(fresh, {**contents, **new})


def test_a_native_clone_switched_to_relay_pushes_lfs(lfs_hosts: tuple[servers.LfsHost, servers.LfsHost], tmp_path: Path,
                                                     env: dict[str, str]) -> None:
    """The first push after ``git remote set-url origin relay::…``: the pre-push hook already
    finds the LFS server (the helper runs before git's pre-push hook)."""
    host = lfs_hosts[0]
    published(host, "switched", tmp_path, env, files=1)
    work = tmp_path / "clone"
    git("clone", "-q", host.url("switched"), str(work), env=env)
    git("remote", "set-url", "origin", "relay::" + host.url("switched"), cwd=work)
    data = os.urandom(10_000)
    (work / "late.bin").write_bytes(data)
    git("add", ".", cwd=work, env=env)
    git("commit", "-q", "-m", "late", cwd=work, env=env)
    git("push", "-q", "origin", "main", cwd=work, env=env)
    assert oid_of(data) in host.stored("switched")


def test_an_lfs_url_someone_chose_is_left_alone(lfs_hosts: tuple[servers.LfsHost, servers.LfsHost], tmp_path: Path,
                                               env: dict[str, str]) -> None:
    host = lfs_hosts[0]
    published(host, "chosen", tmp_path, env, files=1)
    url = "relay::" + host.url("chosen")
    chosen = host.url("chosen") + "/info/lfs"
    # the user's own remote.origin.lfsurl stays as it is
    git("clone", "-q", "-c", f"remote.origin.lfsurl={chosen}?mine", url, str(tmp_path / "a"), env=dict(env, GIT_LFS_SKIP_SMUDGE="1"))
    assert git("config", "remote.origin.lfsurl", cwd=tmp_path / "a").stdout.strip() == chosen + "?mine"
    # lfs.url wins over any remote's: nothing is written
    git("clone", "-q", "-c", f"lfs.url={chosen}", url, str(tmp_path / "b"), env=env)
    assert git("config", "remote.origin.lfsurl", cwd=tmp_path / "b", check=False).returncode == 1
    # without git-lfs set up, nothing is written either
    git("clone", "-q", url, str(tmp_path / "c"), env=dict(env, GIT_CONFIG_GLOBAL=os.environ["GIT_CONFIG_GLOBAL"]))
    assert git("config", "remote.origin.lfsurl", cwd=tmp_path / "c", check=False).returncode == 1
    # the value the helper wrote follows the remote's URL when it changes
    other = published(host, "chosen2", tmp_path, env, files=1)
    work = tmp_path / "d"
    git("clone", "-q", url, str(work), env=env)
    git("remote", "set-url", "origin", "relay::" + host.url("chosen2"), cwd=work)
    git("fetch", "-q", "origin", cwd=work, env=env)
    assert git("config", "remote.origin.lfsurl", cwd=work).stdout.strip() == host.url("chosen2") + "/info/lfs"
    assert other


@pytest.mark.parametrize("inner", [
    "https://git.example.com/org/repo.git", "https://git.example.com/org/repo", "http://h:8080/r/", "git://h:9418/org/repo",
    "ssh://me@h:2222/srv/repo.git", "me@h:srv/repo", "file://{bare}", "{bare}", "{work}",
])
def test_git_lfs_finds_for_relay_what_it_finds_without(inner: str, tmp_path: Path, lfs_config: str) -> None:
    """``git lfs env`` of a relay:: remote with the helper's lfsurl equals that of the inner URL."""
    from git_remote_relay.lfs import lfs_url_for
    from git_remote_relay.url import parse

    env = dict(os.environ, GIT_CONFIG_GLOBAL=lfs_config)
    git("init", "-q", str(tmp_path / "r"))
    git("init", "-q", "--bare", str(tmp_path / "bare.git"))
    inner = inner.format(bare=tmp_path / "bare.git", work=tmp_path / "r")  # local ones exist, as they must for git-lfs

    def endpoint(url: str, lfsurl: str | None) -> list[str]:
        args = ["-c", f"remote.origin.url={url}"] + (["-c", f"remote.origin.lfsurl={lfsurl}"] if lfsurl else [])
        out = git(*args, "lfs", "env", cwd=tmp_path / "r", env=env).stdout.splitlines()
        lines = [line for line in out if line.startswith(("Endpoint=", "  SSH="))]
        return [line.split(" (auth=")[0] for line in lines]

    native = endpoint(inner, None)
    relayed = endpoint("relay::" + inner, lfs_url_for(inner, parse(inner).scheme))
    if inner.startswith(("ssh://", "me@")):
        # the same ssh host and path for git-lfs-authenticate and git-lfs-transfer (the https
        # URL beside it is used only when the server's answer has no href)
        assert [x for x in native if x.startswith("  SSH=")] == [x for x in relayed if x.startswith("  SSH=")] != []
    else:
        assert native == relayed
    assert endpoint("relay::" + inner, None) != native  # what git-lfs does on its own


# -- git relay sync ----------------------------------------------------------------------------
def relay(*args: str, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["git", "relay", *args], env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"git relay {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def test_sync_copies_lfs_objects_and_only_what_is_missing(lfs_hosts: tuple[servers.LfsHost, servers.LfsHost], tmp_path: Path,
                                                          env: dict[str, str]) -> None:
    src, dst = lfs_hosts
    contents = published(src, "mirror", tmp_path, env, files=10)
    target = bare(dst, "mirror")
    planned = json.loads(relay("plan", "--json", src.url("mirror"), target, env=env).stdout)
    assert planned["lfs"]["objects"] == 10 and planned["lfs"]["missing_on_target"] == 10 and planned["lfs"]["copied"] == 0
    said = relay("plan", src.url("mirror"), target, env=env).stderr
    assert "LFS: 10 object(s), 195.3 KiB named; the target lacks 10 (195.3 KiB)" in said, said
    assert dst.stored("mirror") == {}
    record = json.loads(relay("sync", "--json", src.url("mirror"), target, env=env).stdout)
    assert record["status"] == "ok"
    assert record["lfs"]["copied"] == 10 and record["lfs"]["copied_bytes"] == sum(len(d) for d in contents.values())
    assert dst.stored("mirror") == src.stored("mirror")
    assert refs(dst.root / "mirror.git") == refs(src.root / "mirror.git")
    clone = tmp_path / "check"
    git("clone", "-q", target, str(clone), env=env)
    git("lfs", "pull", cwd=clone, env=env)
    checked_out(clone, contents)
    # nothing new: nothing looked at, nothing moves
    again = json.loads(relay("sync", "--json", src.url("mirror"), target, env=env).stdout)
    assert again["lfs"]["copied"] == 0 and again["bytes"] == 0
    # two more objects at the source: those two, and only those, are copied
    work = tmp_path / "mirror-work"
    more = {f"more{i}.bin": os.urandom(5000) for i in range(2)}
    for name, data in more.items():
        (work / name).write_bytes(data)
    git("add", ".", cwd=work, env=env)
    git("commit", "-q", "-m", "two more", cwd=work, env=env)
    git("push", "-q", src.url("mirror"), "main", cwd=work, env=env)
    third = json.loads(relay("sync", "--json", src.url("mirror"), target, env=env).stdout)
    assert third["lfs"]["objects"] == 2 and third["lfs"]["copied"] == 2
    assert set(dst.stored("mirror")) == set(src.stored("mirror"))


def test_sync_after_an_interrupted_one_sends_only_what_is_missing(lfs_hosts: tuple[servers.LfsHost, servers.LfsHost],
                                                                  tmp_path: Path, env: dict[str, str]) -> None:
    """A sync stopped after some LFS objects (here: half of them already at the target, as a
    killed run leaves them) sends the rest, and the git refs only after all of them."""
    src, dst = lfs_hosts
    published(src, "resume", tmp_path, env, files=6)
    target = bare(dst, "resume")
    dst.object_dir("resume").mkdir(parents=True)
    have = sorted(src.stored("resume"))[:3]
    for oid in have:
        shutil.copy(src.object_dir("resume") / oid, dst.object_dir("resume") / oid)
    record = json.loads(relay("sync", "--json", src.url("resume"), target, env=env).stdout)
    assert record["lfs"]["objects"] == 6 and record["lfs"]["missing_on_target"] == 3 and record["lfs"]["copied"] == 3
    assert set(dst.stored("resume")) == set(src.stored("resume"))


def test_sync_refuses_a_damaged_lfs_object_and_moves_no_ref(lfs_hosts: tuple[servers.LfsHost, servers.LfsHost], tmp_path: Path,
                                                            env: dict[str, str]) -> None:
    src, dst = lfs_hosts
    published(src, "damaged", tmp_path, env, files=2)
    target = bare(dst, "damaged")
    victim = sorted(src.stored("damaged"))[0]
    path = src.object_dir("damaged") / victim
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    proc = relay("sync", src.url("damaged"), target, env=env, check=False)
    assert proc.returncode == 128
    assert f"LFS object {victim[:12]} from the source is not what its pointer says" in proc.stderr
    assert dst.stored("damaged").get(victim, 0) < len(data)  # the upload never completed
    assert refs(dst.root / "damaged.git") == {}  # and no ref moved
    # repaired at the source, the next run completes it
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    record = json.loads(relay("sync", "--json", src.url("damaged"), target, env=env).stdout)
    assert record["status"] == "ok" and record["lfs"]["copied"] >= 1
    assert dst.stored("damaged")[victim] == len(data)
    assert refs(dst.root / "damaged.git") == refs(src.root / "damaged.git")


def test_sync_no_lfs_and_repositories_without_lfs(lfs_hosts: tuple[servers.LfsHost, servers.LfsHost], tmp_path: Path,
                                                  env: dict[str, str]) -> None:
    src, dst = lfs_hosts
    published(src, "skip", tmp_path, env, files=2)
    target = bare(dst, "skip")
    record = json.loads(relay("sync", "--json", "--no-lfs", src.url("skip"), target, env=env).stdout)
    assert record["lfs"] is None and record["status"] == "ok"
    assert dst.stored("skip") == {}
    # a repository that does not use LFS: recognised at its tips, nothing asked of LFS servers
    # (with what git.git has: a .gitattributes too big for the look, and a tag of a blob)
    plain = tmp_path / "plain"
    git("init", "-q", str(plain))
    (plain / "a.txt").write_text("no lfs here\n")
    (plain / "po").mkdir()
    (plain / "po" / ".gitattributes").write_text("# filters for PO files\n" * 60 + "*.po filter=gettext-no-location\n")
    git("add", ".", cwd=plain)
    git("commit", "-q", "-m", "plain", cwd=plain)
    git("tag", "a-blob", git("rev-parse", "HEAD:a.txt", cwd=plain).stdout.strip(), cwd=plain)
    source = bare(src, "plain")
    git("push", "-q", "--tags", source, "main", cwd=plain)
    proc = relay("sync", "--json", "--tags", source, bare(dst, "plain"), env=dict(env, GIT_TRACE_CURL="1", GIT_RELAY_TRACE="1"))
    record = json.loads(proc.stdout)
    assert record["lfs"]["objects"] == 0 and record["status"] == "ok"
    assert "POST /git/plain.git/git-upload-pack" in proc.stderr and "info/lfs" not in proc.stderr
    assert "no .gitattributes names filter=lfs" in proc.stderr and "warning" not in proc.stderr and "error" not in proc.stderr
    assert proc.stderr.count(" wants, ") == 1, "the look at the tips was enough: nothing more was scanned"
    assert refs(dst.root / "plain.git") == refs(src.root / "plain.git")


def test_lfs_history_finds_lfs_files_the_tips_no_longer_have(lfs_hosts: tuple[servers.LfsHost, servers.LfsHost], tmp_path: Path,
                                                              env: dict[str, str]) -> None:
    """A repository that dropped LFS at its tip: by default the tips decide and nothing is
    copied; --lfs-history (or relay.lfsHistory) scans what moves and copies the older objects."""
    src, dst = lfs_hosts
    url = bare(src, "dropped")
    work = tmp_path / "dropped-work"
    contents = lfs_work(work, env, files=3)
    git("rm", "-q", "*.bin", ".gitattributes", cwd=work, env=env)
    git("commit", "-q", "-m", "no more LFS", cwd=work, env=env)
    git("push", "-q", url, "main", cwd=work, env=env)
    assert set(src.stored("dropped")) == {oid_of(d) for d in contents.values()}
    record = json.loads(relay("sync", "--json", url, bare(dst, "dropped-tips"), env=env).stdout)
    assert record["status"] == "ok" and record["lfs"]["objects"] == 0 and dst.stored("dropped-tips") == {}
    record = json.loads(relay("sync", "--json", "--lfs-history", url, bare(dst, "dropped-history"), env=env).stdout)
    assert record["status"] == "ok" and record["lfs"]["copied"] == 3
    assert set(dst.stored("dropped-history")) == {oid_of(d) for d in contents.values()}
    config_env = dict(env, GIT_RELAY_LFS_HISTORY="1")
    record = json.loads(relay("sync", "--json", url, bare(dst, "dropped-setting"), env=config_env).stdout)
    assert record["lfs"]["copied"] == 3


@pytest.mark.parametrize("object_format", ["sha1", "sha256"])
def test_lfs_is_seen_in_a_nested_gitattributes_of_any_tip(tmp_path: Path, object_format: str) -> None:
    """The look at the tips reads every .gitattributes in their trees, at any depth, and a
    tip that is no tree (a tag of a blob) does not stop it; sha256 trees too."""
    from git_remote_relay.gitcmd import Git
    from git_remote_relay.lfsfind import _uses_lfs_at_tips

    work = tmp_path / "nested"
    git("init", "-q", f"--object-format={object_format}", str(work))
    (work / "README").write_text("top\n")
    git("add", ".", cwd=work)
    git("commit", "-q", "-m", "one", cwd=work)
    first = git("rev-parse", "HEAD", cwd=work).stdout.strip()
    blob = git("rev-parse", "HEAD:README", cwd=work).stdout.strip()
    (work / "assets" / "models").mkdir(parents=True)
    (work / "assets" / "models" / ".gitattributes").write_text("*.fbx filter=lfs diff=lfs merge=lfs -text\n")
    (work / ".lfsconfig").write_text('[lfs]\n\turl = "https://lfs.example/objects"\n')
    git("add", ".", cwd=work)
    git("commit", "-q", "-m", "two", cwd=work)
    second = git("rev-parse", "HEAD", cwd=work).stdout.strip()
    repo = Git({**os.environ, "GIT_DIR": str(work / ".git")})
    assert _uses_lfs_at_tips(repo, [blob, first]) == (False, None)
    assert _uses_lfs_at_tips(repo, [blob, first, second]) == (True, "https://lfs.example/objects")


# -- over ssh ----------------------------------------------------------------------------------
AUTHENTICATE = """#!/bin/sh
# git-lfs-authenticate <path> <operation>, as a git host offers it: where its LFS API is
name=$(basename "$1" .git)
printf '{{"href": "{base}/%s.git/info/lfs", "header": {{"Authorization": "RemoteAuth from-ssh"}}, "expires_in": 3600}}\\n' "$name"
"""


@pytest.fixture
def lfs_sshd(workspace: Path, lfs_hosts: tuple[servers.LfsHost, servers.LfsHost], lfs_config: str,
             tmp_path: Path) -> Iterator[servers.Sshd]:
    """An sshd whose sessions find ``git-lfs-authenticate`` naming the source host's LFS API."""
    bin_dir = tmp_path / "host-bin"
    bin_dir.mkdir()
    script = bin_dir / "git-lfs-authenticate"
    script.write_text(AUTHENTICATE.format(base=lfs_hosts[0].url("x").rsplit("/", 1)[0]))
    script.chmod(0o755)
    try:
        with servers.sshd(tmp_path / "sshd", lfs_config, path_first=bin_dir) as server:
            yield server
    except servers.ServerUnavailable as exc:
        unavailable(str(exc))


def test_lfs_over_ssh_uses_git_lfs_authenticate(lfs_hosts: tuple[servers.LfsHost, servers.LfsHost], lfs_sshd: servers.Sshd,
                                                tmp_path: Path, env: dict[str, str]) -> None:
    """relay::ssh clones check out LFS content through the host's git-lfs-authenticate, and
    git relay sync from an ssh source finds its LFS server the same way."""
    src, dst = lfs_hosts
    contents = published(src, "viassh", tmp_path, env, files=3)
    ssh_url = f"ssh://{lfs_sshd.user}@127.0.0.1:{lfs_sshd.port}{src.root / 'viassh.git'}"
    ssh_env = dict(env, GIT_SSH_COMMAND=lfs_sshd.ssh_command)
    git("clone", "-q", "relay::" + ssh_url, str(tmp_path / "relayed"), env=ssh_env)
    checked_out(tmp_path / "relayed", contents)
    assert git("config", "remote.origin.lfsurl", cwd=tmp_path / "relayed").stdout.strip() == ssh_url
    target = bare(dst, "viassh")
    record = json.loads(relay("sync", "--json", ssh_url, target, env=ssh_env).stdout)
    assert record["lfs"]["copied"] == 3 and set(dst.stored("viassh")) == set(src.stored("viassh"))


def test_lfs_over_ssh_without_git_lfs_authenticate_fails_as_without_relay(
        lfs_hosts: tuple[servers.LfsHost, servers.LfsHost], sshd: servers.Sshd, tmp_path: Path, env: dict[str, str]) -> None:
    src = lfs_hosts[0]
    published(src, "noauth", tmp_path, env, files=1)
    ssh_url = f"ssh://{sshd.user}@127.0.0.1:{sshd.port}{src.root / 'noauth.git'}"
    ssh_env = dict(env, GIT_SSH_COMMAND=sshd.ssh_command)
    native = git("clone", ssh_url, str(tmp_path / "native"), env=ssh_env, check=False)
    relayed = git("clone", "relay::" + ssh_url, str(tmp_path / "relayed"), env=ssh_env, check=False)
    assert native.returncode == relayed.returncode
    assert "git-lfs-authenticate" in native.stderr
    same = [line for line in native.stderr.splitlines() if "git-lfs-authenticate" in line or "smudge filter" in line]
    assert same and same == [line for line in relayed.stderr.splitlines() if "git-lfs-authenticate" in line or "smudge filter" in line]
    # and git relay says where it looked
    proc = relay("sync", ssh_url, bare(lfs_hosts[1], "noauth"), env=ssh_env, check=False)
    assert proc.returncode == 128 and "git-lfs-authenticate failed" in proc.stderr and "--no-lfs" in proc.stderr


def test_sync_asks_git_credential_for_lfs_and_shows_no_password(lfs_hosts: tuple[servers.LfsHost, servers.LfsHost],
                                                                 tmp_path: Path, env: dict[str, str]) -> None:
    """A source whose git and LFS batch API need a password: git credential gives it once for
    both (same host), and no output, trace included, shows it."""
    src, dst = lfs_hosts
    contents = published(src, "secret", tmp_path, env, files=2)
    source = src.url("secret", auth=True)  # the same repository, behind basic auth
    store = tmp_path / "credentials"
    store.write_text(f"http://{servers.HTTP_USER}:{servers.HTTP_PASSWORD}@127.0.0.1%3a{src.port}\n")
    cred_env = dict(env, GIT_CONFIG_COUNT="1", GIT_CONFIG_KEY_0="credential.helper", GIT_CONFIG_VALUE_0=f"store --file={store}",
                    GIT_TRACE_CURL="1", GIT_RELAY_TRACE="1")
    # the objects live under the /auth/ prefix for giftless: put them there as a push would
    src.object_dir("secret", auth=True).mkdir(parents=True)
    for oid in src.stored("secret"):
        shutil.copy(src.object_dir("secret") / oid, src.object_dir("secret", auth=True) / oid)
    proc = relay("sync", "--json", source, bare(dst, "secret"), env=cred_env)
    record = json.loads(proc.stdout)
    assert record["lfs"]["copied"] == len(contents)
    assert "/auth/secret.git/info/lfs/objects/batch" in proc.stderr  # the batch request was made, and traced
    assert servers.HTTP_PASSWORD not in proc.stdout + proc.stderr
    # without credentials: refused, clearly, and nothing moves
    proc = relay("sync", source, bare(dst, "secret2"), env=dict(env, GIT_TERMINAL_PROMPT="0"), check=False)
    assert proc.returncode == 128 and "fatal: could not read Username for" in proc.stderr, proc.stderr
    assert dst.stored("secret2") == {}


def test_a_source_without_filters_relays_the_commits_and_says_lfs_was_not_copied(
        lfs_hosts: tuple[servers.LfsHost, servers.LfsHost], tmp_path: Path, env: dict[str, str]) -> None:
    src, dst = lfs_hosts
    published(src, "nofilter", tmp_path, env, files=1)
    git("config", "uploadpack.allowFilter", "false", cwd=src.root / "nofilter.git")
    target = bare(dst, "nofilter")
    proc = relay("sync", "--json", src.url("nofilter"), target, env=env)
    assert json.loads(proc.stdout)["lfs"] is None
    assert "warning: the source allows no filtered fetch" in proc.stderr and "LFS objects are not copied" in proc.stderr
    assert refs(dst.root / "nofilter.git") == refs(src.root / "nofilter.git")
    assert dst.stored("nofilter") == {}


def test_sync_to_and_from_a_local_path_uses_its_own_lfs_store(lfs_hosts: tuple[servers.LfsHost, servers.LfsHost],
                                                              tmp_path: Path, env: dict[str, str]) -> None:
    """A local target keeps the objects where git-lfs keeps them for a local remote
    (``lfs/objects/aa/bb/<oid>``): a native clone of it checks them out; and back to a server."""
    src, dst = lfs_hosts
    contents = published(src, "local", tmp_path, env, files=3)
    local = tmp_path / "local.git"
    git("init", "-q", "--bare", str(local))
    git("symbolic-ref", "HEAD", "refs/heads/main", cwd=local)
    # what a killed run left: an unfinished copy whose writer is gone, and one whose writer lives
    oid = sorted(src.stored("local"))[0]
    where = local / "lfs" / "objects" / oid[:2] / oid[2:4]
    where.mkdir(parents=True)
    dead = subprocess.Popen(["true"])
    dead.wait()
    (where / f"{oid}.{dead.pid}.x1.incomplete").write_bytes(b"half")
    (where / f"{oid}.{os.getpid()}.x2.incomplete").write_bytes(b"busy")
    record = json.loads(relay("sync", "--json", src.url("local"), str(local), env=env).stdout)
    assert record["lfs"]["copied"] == 3
    assert sorted(p.name for p in (local / "lfs" / "objects").rglob("*.incomplete")) == [f"{oid}.{os.getpid()}.x2.incomplete"]
    (where / f"{oid}.{os.getpid()}.x2.incomplete").unlink()
    stored = {p.name for p in (local / "lfs" / "objects").rglob("*") if p.is_file()}
    assert stored == set(src.stored("local"))
    clone = tmp_path / "from-local"
    git("clone", "-q", f"file://{local}", str(clone), env=env)
    checked_out(clone, contents)
    for inner in (f"file://{local}", str(local)):  # and through relay::, where git-lfs reads the same store
        relayed = tmp_path / f"relayed-{len(inner)}"
        git("clone", "-q", "relay::" + inner, str(relayed), env=env)
        checked_out(relayed, contents)
    # and from the local repository to another server
    record = json.loads(relay("sync", "--json", f"file://{local}", bare(dst, "from-local"), env=env).stdout)
    assert record["lfs"]["copied"] == 3 and set(dst.stored("from-local")) == stored
    # a local source that allows no filters: git relay runs that upload-pack itself, and may
    git("config", "uploadpack.allowFilter", "false", cwd=local)
    for source in (f"file://{local}", str(local)):
        name = f"from-unfiltered-{len(source)}"
        proc = relay("sync", "--json", source, bare(dst, name), env=env)
        assert json.loads(proc.stdout)["lfs"]["copied"] == 3 and set(dst.stored(name)) == stored
        assert "warning" not in proc.stderr, proc.stderr


def test_sync_of_more_objects_than_one_batch_request_holds(lfs_hosts: tuple[servers.LfsHost, servers.LfsHost], tmp_path: Path,
                                                           env: dict[str, str]) -> None:
    """Over 100 objects: the batch API is asked per window of 100, each just before it moves."""
    src, dst = lfs_hosts
    published(src, "many", tmp_path, env, files=105, size=64)
    proc = relay("sync", "--json", src.url("many"), bare(dst, "many"), env=dict(env, GIT_TRACE_CURL="1"))
    record = json.loads(proc.stdout)
    assert record["lfs"]["objects"] == 105 and record["lfs"]["copied"] == 105
    assert set(dst.stored("many")) == set(src.stored("many"))
    # the target: its check (2 requests of at most 100), fresh actions for window 2; the source: one per window
    assert proc.stderr.count("POST /git/many.git/info/lfs/objects/batch") == 5


def test_lfs_servers_named_by_lfsconfig_or_on_the_command_line(lfs_hosts: tuple[servers.LfsHost, servers.LfsHost], tmp_path: Path,
                                                               env: dict[str, str]) -> None:
    """The source's .lfsconfig names where its objects live (git-lfs reads it from the tree): the
    copy comes from there. --target-lfs-url puts them where the target's users look."""
    src, dst = lfs_hosts
    url = bare(src, "configured")
    work = tmp_path / "work"
    contents = lfs_work(work, env, files=2)
    git("config", "-f", ".lfsconfig", "lfs.url", src.url("configured-objects") + "/info/lfs", cwd=work)
    git("add", ".lfsconfig", cwd=work)
    git("commit", "-q", "-m", "LFS objects live elsewhere", cwd=work, env=env)
    git("push", "-q", url, "main", cwd=work, env=env)
    assert src.stored("configured") == {} and len(src.stored("configured-objects")) == 2, "native git-lfs followed .lfsconfig"
    elsewhere = dst.url("mirror-objects") + "/info/lfs"
    record = json.loads(relay("sync", "--json", "--target-lfs-url", elsewhere, url, bare(dst, "configured"), env=env).stdout)
    assert record["lfs"]["copied"] == 2
    assert set(dst.stored("mirror-objects")) == {oid_of(d) for d in contents.values()} and dst.stored("configured") == {}
    proc = relay("sync", "--target-lfs-url", "ssh://host/x", url, bare(dst, "configured2"), env=env, check=False)
    assert proc.returncode == 128 and "LFS URL must be http(s)" in proc.stderr


def test_a_sync_killed_mid_copy_is_completed_by_the_next_run(lfs_hosts: tuple[servers.LfsHost, servers.LfsHost], tmp_path: Path,
                                                             env: dict[str, str]) -> None:
    """The source's downloads stall half-way (a proxy stops passing bytes), the sync is killed
    with SIGKILL while objects are half-written, and the next run completes: every object whole,
    nothing unfinished left, and the refs moved only by the run that had every object."""
    import signal
    import time

    src = lfs_hosts[0]
    contents = published(src, "killed", tmp_path, env, files=2, size=4 << 20)
    local = tmp_path / "killed.git"
    git("init", "-q", "--bare", str(local))
    with servers.tcp_proxy(src.port, stall_after=1 << 20) as proxy:
        stalled = src.url("killed").replace(f":{src.port}/", f":{proxy.port}/")
        proc = subprocess.Popen(["git", "relay", "sync", stalled, str(local)], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not any(p.stat().st_size > 0 for p in local.rglob("*.incomplete")):
                assert proc.poll() is None, "the sync ended before any object was half-written"
                time.sleep(0.02)
            assert any(local.rglob("*.incomplete")), "no object was being written"
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    assert refs(local) == {}, "no ref moved before every object was there"
    record = json.loads(relay("sync", "--json", src.url("killed"), str(local), env=env).stdout)
    assert record["status"] == "ok" and record["lfs"]["copied"] == 2
    assert not list(local.rglob("*.incomplete")), "what the killed run left is gone"
    clone = tmp_path / "check"
    git("clone", "-q", f"file://{local}", str(clone), env=env)
    checked_out(clone, contents)


def test_downloads_follow_an_object_stores_redirect(lfs_hosts: tuple[servers.LfsHost, servers.LfsHost], tmp_path: Path,
                                                    env: dict[str, str]) -> None:
    """A download action answered 307 (object storage elsewhere) is followed."""
    src, dst = lfs_hosts
    contents = published(src, "redirected", tmp_path, env, files=2)
    with servers.tcp_proxy(src.port, redirect_storage_to=src.port) as proxy:
        source = src.url("redirected").replace(f":{src.port}/", f":{proxy.port}/")
        proc = relay("sync", "--json", source, bare(dst, "redirected"), env=dict(env, GIT_TRACE_CURL="1"))
    record = json.loads(proc.stdout)
    assert record["lfs"]["copied"] == 2 and set(dst.stored("redirected")) == {oid_of(d) for d in contents.values()}
    assert proc.stderr.count("HTTP/1.1 307") == 2, "each download was redirected"


def test_the_targets_per_file_limit_is_reported_before_anything_moves(lfs_hosts: tuple[servers.LfsHost, servers.LfsHost],
                                                                      tmp_path: Path, env: dict[str, str]) -> None:
    """The target refuses objects over 30000 bytes in its batch answer (as GitHub states its
    limit): the sync names the object, its size and the host's message, and nothing moves, no
    LFS object and no ref. With --no-lfs the commits go, as the user chose."""
    src, dst = lfs_hosts
    published(src, "big-and-small", tmp_path, env, files=1, size=20_000)
    work = tmp_path / "big-and-small-work"
    big = os.urandom(50_000)
    (work / "big.bin").write_bytes(big)
    git("add", ".", cwd=work, env=env)
    git("commit", "-q", "-m", "one too big for the target", cwd=work, env=env)
    git("push", "-q", src.url("big-and-small"), "main", cwd=work, env=env)
    target = bare(dst, "limited-30000-mirror")
    proc = relay("sync", src.url("big-and-small"), target, env=env, check=False)
    assert proc.returncode == 128
    said = f"refuses 1 object(s), before anything was sent: {oid_of(big)[:12]} (50000 bytes): Size must be less than or equal to 30000"
    assert said in proc.stderr, proc.stderr
    assert dst.stored("limited-30000-mirror") == {} and refs(dst.root / "limited-30000-mirror.git") == {}
    record = json.loads(relay("sync", "--json", "--no-lfs", src.url("big-and-small"), target, env=env).stdout)
    assert record["status"] == "ok" and refs(dst.root / "limited-30000-mirror.git") == refs(src.root / "big-and-small.git")


def test_reading_blobs_can_stop_early_without_waiting_for_the_rest(tmp_path: Path) -> None:
    """The pointer scan reads blobs as cat-file writes them and may stop at the first pointer:
    with far more blobs than a pipe holds, stopping does not hang."""
    import threading

    from git_remote_relay.gitcmd import Git
    from git_remote_relay.lfsfind import _blobs, _contents

    repo = tmp_path / "many.git"
    git("init", "-q", "--bare", str(repo))
    blobs = "".join(f"blob\nmark :{i}\ndata 600\n{str(i).rjust(600, 'x')}\n" for i in range(1, 3001))
    git("fast-import", "--quiet", cwd=repo, input=blobs.encode())
    scratch = Git({**os.environ, "GIT_DIR": str(repo)})
    seen: list[int] = []

    def stop_after_five() -> None:
        gen = _contents(scratch, _blobs(scratch, 1024))
        seen.append(sum(1 for _ in zip(range(5), gen, strict=False)))
        gen.close()  # stopped after five of 3000

    reader = threading.Thread(target=stop_after_five, daemon=True)
    reader.start()
    reader.join(60)
    assert not reader.is_alive(), "stopping early hung"
    assert seen == [5]
    assert sum(1 for _ in _contents(scratch, _blobs(scratch, 1024))) == 3000


def test_probe_says_where_git_relay_finds_lfs_objects(lfs_hosts: tuple[servers.LfsHost, servers.LfsHost], tmp_path: Path,
                                                      env: dict[str, str]) -> None:
    src = lfs_hosts[0]
    url = bare(src, "probed")
    said = relay("probe", url, env=env).stdout
    assert f"LFS objects (git relay): {url}/info/lfs" in said
    local = tmp_path / "local.git"
    git("init", "-q", "--bare", str(local))
    assert json.loads(relay("probe", "--json", str(local), env=env).stdout)["lfs"] == f"file://{local}/lfs/objects"
