"""git:// (git daemon): one TCP connection, opened by ``git-<service> <path>\\0host=<host>\\0``."""

from __future__ import annotations

import io
import socket
from collections.abc import Callable

from ..errors import TransportError
from ..pktline import pkt
from ..url import InnerUrl
from .base import NOT_FOUND_HINT, Activity, Context, IdleReader, StreamService, child_stream

__all__ = ["DaemonTransport", "open_daemon_service", "daemon_request", "proxy_command", "DEFAULT_PORT"]

DEFAULT_PORT = 9418


def _connect(host: str, port: int, family: str | None, timeout: float, say: Callable[[str], object] | None = None) -> socket.socket:
    """A TCP connection to the daemon; ``say`` gets git's ``-v`` account of it (connect.c's
    "Looking up ... done." and "Connecting to ... done.")."""
    fam = {"ipv4": socket.AF_INET, "ipv6": socket.AF_INET6}.get(family or "", socket.AF_UNSPEC)
    if say:
        say(f"Looking up {host} ... ")
    try:
        infos = socket.getaddrinfo(host, port, fam, socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise TransportError(f"unable to look up {host} (port {port}) ({exc.strerror})") from exc  # connect.c's words
    if say:
        say(f"done.\nConnecting to {host} (port {port}) ... ")
    tried: list[str] = []  # connect.c's account of each address: "<host>[<n>: <address>]: errno=<why>"
    for af, kind, proto, _name, addr in infos:
        sock = socket.socket(af, kind, proto)
        sock.settimeout(timeout)
        try:
            sock.connect(addr)
        except OSError as exc:
            sock.close()
            tried.append(f"{host}[{len(tried)}: {addr[0]}]: errno={exc.strerror or exc}\n")
            continue
        sock.settimeout(None)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if say:
            say(f"{addr[0]} done.\n")
        return sock
    raise TransportError(f"unable to connect to {host}:\n{''.join(tried)}", NOT_FOUND_HINT)


def daemon_request(url: InnerUrl, service: str, ctx: Context, want_v2: bool) -> bytes:
    """git's first packet to a daemon (connect.c): service, path, ``host=`` (or
    ``GIT_OVERRIDE_VIRTUAL_HOST``), and the protocol version git would ask for."""
    host_field = ctx.env.get("GIT_OVERRIDE_VIRTUAL_HOST") or (url.host if ":" not in url.host else f"[{url.host}]")
    if url.port and not ctx.env.get("GIT_OVERRIDE_VIRTUAL_HOST"):
        host_field += f":{url.port}"
    request = f"git-{service} {url.path}\0host={host_field}\0".encode()
    if want_v2 or ctx.v1:
        request += b"\0version=2\0" if want_v2 else b"\0version=1\0"
    ctx.trace(f"git:// request: git-{service} {url.path} host={host_field}{' version=2' if want_v2 else ''}")
    if ctx.packets is not None:
        ctx.packets.packet(request, True)  # git writes it under its own name: so do we, for git
    return pkt(request)


def proxy_command(url: InnerUrl, ctx: Context) -> str | None:
    """git's proxy for git:// (connect.c): ``GIT_PROXY_COMMAND``, else the first ``core.gitProxy``
    whose ``for <domain>`` matches the end of the URL's host[:port] (a value without ``for``
    matches every host; ``none`` means a direct connection); None for a direct connection."""
    command = ctx.env.get("GIT_PROXY_COMMAND")
    if command is None:
        host = f"[{url.host}]" if ":" in url.host else url.host
        target = host + (f":{url.port}" if url.port else "")
        for value in ctx.config.values.get("core.gitproxy", []):
            what, sep, domain = value.partition(" for ")
            if sep and not (target.endswith(domain) and (len(target) == len(domain) or target[-len(domain) - 1] == ".")):
                continue
            command = "" if what == "none" else what
            break
    return command or None


def _through_proxy(command: str, url: InnerUrl, ctx: Context) -> StreamService:
    """``<command> <host> <port>``, run as git runs it (no shell), as the connection."""
    port = str(url.port or DEFAULT_PORT)
    ctx.trace(f"git:// through the proxy command {command}")
    try:
        return child_stream([command, url.host, port], ctx.env, ctx, f"remote end ({url.redacted})")
    except TransportError as exc:  # git's words: run-command's, then connect.c's
        raise TransportError(f"{exc.message}\nfatal: cannot start proxy {command}") from None


def open_daemon_service(url: InnerUrl, service: str, ctx: Context, want_v2: bool) -> StreamService:
    proxy = proxy_command(url, ctx)
    if proxy:
        svc = _through_proxy(proxy, url, ctx)
        try:
            svc.send(daemon_request(url, service, ctx, want_v2))
        except OSError as exc:
            svc.close()
            raise TransportError(f"unable to send the request to {url.redacted} through {proxy}: {exc.strerror}") from exc
        return svc
    port = url.port or DEFAULT_PORT
    sock = _connect(url.host, port, ctx.family, timeout=min(30.0, ctx.timeout or 30.0), say=ctx.verbose)
    request = daemon_request(url, service, ctx, want_v2)
    try:
        sock.sendall(request)
    except OSError as exc:
        sock.close()
        raise TransportError(f"unable to send the request to {url.redacted}: {exc.strerror}") from exc
    label = f"remote end ({url.redacted})"
    activity = Activity()
    raw = IdleReader(sock.fileno(), ctx.timeout, label, activity)
    reader = io.BufferedReader(raw, buffer_size=1 << 18)

    def close_write() -> None:
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close() -> None:
        try:
            sock.shutdown(socket.SHUT_RDWR)  # also wakes a writer blocked on a server that stopped reading
        except OSError:
            pass
        reader.close()
        sock.close()

    return StreamService(reader.read, sock.sendall, close_write, close, label, reader.readinto, activity,
                         fds=(sock.fileno(), sock.fileno()))


class DaemonTransport:
    """git:// (git daemon): one TCP connection per service."""

    def __init__(self, url: InnerUrl, ctx: Context) -> None:
        self.url = url
        self.ctx = ctx

    def open(self, service: str, want_v2: bool) -> StreamService:
        return open_daemon_service(self.url, service, self.ctx, want_v2)
