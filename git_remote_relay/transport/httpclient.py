"""A small HTTP/1.1 client for git's smart protocol, on plain sockets.

Why not urllib3 (through dulwich) or http.client: the helper starts on every git operation, and
importing urllib3 costs ~80 ms, http.client ~30 ms (its e-mail header parser); a no-op fetch or
push over HTTP paid that every time. This module needs only ``socket`` (and ``ssl`` for https).

What git's HTTP transport needs, and no more: keep-alive connections (one idle connection per
origin is kept), ``Content-Length`` bodies and streamed ``Transfer-Encoding: chunked`` bodies,
chunked / length / until-close replies, redirects (followed by the caller), proxies (absolute
URIs for http, ``CONNECT`` tunnels for https, basic proxy credentials), TLS with verification
and a CA file or directory, client certificates, and timeouts (connect; read = ``relay.timeout``;
curl's low-speed limit). Its settings are ``httpoptions.HttpOptions``, read as git's http.c reads
them.
"""

from __future__ import annotations

import base64
import socket
import time
from collections.abc import Iterable, Mapping
from urllib.parse import unquote, urlsplit

from ..errors import AuthSchemeError, TransportError
from ..gittrace import CurlTrace
from ..url import redact
from .httpoptions import HttpOptions
from .pace import Pace, TooSlow, read_wait
from .pinning import pinned

TYPE_CHECKING = False  # typing costs ~10 ms of start-up; mypy reads this as typing.TYPE_CHECKING

if TYPE_CHECKING:
    import io
    import ssl

    from .cookies import CookieJar

__all__ = ["HttpOptions", "Client", "Response", "HttpTimeout", "PinMismatch", "TooSlow", "offers_basic"]

_MAX_LINE = 65536
_CHUNK = 1 << 16


class HttpTimeout(TransportError):
    """The server did not answer within the read timeout."""


class PinMismatch(TransportError):
    """http.pinnedPubkey names another key than the server's (curl's error 90)."""


_TLS_VERSIONS = {"sslv2": "TLSv1", "sslv3": "TLSv1", "tlsv1": "TLSv1", "tlsv1.0": "TLSv1", "tlsv1.1": "TLSv1_1",
                 "tlsv1.2": "TLSv1_2", "tlsv1.3": "TLSv1_3"}  # git's names; SSL 2 and 3 no TLS library offers now


def _tls_version(ctx: "ssl.SSLContext", name: str | None) -> None:
    """http.sslVersion as curl takes it under git: the lowest version to accept; an unknown name
    is warned about and the default kept, in git's words."""
    import ssl
    import sys

    if not name:
        return
    version = _TLS_VERSIONS.get(name)
    if version is None:
        sys.stderr.write(f"warning: unsupported ssl version {name}: using default\n")
        return
    ctx.minimum_version = getattr(ssl.TLSVersion, version)


class _Connection:
    """One TCP (or TLS) connection and its buffered reader."""

    def __init__(self, sock: socket.socket, origin: str) -> None:
        self.sock = sock
        self.origin = origin
        self.file: io.BufferedReader = sock.makefile("rb", buffering=1 << 18)  # type: ignore[assignment]

    def close(self) -> None:
        try:
            self.file.close()
        finally:
            self.sock.close()


class Response:
    """A reply: status, lower-cased headers, and a body read with ``read(n)`` as it arrives."""

    def __init__(self, client: "Client", conn: _Connection, url: str, method: str) -> None:
        self.client = client
        self.conn: _Connection | None = conn
        self.url = url
        self.trace = client.trace
        self._speed = Pace(client.options.low_speed)
        try:
            self.version, self.status, self.reason, self.headers = _read_head(conn, client.read_timeout, self.trace)
            while 100 <= self.status < 200 and self.status != 101:
                self.version, self.status, self.reason, self.headers = _read_head(conn, client.read_timeout, self.trace)
        except HttpTimeout:
            self._speed.waited_out(client.read_timeout)
            raise
        self._chunked = "chunked" in self.headers.get("transfer-encoding", "").lower()
        length = self.headers.get("content-length")
        self._left: int | None = int(length) if length and length.isdigit() and not self._chunked else None
        if method == "HEAD" or self.status in (204, 304):
            self._left = 0
        self._chunk_left = 0
        self._done = self._left == 0
        connection = self.headers.get("connection", "").lower()
        keep = connection == "keep-alive" if self.version == "HTTP/1.0" else connection != "close"
        self._reusable = keep and (self._chunked or self._left is not None)
        # We accept gzip and deflate, as git (curl) does; a compressed body is inflated as it is read.
        coding = self.headers.get("content-encoding", "").strip().lower()
        self._inflate: "zlib._Decompress | None" = None
        self._inflated = b""
        if coding in ("gzip", "x-gzip", "deflate"):
            import zlib

            self._inflate = zlib.decompressobj(47 if coding != "deflate" else 15)

    def read(self, n: int) -> bytes:
        """Up to ``n`` bytes of the body; ``b""`` at its end."""
        if self._inflate is None:
            return self._read_raw(n)
        while not self._inflated:
            raw = self._read_raw(max(n, _CHUNK))
            if not raw:
                self._inflated = self._inflate.flush()
                if not self._inflated:
                    return b""
                break
            try:
                self._inflated = self._inflate.decompress(raw)
            except Exception as exc:  # zlib.error
                raise TransportError(f"the compressed reply from {redact(self.url)} is corrupt ({exc})") from exc
        data, self._inflated = self._inflated[:n], self._inflated[n:]
        return data

    def readinto(self, buf: memoryview) -> int:
        """Like ``read``, into ``buf``: no new bytes object per read, so a big download passed on
        to another server (an LFS object) keeps this process's memory flat; 0 at the body's end."""
        if self._inflate is not None:
            data = self.read(len(buf))
            buf[:len(data)] = data
            return len(data)
        return self._step(len(buf), buf)[1]

    def _read_raw(self, n: int) -> bytes:
        return self._step(n, None)[0]

    def _step(self, n: int, into: memoryview | None) -> tuple[bytes, int]:
        """One read of at most ``n`` body bytes: (the bytes, or b"" when read ``into``; how many)."""
        data = b""
        if self._done or self.conn is None:
            return data, 0
        try:
            want = self._span(n)
            if self._done:
                return data, 0
            if into is None:
                data = self.conn.file.read1(want) if want else b""
                got = len(data)
            else:
                got = self.conn.file.readinto1(into[:want]) if want else 0
            self._took(got, want)
            self._speed.moved(got)
        except socket.timeout as exc:
            self._speed.waited_out(self.client.read_timeout)
            raise HttpTimeout(f"no answer from {redact(self.url)}") from exc
        except OSError as exc:
            raise TransportError(f"the connection to {redact(self.url)} broke ({exc.strerror or exc})") from exc
        if self._done:
            self.release()
        if self.trace is not None:
            self.trace.recv_data(data if into is None else bytes(into[:got]))
        return data, got

    def _span(self, n: int) -> int:
        """How much of the body the next read may take (at most ``n``); a chunk's header is read
        here, and the last chunk's (with its trailers) ends the body."""
        assert self.conn is not None
        if not self._chunked:
            return n if self._left is None else min(n, self._left)
        if self._chunk_left == 0:
            line = self.conn.file.readline(_MAX_LINE)
            if not line:
                raise TransportError(f"the reply from {redact(self.url)} was cut short")
            try:
                self._chunk_left = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise TransportError(f"bad chunked reply from {redact(self.url)}") from None
            if self._chunk_left == 0:
                while self.conn.file.readline(_MAX_LINE) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                self._done = True
                return 0
        return min(n, self._chunk_left)

    def _took(self, got: int, want: int) -> None:
        """Account for ``got`` body bytes read of the ``want`` asked for."""
        assert self.conn is not None
        if self._chunked:
            if not got:
                raise TransportError(f"the reply from {redact(self.url)} was cut short")
            self._chunk_left -= got
            if self._chunk_left == 0:
                self.conn.file.readline(_MAX_LINE)  # the CRLF after the chunk
        elif self._left is not None:
            if not got and want:
                raise TransportError(f"the reply from {redact(self.url)} was cut short")
            self._left -= got
            self._done = self._left == 0
        elif not got:
            self._done = True

    def drain(self) -> None:
        """Read and drop the rest of a (small) body, so the connection can be reused."""
        while self._read_raw(_CHUNK):
            pass

    def release(self) -> None:
        """Done with this reply: a complete one gives its connection back, else it is closed."""
        conn, self.conn = self.conn, None
        if conn is None:
            return
        if self._done and self._reusable:
            self.client.put_back(conn)
        else:
            conn.close()

    def close(self) -> None:
        """Drop the connection, whatever state the body is in."""
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.close()


def _read_head(conn: _Connection, timeout: float | None, trace: CurlTrace | None = None) -> tuple[str, int, str, dict[str, str]]:
    try:
        line = conn.file.readline(_MAX_LINE)
        if not line:
            raise ConnectionResetError(104, "the server closed the connection before answering")
        if trace is not None:
            trace.recv_header(line)
        parts = line.decode("latin-1").rstrip("\r\n").split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            raise TransportError(f"not an HTTP reply: {line[:80]!r}")
        headers: dict[str, str] = {}
        while True:
            raw = conn.file.readline(_MAX_LINE)
            if trace is not None and raw:
                trace.recv_header(raw)
            if raw in (b"\r\n", b"\n", b""):
                break
            name, _, value = raw.decode("latin-1").partition(":")
            key = name.strip().lower()
            joint = "\n" if key == "set-cookie" else ", "  # cookie dates hold commas: keep them apart
            headers[key] = f"{headers[key]}{joint}{value.strip()}" if key in headers else value.strip()
    except socket.timeout as exc:
        raise HttpTimeout(f"no answer within {timeout:g} s" if timeout else "no answer") from exc
    return parts[0], int(parts[1]), parts[2] if len(parts) > 2 else "", headers


class Client:
    """Requests over kept-alive connections; see the module docstring."""

    def __init__(self, options: HttpOptions, connect_timeout: float, read_timeout: float | None, trace: CurlTrace | None = None) -> None:
        self.options = options
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.trace = trace  # GIT_TRACE_CURL
        self._idle: dict[str, _Connection] = {}
        self._ssl: "ssl.SSLContext | None" = None
        self._jar: "CookieJar | None" = None
        self._proxy_passwords: dict[tuple[str, str], str] = {}

    def _cookies(self) -> "CookieJar | None":
        """http.cookieFile's jar, read at the first request that can use it."""
        if self._jar is None and self.options.cookie_file:
            from .cookies import CookieJar  # only when configured

            self._jar = CookieJar(self.options.cookie_file, save=self.options.save_cookies)
        return self._jar

    def put_back(self, conn: _Connection) -> None:
        old = self._idle.pop(conn.origin, None)
        if old is not None:
            old.close()
        self._idle[conn.origin] = conn

    def close(self) -> None:
        for conn in self._idle.values():
            conn.close()
        self._idle.clear()

    def _tls(self) -> "ssl.SSLContext":
        if self._ssl is None:
            import ssl

            options = self.options
            try:
                ctx = ssl.create_default_context(cafile=options.ca_file, capath=options.ca_path)
            except OSError as exc:
                raise TransportError(f"cannot read the CA certificates '{options.ca_file or options.ca_path}' ({exc.strerror or exc})",
                                     "check http.sslCAInfo / http.sslCAPath") from exc
            if not options.verify:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            _tls_version(ctx, options.ssl_version)
            if options.ssl_ciphers:
                try:
                    ctx.set_ciphers(options.ssl_ciphers)
                except ssl.SSLError as exc:
                    raise TransportError(f"http.sslCipherList '{options.ssl_ciphers}' names no cipher this TLS library has",
                                         str(exc)) from exc
            if options.cert_file:
                self._client_certificate(ctx, options.cert_file)
            self._ssl = ctx
        return self._ssl

    def _client_certificate(self, ctx: "ssl.SSLContext", cert: str) -> None:
        """Load the client certificate and key; an encrypted key's passphrase comes from
        ``git credential`` (``cert:///<path>``), asked only under http.sslCertPasswordProtected."""
        import ssl

        options = self.options
        asked = options.cert_password if options.cert_password_protected else None
        try:
            ctx.load_cert_chain(cert, options.key_file, password=(lambda: asked(cert) or "") if asked else "")
        except (OSError, ssl.SSLError) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            hint = ("give the key's passphrase (http.sslCertPasswordProtected=true asks git credential for it)"
                    if not options.cert_password_protected else "check http.sslCert / http.sslKey and the passphrase")
            raise TransportError(f"could not load the client certificate '{cert}' ({why})", hint) from exc

    def _open(self, scheme: str, host: str, port: int) -> _Connection:
        origin = f"{scheme}://{host}:{port}"
        proxy = self.options.proxy_for(host)
        target = urlsplit(proxy) if proxy else None
        if target is not None and target.scheme.lower() != "http":
            # SOCKS and HTTPS proxies are curl's: at the first request git's own remote-http takes over
            raise AuthSchemeError(f"the proxy {redact(proxy or '')} is a {target.scheme} proxy, which relay:: does not speak (only http://)",
                                  "use the URL without relay:: (git's own HTTP code speaks it)")
        where = (target.hostname or "", target.port or 80) if target else (self.options.resolve.get((host.lower(), port), host), port)
        if self.trace is not None:
            self.trace.info(f"  Trying {where[0]}:{where[1]}...")
        began = time.monotonic()
        try:
            sock = socket.create_connection(where, timeout=self.connect_timeout)
        except OSError as exc:
            raise TransportError(_connect_failure(exc, where[0], where[1], time.monotonic() - began)) from exc
        if self.trace is not None:
            peer = sock.getpeername()
            self.trace.info(f"Connected to {where[0]} ({peer[0]}) port {where[1]}")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(read_wait(self.read_timeout, self.options.low_speed))
        if scheme != "https":
            return _Connection(sock, origin)
        if target is not None:
            tunnel = _Connection(sock, origin)
            self._tunnel(tunnel, host, port, target)
            tunnel.file.close()  # the CONNECT reply is read; TLS takes the socket from here
        try:
            tls = self._tls().wrap_socket(sock, server_hostname=host)
        except OSError as exc:
            sock.close()
            raise TransportError(f"TLS with {host}:{port} failed ({exc})", "check http.sslVerify / http.sslCAInfo") from exc
        if self.options.pinned_key and not pinned(self.options.pinned_key, tls.getpeercert(binary_form=True) or b""):
            tls.close()
            raise PinMismatch("SSL: public key does not match pinned public key",  # curl's words
                              "the server's key is not the one http.pinnedPubkey names: check which server this is")
        return _Connection(tls, origin)

    def _proxy_auth(self, proxy: "object") -> str:
        """``Proxy-Authorization`` for a proxy URL with a user name (a header line, or empty).
        A user without a password gets it from ``git credential``, once, as http.c asks for it."""
        user = getattr(proxy, "username", None)
        if not user:
            return ""
        given: str | None = getattr(proxy, "password", None)
        if given is not None:
            password = unquote(given)
        else:
            key = (getattr(proxy, "netloc", "").rpartition("@")[2], user)
            if key not in self._proxy_passwords:
                ask = self.options.proxy_password
                self._proxy_passwords[key] = (ask(getattr(proxy, "scheme", "http"), key[0], unquote(user)) if ask else None) or ""
            password = self._proxy_passwords[key]
        token = base64.b64encode(f"{unquote(user)}:{password}".encode()).decode()
        return f"Proxy-Authorization: Basic {token}\r\n"

    def _tunnel(self, conn: _Connection, host: str, port: int, proxy: "object") -> None:
        head = f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n{self._proxy_auth(proxy)}\r\n"
        conn.sock.sendall(head.encode("latin-1"))
        _, status, _reason, headers = _read_head(conn, self.read_timeout)
        if status != 200:
            conn.close()
            offered = headers.get("proxy-authenticate")
            if status == 407 and offered is not None and not offers_basic(offered):
                scheme = offered.split(None, 1)[0].rstrip(",") if offered.strip() else "another"
                raise AuthSchemeError(f"the proxy asks for {scheme} authentication, which relay:: does not speak (only Basic)",
                                      "use the URL without relay:: (git's own HTTP code speaks it)")
            raise TransportError(f"Received HTTP code {status} from proxy after CONNECT")  # curl's words

    def request(self, method: str, url: str, headers: Mapping[str, str], body: bytes | Iterable[bytes] | None = None,
                auth: str | None = None, length: int | None = None) -> Response:
        """Send one request; a kept-alive connection the server closed meanwhile is retried once
        when nothing of a streamed body has been consumed yet.

        The header lines are in curl's order, as git sends them: Host, credentials, User-Agent,
        Accept, Accept-Encoding, Cookie, then ``http.extraHeader`` and the caller's own (git's
        custom headers), then the body's length or chunked encoding. A streamed body of a known
        ``length`` goes with that Content-Length instead of chunked (object stores want it: an LFS
        upload)."""
        parts = urlsplit(url)
        scheme = parts.scheme
        host = parts.hostname or ""
        port = parts.port or (443 if scheme == "https" else 80)
        origin = f"{scheme}://{host}:{port}"
        proxy = self.options.proxy_for(host) if scheme == "http" else None
        path = url if proxy else (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        lines = [f"{method} {path} HTTP/1.1", f"Host: {parts.netloc.rpartition('@')[2]}"]
        if proxy:
            proxy_auth = self._proxy_auth(urlsplit(proxy)).rstrip("\r\n")
            if proxy_auth:
                lines.append(proxy_auth)
        if auth:
            lines.append(f"Authorization: {auth}")
        lines.append(f"User-Agent: {self.options.user_agent}")
        if not any(k.lower() == "accept" for k in headers):
            lines.append("Accept: */*")
        lines.append("Accept-Encoding: deflate, gzip")
        streamed = body is not None and not isinstance(body, bytes)
        chunked = streamed and length is None
        if chunked:
            lines.append("Transfer-Encoding: chunked")
        jar = self._cookies()
        if jar is not None:
            cookie = jar.header(scheme, host, parts.path or "/")
            if cookie:
                lines.append(f"Cookie: {cookie}")
        lines += [f"{k}: {v}" for k, v in self.options.extra_headers]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        if isinstance(body, bytes):
            lines.append(f"Content-Length: {len(body)}")
        elif streamed and not chunked:
            lines.append(f"Content-Length: {length}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        resp = self._exchange(origin, scheme, host, port, url, method, head, body, streamed, chunked)
        if jar is not None and "set-cookie" in resp.headers:
            jar.receive(host, parts.path or "/", resp.headers["set-cookie"].split("\n"))
        return resp

    def _exchange(self, origin: str, scheme: str, host: str, port: int, url: str, method: str, head: bytes,
                  body: bytes | Iterable[bytes] | None, streamed: bool, chunked: bool = True) -> Response:
        reused = self._take_idle(origin)
        if reused is not None:
            try:
                return self._send(reused, url, method, head, body, chunked)
            except ConnectionError:
                if streamed:
                    raise TransportError(f"the connection to {redact(url)} closed under the request") from None
        try:
            return self._send(self._open(scheme, host, port), url, method, head, body, chunked)
        except ConnectionError as exc:
            raise TransportError(f"the connection to {redact(url)} broke ({exc.strerror or exc})") from exc

    def _take_idle(self, origin: str) -> _Connection | None:
        """The kept-alive connection to ``origin``, unless the server has closed it meanwhile."""
        import select

        conn = self._idle.pop(origin, None)
        if conn is not None and select.select([conn.sock], [], [], 0)[0]:
            conn.close()  # readable while idle: the server said goodbye (EOF) or sent garbage
            return None
        return conn

    def _send(self, conn: _Connection, url: str, method: str, head: bytes, body: bytes | Iterable[bytes] | None,
              chunked: bool = True) -> Response:
        trace = self.trace
        try:
            try:
                if trace is not None:
                    trace.send_header(head)
                if isinstance(body, bytes) or body is None:
                    conn.sock.sendall(head + (body or b""))
                    if trace is not None and body:
                        trace.send_data(body)
                else:
                    conn.sock.sendall(head)
                    early = self._stream(conn, url, method, body, chunked)
                    if early is not None:
                        return early
            except (BrokenPipeError, ConnectionResetError):
                pass  # the server stopped reading: it may have said why (413) before it hung up
            return Response(self, conn, url, method)
        except socket.timeout as exc:
            conn.close()
            Pace(self.options.low_speed).waited_out(self.read_timeout)  # a send that waited the low-speed time
            raise HttpTimeout(f"no answer from {redact(url)}") from exc
        except ConnectionError:
            conn.close()
            raise
        except BaseException:
            conn.close()
            raise


    def _stream(self, conn: _Connection, url: str, method: str, body: Iterable[bytes | memoryview], chunked: bool) -> Response | None:
        """Send a streamed body (chunked, or raw under a Content-Length); the reply if the server
        answered before the body ended."""
        trace = self.trace
        early: Response | None = None
        for chunk in body:
            if chunk:
                framed = b"%x\r\n" % len(chunk) + chunk + b"\r\n" if chunked else chunk
                conn.sock.sendall(framed)
                if trace is not None:
                    trace.send_data(bytes(framed))
                if early is None and _answered(conn):
                    # The server answered before the body ended. An error (a front end's 413,
                    # say) means it reads no more: stop sending, as curl does, instead of
                    # streaming the rest of the pack to nobody.
                    early = Response(self, conn, url, method)
                    if early.status >= 300:
                        early._reusable = False  # the body was cut off
                        return early
        if chunked:
            conn.sock.sendall(b"0\r\n\r\n")
            if trace is not None:
                trace.send_data(b"0\r\n\r\n")
        return early


def _answered(conn: _Connection) -> bool:
    """Has the server started its reply (bytes waiting on the socket)? Nothing of this request's
    reply can be buffered yet: the previous reply on this connection was read to its end."""
    import select

    try:
        return bool(select.select([conn.sock], [], [], 0)[0])
    except (OSError, ValueError):
        return False


def offers_basic(challenges: str) -> bool:
    """A ``Basic`` challenge among those of (Proxy-)WWW-Authenticate (joined by ", ")."""
    return any(part.strip().lower().split(" ", 1)[0] == "basic" for part in challenges.split(","))




def _connect_failure(exc: OSError, host: str, port: int, took: float) -> str:
    """Why a connection failed, in curl's words (git prints them after "unable to access")."""
    if isinstance(exc, socket.gaierror):
        return f"Could not resolve host: {host}"
    if isinstance(exc, TimeoutError):
        return f"Connection timed out after {int(took * 1000)} milliseconds"
    return f"Failed to connect to {host} port {port} after {int(took * 1000)} ms: Couldn't connect to server"

