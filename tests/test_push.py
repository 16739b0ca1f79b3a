"""git push relay::<url> against real servers: every push form, rejections, limits and splitting."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
from conftest import TRANSPORTS, commit, fsck, git, make_source, objects, refs

pytestmark = pytest.mark.integration


def push(work: Path, *args: str, check: bool = True, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return git("push", *args, cwd=work, check=check, env=env)


def stats(path: Path) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
def work(tmp_path: Path) -> Path:
    return make_source(tmp_path / "work")


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_push_forms_match_native(transport: str, work: Path, make_remote, tmp_path: Path) -> None:
    ours, theirs = make_remote(transport), make_remote("file")
    for _remote, url in ((ours, ours.relay_url), (theirs, theirs.url)):
        push(work, url, "main", "topic", "--follow-tags")  # create, several refs, annotated tag followed
        push(work, url, "HEAD:refs/heads/from-head")  # HEAD as the source
        oid = git("rev-parse", "main~1", cwd=work).stdout.strip()
        push(work, url, f"{oid}:refs/heads/from-oid")  # raw object id as the source
        push(work, url, "--tags")
        push(work, url, ":refs/heads/from-oid")  # delete
    assert refs(ours.path) == refs(theirs.path)
    assert objects(ours.path) == objects(theirs.path)
    fsck(ours.path)
    # fast-forward, then forced non-fast-forward
    commit(work, "ff.txt")
    push(work, ours.relay_url, "main")
    assert refs(ours.path)["refs/heads/main"] == refs(work)["refs/heads/main"]
    git("reset", "-q", "--hard", "HEAD~2", cwd=work)
    commit(work, "rewritten.txt")
    res = push(work, ours.relay_url, "main", check=False)
    assert res.returncode != 0 and "non-fast-forward" in res.stderr
    res = push(work, ours.relay_url, "+main")
    assert "forced update" in res.stderr
    assert refs(ours.path)["refs/heads/main"] == refs(work)["refs/heads/main"]
    fsck(ours.path)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_second_branch_sends_only_new_objects_and_noop_sends_nothing(transport: str, tmp_path: Path, make_remote) -> None:
    work = make_source(tmp_path / "work", big=300_000)
    remote = make_remote(transport)
    statfile = tmp_path / "stats.jsonl"
    env = dict(os.environ, GIT_RELAY_STATS_FILE=str(statfile))
    push(work, remote.relay_url, "main", env=env)
    first = stats(statfile)[-1]
    assert first["bytes"] > 300_000
    git("checkout", "-q", "-b", "second", cwd=work)
    commit(work, "small.txt")
    push(work, remote.relay_url, "second", env=env)
    second = stats(statfile)[-1]
    assert second["refs"] == [{"ref": "refs/heads/second", "old": "0" * 40, "new": refs(work)["refs/heads/second"], "result": "ok"}]
    assert second["bytes"] < 2_000, "only the new commit, tree and blob may be sent"
    assert second["objects"] == 3
    # a push with nothing new: git finds nothing to do, no pack, no stats record
    res = push(work, remote.relay_url, "second", env=env)
    assert "Everything up-to-date" in res.stderr
    assert len(stats(statfile)) == 2
    # a new branch name for a commit the remote has: no new objects at all
    push(work, remote.relay_url, "second:refs/heads/alias", env=env)
    assert stats(statfile)[-1]["objects"] == 0


@pytest.mark.parametrize("transport", ["file", "ssh", "git", "http"])
def test_rejections_are_reported_like_git(transport: str, work: Path, make_remote) -> None:
    remote = make_remote(transport)
    push(work, remote.relay_url, "main", "topic")
    hook = remote.path / "hooks" / "pre-receive"
    hook.write_text(
        "#!/bin/sh\nwhile read old new ref; do case $ref in\n"
        "  refs/heads/blocked) echo 'policy: blocked is read-only' >&2; exit 1;;\nesac; done\nexit 0\n"
    )
    hook.chmod(0o755)
    git("checkout", "-q", "-b", "blocked", cwd=work)
    commit(work, "b.txt")
    res = push(work, remote.relay_url, "blocked", check=False)
    assert res.returncode != 0
    assert "remote: policy: blocked is read-only" in res.stderr
    assert "pre-receive hook declined" in res.stderr
    assert "refs/heads/blocked" not in refs(remote.path)
    # lease: the remote moved since our idea of it
    git("checkout", "-q", "main", cwd=work)
    old_main = refs(work)["refs/heads/main"]
    commit(work, "lease.txt")
    wrong = git("rev-parse", "main~2", cwd=work).stdout.strip()
    res = push(work, remote.relay_url, f"--force-with-lease=main:{wrong}", "main", check=False)
    assert res.returncode != 0 and "stale info" in res.stderr
    assert refs(remote.path)["refs/heads/main"] == old_main
    res = push(work, remote.relay_url, f"--force-with-lease=main:{old_main}", "main")
    assert refs(remote.path)["refs/heads/main"] == refs(work)["refs/heads/main"]
    # server-side policies
    git("config", "receive.denyNonFastForwards", "true", cwd=remote.path)
    git("config", "receive.denyDeletes", "true", cwd=remote.path)
    git("reset", "-q", "--hard", "HEAD~1", cwd=work)
    res = push(work, remote.relay_url, "+main", check=False)
    assert res.returncode != 0
    assert "[remote rejected]" in res.stderr
    res = push(work, remote.relay_url, ":topic", check=False)
    assert res.returncode != 0 and "[remote rejected]" in res.stderr
    assert "refs/heads/topic" in refs(remote.path)


@pytest.mark.parametrize("transport", ["file", "ssh", "http"])
def test_atomic_dry_run_and_push_options(transport: str, work: Path, make_remote) -> None:
    remote = make_remote(transport)
    push(work, remote.relay_url, "main", "topic")
    before = refs(remote.path)
    commit(work, "one.txt")  # main fast-forwards
    git("checkout", "-q", "topic", cwd=work)
    git("reset", "-q", "--hard", "HEAD~1", cwd=work)
    commit(work, "diverge.txt")  # topic does not
    res = push(work, remote.relay_url, "--atomic", "main", "topic", check=False)
    assert res.returncode != 0
    assert refs(remote.path) == before, "an atomic push with one bad ref changes nothing"
    res = push(work, remote.relay_url, "--dry-run", "main")
    assert "main -> main" in res.stderr
    assert refs(remote.path) == before, "a dry run changes nothing"
    git("config", "receive.advertisePushOptions", "true", cwd=remote.path)
    hook = remote.path / "hooks" / "post-receive"
    hook.write_text('#!/bin/sh\necho "option: $GIT_PUSH_OPTION_COUNT $GIT_PUSH_OPTION_0"\n')
    hook.chmod(0o755)
    res = push(work, remote.relay_url, "-o", "ci.skip=yes please", "main")
    assert "remote: option: 1 ci.skip=yes please" in res.stderr
    res = push(work, remote.relay_url, "--atomic", "+topic")
    assert refs(remote.path)["refs/heads/topic"] == refs(work)["refs/heads/topic"]


@pytest.mark.parametrize("transport", ["file", "git", "http"])
def test_target_with_fsck_objects(transport: str, work: Path, make_remote) -> None:
    remote = make_remote(transport)
    git("config", "receive.fsckObjects", "true", cwd=remote.path)
    push(work, remote.relay_url, "main", "topic", "--tags")
    assert refs(remote.path)["refs/heads/topic"] == refs(work)["refs/heads/topic"]
    fsck(remote.path)


@pytest.mark.parametrize("transport", ["file", "http"])
def test_an_unpack_failure_is_said_as_native_send_pack_says_it(transport: str, work: Path, make_remote) -> None:
    """A pack the target cannot take (here: a commit its fsck refuses): the same lines as native
    git, "error: remote unpack failed: ..." included, and no ref moves."""
    tree = git("rev-parse", "main^{tree}", cwd=work).stdout.strip()
    bad = git("hash-object", "-t", "commit", "-w", "--literally", "--stdin", cwd=work,
              input=f"tree {tree}\ncommitter broken\n\nno author\n".encode()).stdout.strip()
    said = {}
    remote = make_remote(transport)
    git("config", "receive.fsckObjects", "true", cwd=remote.path)
    for kind in ("native", "relay"):  # the refused push changes nothing, so one target serves both
        url = remote.relay_url if kind == "relay" else remote.url
        res = git("push", url, f"{bad}:refs/heads/bad", cwd=work, check=False)
        assert res.returncode == 1 and refs(remote.path) == {}, res.stderr
        said[kind] = [line.replace("relay::", "") for line in res.stderr.splitlines() if line.startswith(("error:", " ! "))]
    assert said["native"][0] == "error: remote unpack failed: unpack-objects abnormal exit", said
    assert said["relay"] == said["native"], said


@pytest.mark.parametrize("transport", ["file", "git", "http"])
def test_max_pack_bytes_aborts_before_any_ref_moves(transport: str, tmp_path: Path, make_remote) -> None:
    work = make_source(tmp_path / "work", big=200_000)
    remote = make_remote(transport)
    res = git("-c", "relay.maxPackBytes=50k", "push", remote.relay_url, "main", cwd=work, check=False)
    assert res.returncode != 0
    assert "relay.maxPackBytes" in res.stderr
    assert refs(remote.path) == {}
    git("-c", "relay.maxPackBytes=10m", "push", remote.relay_url, "main", cwd=work)
    assert refs(remote.path)["refs/heads/main"] == refs(work)["refs/heads/main"]


@pytest.mark.parametrize("transport", ["file", "ssh"])
def test_connection_cut_mid_push_leaves_remote_unchanged(transport: str, tmp_path: Path, make_remote) -> None:
    work = make_source(tmp_path / "work", big=300_000)
    remote = make_remote(transport)
    wrapper = tmp_path / "cut-receive-pack"
    wrapper.write_text('#!/bin/sh\nhead -c 40000 | git-receive-pack "$@"\n')
    wrapper.chmod(0o755)
    git("remote", "add", "target", remote.relay_url, cwd=work)
    git("config", "remote.target.receivepack", str(wrapper), cwd=work)
    res = push(work, "target", "main", "topic", check=False)
    assert res.returncode != 0
    assert "fatal:" in res.stderr or "error:" in res.stderr
    assert refs(remote.path) == {}
    fsck(remote.path)
    # nothing is recorded as pushed locally either
    assert "refs/remotes/target/main" not in refs(work)


def _big_history(work: Path, n: int, size: int) -> None:
    for i in range(n):
        commit(work, f"chunk{i}.bin", os.urandom(size))


# git:// included: there git daemon resets the socket before receive-pack's reason reaches us, and
# a reset while the pack was still going out is taken as a probable size refusal (bounded retries).
@pytest.mark.parametrize("transport", ["file", "ssh", "http", "git"])
def test_push_bigger_than_target_limit_is_split_and_resumes(transport: str, tmp_path: Path, make_remote) -> None:
    work = make_source(tmp_path / "work")
    _big_history(work, 8, 90_000)  # ~720 KB of incompressible data, 3x the target's limit
    remote = make_remote(transport)
    git("config", "receive.maxInputSize", "250k", cwd=remote.path)
    native = push(work, remote.url, "main", check=False)
    assert native.returncode != 0, "plain git must fail against this target"
    # interrupted half way: the target declines the third step
    hook = remote.path / "hooks" / "pre-receive"
    hook.write_text(
        f"#!/bin/sh\nn=$(cat {tmp_path}/count 2>/dev/null || echo 0); n=$((n+1))\n"
        f"echo $n > {tmp_path}/count\n[ $n -ge 3 ] && exit 1\nexit 0\n"
    )
    hook.chmod(0o755)
    statfile = tmp_path / "stats.jsonl"
    env = dict(os.environ, GIT_RELAY_STATS_FILE=str(statfile))
    first = push(work, remote.relay_url, "main", check=False, env=env)
    assert first.returncode != 0
    assert "refs/heads/main" not in refs(remote.path), "the user's ref moves only at the end"
    assert "refs/relay/split/heads/main" in refs(remote.path), "progress is kept on the target"
    hook.unlink()
    second = push(work, remote.relay_url, "main", env=env)
    assert "step" in second.stderr
    assert refs(remote.path)["refs/heads/main"] == refs(work)["refs/heads/main"]
    assert "refs/relay/split/heads/main" not in refs(remote.path), "the helper ref is removed"
    fsck(remote.path)
    assert objects(remote.path) >= set(git("rev-list", "--objects", "main", cwd=work).stdout.split()[::2]) - {""}
    resumed = stats(statfile)[-1]
    assert resumed["bytes"] < 600_000, "the resumed run does not send the finished steps again"


def test_max_push_bytes_splits_on_purpose(tmp_path: Path, make_remote) -> None:
    work = make_source(tmp_path / "work")
    _big_history(work, 4, 60_000)
    remote = make_remote("file")
    res = git("-c", "relay.maxPushBytes=100k", "push", remote.relay_url, "main", cwd=work)
    assert "step 1/" in res.stderr
    # the connection that only showed the push was too big says goodbye, so receive-pack ends quietly
    assert "fatal" not in res.stderr and "hung up" not in res.stderr, res.stderr
    assert refs(remote.path)["refs/heads/main"] == refs(work)["refs/heads/main"]
    assert not [r for r in refs(remote.path) if r.startswith("refs/relay/")]
    fsck(remote.path)


def test_http_auth_settled_before_a_streamed_push_and_redirects(tmp_path: Path, make_remote, http_server: int) -> None:
    from conftest import HTTP_PASSWORD, HTTP_USER

    work = make_source(tmp_path / "work", big=2_500_000)  # a pack bigger than one POST buffer
    remote = make_remote("http")
    store = tmp_path / "creds"
    store.write_text(f"http://{HTTP_USER}:{HTTP_PASSWORD}@127.0.0.1:{http_server}\n")
    store.chmod(0o600)
    url = "relay::" + remote.url.replace("/git/", "/postauth/")  # discovery is public, POSTs need a login
    res = git("-c", f"credential.helper=store --file={store}", "push", url, "main", cwd=work, env=dict(os.environ, GIT_RELAY_TRACE="1"))
    assert refs(remote.path)["refs/heads/main"] == refs(work)["refs/heads/main"]
    assert HTTP_PASSWORD not in res.stderr
    assert res.stderr.count("http: POST") >= 2, "an empty probe POST settles the login before the pack streams"
    # a repository that moved: discovery follows the redirect and the POSTs go to the new place
    clone = tmp_path / "clone"
    git("clone", "-q", "relay::" + remote.url.replace("/git/", "/moved/"), str(clone))
    assert refs(clone)["refs/remotes/origin/main"] == refs(work)["refs/heads/main"]


def test_force_if_includes_and_signed_push(work: Path, make_remote) -> None:
    remote = make_remote("file")
    git("remote", "add", "r", remote.relay_url, cwd=work)
    push(work, "r", "main")
    git("fetch", "-q", "r", cwd=work)
    git("commit", "-q", "--amend", "-m", "amended", cwd=work)
    res = push(work, "--force-with-lease", "--force-if-includes", "r", "main", check=False)
    assert res.returncode == 0, res.stderr
    assert refs(remote.path)["refs/heads/main"] == refs(work)["refs/heads/main"]
    commit(work, "signed.txt")
    res = push(work, "r", "--signed", "main", check=False)
    assert res.returncode != 0 and "does not support --signed" in res.stderr


def test_upload_pack_and_receive_pack_options_are_honoured(work: Path, make_remote, tmp_path: Path) -> None:
    remote = make_remote("file")
    log = tmp_path / "programs.log"
    for name in ("upload-pack", "receive-pack"):
        wrapper = tmp_path / f"my-{name}"
        wrapper.write_text(f'#!/bin/sh\necho {name} >> {log}\nexec git-{name} "$@"\n')
        wrapper.chmod(0o755)
    push(work, f"--receive-pack={tmp_path}/my-receive-pack", remote.relay_url, "main")
    git("clone", "-q", f"--upload-pack={tmp_path}/my-upload-pack", remote.relay_url, str(tmp_path / "c"))
    assert refs(tmp_path / "c")["refs/remotes/origin/main"] == refs(work)["refs/heads/main"]
    assert log.read_text().split() == ["receive-pack", "upload-pack"]


def test_http_413_from_a_front_end_is_split(tmp_path: Path, make_remote, http_server: int) -> None:
    """A body limit in front of the git server (HTTP 413) is a size refusal like receive.maxInputSize."""
    work = make_source(tmp_path / "work")
    _big_history(work, 8, 90_000)  # ~720 KB, over twice the front end's 300 KiB
    remote = make_remote("http")
    url = remote.url.replace("/git/", "/small/")
    assert push(work, url, "main", check=False).returncode != 0, "plain git cannot get through"
    res = push(work, "relay::" + url, "main")
    assert "step 1/" in res.stderr, res.stderr
    assert refs(remote.path)["refs/heads/main"] == refs(work)["refs/heads/main"]
    assert not [r for r in refs(remote.path) if r.startswith("refs/relay/")]
    fsck(remote.path)


def test_a_learned_limit_splits_the_next_push_up_front(tmp_path: Path, make_remote, http_server: int) -> None:
    """After one 413 from a host, the next big push there goes in steps with no refused attempt."""
    state = tmp_path / "state"
    env = dict(os.environ, GIT_RELAY_STATE_DIR=str(state))
    work = make_source(tmp_path / "work")
    _big_history(work, 8, 90_000)
    first, second = make_remote("http"), make_remote("http")
    push(work, "relay::" + first.url.replace("/git/", "/small/"), "main", env=env)
    assert (state / "limits").exists(), "the refusal was remembered"
    probe = subprocess.run(["git", "relay", "probe", first.url.replace("/git/", "/small/")], capture_output=True, text=True, env=env)
    assert "size limit learned from pushes: refused a pack of" in probe.stdout, probe.stdout
    res = push(work, "relay::" + second.url.replace("/git/", "/small/"), "main", env=env)
    assert "refused a" not in res.stderr and "pushing in steps" in res.stderr, res.stderr
    assert refs(second.path)["refs/heads/main"] == refs(work)["refs/heads/main"]
    # relay.maxPushBytes still decides when set; another place on the host learned nothing
    elsewhere = make_remote("http")
    res = push(work, "relay::" + elsewhere.url, "main", env=env)
    assert "step" not in res.stderr


def test_a_file_over_max_object_bytes_stops_the_push_and_is_named(tmp_path: Path, make_remote) -> None:
    work = make_source(tmp_path / "work")
    (work / "media").mkdir()
    commit(work, "media/video.bin", os.urandom(300_000))
    commit(work, "after.txt")
    remote = make_remote("file")
    res = git("-c", "relay.maxObjectBytes=200k", "push", remote.relay_url, "main", cwd=work, check=False)
    assert res.returncode != 0
    assert "media/video.bin" in res.stderr and "relay.maxObjectBytes" in res.stderr and "LFS" in res.stderr, res.stderr
    added = git("log", "--format=%H", "-1", "--", "media/video.bin", cwd=work).stdout.strip()
    assert added[:12] in res.stderr, "the commit that added the file is named"
    assert refs(remote.path) == {} and objects(remote.path) == set(), "nothing was sent"


def test_one_commit_bigger_than_the_target_is_named_not_retried_forever(tmp_path: Path, make_remote) -> None:
    work = make_source(tmp_path / "work")
    _big_history(work, 3, 90_000)
    commit(work, "huge.bin", os.urandom(400_000))  # alone over the target's limit
    _big_history(work, 2, 90_000)
    remote = make_remote("file")
    git("config", "receive.maxInputSize", "250k", cwd=remote.path)
    res = push(work, remote.relay_url, "main", check=False)
    assert res.returncode != 0
    huge = git("log", "--format=%H", "-1", "--", "huge.bin", cwd=work).stdout.strip()
    assert f"commit {huge[:12]}" in res.stderr and "huge.bin" in res.stderr and "filter-repo" in res.stderr, res.stderr
    assert "refs/heads/main" not in refs(remote.path)
    fsck(remote.path)


def _written(event: Path) -> list[int]:
    """Objects each pack-objects of a push wrote, from GIT_TRACE2_EVENT (as git's t5516 counts them)."""
    found = re.findall(r'"key":"write_pack_file/wrote","value":"(\d+)"', event.read_text()) if event.exists() else []
    return [int(n) for n in found]


@pytest.mark.parametrize("transport", ["file", "http"])
def test_push_negotiation_sends_only_what_the_remote_lacks(transport: str, tmp_path: Path, make_remote) -> None:
    work = make_source(tmp_path / "work")
    lines = []
    for i in range(1200):  # a long history, so the push without negotiation is big
        lines += ["commit refs/heads/main", f"committer A <a@example.com> {1_600_000_000 + i} +0000", "data 2", "c", "",
                  *(["from refs/heads/main^0"] if i == 0 else []), f"M 644 inline f{i % 50}.txt", f"data {len(str(i)) + 1}", f"{i}", ""]
    git("fast-import", "--quiet", "--force", cwd=work, input="\n".join(lines).encode())
    git("reset", "-q", "--hard", "main", cwd=work)
    base = tmp_path / "base.git"
    git("clone", "-q", "--bare", "--single-branch", "--no-tags", "-b", "main", str(work), str(base))
    ahead = tmp_path / "ahead"  # somebody else moves the remote's only branch past what we have
    git("clone", "-q", str(base), str(ahead))
    commit(ahead, "theirs.txt")
    git("push", "-q", "origin", "main", cwd=ahead)
    git("checkout", "-q", "-b", "feature", cwd=work)
    for i in range(3):
        commit(work, f"feature{i}.txt")
    results = {}
    for name, settings, relay in (("native", ["-c", "push.negotiate=true"], False), ("relay", ["-c", "push.negotiate=true"], True),
                                  ("relay-unasked", [], True), ("native-unasked", [], False)):
        remote = make_remote(transport, source=base)
        event = tmp_path / f"{name}.event"
        env = dict(os.environ, GIT_TRACE2_EVENT=str(event))
        url = remote.relay_url if relay else remote.url
        git(*settings, "push", "-q", url, "feature", cwd=work, env=env)
        assert refs(remote.path)["refs/heads/feature"] == refs(work)["refs/heads/feature"]
        fsck(remote.path)
        results[name] = sum(_written(event))
    assert results["native"] <= 9, results  # 3 commits, their trees and blobs
    assert results["relay"] <= results["native"], results
    assert results["relay-unasked"] <= results["native"], results  # beyond git: negotiated without being asked
    assert results["native-unasked"] > 1000, results  # what git sends when it does not negotiate


@pytest.mark.parametrize("transport", ["ssh", "http"])
def test_push_from_a_shallow_clone_as_native(transport: str, tmp_path: Path, make_remote) -> None:
    src = make_source(tmp_path / "src", commits=5)
    results = {}
    for kind in ("native", "relay"):
        remote = make_remote(transport, source=src)
        url = remote.relay_url if kind == "relay" else remote.url
        shallow = tmp_path / f"shallow-{kind}"
        git("clone", "-q", "--depth", "1", f"file://{src}", str(shallow))
        commit(shallow, "new.txt")
        git("push", "-q", url, "HEAD:refs/heads/main", cwd=shallow)
        assert refs(remote.path)["refs/heads/main"] == refs(shallow)["refs/heads/main"]
        fsck(remote.path)  # connected: the target had the history below the shallow root
        # a shallow clone of an unrelated history has roots the target lacks: refused, as git refuses it
        other = tmp_path / f"other-{kind}"
        git("init", "-q", str(other))
        for i in range(3):
            commit(other, f"unrelated-{i}.txt")
        grafted = tmp_path / f"grafted-{kind}"
        git("clone", "-q", "--depth", "1", f"file://{other}", str(grafted))
        res = git("push", url, "HEAD:refs/heads/grafted", cwd=grafted, check=False)
        results[kind] = (res.returncode, "shallow update not allowed" in res.stderr, "refs/heads/grafted" in refs(remote.path))
        fsck(remote.path)
    assert results["relay"] == results["native"], results
    if transport == "ssh":  # (git http-backend takes the new shallow root: the target stays connected, see fsck)
        assert results["relay"] == (1, True, False), results


@pytest.mark.parametrize("transport", ["ssh", "http", "file"])
def test_signed_push_delivers_the_certificate_to_the_hooks(transport: str, tmp_path: Path, make_remote) -> None:
    key = tmp_path / "signing_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "relay-test", "-f", str(key)], check=True)
    work = make_source(tmp_path / "work")
    git("config", "gpg.format", "ssh", cwd=work)
    git("config", "user.signingKey", str(key), cwd=work)
    certs = {}
    for kind in ("native", "relay"):
        remote = make_remote(transport)
        git("config", "receive.certNonceSeed", "sekrit", cwd=remote.path)
        out = tmp_path / f"cert-{kind}"
        hook = remote.path / "hooks" / "post-receive"
        hook.write_text(f'#!/bin/sh\ncat >/dev/null\n[ -n "$GIT_PUSH_CERT" ] && git cat-file blob "$GIT_PUSH_CERT" > {out}\n'
                        f'echo "nonce status: $GIT_PUSH_CERT_NONCE_STATUS" >> {out}\nexit 0\n')
        hook.chmod(0o755)
        url = remote.relay_url if kind == "relay" else remote.url
        git("push", "--signed", url, "main", cwd=work)
        assert refs(remote.path)["refs/heads/main"] == refs(work)["refs/heads/main"]
        text = out.read_text()
        assert "certificate version 0.1" in text and "-----BEGIN SSH SIGNATURE-----" in text, text
        assert "refs/heads/main" in text and "nonce status: OK" in text, text
        certs[kind] = [line.replace(remote.path.name, "<repo>") for line in text.splitlines()
                       if line.startswith(("pushee ", "0000000000000000000000000000000000000000 "))]
    assert certs["relay"] == certs["native"]
    # a receiver that takes no certificates: refused as git refuses it, nothing moves
    plain = make_remote(transport)
    res = git("push", "--signed", plain.relay_url, "main", cwd=work, check=False)
    assert res.returncode != 0 and "the receiving end does not support --signed push" in res.stderr
    assert refs(plain.path) == {}
