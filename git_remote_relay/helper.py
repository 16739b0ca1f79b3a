"""The remote-helper command loop (gitremote-helpers(7)) for ``relay::<url>``.

stdout carries protocol replies only, flushed after each; every message for people goes to the
``Reporter`` (stderr). One ``_do_<command>`` method per command. Every fetch is git's own
fetch-pack: ``connect``/``stateless-connect`` for upload-pack hand git the connection this helper
opened (``tap``: protocol v2 relayed, big packs stepped; a plain pipe otherwise). ``list`` and
``fetch`` serve only an HTTP server without protocol v2 (the engine). Push goes through the
pack-relay engine, or to git's send-pack with ``relay.mode=passthrough``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from .errors import DumbHttpError, ObjectFormatError, RelayError, ShallowRemoteError, UnsupportedError
from .gitcmd import Git
from .lfs import ensure_lfs_url
from .quoting import c_quote, c_unquote
from .settings import Settings
from .transport import Context, StreamService
from .transport.session import Session
from .ui import Reporter
from .url import InnerUrl, check_allowed, credentials_in_url, parse

TYPE_CHECKING = False  # typing costs ~10 ms of start-up; mypy reads this as typing.TYPE_CHECKING
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import BinaryIO

    from .fetchsteps import Steps
    from .protocol import Advertisement
    from .transport.base import Service

__all__ = ["Helper", "c_unquote", "c_quote"]

# Options that only git's own fetch-pack implements; the engine (v0 HTTP) refuses a fetch that sets them.
_PASSTHROUGH_OPTIONS = ("depth", "deepen-since", "deepen-not", "deepen-relative", "filter", "refetch", "from-promisor", "update-shallow")


class _SignedOverHttp(Exception):
    """``option pushcert`` over HTTP: the session goes to git's own remote-http, which signs."""


class Helper:
    """One helper process: ``run()`` reads commands from ``stdin`` until EOF or a blank line."""

    def __init__(
        self,
        remote_name: str,
        address: str,
        env: Mapping[str, str],
        stdin: BinaryIO,
        stdout: BinaryIO,
        stderr: BinaryIO,
        cwd: str | None = None,
    ) -> None:
        self.env = dict(env)
        self.stdin = stdin
        self.stdout = stdout
        self.git = Git(self.env, cwd=cwd)
        self.config = self.git.config()
        self.url: InnerUrl = parse(address)
        check_allowed(self.url.scheme, self.env, self.config.values)
        self.settings = Settings(self.env, self.config)
        self.reporter = Reporter(stderr, trace=self.settings.trace, term=self.env.get("TERM"))
        plaintext = credentials_in_url(address, self.config.values, shown_by_git=True)
        if plaintext:
            self.reporter.warn(plaintext)
        name = None if remote_name.startswith("relay::") or remote_name == address else remote_name
        self.ctx = Context(
            env=self.env, git=self.git, config=self.config, remote_name=name, trace=self.reporter.trace, timeout=self.settings.timeout,
            say=self.reporter.say,
        )
        self.session = Session(self.url, self.ctx)
        if ensure_lfs_url(self.git, self.config, name, address, self.url.scheme):
            self.reporter.trace(f"wrote remote.{name}.lfsurl for git-lfs")
        self.remote_arg = remote_name  # git's arguments, for a hand-over to git's own remote-http
        self.address = address
        self.options_said: list[str] = []  # the option commands so far, replayed on a hand-over
        self.servpath: str | None = None  # `option servpath` (--upload-pack/--receive-pack) for the next connect
        self.passthrough_opts: dict[str, str] = {}
        self.followtags = False
        self.cloning = False
        self.reject_shallow = False
        self.check_connectivity = False
        self.push_state: object | None = None

    # -- plumbing -------------------------------------------------------------------------------
    def _reply(self, text: str) -> None:
        self.stdout.write(text.encode())
        self.stdout.flush()

    def _readline(self) -> str | None:
        line = self.stdin.readline()
        if not line:
            return None
        return line.decode("utf-8", "surrogateescape").rstrip("\n")

    @property
    def stateless(self) -> bool:
        return self.url.scheme in ("http", "https")

    def run(self) -> int:
        """Serve commands until git is done; return the exit status."""
        status = 0
        while True:
            line = self._readline()
            if line is None or line == "":
                break
            cmd, _, arg = line.partition(" ")
            self.reporter.trace(f"< {line if cmd != 'option' else line[:200]}")
            try:
                pushed, ended = self._dispatch(cmd, arg, line)
            except (DumbHttpError, ObjectFormatError) as exc:
                if not self.stateless:
                    raise  # (over a stream, connect already handed a sha256 remote to git's own code)
                return self._hand_over(line, exc)  # nothing was answered yet for this command
            except _SignedOverHttp:
                self.options_said.pop()  # the hand-over says this line itself
                return self._hand_over(line, UnsupportedError("a signed push over HTTP"))
            if ended is not None:
                return ended
            status |= pushed
        self.close()
        return status

    def _dispatch(self, cmd: str, arg: str, line: str) -> tuple[int, int | None]:
        """Serve one command: (a push's status, or 0; the exit status when the session ends here)."""
        if cmd == "capabilities":
            self._do_capabilities()
        elif cmd == "option":
            self.options_said.append(line)
            self._do_option(arg)
        elif cmd == "list":
            if self.stateless and arg != "for-push":
                # a protocol v0 fetch over HTTP (git asks for the list only when it does not speak
                # v2): git's own remote-http does all of it, as for a URL without relay::
                return 0, self._hand_over(line, UnsupportedError("a protocol v0 fetch over HTTP"))
            self._do_list(arg == "for-push")
        elif cmd == "fetch":
            self._do_fetch(line)
        elif cmd == "push":
            pushed, transport_failed = self._do_push(line)
            return pushed, (1 if transport_failed else None)
        elif cmd == "connect" or cmd == "stateless-connect":
            return 0, self._do_connect(arg) if cmd == "connect" else self._do_stateless_connect(arg)
        else:
            raise UnsupportedError(f"unknown command '{cmd}' from git", "this git is newer than git-remote-relay understands")
        return 0, None

    def _hand_over(self, line: str, why: UnsupportedError) -> int:
        """Not a smart HTTP server, a sha256 repository, or a protocol v0 fetch: git's own
        ``remote-http`` serves the rest of this session, as if the URL had no ``relay::`` (it reads
        dumb HTTP servers and sha256 repositories, fetches with git's v0 negotiation, and names
        what else it found).

        It is told what git told this helper so far (capabilities, options, ``line``), its
        replies to those are dropped, and from then on the bytes are copied both ways."""
        import io
        import threading

        from .gitcmd import PIPE, spawn

        self.reporter.trace(f"{why.message}; git remote-{self.url.scheme} takes over")
        self.session.close()
        try:
            child = spawn(["git", f"remote-{self.url.scheme}", self.remote_arg, self.address], env=self.env, cwd=self.git.cwd,
                          stdin=PIPE, stdout=PIPE)
        except OSError:
            raise why from None
        to_child, from_child = child.stdin, child.stdout
        assert to_child is not None and isinstance(from_child, io.BufferedReader)
        try:
            to_child.write(b"capabilities\n")
            to_child.flush()
            while from_child.readline() not in (b"\n", b""):
                pass
            for said in self.options_said:
                to_child.write(said.encode("utf-8", "surrogateescape") + b"\n")
                to_child.flush()
                from_child.readline()
            to_child.write(line.encode("utf-8", "surrogateescape") + b"\n")
            to_child.flush()
        except BrokenPipeError:
            pass  # it ended already: its exit status and its own message say why

        from .passthrough import unbuffered

        pending, read_more = unbuffered(self.stdin)

        def feed() -> None:
            try:
                chunk = pending or read_more()
                while chunk:
                    to_child.write(chunk)
                    to_child.flush()
                    chunk = read_more()
            except (OSError, ValueError):
                pass
            finally:
                try:
                    to_child.close()
                except OSError:
                    pass

        threading.Thread(target=feed, daemon=True).start()
        while True:
            chunk = from_child.read1(65536)
            if not chunk:
                break
            self.stdout.write(chunk)
            self.stdout.flush()
        return child.wait()

    def close(self) -> None:
        self.session.close()

    # -- commands -------------------------------------------------------------------------------
    def _do_capabilities(self) -> None:
        caps = ["fetch", "push", "option", "check-connectivity"]
        caps.append("stateless-connect" if self.stateless else "connect")
        self._reply("".join(c + "\n" for c in caps) + "\n")

    def _do_option(self, arg: str) -> None:
        name, _, raw = arg.partition(" ")
        value = c_unquote(raw)
        reply = "ok"
        if name == "progress":
            self.reporter.progress = value == "true"
        elif name == "verbosity":
            try:
                self.reporter.verbosity = int(value)
            except ValueError:
                reply = "error bad verbosity"
            self.ctx.verbose = self.reporter.raw if self.reporter.verbosity >= 2 else None
        elif name == "followtags":
            self.followtags = value == "true"
        elif name == "cloning":
            self.cloning = value == "true"
        elif name == "check-connectivity":
            self.check_connectivity = value == "true"
        elif name == "family":
            if value not in ("ipv4", "ipv6", "all"):
                reply = "error family must be ipv4 or ipv6"
            else:
                self.ctx.family = None if value == "all" else value
        elif name in _PASSTHROUGH_OPTIONS or name == "updateshallow":
            # "depth 0" and "deepen-relative false" are git resetting them for a tag backfill.
            if (name == "depth" and value == "0") or value == "false":
                self.passthrough_opts.pop(name, None)
            else:
                self.passthrough_opts[name] = value
        elif name == "rejectshallow":
            self.reject_shallow = value in ("true", "1")  # `git clone --reject-shallow` (git sends "1")
        elif name == "pushcert" and value in ("true", "if-asked") and self.stateless:
            raise _SignedOverHttp()  # git's remote-http signs pushes: it takes the session over
        elif name in ("dry-run", "atomic", "push-option", "cas", "force-if-includes", "pushcert"):
            reply = self._push_option(name, value)
        elif name == "servpath":
            self.servpath = value
        else:
            reply = "unsupported"
        self._reply(reply + "\n")

    def _push_option(self, name: str, value: str) -> str:
        from .push import PushOptions

        if self.push_state is None:
            self.push_state = PushOptions()
        assert isinstance(self.push_state, PushOptions)
        return self.push_state.set(name, value)

    def _do_list(self, for_push: bool) -> None:
        if for_push:
            adv = self.session.receive()[1]
            self._reply("".join(f"{oid} {name}\n" for name, oid in adv.refs.items()) + "\n")
            return
        adv = self.session.upload(listed=True)[1]
        lines: list[str] = []
        head = adv.symrefs.get("HEAD")
        if head:
            lines.append(f"@{head} HEAD")
        elif "HEAD" in adv.refs:
            lines.append(f"{adv.refs['HEAD']} HEAD")
        for name, oid in adv.refs.items():
            if name == "HEAD":
                continue
            lines.append(f"{oid} {name}")
            if name in adv.peeled:
                lines.append(f"{adv.peeled[name]} {name}^{{}}")
        self.reporter.trace(f"list: {len(adv.refs)} refs, protocol v{adv.version}")
        self._reply("".join(x + "\n" for x in lines) + "\n")

    def _check_engine_can_fetch(self) -> None:
        if self.passthrough_opts:
            names = ", ".join(sorted(self.passthrough_opts))
            raise UnsupportedError(
                f"this fetch asks for {names}, which needs git's own fetch over protocol v2, and the remote does not offer it",
                "use plain git for this fetch, or a server that speaks protocol v2",
            )

    def _do_fetch(self, first: str) -> None:
        from . import stats
        from .fetch import local_haves, record_shallow
        from .fetchsteps import fetch_resumable
        from .protocol import ZERO_OID

        started = time.monotonic()
        wants: list[str] = []
        names: list[tuple[str, str]] = []
        line: str | None = first
        while line:
            parts = line.split(" ")
            if len(parts) < 3 or parts[0] != "fetch":
                raise RelayError(f"unexpected line in a fetch batch: {line[:100]!r}")
            if parts[1] != ZERO_OID:  # HEAD naming a branch the remote lacks: nothing to fetch for it
                wants.append(parts[1])
            names.append((parts[2], parts[1]))
            line = self._readline()
        if not wants:
            self._reply("\n")
            return
        self._check_engine_can_fetch()
        haves = local_haves(self.git)  # a clone has none, unless it has a --reference
        try:
            result = fetch_resumable(
                self.session.take_upload,
                self.session.done_upload,
                self.git,
                self.reporter,
                wants,
                haves,
                include_tag=self.followtags,
                check_connectivity=self.check_connectivity,
                host_label=self.url.host or "localhost",
                step_objects=self.settings.fetch_step_objects,
                env=self.env,
                allow_shallow=self.cloning and not self.reject_shallow,
            )
        except ShallowRemoteError as exc:
            if self.reject_shallow:
                raise RelayError("source repository is shallow, reject to clone.") from exc  # git's words
            raise UnsupportedError(
                "the remote repository is shallow (its history is cut off): fetching from it would make this repository shallow",
                "native git refuses that too unless asked (git fetch --update-shallow); use plain git for it, or relay.mode=passthrough",
            ) from exc
        if result.shallow:
            record_shallow(self.git, result.shallow)  # a clone of a shallow remote is shallow there too
        stats.record(
            self.reporter,
            self.settings,
            self.url.redacted,
            "fetch",
            [{"ref": n, "new": oid} for n, oid in names],
            result.bytes,
            result.objects,
            started,
        )
        out = ""
        if result.keep:
            out += f"lock {result.keep}\n"
        if result.connectivity_ok:
            out += "connectivity-ok\n"
        self._reply(out + "\n")

    def _do_push(self, first: str) -> tuple[int, bool]:
        """(status, whether the transport failed: then the session ends, as git's send-pack fails)."""
        from .localpush import run_push_batch
        from .push import PushOptions

        lines = [first]
        while True:
            line = self._readline()
            if not line:
                break
            lines.append(line)
        opts = self.push_state if isinstance(self.push_state, PushOptions) else PushOptions()
        self.push_state = None
        if opts.signed:
            from .signedpush import push_signed

            self.session.close()
            reply, ok = push_signed(self.git, self.session, lines, opts, self.reporter)
            failed = False
        else:
            reply, ok, failed = run_push_batch(self.git, self.reporter, self.session, self.settings, lines, opts)
        self._reply(reply)
        return (0 if ok else 1), failed

    def _stepper(self) -> Steps | None:
        """Big first fetches in resumable steps, unless turned off (or there is no repository)."""
        if not self.settings.fetch_step_objects or not self.env.get("GIT_DIR"):
            return None
        from .fetchsteps import Steps
        from .stepcache import StepCache, default_root

        cache = StepCache(default_root(self.env), self.url.redacted, self.settings.fetch_cache_bytes)
        return Steps(self.git, self.reporter, lambda: Session(self.url, self.ctx), self.env, self.url.host or "localhost",
                     self.settings.fetch_step_objects, cache)

    def _relay_v2(self, service: Service, adv: Advertisement, open_upload: Callable[[], tuple[Service, Advertisement]]) -> int:
        """git's own fetch-pack on our connection (see ``tap``); the exit status for git."""
        from .tap import Tally, relay_v2

        self._reply("\n")
        started = time.monotonic()
        tally = Tally()
        made: list[Steps] = []

        def make_stepper() -> Steps | None:
            if not made:
                stepper = self._stepper()
                if stepper is None:
                    return None
                made.append(stepper)
            return made[0]

        status = relay_v2(service, adv, open_upload, self.stdin, self.stdout, make_stepper, tally)
        if tally.wants:
            from . import stats

            steps = made[0].bytes if made else 0
            stats.record(self.reporter, self.settings, self.url.redacted, "fetch", [{"new": oid} for oid in tally.wants],
                         tally.bytes + steps, tally.objects, started)
        return status

    def _do_connect(self, service: str) -> int | None:
        if service not in ("git-upload-pack", "git-receive-pack", "git-upload-archive"):
            raise UnsupportedError(f"unknown service '{service}'")
        if self.servpath:
            # --upload-pack/--receive-pack: the program to run on the remote, for passthrough and engine alike
            self.ctx.programs[service[len("git-") :]] = self.servpath
            self.servpath = None
        remote = self.session.remote
        if service == "git-upload-pack" and self.settings.mode != "passthrough" and remote.fetch_v2:
            # Every fetch is git's own fetch-pack; we keep the connection (and step big fetches).
            self.close()
            tape = bytearray()
            try:
                upload, adv = remote.connect("upload-pack", traced=False, tape=tape)  # git traces what it reads and writes
            except ObjectFormatError as exc:
                self.reporter.trace(f"{exc.message}: git's own fetch-pack on a plain pipe")
            else:
                if adv.version == 2:
                    return self._relay_v2(upload, adv, lambda: remote.connect("upload-pack", traced=False))
                if isinstance(upload, StreamService) and upload.fds is not None:
                    # a server that answers v0: git's fetch-pack carries on on this connection,
                    # from its advertisement on (one connection, as git's own transport makes)
                    self.reporter.trace("the server speaks protocol v0: git's fetch-pack carries on on this connection")
                    self._reply("\n")
                    from .passthrough import carry_on

                    return carry_on(upload, bytes(tape), self.stdin, self.stdout, self.ctx.timeout)
                upload.dismiss()
            return self._pass_through(service)
        wanted = self.settings.mode == "passthrough" or service != "git-receive-pack"
        if not wanted:
            try:
                self.session.receive()  # its advertisement names the object format (list for-push reuses it)
            except ObjectFormatError as exc:
                self.reporter.trace(f"{exc.message}: git's own send-pack takes over")
                wanted = True
        if not wanted:
            self._reply("fallback\n")
            return None
        return self._pass_through(service)

    def _pass_through(self, service: str) -> int:
        """The service's own stream on our stdio: git's code end to end, no byte copied by us."""
        self.close()
        from .passthrough import connect

        self.reporter.trace(f"connect: passthrough for {service}")
        self._reply("\n")
        return connect(self.session.remote, service[len("git-") :], self.stdin, self.stdout)

    def _do_stateless_connect(self, service: str) -> int | None:
        if service != "git-upload-pack":
            self._reply("fallback\n")
            return None
        from .v0http import V0Memory

        memory, url = V0Memory(self.env), self.url.http_base
        if memory.speaks_v0(url):  # its own info/refs request is then the only one, as natively
            return self._hand_over(f"stateless-connect {service}", UnsupportedError("the server answered protocol v0 over HTTP before"))
        adv = self.session.upload()[1]
        if adv.version != 2:
            # the server speaks v0: git's own remote-http answers (with its "fallback") and fetches
            memory.remember(url)
            return self._hand_over(f"stateless-connect {service}", UnsupportedError("the server speaks protocol v0 over HTTP"))
        upload, adv = self.session.hand_over_upload()
        upload.traced(None)  # from here on git's requests and the answers: git traces them
        return self._relay_v2(upload, adv, lambda: (upload, adv))

