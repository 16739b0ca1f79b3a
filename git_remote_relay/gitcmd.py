"""The one seam for local git plumbing and every other child process the relay starts.

Children are started with ``os.posix_spawnp`` (``Child``), not ``subprocess``: importing
subprocess (with locale and re) costs ~12 ms, and the helper starts on every git operation.

Children never inherit the helper's stdout (it belongs to git's protocol): ``run`` captures it and
``popen`` requires the caller to say where it goes. Library code gets a ``Git`` object as a
parameter; tests build one over a temporary repository.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Mapping, Sequence

from .errors import LocalGitError

TYPE_CHECKING = False  # typing costs ~10 ms of start-up; mypy reads this as typing.TYPE_CHECKING
if TYPE_CHECKING:
    from typing import Any

__all__ = ["Git", "LOCAL_REPO_ENV", "scrubbed_env", "Config", "kill_tree", "widen_pipe", "spawn", "run_command", "wait_for",
           "Child", "Completed", "PIPE", "DEVNULL"]

# git's local_repo_env (environment.c): variables that describe *this* repository. A git process
# started for the *remote* side (a local upload-pack/receive-pack) must not see them, or it would
# read or write the wrong object store (reference/remote-helper-protocol.md, pitfall 6).
LOCAL_REPO_ENV = (
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_CONFIG",
    "GIT_CONFIG_PARAMETERS",
    "GIT_CONFIG_COUNT",
    "GIT_OBJECT_DIRECTORY",
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_IMPLICIT_WORK_TREE",
    "GIT_GRAFT_FILE",
    "GIT_INDEX_FILE",
    "GIT_NO_REPLACE_OBJECTS",
    "GIT_REPLACE_REF_BASE",
    "GIT_PREFIX",
    "GIT_SUPER_PREFIX",
    "GIT_SHALLOW_FILE",
    "GIT_COMMON_DIR",
)


def scrubbed_env(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` without the variables that point at the local repository."""
    out = {k: v for k, v in env.items() if k not in LOCAL_REPO_ENV}
    for key in list(out):
        if key.startswith("GIT_CONFIG_KEY_") or key.startswith("GIT_CONFIG_VALUE_"):
            del out[key]
    return out


PIPE = -1
DEVNULL = -3
# Python ignores SIGPIPE (and SIGXFSZ); a child must get the default back, like subprocess does.
_RESET_SIGNALS = (13, 25)  # SIGPIPE, SIGXFSZ on Linux and the BSDs


def _above_stdio(fd: int) -> int:
    """A pipe end numbered 0-2 (our own stdin was closed) would not survive the child's dup2
    onto itself: move it above them (close-on-exec, like every descriptor we open)."""
    if fd > 2:
        return fd
    import fcntl

    moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
    os.close(fd)
    return moved


class TimeoutExpired(Exception):
    """``Child.wait(timeout)`` ran out of time."""


class Child:
    """A child process started with ``os.posix_spawnp``: the part of ``subprocess.Popen`` the relay
    uses (``stdin``/``stdout``/``stderr`` pipes, ``pid``, ``poll``, ``wait``, ``kill``,
    ``returncode``), without importing subprocess (~12 ms with locale and re) on every start."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str], stdin: Any, stdout: Any, stderr: Any, bufsize: int) -> None:
        actions: list[tuple[int, ...]] = []
        mine: list[int] = []  # our ends of the pipes
        theirs: list[int] = []  # the child's ends, closed here once it has them
        self.stdin: Any = None
        self.stdout: Any = None
        self.stderr: Any = None
        null: int | None = None
        for fd, how in ((0, stdin), (1, stdout), (2, stderr)):
            if how is None:
                continue
            if how == PIPE:
                r, w = (_above_stdio(x) for x in os.pipe())
                child_end, our_end = (r, w) if fd == 0 else (w, r)
                theirs.append(child_end)
                mine.append(our_end)
                actions.append((os.POSIX_SPAWN_DUP2, child_end, fd))
                mode = "wb" if fd == 0 else "rb"
                stream = open(our_end, mode, buffering=bufsize if bufsize >= 0 else -1)  # noqa: SIM115 - owned by Child
                setattr(self, ("stdin", "stdout", "stderr")[fd], stream)
            elif how == DEVNULL:
                if null is None:
                    null = os.open(os.devnull, os.O_RDWR)
                    theirs.append(null)
                actions.append((os.POSIX_SPAWN_DUP2, null, fd))
            else:
                actions.append((os.POSIX_SPAWN_DUP2, how if isinstance(how, int) else how.fileno(), fd))
        try:
            self.pid = os.posix_spawnp(argv[0], list(argv), dict(env), file_actions=actions, setsigdef=_RESET_SIGNALS)
        except BaseException:
            for fd in mine:
                os.close(fd)
            raise
        finally:
            for fd in theirs:
                os.close(fd)
        self.returncode: int | None = None
        self._lock = threading.Lock()  # one waitpid at a time (a writer thread and its owner both wait)

    def poll(self) -> int | None:
        """The exit status if the child has ended (never blocks; another thread may be waiting)."""
        if self.returncode is None and self._lock.acquire(False):
            try:
                if self.returncode is None:
                    self._reap(os.WNOHANG)
            finally:
                self._lock.release()
        return self.returncode

    def _reap(self, flags: int) -> None:
        try:
            pid, status = os.waitpid(self.pid, flags)
        except ChildProcessError:
            pid, status = self.pid, 0  # reaped elsewhere: its status is lost, as in subprocess
        if pid:
            self.returncode = os.waitstatus_to_exitcode(status)

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the child (one thread reaps; others see its status)."""
        if timeout is None:
            with self._lock:
                if self.returncode is None:
                    self._reap(0)
            assert self.returncode is not None
            return self.returncode
        deadline = time.monotonic() + timeout
        delay = 0.0005
        while self.poll() is None:
            if time.monotonic() > deadline:
                raise TimeoutExpired(f"{self.pid} did not end within {timeout} s")
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
        assert self.returncode is not None
        return self.returncode

    def kill(self) -> None:
        if self.returncode is None:
            try:
                os.kill(self.pid, 9)
            except ProcessLookupError:
                pass

    def communicate(self, input: bytes | None) -> tuple[bytes, bytes]:
        """Feed ``input`` and collect stdout and stderr (threads, so no pipe can fill up and stall)."""
        import threading

        out: dict[str, bytes] = {}

        def drain(name: str, stream: Any) -> None:
            out[name] = stream.read()
            stream.close()

        readers = [threading.Thread(target=drain, args=(n, s)) for n, s in (("out", self.stdout), ("err", self.stderr)) if s is not None]
        for t in readers:
            t.start()
        if self.stdin is not None:
            try:
                if input:
                    self.stdin.write(input)
                self.stdin.close()
            except BrokenPipeError:
                pass
        for t in readers:
            t.join()
        self.wait()
        return out.get("out", b""), out.get("err", b"")


class Completed:
    """What ``run_command`` returns (the fields of ``subprocess.CompletedProcess`` we use)."""

    def __init__(self, returncode: int, stdout: bytes, stderr: bytes) -> None:
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr


def spawn(argv: Sequence[str], *, env: Mapping[str, str], cwd: str | None, stdin: Any, stdout: Any, stderr: Any = None,
          bufsize: int = -1) -> Child:
    """Start any child process the relay needs (git, ssh, a user's command). stdout must be given:
    the helper's own stdout is git's protocol and no child may write to it by accident. Signals
    the interpreter ignores (SIGPIPE) are reset for the child, as subprocess does."""
    if cwd is not None:
        # posix_spawn has no chdir: a shell changes directory, then execs the command
        argv = ["/bin/sh", "-c", 'cd "$1" && shift && exec "$@"', "sh", cwd, *argv]
    return Child(argv, env, stdin, stdout, stderr, bufsize)


def run_command(argv: Sequence[str], *, env: Mapping[str, str], cwd: str | None, input: bytes | None = None,
                capture: bool = True, stderr: Any = DEVNULL) -> Completed:
    """Run a child to completion: stdout captured (or discarded), stdin from ``input`` or nothing."""
    proc = spawn(argv, env=env, cwd=cwd, stdin=PIPE if input is not None else DEVNULL, stdout=PIPE if capture else DEVNULL,
                 stderr=stderr)
    out, err = proc.communicate(input)
    return Completed(proc.wait(), out, err)


def wait_for(proc: Child, timeout: float) -> int | None:
    """The exit status, or None when ``proc`` is still running after ``timeout`` seconds."""
    try:
        return proc.wait(timeout=timeout)
    except TimeoutExpired:
        return None


class Config:
    """A snapshot of ``git config --list`` as a multimap with lower-cased section/variable names."""

    def __init__(self, values: Mapping[str, list[str]]) -> None:
        self.values = dict(values)

    @classmethod
    def parse_z(cls, data: bytes) -> "Config":
        values: dict[str, list[str]] = {}
        for entry in data.split(b"\0"):
            if not entry:
                continue
            key_b, sep, value_b = entry.partition(b"\n")
            key = key_b.decode("utf-8", "replace")
            # A key with no '=' in the file means "true" (git prints no newline for it).
            values.setdefault(key, []).append(value_b.decode("utf-8", "replace") if sep else "true")
        return cls(values)

    def get(self, key: str, default: str | None = None) -> str | None:
        vals = self.values.get(key.lower() if key.count(".") < 2 else _norm(key))
        return vals[-1] if vals else default


    def get_bool(self, key: str, default: bool = False) -> bool:
        value = self.get(key)
        if value is None:
            return default
        v = value.strip().lower()
        if v in ("true", "yes", "on", "1", ""):
            return True
        if v in ("false", "no", "off", "0"):
            return False
        try:
            return int(v) != 0
        except ValueError:
            raise LocalGitError(f"bad boolean config value '{value}' for '{key}'") from None

    def get_size(self, key: str) -> int | None:
        """An integer with git's optional k/m/g suffix."""
        value = self.get(key)
        if value is None or not value.strip():
            return None
        v = value.strip().lower()
        scale = {"k": 1024, "m": 1024**2, "g": 1024**3}.get(v[-1], 1)
        digits = v[:-1] if scale != 1 else v
        try:
            return int(digits) * scale
        except ValueError:
            raise LocalGitError(f"bad size config value '{value}' for '{key}'", "use a number with optional k, m or g") from None


def _norm(key: str) -> str:
    """section.Sub.Section.var -> section.Sub.Section.var with section and var lower-cased."""
    first, _, rest = key.partition(".")
    middle, _, last = rest.rpartition(".")
    return f"{first.lower()}.{middle}.{last.lower()}"


class Git:
    """Runs local git with a fixed environment (which carries git's ``GIT_DIR`` when set)."""

    def __init__(self, env: Mapping[str, str], cwd: str | None = None) -> None:
        self.env = dict(env)
        self.cwd = cwd
        self._config: Config | None = None

    @property
    def in_repo(self) -> bool:
        return "GIT_DIR" in self.env

    def config(self) -> Config:
        if self._config is None:
            proc = run_command(["git", "config", "--list", "-z"], env=self.env, cwd=self.cwd)
            # Outside a repository or with no config at all git exits non-zero with nothing to say.
            self._config = Config.parse_z(proc.stdout if proc.returncode == 0 else b"")
        return self._config

    def run(self, args: Sequence[str], input: bytes | None = None, ok_codes: Iterable[int] = (0,)) -> bytes:
        """Run ``git <args>``, return stdout; raise ``LocalGitError`` with git's stderr on failure."""
        proc = run_command(["git", *args], env=self.env, cwd=self.cwd, input=input, stderr=PIPE)
        if proc.returncode not in tuple(ok_codes):
            err = proc.stderr.decode("utf-8", "replace").strip()
            raise LocalGitError(f"git {args[0]} failed: {err or 'exit code %d' % proc.returncode}")
        return proc.stdout

    def returncode(self, args: Sequence[str]) -> int:
        return run_command(["git", *args], env=self.env, cwd=self.cwd, capture=False).returncode

    def popen(
        self, args: Sequence[str], *, stdin: Any, stdout: Any, stderr: Any = None, env: Mapping[str, str] | None = None
    ) -> Child:
        """Start ``git <args>``; stdout must be given explicitly (never the helper's own)."""
        return spawn(["git", *args], env=env if env is not None else self.env, cwd=self.cwd, stdin=stdin, stdout=stdout, stderr=stderr)

    def existing(self, oids: Iterable[str]) -> set[str]:
        """The subset of ``oids`` present in the local object store."""
        wanted = list(dict.fromkeys(oids))
        if not wanted:
            return set()
        out = self.run(["cat-file", "--batch-check=%(objectname)"], input="\n".join(wanted).encode() + b"\n")
        present: set[str] = set()
        for line, oid in zip(out.decode().splitlines(), wanted, strict=False):
            if not line.endswith(" missing"):
                present.add(oid)
        return present

    def git_path(self, path: str) -> str:
        out = self.run(["rev-parse", "--git-path", path]).decode().strip()
        return out if os.path.isabs(out) else os.path.join(self.cwd or os.getcwd(), out)


def _children(pid: int) -> list[int]:
    """Direct children of ``pid`` (Linux /proc; empty where that is not available)."""
    kids: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children", encoding="ascii") as fh:
                kids += [int(x) for x in fh.read().split()]
    except (OSError, ValueError):
        pass
    return kids


def kill_tree(proc: Child) -> None:
    """Kill a child we started and every process below it (a shell-wrapped ssh does not exec,
    so killing the shell alone would leave ssh holding stderr open). Descendants are collected
    first, then killed by PID, children before parents."""
    if proc.poll() is not None:
        return
    tree, todo = [], [proc.pid]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo += _children(pid)
    for pid in reversed(tree):
        try:
            os.kill(pid, 9)
        except OSError:
            pass
    proc.wait()


# Linux: a 1 MiB pipe lets each process in a pack pipeline run ahead instead of waking the next
# one every 64 KiB (the default pipe size).
PIPE_SIZE = 1 << 20


def widen_pipe(fd: int) -> None:
    """Best effort: grow a pipe's kernel buffer (no-op where unsupported or not permitted)."""
    try:
        import fcntl

        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), PIPE_SIZE)
    except (OSError, ValueError):
        pass
