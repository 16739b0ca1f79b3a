"""git relay sync --manifest: many pairs against the real servers, shards, partial success, bad manifests."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from conftest import HTTP_PASSWORD, HTTP_USER, commit, git, make_source, refs

from git_remote_relay.fleet import Pair, _pair_id, longest_first, shard


def fleet(*args: str, cwd: Path | None = None) -> tuple[int, list[dict], str]:  # type: ignore[type-arg]
    proc = subprocess.run(["git", "relay", "sync", *args], capture_output=True, text=True, cwd=cwd)
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    return proc.returncode, lines, proc.stderr


def test_a_manifest_relays_every_pair_and_a_second_run_moves_nothing(tmp_path: Path, make_remote) -> None:
    sources = [make_remote("file", source=make_source(tmp_path / f"src{i}")) for i in range(3)]
    targets = [make_remote(kind) for kind in ("http", "file", "git")]
    named = {n: make_remote("file", name=f"tmpl-src-{n}", source=make_source(tmp_path / f"t{n}")) for n in ("a", "b")}
    for n in named:
        make_remote("file", name=f"tmpl-dst-{n}")
    root = sources[0].path.parent
    manifest = tmp_path / "fleet.toml"
    manifest.write_text(
        "[defaults]\ntags = true\n\n"
        + "".join(f'[[pair]]\nsource = "{s.url}"\ntarget = "{t.url}"\n\n' for s, t in zip(sources, targets, strict=True))
        + f'[[template]]\nsource = "file://{root}/tmpl-src-{{name}}.git"\ntarget = "file://{root}/tmpl-dst-{{name}}.git"\n'
        + 'names = ["a", "b"]\n'
    )
    code, lines, err = fleet("--manifest", str(manifest), "--jobs", "3")
    assert code == 0, err
    per_pair, summary = lines[:-1], lines[-1]
    assert len(per_pair) == 5 and summary["summary"] and summary["ok"] == 5 and summary["failed"] == 0
    for s, t in zip(sources, targets, strict=True):
        assert refs(t.path) == refs(s.path)
    for n in named:
        assert refs(root / f"tmpl-dst-{n}.git") == refs(root / f"tmpl-src-{n}.git")
    assert all(line["status"] == "ok" and line["relayed"] and line["bytes"] > 0 for line in per_pair)
    again_code, again, _ = fleet("--manifest", str(manifest), "--jobs", "3")
    assert again_code == 0
    assert all(line["bytes"] == 0 and line["relayed"] == [] for line in again[:-1]), again


def test_a_manifests_lfs_options_become_the_pairs_flags(tmp_path: Path) -> None:
    from git_remote_relay.fleet import load_manifest

    manifest = tmp_path / "fleet.toml"
    manifest.write_text('[defaults]\nlfs_history = true\n[[pair]]\nsource = "file:///s.git"\ntarget = "file:///t.git"\n'
                        '[[pair]]\nsource = "file:///s2.git"\ntarget = "file:///t2.git"\nlfs = false\nlfs_history = false\n')
    first, second = load_manifest(str(manifest))
    assert "--lfs-history" in first.argv() and "--no-lfs" not in first.argv()
    assert "--lfs-history" not in second.argv() and "--no-lfs" in second.argv()


def test_shards_cover_every_pair_exactly_once() -> None:
    pairs = [Pair(f"file:///src/{i}.git", f"file:///dst/{i}.git", {}, str(i), 1) for i in range(60)]
    parts = [shard(pairs, f"{k}/3") for k in range(3)]
    names = [p.name for part in parts for p in part]
    assert sorted(names) == sorted(p.name for p in pairs), "every pair in exactly one shard"
    assert all(parts), "each shard gets some"
    assert [p.name for p in shard(pairs, "1/3")] == [p.name for p in parts[1]], "stable"


def test_two_shards_run_at_once_relay_each_pair_once(tmp_path: Path, make_remote) -> None:
    pairs = [(make_remote("file", source=make_source(tmp_path / f"s{i}")), make_remote("file")) for i in range(6)]
    manifest = tmp_path / "fleet.toml"
    body = "".join(f'[[pair]]\nsource = "{s.url}"\ntarget = "{t.url}"\n' for s, t in pairs)
    manifest.write_text("[defaults]\ntags = true\n" + body)
    procs = [subprocess.Popen(["git", "relay", "sync", "--manifest", str(manifest), "--shard", f"{k}/2"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for k in range(2)]
    outputs = [p.communicate() for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    done = [json.loads(line)["target"] for out, _ in outputs for line in out.splitlines() if "summary" not in line]
    assert sorted(done) == sorted(t.url for _, t in pairs), "each pair once, across both shards"
    for s, t in pairs:
        assert refs(t.path) == refs(s.path)


def test_a_refused_ref_is_reported_and_the_others_land(tmp_path: Path, make_remote) -> None:
    work = make_source(tmp_path / "work")
    git("branch", "protected", cwd=work)
    source = make_remote("file", source=work)
    target = make_remote("file")
    hook = target.path / "hooks" / "update"  # per ref: this one is refused, the others are not
    hook.write_text('#!/bin/sh\n[ "$1" = refs/heads/protected ] && { echo "protected by policy" >&2; exit 1; }\nexit 0\n')
    hook.chmod(0o755)
    other = make_remote("file", source=make_source(tmp_path / "other"))
    other_target = make_remote("file")
    manifest = tmp_path / "fleet.toml"
    manifest.write_text(f'[defaults]\ntags = true\n[[pair]]\nsource = "{source.url}"\ntarget = "{target.url}"\n'
                        f'[[pair]]\nsource = "{other.url}"\ntarget = "{other_target.url}"\n')
    code, lines, err = fleet("--manifest", str(manifest), "--jobs", "2")
    assert code == 1, err
    by_target = {line["target"]: line for line in lines[:-1]}
    bad = by_target[target.url]
    assert bad["status"] == "failed" and [r["ref"] for r in bad["refused"]] == ["refs/heads/protected"], bad
    assert bad["refused"][0]["reason"], "the refusal says why"
    landed = refs(target.path)
    assert "refs/heads/protected" not in landed
    assert {k: v for k, v in refs(source.path).items() if k != "refs/heads/protected"} == landed, "the other refs landed"
    assert "refs/heads/main" in bad["relayed"]
    assert refs(other_target.path) == refs(other.path)
    assert lines[-1]["failed"] == 1 and lines[-1]["ok"] == 1


def test_a_bad_manifest_names_file_line_and_key_and_nothing_runs(tmp_path: Path, make_remote) -> None:
    source = make_remote("file", source=make_source(tmp_path / "src"))
    target = make_remote("file")
    manifest = tmp_path / "bad.toml"
    manifest.write_text(f'[[pair]]\nsource = "{source.url}"\ntarget = "{target.url}"\n\n[[pair]]\nsource = "{source.url}"\n'
                        f'target = "{target.url}x"\ntaggs = true\n')
    code, lines, err = fleet("--manifest", str(manifest))
    assert code == 2 and lines == []
    assert f"{manifest}:5: pair 2: unknown key 'taggs'" in err, err
    assert refs(target.path) == {}, "nothing ran"
    broken = tmp_path / "broken.toml"
    broken.write_text("[[pair]\nsource = 1\n")
    code, _, err = fleet("--manifest", str(broken))
    assert code == 2 and str(broken) in err and "line 1" in err, err


def test_credentials_in_manifest_urls_never_reach_the_output(tmp_path: Path, make_remote) -> None:
    source = make_remote("file", source=make_source(tmp_path / "src"))
    target = make_remote("http")
    secret_url = target.url.replace("/git/", "/auth/").replace("http://", f"http://{HTTP_USER}:{HTTP_PASSWORD}@")
    manifest = tmp_path / "fleet.toml"
    manifest.write_text(f'[defaults]\ntags = true\n[[pair]]\nsource = "{source.url}"\ntarget = "{secret_url}"\n')
    proc = subprocess.run(["git", "relay", "sync", "--manifest", str(manifest)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert HTTP_PASSWORD not in proc.stdout + proc.stderr
    assert refs(target.path) == refs(source.path)
    commit(tmp_path / "src", "later.txt")


def test_the_slowest_pairs_of_the_last_run_start_first() -> None:
    pairs = [Pair(f"file:///src/{n}.git", f"file:///dst/{n}.git", {}, n, 1) for n in ("a", "big", "c", "new")]
    timings = {_pair_id(pairs[0]): 0.2, _pair_id(pairs[1]): 30.0, _pair_id(pairs[2]): 1.5}
    assert [p.name for p in longest_first(pairs, timings)] == ["new", "big", "c", "a"]
    assert [p.name for p in longest_first(pairs, {})] == ["a", "big", "c", "new"], "manifest order when nothing is known"


def test_atomic_from_the_command_line_applies_to_every_pair(tmp_path: Path, make_remote) -> None:
    work = make_source(tmp_path / "work")
    git("branch", "protected", cwd=work)
    source = make_remote("file", source=work)
    target = make_remote("file")
    hook = target.path / "hooks" / "update"
    hook.write_text('#!/bin/sh\n[ "$1" = refs/heads/protected ] && { echo "protected by policy" >&2; exit 1; }\nexit 0\n')
    hook.chmod(0o755)
    manifest = tmp_path / "fleet.toml"
    manifest.write_text(f'[[pair]]\nsource = "{source.url}"\ntarget = "{target.url}"\n')
    code, lines, err = fleet("--manifest", str(manifest), "--atomic")
    assert code == 1, err
    assert lines[0]["status"] == "failed" and lines[0]["relayed"] == []
    assert refs(target.path) == {}, "all or nothing: nothing"
    code, _, err = fleet("--manifest", str(manifest), "--tags")
    assert code == 2 and "only --atomic, --spool, --no-lfs and --lfs-history" in err


def test_a_host_that_asks_to_wait_gets_one_pair_at_a_time(tmp_path: Path, make_remote, http_server: int) -> None:
    import servers

    pairs = [(make_remote("file", source=make_source(tmp_path / f"s{i}")), make_remote("http")) for i in range(3)]
    with servers.tcp_proxy(http_server, busy_first=1) as proxy:
        manifest = tmp_path / "fleet.toml"
        manifest.write_text("[defaults]\ntags = true\n" + "".join(
            f'[[pair]]\nsource = "{s.url}"\ntarget = "{t.url.replace(f":{http_server}/", f":{proxy.port}/")}"\n' for s, t in pairs))
        code, lines, err = fleet("--manifest", str(manifest), "--jobs", "3")
    assert code == 0, err
    assert [line["throttled"] for line in lines[:-1]].count(["127.0.0.1"]) == 1, lines
    assert "relay: 127.0.0.1 asked to slow down (HTTP 429/503): one pair at a time there from now on" in err
    for s, t in pairs:
        assert refs(t.path) == refs(s.path)


def test_slowing_one_host_leaves_the_others_alone() -> None:
    from git_remote_relay.fleet import _Scheduler

    pairs = [Pair(f"https://a.example/{i}.git", f"https://b{i}.example/{i}.git", {}, str(i), 1) for i in range(4)]
    scheduler = _Scheduler(pairs, per_host=4)
    with scheduler.lock:
        assert scheduler.slow("a.example") and not scheduler.slow("a.example")
    first = scheduler.take()
    assert first is not None and scheduler.busy["a.example"] == 1
    with scheduler.lock:  # a.example is at its one pair: nothing else may start until it is done
        waiting = [p for p in scheduler.waiting if all(scheduler.busy.get(h, 0) < scheduler.caps.get(h, 4) for h in p.hosts)]
    assert waiting == []
    assert scheduler.caps == {"a.example": 1}, "the b hosts keep their four"
