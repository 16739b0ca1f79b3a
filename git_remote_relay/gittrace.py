"""git's own trace output, for the conversations the helper has and git cannot see.

``GIT_TRACE_PACKET`` and ``GIT_TRACE_CURL`` are where users (and git's tests) look when a fetch or
push goes wrong. When git's fetch-pack talks through the helper's pipe it traces its packets
itself; what only the helper sees -- the git:// request line, the HTTP advertisement remote-curl
would read, the helper's own push and fetch conversations, and every HTTP request and reply --
is written here, in the format of git's trace.c, pkt-line.c and http.c, to the same place:

* a key's value: unset, ``0``, ``false``: off; ``1``, ``true``: stderr; one digit: that file
  descriptor; an absolute path: appended to; anything else: a warning, and off (trace.c);
* each line starts with ``HH:MM:SS.micro file:line`` padded to column 40, unless
  ``GIT_TRACE_BARE`` is true; each line is one ``write()``, so git's lines and ours interleave
  whole in a shared file;
* packet lines: ``packet: %12s> payload`` (``<`` when read), the identity of the git command
  that runs the helper (``clone``, ``fetch``, ``push``, ...; ``git`` over HTTP, as remote-curl);
  non-printable bytes as ``\\ooo`` octal, newlines dropped, pack data as one ``PACK ...``;
* curl lines (``GIT_TRACE_CURL``; ``GIT_CURL_VERBOSE`` traces to stderr without data):
  ``=> Send header``, ``<= Recv header``, ``=> Send data``, ``<= Recv data``, ``== Info``, with
  ``Authorization``/``Proxy-Authorization`` values and cookie values shown as ``<redacted>``
  unless ``GIT_TRACE_REDACT=0``; ``GIT_TRACE_CURL_NO_DATA`` leaves the data out.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator, Mapping

__all__ = ["TraceKey", "PacketTrace", "CurlTrace", "git_identity", "packet_trace", "curl_trace"]

_OFF = ("", "0", "false")
# The git commands that name their packet traces (packet_trace_identity); any other is "git".
_IDENTITIES = ("clone", "fetch", "ls-remote", "push", "fetch-pack", "send-pack", "bundle")
# git's global options that take their value as the next argument (git.c handle_options)
_WITH_VALUE = ("-c", "-C", "--git-dir", "--work-tree", "--namespace", "--super-prefix", "--config-env")


def _bool(value: str | None, default: bool) -> bool:
    if value is None:
        return default
    value = value.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("", "0", "false", "no", "off"):
        return False
    return default


class TraceKey:
    """One trace destination (``GIT_TRACE_PACKET``, ``GIT_TRACE_CURL``), opened at the first line."""

    def __init__(self, env: Mapping[str, str], name: str, value: str | None = None) -> None:
        self.name = name
        self.value = (env.get(name) if value is None else value) or ""
        self.bare = _bool(env.get("GIT_TRACE_BARE"), False)
        self.enabled = self.value.strip().lower() not in _OFF
        self._fd: int | None = None

    def _open(self) -> int | None:
        value = self.value
        if value.lower() in ("1", "true"):
            return 2
        if len(value) == 1 and value.isdigit():
            return int(value)
        if value.startswith("/"):
            try:
                return os.open(value, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
            except OSError as exc:
                self._warn(f"warning: could not open '{value}' for tracing: {exc.strerror}\n")
                return None
        self._warn(
            f"warning: unknown trace value for '{self.name}': {value}\n"
            f"         If you want to trace into a file, then please set {self.name}\n"
            "         to an absolute pathname (starting with /)\n"
        )
        return None

    @staticmethod
    def _warn(text: str) -> None:
        try:
            os.write(2, text.encode("utf-8", "replace"))
        except OSError:
            pass

    def line(self, where: str, text: str) -> None:
        """Write one line (``text`` without its newline), prefixed as trace.c does."""
        if not self.enabled:
            return
        if self._fd is None:
            self._fd = self._open()
            if self._fd is None:
                self.enabled = False
                return
        if self.bare:
            out = text + "\n"
        else:
            now = time.time()
            stamp = time.strftime("%H:%M:%S", time.localtime(now)) + ".%06d %s " % (int(now % 1 * 1_000_000), where)
            out = stamp.ljust(40) + text + "\n"
        try:
            os.write(self._fd, out.encode("utf-8", "surrogateescape"))
        except OSError:
            self.enabled = False  # git whines once and goes on; a trace must not fail a transfer


def _command_of(argv: list[bytes]) -> str:
    """The git command of a command line (``git -c a=b clone ...`` -> ``clone``)."""
    if not argv:
        return ""
    base = os.path.basename(argv[0]).decode("utf-8", "replace")
    if base.startswith("git-"):
        return base[4:]
    i = 1
    while i < len(argv):
        arg = argv[i].decode("utf-8", "replace")
        if not arg.startswith("-"):
            return arg
        i += 2 if arg in _WITH_VALUE else 1
    return ""


def _parent(pid: int) -> int:
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    return int(stat[stat.rindex(b")") + 2 :].split()[1])


def git_identity(pid: int | None = None) -> str:
    """The packet-trace identity of the git command that started this helper: its parent is
    ``git remote-relay`` (git runs helpers as git commands), whose parent is ``git clone`` etc.
    ``git`` where that cannot be told (no /proc, an alias, a command that names no identity)."""
    try:
        pid = os.getppid() if pid is None else pid
        for _ in range(2):
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                command = _command_of(f.read().split(b"\0"))
            if not command.startswith("remote-"):
                return command if command in _IDENTITIES else "git"
            pid = _parent(pid)
    except (OSError, ValueError, IndexError):
        pass
    return "git"


def _printable(data: bytes) -> str:
    out = []
    for b in data:
        if b == 10:
            continue
        if 0x20 <= b <= 0x7E:
            out.append(chr(b))
        else:
            out.append("\\%o" % (b if b < 0x80 else b - 256 + (1 << 32)))  # git's char is signed
    return "".join(out)


class PacketTrace:
    """``GIT_TRACE_PACKET`` lines for the packets the helper itself reads and writes."""

    def __init__(self, key: TraceKey, identity: str) -> None:
        self.key = key
        self.identity = identity
        self.in_pack = False
        self.sideband = False

    def packet(self, payload: bytes, write: bool) -> None:
        """One packet's payload, or ``b"0000"``/``b"0001"``/``b"0002"`` for a control packet."""
        if self.in_pack:
            if not self.sideband or payload[:1] == b"\x01":
                return  # pack data is not traced (a non-sideband pack: nothing more is)
        elif payload[:4] == b"PACK" or payload[:5] == b"\x01PACK":
            self.in_pack = True
            self.sideband = payload[:1] == b"\x01"
            payload = b"PACK ..."
        self.key.line("pkt-line.c:80", "packet: %12s%s %s" % (self.identity, ">" if write else "<", _printable(payload)))

    def read(self, payload: bytes) -> None:
        self.packet(payload, False)

    def body(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        """Pass a request body through, tracing its packets up to its end or the first
        non-packet bytes (a push's pack follows its commands raw, and git does not trace it)."""
        pending = b""
        tracing = True
        for chunk in [chunks] if isinstance(chunks, bytes) else chunks:
            if tracing:
                pending += chunk
                while len(pending) >= 4:
                    if pending[:4] == b"PACK":
                        tracing = False
                        break
                    try:
                        size = int(pending[:4], 16)
                    except ValueError:
                        tracing = False
                        break
                    if size < 4:
                        self.packet(pending[:4], True)
                        pending = pending[4:]
                        continue
                    if len(pending) < size:
                        break
                    self.packet(pending[4:size], True)
                    pending = pending[size:]
                if not tracing:
                    pending = b""
            yield chunk


def packet_trace(env: Mapping[str, str], identity: str | None = None) -> PacketTrace | None:
    """The packet tracer ``GIT_TRACE_PACKET`` asks for, or None."""
    key = TraceKey(env, "GIT_TRACE_PACKET")
    if not key.enabled:
        return None
    return PacketTrace(key, identity or git_identity())


def _redact_header(line: str) -> str:
    """http.c's redact_sensitive_header: credentials and cookie values become ``<redacted>``."""
    lower = line.lower()
    for name in ("authorization:", "proxy-authorization:"):
        if lower.startswith(name):
            rest = line[len(name) :]
            stripped = rest.lstrip()
            kind = stripped.split(None, 1)[0] if stripped.split() else ""
            keep = len(name) + (len(rest) - len(stripped)) + len(kind)
            return line[:keep] + " <redacted>"
    if lower.startswith("cookie:"):
        rest = line[len("cookie:") :]
        stripped = rest.lstrip()
        cookies = [c.partition("=")[0] + "=<redacted>" for c in stripped.split("; ")]
        return line[: len(line) - len(stripped)] + "; ".join(cookies)
    return line


class CurlTrace:
    """``GIT_TRACE_CURL`` lines for the helper's HTTP client, as git's http.c writes curl's."""

    def __init__(self, key: TraceKey, data: bool, redact: bool) -> None:
        self.key = key
        self.data = data
        self.redact = redact

    def info(self, text: str) -> None:
        self.key.line("http.c:725", f"== Info: {text}")

    def send_header(self, head: bytes) -> None:
        self._header("=> Send header", head, self.redact)

    def recv_header(self, line: bytes) -> None:
        self._header("<= Recv header", line, False)

    def _header(self, text: str, raw: bytes, hide: bool) -> None:
        self.key.line("http.c:672", "%s, %010d bytes (0x%08x)" % (text, len(raw), len(raw)))
        for piece in raw.decode("latin-1").split("\n"):
            if not piece and raw.endswith(b"\n"):
                break  # strbuf_split: the text after the last newline, when empty, is no line
            if hide:
                piece = _redact_header(piece)
            self.key.line("http.c:684", f"{text}: {piece}".rstrip())

    def send_data(self, data: bytes) -> None:
        if self.data and data:
            self._data("=> Send data", data)

    def recv_data(self, data: bytes) -> None:
        if self.data and data:
            self._data("<= Recv data", data)

    def _data(self, text: str, data: bytes) -> None:
        self.key.line("http.c:698", "%s, %010d bytes (0x%08x)" % (text, len(data), len(data)))
        shown = data.translate(_DOTS).decode("latin-1")
        for i in range(0, len(shown), 60):
            self.key.line("http.c:713", f"{text}: {shown[i : i + 60]}")


_DOTS = bytes(b if 0x20 <= b < 0x80 else 0x2E for b in range(256))


def curl_trace(env: Mapping[str, str]) -> CurlTrace | None:
    """The HTTP tracer ``GIT_TRACE_CURL`` / ``GIT_CURL_VERBOSE`` ask for, or None."""
    verbose = bool(env.get("GIT_CURL_VERBOSE"))
    key = TraceKey(env, "GIT_TRACE_CURL", "1" if verbose else None)
    if not key.enabled:
        return None
    data = not verbose and not env.get("GIT_TRACE_CURL_NO_DATA")
    return CurlTrace(key, data=data, redact=_bool(env.get("GIT_TRACE_REDACT"), True))
