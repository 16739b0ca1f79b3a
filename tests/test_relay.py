"""git relay: remote-to-remote sync against real servers, no local clone."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from conftest import commit, fsck, git, make_source, objects, refs

pytestmark = pytest.mark.integration


def relay(*args: str, check: bool = True, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["git", "relay", *args], capture_output=True, text=True, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"git relay {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def relay_json(*args: str, check: bool = True) -> tuple[int, dict]:  # type: ignore[type-arg]
    proc = relay(*args, "--json", check=check)
    return proc.returncode, json.loads(proc.stdout)


def heads_and_tags(repo: Path) -> dict[str, str]:
    return {k: v for k, v in refs(repo).items() if k.startswith(("refs/heads/", "refs/tags/"))}


@pytest.mark.parametrize(
    "pair", [("http", "ssh"), ("ssh", "http"), ("git", "file"), ("file", "git"), ("path", "http")], ids=lambda p: f"{p[0]}->{p[1]}"
)
def test_bootstrap_equals_a_mirror_push(pair: tuple[str, str], tmp_path: Path, make_remote) -> None:
    src_kind, dst_kind = pair
    source = make_remote(src_kind, source=make_source(tmp_path / "work", big=50_000))
    target, mirror = make_remote(dst_kind), make_remote("file")
    code, record = relay_json("sync", source.url, target.url, "--tags")
    assert code == 0 and record["mode"] == "bootstrap" and record["status"] == "ok"
    assert {r["action"] for r in record["refs"]} == {"create"}
    git("push", "-q", mirror.url, "refs/heads/*:refs/heads/*", "refs/tags/*:refs/tags/*", cwd=source.path)
    assert heads_and_tags(target.path) == heads_and_tags(mirror.path)
    assert objects(target.path) == objects(mirror.path)
    fsck(target.path)
    # a repeated sync is a no-op that pushes nothing
    code, again = relay_json("sync", source.url, target.url, "--tags")
    assert code == 0 and again["bytes"] == 0 and {r["action"] for r in again["refs"]} == {"up-to-date"}


@pytest.mark.parametrize("transport", ["file", "ssh", "http"])
def test_incremental_fast_forward_with_a_target_ref_inside_the_range(transport: str, tmp_path: Path, make_remote) -> None:
    work = make_source(tmp_path / "work")
    source = make_remote(transport, source=work)
    target = make_remote("git" if transport != "git" else "file")
    relay("sync", source.url, target.url, "--tags")
    old_main = refs(work)["refs/heads/main"]
    for i in range(3):
        (work / f"more{i}.txt").write_text(f"{i}\n")
        git("add", ".", cwd=work)
        git("commit", "-q", "-m", f"more {i}", cwd=work)
        if i == 0:
            middle = refs(work)["refs/heads/main"]
    git("tag", "-a", "v2", "-m", "v2", cwd=work)
    git("checkout", "-q", "topic", cwd=work)
    (work / "t2.txt").write_text("t2\n")
    git("add", ".", cwd=work)
    git("commit", "-q", "-m", "topic 2", cwd=work)
    git("push", "-q", "--force", str(source.path), "main", "topic", "v2", cwd=work)
    # another target ref points into the range being fast-forwarded
    git("push", "-q", str(target.path), f"{middle}:refs/heads/inside", cwd=work)
    code, record = relay_json("sync", source.url, target.url, "--tags", "--exclude", "refs/heads/inside")
    assert code == 0, record
    actions = {r["dst"]: (r["action"], r["mode"]) for r in record["refs"]}
    assert actions["refs/heads/main"] == ("update", "incremental")
    assert actions["refs/heads/topic"] == ("update", "incremental")
    assert actions["refs/tags/v2"] == ("create", "incremental")
    assert refs(target.path)["refs/heads/main"] == refs(work)["refs/heads/main"] != old_main
    assert refs(target.path)["refs/tags/v2"] == refs(work)["refs/tags/v2"]
    assert record["bytes"] < 5_000, "only what the target lacks"
    fsck(target.path)


def test_diverged_target_is_blocked_and_nothing_is_pushed(tmp_path: Path, make_remote) -> None:
    work = make_source(tmp_path / "work")
    source, target = make_remote("file", source=work), make_remote("http")
    relay("sync", source.url, target.url)
    other = tmp_path / "other"
    git("clone", "-q", str(target.path), str(other))
    (other / "theirs.txt").write_text("theirs\n")
    git("add", ".", cwd=other)
    git("commit", "-q", "-m", "theirs", cwd=other)
    git("push", "-q", "origin", "main", cwd=other)
    (work / "ours.txt").write_text("ours\n")
    git("add", ".", cwd=work)
    git("commit", "-q", "-m", "ours", cwd=work)
    git("checkout", "-q", "topic", cwd=work)
    (work / "ff.txt").write_text("ff\n")
    git("add", ".", cwd=work)
    git("commit", "-q", "-m", "ff", cwd=work)
    git("push", "-q", str(source.path), "main", "topic", cwd=work)
    before = refs(target.path)
    plan = relay("plan", source.url, target.url, check=False)
    assert plan.returncode == 3 and "diverged" in plan.stderr
    res = relay("sync", source.url, target.url, check=False)
    assert res.returncode == 3
    assert "blocked" in res.stderr and "--force-with-lease" in res.stderr
    assert refs(target.path) == before, "a blocked run pushes nothing, not even the fast-forward"
    code, record = relay_json("sync", source.url, target.url, "--force-with-lease")
    assert code == 0
    assert refs(target.path)["refs/heads/main"] == refs(work)["refs/heads/main"]


def test_lease_refuses_a_target_that_moved_during_the_run(tmp_path: Path, make_remote) -> None:
    work = make_source(tmp_path / "work")
    source, target = make_remote("file", source=work), make_remote("file")
    relay("sync", source.url, target.url)
    git("reset", "-q", "--hard", "HEAD~1", cwd=work)
    (work / "rewrite.txt").write_text("rewrite\n")
    git("add", ".", cwd=work)
    git("commit", "-q", "-m", "rewrite", cwd=work)
    git("push", "-q", "--force", str(source.path), "main", cwd=work)
    moved_to = git("rev-parse", "main~1", cwd=work).stdout.strip()
    # while the relay fetches from the source, someone else moves the target's main
    hook = source.path / "relay-test-hook"
    hook.write_text(f"#!/bin/sh\ngit --git-dir={target.path} update-ref refs/heads/main {moved_to}\n")
    hook.chmod(0o755)
    code, record = relay_json("sync", source.url, target.url, "--force-with-lease", check=False)
    assert code == 1, record
    main = next(r for r in record["refs"] if r["dst"] == "refs/heads/main")
    assert main["action"] == "force" and main["result"] != "ok"
    assert refs(target.path)["refs/heads/main"] == moved_to, "the other writer's update is never overwritten"


def test_two_runs_of_one_pair_at_once_both_end_ok(tmp_path: Path, make_remote) -> None:
    """A retried job while the first still runs: both push; the target's hook holds both inside
    receive-pack at once, so the one that updates second finds the ref made ('cannot lock ref').
    The target has what that run wanted, so it is ok, not 'refused'."""
    source = make_remote("file", source=make_source(tmp_path / "work"))
    target = make_remote("file")
    hook = target.path / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\ncat >/dev/null\nsleep 2\n")
    hook.chmod(0o755)
    argv = ["git", "relay", "sync", "--json", "--no-lfs", "--tags", source.url, target.url]
    runs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    said = [run.communicate(timeout=120) for run in runs]
    for run, (out, err) in zip(runs, said, strict=True):
        assert run.returncode == 0, err
        assert json.loads(out)["status"] == "ok"
    assert heads_and_tags(target.path) == heads_and_tags(source.path)
    assert any("another run pushed it first" in err for _, err in said), said


def test_prune_and_keep(tmp_path: Path, make_remote) -> None:
    work = make_source(tmp_path / "work")
    source, target = make_remote("file", source=work), make_remote("git")
    relay("sync", source.url, target.url)
    git("push", "-q", str(source.path), ":topic", cwd=work)
    code, record = relay_json("sync", source.url, target.url)
    assert code == 0 and "refs/heads/topic" in refs(target.path)
    assert next(r for r in record["refs"] if r["dst"] == "refs/heads/topic")["action"] == "keep"
    code, record = relay_json("sync", source.url, target.url, "--prune")
    assert code == 0 and "refs/heads/topic" not in refs(target.path)


def test_mappings_and_their_validation(tmp_path: Path, make_remote) -> None:
    work = make_source(tmp_path / "work")
    source, target = make_remote("file", source=work), make_remote("file")
    code, record = relay_json("sync", source.url, target.url, "--map", "main:stable", "--map", "refs/tags/v1:refs/tags/release-1")
    assert code == 0
    assert set(heads_and_tags(target.path)) == {"refs/heads/stable", "refs/tags/release-1"}
    assert refs(target.path)["refs/heads/stable"] == refs(work)["refs/heads/main"]
    nowhere = "http://127.0.0.1:1/never-contacted.git"
    for bad, words in (
        (["--map", "main:x", "--map", "topic:x"], "both write"),
        (["--map", "main:refs/tags/t"], "ambiguous"),
        (["--map", "refs/heads/main:refs/tags/t"], "maps a branch to a tag"),
    ):
        res = relay("sync", nowhere, nowhere + "2", *bad, check=False)
        assert res.returncode == 128 and words in res.stderr, res.stderr
        assert "unable to access" not in res.stderr, "refused before any network traffic"


def test_bootstrap_refuses_a_seeded_target(tmp_path: Path, make_remote) -> None:
    work = make_source(tmp_path / "work")
    source, target = make_remote("file", source=work), make_remote("file")
    relay("bootstrap", source.url, target.url, "--branch", "main")
    assert set(heads_and_tags(target.path)) == {"refs/heads/main"}
    res = relay("bootstrap", source.url, target.url, check=False)
    assert res.returncode == 128 and "already has managed refs" in res.stderr


@pytest.mark.parametrize("transport", ["file", "http"])
def test_source_dying_mid_relay_leaves_target_unchanged(transport: str, tmp_path: Path, make_remote) -> None:
    work = make_source(tmp_path / "work", big=400_000)
    source = make_remote(transport, name=f"truncate-relay-{transport}", source=work)
    target = make_remote("file")
    res = relay("sync", source.url, target.url, check=False)
    assert res.returncode != 0
    assert "fatal" in res.stderr or "error" in res.stderr
    assert refs(target.path) == {}
    fsck(target.path)


def test_max_pack_bytes_and_probe(tmp_path: Path, make_remote) -> None:
    work = make_source(tmp_path / "work", big=200_000)
    source, target = make_remote("http", source=work), make_remote("file")
    res = relay("sync", source.url, target.url, "--max-pack-bytes", "50k", check=False)
    assert res.returncode != 0 and "--max-pack-bytes" in res.stderr
    assert refs(target.path) == {}
    info = json.loads(relay("probe", source.url, "--push", "--json").stdout)
    assert info["protocol"] == 2 and info["object_format"] == "sha1" and info["head"] == "refs/heads/main"
    assert info["refs"]["refs/heads/main"] == refs(work)["refs/heads/main"]
    assert "report-status" in info["push_capabilities"]
    text = relay("probe", source.url).stdout
    assert "protocol: v2" in text and "refs/heads/topic" in text


def test_relay_does_not_touch_local_disk_or_print_credentials(tmp_path: Path, make_remote, http_server: int) -> None:
    work = make_source(tmp_path / "work")
    source, target = make_remote("file", source=work), make_remote("http")
    url = target.url.replace("/git/", "/auth/").replace("http://", "http://alice:s3cr3t-Pa55word@")
    cwd_before = set(os.listdir(tmp_path))
    res = relay("sync", source.url, url, "-vv")
    assert "s3cr3t-Pa55word" not in res.stderr + res.stdout
    assert refs(target.path)["refs/heads/main"] == refs(work)["refs/heads/main"]
    assert set(os.listdir(tmp_path)) == cwd_before


@pytest.mark.parametrize("transport", ["file", "http"])
def test_bootstrap_into_size_limited_target_is_split_and_resumes(transport: str, tmp_path: Path, make_remote) -> None:
    work = make_source(tmp_path / "work")
    for i in range(8):
        (work / f"chunk{i}.bin").write_bytes(os.urandom(90_000))
        git("add", ".", cwd=work)
        git("commit", "-q", "-m", f"chunk {i}", cwd=work)
    source = make_remote("file", source=work)
    target = make_remote(transport)
    git("config", "receive.maxInputSize", "250k", cwd=target.path)
    hook = target.path / "hooks" / "pre-receive"
    hook.write_text(
        f"#!/bin/sh\nn=$(cat {tmp_path}/count 2>/dev/null || echo 0); n=$((n+1))\n"
        f"echo $n > {tmp_path}/count\n[ $n -ge 3 ] && exit 1\nexit 0\n"
    )
    hook.chmod(0o755)
    first = relay("sync", source.url, target.url, "--tags", check=False)
    assert first.returncode != 0
    assert "refs/heads/main" not in refs(target.path), "the real ref moves only at the end"
    assert "refs/relay/split/heads/main" in refs(target.path)
    hook.unlink()
    code, record = relay_json("sync", source.url, target.url, "--tags")
    assert code == 0, record
    assert heads_and_tags(target.path) == heads_and_tags(source.path)
    assert not [r for r in refs(target.path) if r.startswith("refs/relay/")]
    assert record["bytes"] < 600_000, "the resumed run does not send the finished steps again"
    fsck(target.path)


def test_target_dying_mid_relay_leaves_it_unchanged(tmp_path: Path, make_remote) -> None:
    work = make_source(tmp_path / "work", big=400_000)
    source, target = make_remote("file", source=work), make_remote("file")
    fake_ssh = tmp_path / "cutting-ssh"
    # an "ssh" whose connection drops after 40 kB: it runs the remote command locally on a cut stdin
    fake_ssh.write_text('#!/bin/sh\nfor last; do :; done\nhead -c 40000 | sh -c "$last"\n')
    fake_ssh.chmod(0o755)
    env = dict(os.environ, GIT_SSH_COMMAND=str(fake_ssh), GIT_SSH_VARIANT="ssh")
    res = relay("sync", source.url, f"ssh://nowhere.invalid{target.path}", "--atomic", check=False, env=env)
    assert res.returncode != 0
    assert "fatal" in res.stderr or "error" in res.stderr
    assert refs(target.path) == {}
    fsck(target.path)


@pytest.mark.parametrize("protocol", ["2", "0"])
def test_a_shallow_source_is_refused_before_anything_moves(protocol: str, tmp_path: Path, make_remote) -> None:
    full = make_source(tmp_path / "full", commits=4)
    source = make_remote("file")
    source.path.rename(source.path.with_suffix(".empty"))
    git("clone", "-q", "--bare", "--depth", "2", f"file://{full}", str(source.path))
    target = make_remote("file")
    env = dict(os.environ, GIT_CONFIG_COUNT="1", GIT_CONFIG_KEY_0="protocol.version", GIT_CONFIG_VALUE_0=protocol)
    res = relay("sync", source.url, target.url, check=False, env=env)
    assert res.returncode == 128, res.stderr
    assert "the source repository is shallow" in res.stderr and "--unshallow" in res.stderr, res.stderr
    assert refs(target.path) == {}


@pytest.mark.parametrize("transport", ["http", "file"])
def test_spool_puts_the_source_pack_on_disk_first_and_lands_the_same(transport: str, tmp_path: Path, make_remote) -> None:
    work = make_source(tmp_path / "work")
    source, target = make_remote("file", source=work), make_remote(transport)
    env = dict(os.environ, GIT_RELAY_TRACE="1", TMPDIR=str(tmp_path))
    res = relay("sync", "--spool", "--tags", source.url, target.url, env=env)
    assert "spooled" in res.stderr
    assert refs(target.path) == refs(source.path)
    commit(work, "later.txt")
    git("push", "-q", str(source.path), "main", cwd=work)
    again = relay("sync", source.url, target.url, env=dict(os.environ, GIT_RELAY_SPOOL="1", GIT_RELAY_TRACE="1", TMPDIR=str(tmp_path)))
    assert "spooled" in again.stderr and refs(target.path)["refs/heads/main"] == refs(source.path)["refs/heads/main"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("git-relay-spool")], "the spool file is gone"


def test_all_refs_skips_forge_namespaces_with_a_warning(tmp_path: Path, make_remote) -> None:
    work = make_source(tmp_path / "work")
    source, target = make_remote("file", source=work), make_remote("file")
    head = refs(source.path)["refs/heads/main"]
    git("update-ref", "refs/pull/1/head", head, cwd=source.path)
    git("update-ref", "refs/notes/commits", head, cwd=source.path)
    res = relay("sync", "--all-refs", source.url, target.url)
    assert "skipping 1 ref(s) under refs/pull/" in res.stderr
    got = refs(target.path)
    assert "refs/pull/1/head" not in got and got["refs/notes/commits"] == head and got["refs/heads/main"] == head


@pytest.mark.usefixtures("workspace")
def test_a_sync_without_source_and_target_is_a_usage_error() -> None:
    """Exit code 2, as the exit-code table says for usage errors (not 128, a failed transfer)."""
    proc = relay("sync", check=False)
    assert proc.returncode == 2, proc.stderr
    assert "fatal: git relay sync needs a SOURCE and a TARGET (or --manifest FILE)" in proc.stderr


@pytest.mark.usefixtures("workspace")
def test_transfer_credentials_in_url_die_stops_git_relay_before_it_connects(tmp_path: Path) -> None:
    """git relay takes git's transfer.credentialsInUrl for its SOURCE and TARGET, in git's words."""
    res = git("-c", "transfer.credentialsInUrl=die", "relay", "plan", "http://u:s3cret@127.0.0.1:1/x.git", str(tmp_path / "t.git"),
              check=False)
    assert res.returncode == 128, res.stderr
    assert res.stderr == "fatal: URL 'http://u:<redacted>@127.0.0.1:1/x.git' uses plaintext credentials\n"


def test_relay_max_pack_and_push_bytes_settings_hold_for_git_relay(tmp_path: Path, make_remote) -> None:
    """relay.maxPackBytes and relay.maxPushBytes (config or environment) apply to git relay as to
    the helper's pushes: the first aborts before any ref moves, the second relays in steps."""
    work = make_source(tmp_path / "work")
    for i in range(6):
        (work / f"chunk{i}.bin").write_bytes(os.urandom(90_000))
        git("add", ".", cwd=work)
        git("commit", "-q", "-m", f"chunk {i}", cwd=work)
    source, target = make_remote("file", source=work), make_remote("file")
    res = relay("sync", source.url, target.url, check=False, env=dict(os.environ, GIT_RELAY_MAX_PACK_BYTES="100k"))
    assert res.returncode == 128 and "relay.maxPackBytes" in res.stderr, res.stderr
    assert refs(target.path) == {}
    pushes = tmp_path / "pushes"
    hook = target.path / "hooks" / "pre-receive"
    hook.write_text(f"#!/bin/sh\necho push >> {pushes}\n")
    hook.chmod(0o755)
    proc = subprocess.run(["git", "-c", "relay.maxPushBytes=200k", "relay", "sync", source.url, target.url],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert refs(target.path)["refs/heads/main"] == refs(work)["refs/heads/main"]
    assert len(pushes.read_text().splitlines()) >= 3, "a 540 KB history in steps of about 200 KB"
    assert not [r for r in refs(target.path) if r.startswith("refs/relay/")]
    fsck(target.path)
