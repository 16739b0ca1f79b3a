"""The push/split engine against the in-memory transport: no process, no socket, milliseconds.

The history is a fake too: a linear chain of commits whose packs have known sizes, so every
decision of the split engine (plan in bytes or in parts, refusals, resets, resume, a target that
moved) can be checked exactly.
"""

from __future__ import annotations

import io
from typing import Iterator

import pytest

from git_remote_relay import transport
from git_remote_relay.errors import PackError
from git_remote_relay.gitcmd import Config, Git
from git_remote_relay.protocol import ZERO_OID, Advertisement
from git_remote_relay.push import PackStream, PackTooLarge, PushOptions, RefUpdate, exchange
from git_remote_relay.split import MAX_UNEXPLAINED_RESETS, push_or_split, split_ref, target_haves
from git_remote_relay.transport.base import Context, Service
from git_remote_relay.transport.memory import SERVERS, MemoryServer, MemoryTransport, fake_pack
from git_remote_relay.transport.session import Session
from git_remote_relay.ui import Reporter
from git_remote_relay.url import InnerUrl


def oid(n: int) -> str:
    return f"{n:040x}"


class _Pack(PackStream):
    def __init__(self, data: bytes, limit: int | None, name: str) -> None:
        super().__init__(limit, name)
        self.data = data

    def _chunks(self) -> Iterator[bytes]:
        for i in range(0, len(self.data), 4096):
            yield self.data[i:i + 4096]


class FakeHistory:
    """Commits 1..n in a line, each adding ``size`` bytes of pack; sizes known or not."""

    def __init__(self, n: int, size: int, sized: bool = True) -> None:
        self.commits = [oid(i) for i in range(1, n + 1)]
        self.size = size
        self.sized = sized

    def _behind(self, base: list[str]) -> int:
        return max((self.commits.index(b) + 1 for b in base if b in self.commits), default=0)

    def chain(self, tip: str, target_haves: list[str]) -> list[str]:
        return self.commits[self._behind(target_haves):self.commits.index(tip) + 1]

    def estimate(self, tip: str, base: list[str]) -> int | None:
        return (self.commits.index(tip) + 1 - self._behind(base)) * self.size if self.sized else None

    def describe(self, commit: str, base: list[str]) -> str:
        return f"{commit[-4:]} (fake)"

    def prepare(self, updates: list[RefUpdate], base: list[str], ofs_delta: bool) -> None:
        return None

    def send(self, service: Service, adv: Advertisement, updates: list[RefUpdate], opts: PushOptions,
             limit: int | None, limit_source: str, prepared: object = None) -> tuple[int, int | None]:
        tips = [u.new for u in updates if not u.delete]
        count = max((self.commits.index(t) + 1 for t in tips), default=0) - self._behind(target_haves(adv))
        stream = _Pack(fake_pack(max(count, 0), max(count, 0) * self.size + 12), limit, limit_source) if tips else None
        return exchange(service, adv, updates, opts, quiet(), stream)


def quiet() -> Reporter:
    return Reporter(io.BytesIO(), verbosity=1, tty=False)


@pytest.fixture
def server() -> Iterator[MemoryServer]:
    transport.register("memory", MemoryTransport)
    srv = MemoryServer()
    SERVERS["t"] = srv
    yield srv
    del SERVERS["t"]


def session() -> Session:
    ctx = Context(env={}, git=Git({}), config=Config({}))
    return Session(InnerUrl(raw="memory://t/", scheme="memory", path="/", host="t"), ctx)


def push(history: FakeHistory, updates: list[RefUpdate], *, max_push: int | None = None, max_pack: int | None = None,
         reporter: Reporter | None = None) -> tuple[int, int | None]:
    s = session()
    return push_or_split(history, s.new_receive, s.new_receive(), updates, PushOptions(), reporter or quiet(),
                         max_pack=max_pack, max_push=max_push)


def test_a_push_that_fits_goes_in_one_piece(server: MemoryServer) -> None:
    history = FakeHistory(10, 1000)
    main = RefUpdate(src="main", dst="refs/heads/main", force=False, new=oid(10))
    push(history, [main])
    assert main.ok and server.refs == {"refs/heads/main": oid(10)}
    assert len(server.pushes) == 1


def test_a_refused_push_is_split_in_bytes_and_only_the_end_moves_the_ref(server: MemoryServer) -> None:
    server.max_input = 350_000
    history = FakeHistory(10, 100_000)
    main = RefUpdate(src="main", dst="refs/heads/main", force=False, new=oid(10))
    push(history, [main])
    assert main.ok and server.refs == {"refs/heads/main": oid(10)}, "the helper ref is gone, the real one moved"
    steps = [cmds for cmds, _ in server.pushes[1:]]
    assert all(c[0][2] == split_ref("refs/heads/main") for c in steps[:-1]), "steps go to the helper ref"
    assert steps[-1][0][2] == "refs/heads/main"
    refused = [size for _, size in server.pushes if size > 350_000]
    assert len(refused) <= 2, "the first attempt, and at most one step planned too big"


def test_without_sizes_the_history_is_cut_in_halves_until_it_fits(server: MemoryServer) -> None:
    server.max_input = 2600
    history = FakeHistory(8, 1000, sized=False)
    main = RefUpdate(src="main", dst="refs/heads/main", force=False, new=oid(8))
    push(history, [main])
    assert main.ok and server.refs == {"refs/heads/main": oid(8)}
    accepted = [size for cmds, size in server.pushes if 12 < size <= 2600]
    assert len(accepted) == 4, "halves refused, quarters of 2 commits each pass"
    assert server.pushes[-1][1] <= 12, "the final push only moves the ref"


def test_a_resumed_split_does_not_send_the_finished_steps_again(server: MemoryServer) -> None:
    server.max_input = 350_000
    history = FakeHistory(10, 100_000)
    server.refs[split_ref("refs/heads/main")] = oid(6)  # an earlier run got this far
    main = RefUpdate(src="main", dst="refs/heads/main", force=False, new=oid(10))
    push(history, [main])
    assert main.ok and server.refs == {"refs/heads/main": oid(10)}
    accepted = [size for _, size in server.pushes if size <= 350_000]
    assert max(size for _, size in server.pushes) <= 4 * 100_000 + 100, "no attempt carries the finished commits 1..6"
    assert sum(accepted) <= 4 * 100_000 + 200, "only commits 7..10 travel"


def test_a_target_that_moved_meanwhile_is_not_overwritten(server: MemoryServer) -> None:
    server.max_input = 350_000
    history = FakeHistory(10, 100_000)
    main = RefUpdate(src="main", dst="refs/heads/main", force=False, new=oid(10), old=ZERO_OID)
    seen = {"n": 0}

    def someone_else_pushes(commands: list[tuple[str, str, str]]) -> str | None:
        seen["n"] += 1
        if seen["n"] == 2:
            server.refs["refs/heads/main"] = oid(99)
        return None

    server.hook = someone_else_pushes
    push(history, [main])
    assert not main.ok and main.error == "stale info"
    assert server.refs["refs/heads/main"] == oid(99)


def test_unexplained_resets_are_retried_a_bounded_number_of_times(server: MemoryServer) -> None:
    server.max_input = 10  # every pack "too big", answered by a reset
    server.reset_over_limit = True
    history = FakeHistory(64, 100_000)
    main = RefUpdate(src="main", dst="refs/heads/main", force=False, new=oid(64))
    with pytest.raises(PackError, match="reset the connection"):
        push(history, [main])
    assert len(server.pushes) <= 2 + MAX_UNEXPLAINED_RESETS, "a link that always resets ends the push"
    assert "refs/heads/main" not in server.refs


def test_max_pack_bytes_aborts_and_never_splits(server: MemoryServer) -> None:
    history = FakeHistory(10, 1000)
    main = RefUpdate(src="main", dst="refs/heads/main", force=False, new=oid(10))
    with pytest.raises(PackTooLarge, match="relay.maxPackBytes"):
        push(history, [main], max_pack=5000)
    assert server.refs == {}


def test_max_push_bytes_splits_on_purpose(server: MemoryServer) -> None:
    history = FakeHistory(10, 100_000)
    main = RefUpdate(src="main", dst="refs/heads/main", force=False, new=oid(10))
    push(history, [main], max_push=250_000)
    assert main.ok and len(server.pushes) >= 5
    assert all(size <= 250_000 for _, size in server.pushes[1:])


def test_never_ok_without_the_servers_ok(server: MemoryServer) -> None:
    server.refs["refs/heads/main"] = oid(1)
    server.hook = lambda commands: "no"  # a pre-receive hook that declines
    history = FakeHistory(3, 10)
    main = RefUpdate(src="main", dst="refs/heads/main", force=False, new=oid(3), old=oid(1))
    push(history, [main])
    assert not main.ok and main.error == "pre-receive hook declined"
    assert server.refs["refs/heads/main"] == oid(1)


def test_session_reuses_a_v2_upload_stream_and_lists_once(server: MemoryServer) -> None:
    server.refs = {"refs/heads/main": oid(1), "HEAD": oid(1)}
    s = session()
    _, adv = s.upload(listed=True)
    again = s.upload(listed=True)[1]
    assert adv is again and adv.refs["refs/heads/main"] == oid(1)
    assert server.connections == 1


def test_split_interval_paces_the_steps(server: MemoryServer, monkeypatch: pytest.MonkeyPatch) -> None:
    import git_remote_relay.split as split

    pauses: list[float] = []
    monkeypatch.setattr(split.time, "sleep", pauses.append)
    history = FakeHistory(10, 100_000)
    main = RefUpdate(src="main", dst="refs/heads/main", force=False, new=oid(10))
    s = session()
    push_or_split(history, s.new_receive, s.new_receive(), [main], PushOptions(), quiet(), max_pack=None, max_push=250_000,
                  interval=1.5)
    assert main.ok and pauses and set(pauses) == {1.5}
    assert len(pauses) == len(server.pushes) - 1, "a pause after every step but the last"
