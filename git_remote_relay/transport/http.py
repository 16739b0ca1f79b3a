"""Smart HTTP (``git http-backend`` and every forge): GET the advertisement, POST each request.

Connections and their settings (``http.proxy``, ``http.sslVerify``, ``http.sslCAInfo``,
``http.extraHeader``, ``http.userAgent``, with ``http.<url>.*`` matching) are ``httpclient``'s,
a small HTTP/1.1 client that keeps connections alive and costs no import time. Credentials: the
URL's own, else ``git credential fill`` after a 401, ``approve`` after success, ``reject`` after
a refusal. Request bodies up to 1 MiB carry a
Content-Length; larger ones are streamed with ``Transfer-Encoding: chunked`` and are never held in
memory, so they cannot be replayed: authentication is settled before they start (``probe``).
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterable, Iterator
from urllib.parse import urljoin, urlsplit

from ..errors import AuthError, AuthSchemeError, DumbHttpError, ProtocolError, TooLargeError, TransportError
from ..gitcmd import Git
from ..pktline import FLUSH, PktReader
from ..url import InnerUrl, check_allowed, redact
from . import credential
from .base import NOT_FOUND_HINT, Context, Service, stalled
from .httpclient import Client, HttpOptions, HttpTimeout, PinMismatch, Response, TooSlow, offers_basic

__all__ = ["HttpTransport", "HttpService", "SMALL_BODY"]

SMALL_BODY = 1 << 20  # git's default http.postBuffer: below it (less one packet) a body is sent whole
_LARGE_PACKET = 65520
MAX_REDIRECTS = 10
# A rate-limited server (HTTP 429, or 503 while busy) that says when to come back is waited for,
# at most MAX_WAITS times and MAX_WAIT seconds a time; after that its answer is the error.
MAX_WAITS = 3
MAX_WAIT = 120
# A finished reply's last bytes (the chunked terminator) are read before the next request, so
# its connection can serve that request; anything longer than this was abandoned, not finished.
_TAIL = 1 << 16


def cert_passphrase(git: Git, cert: str) -> str | None:
    """A client key's passphrase, asked as git asks for it (http.c): ``cert:///<path>``."""
    got = credential.fill(git, credential.Credential("cert", "", path=cert, username=""))
    return got.password if got is not None else None


class HttpTransport:
    """One repository URL over smart HTTP, shared by the services opened on it."""

    def __init__(self, url: InnerUrl, ctx: Context) -> None:
        self.url = url
        self.ctx = ctx
        self.base = url.http_base
        # relay.timeout bounds each wait for the server; connecting gets at most 30 s, like git:// here
        wait = ctx.timeout if ctx.timeout and ctx.timeout > 0 else None
        options = HttpOptions(ctx.config, ctx.env, self.base, ctx.remote_name)
        options.cert_password = self._cert_passphrase
        options.proxy_password = self._proxy_password
        self.client = Client(options, connect_timeout=min(30.0, wait or 30.0), read_timeout=wait, trace=ctx.curl)
        follow = (ctx.config.get("http.followredirects") or "initial").strip().lower()
        self.follow = "initial" if follow == "initial" else "false" if follow in ("false", "no", "off", "0") else "true"
        # http.postBuffer (at least one maximal packet, as in git): remote-curl sends a request
        # whole while it fits with room for one more packet, else streams it chunked
        configured = ctx.config.get_size("http.postbuffer")
        self.post_buffer = max(configured, _LARGE_PACKET) if configured is not None else SMALL_BODY
        self.cred: credential.Credential | None = None
        self.cred_from_helper = False
        self.approved = False
        if ctx.packets is not None:
            ctx.packets.identity = "git"  # what the helper reads here, git's remote-curl reads (unnamed)
        if url.user is not None:
            split = urlsplit(self.base)
            self.cred = credential.Credential(split.scheme, split.netloc, username=url.user, password=url.password)

    # -- authentication -------------------------------------------------------------------------
    def _cert_passphrase(self, cert: str) -> str | None:
        return cert_passphrase(self.ctx.git, cert)

    def _proxy_password(self, scheme: str, host: str, user: str) -> str | None:
        """The password of a proxy URL that names only its user, as http.c asks for it."""
        got = credential.fill(self.ctx.git, credential.Credential(scheme, host, username=user))
        return got.password if got is not None else None

    def _auth(self) -> str | None:
        if self.cred is None or self.cred.password is None:
            return None
        return "Basic " + base64.b64encode(f"{self.cred.username}:{self.cred.password}".encode()).decode()

    def _ask_credentials(self) -> bool:
        split = urlsplit(self.base)
        want = credential.Credential(
            split.scheme, split.netloc, path=split.path.lstrip("/"), username=self.cred.username if self.cred else None
        )
        if not self.ctx.config.get_bool("credential.usehttppath"):
            want.path = ""
        got = credential.fill(self.ctx.git, want)
        if got is None:
            return False
        self.cred, self.cred_from_helper = got, True
        return True

    def _refused(self) -> AuthError:
        if self.cred is not None and self.cred_from_helper:
            credential.reject(self.ctx.git, self.cred)
        return AuthError(
            f"Authentication failed for '{redact(self.base)}/'", "check the user name and password (or token) your credential helper gives"
        )

    def settled(self) -> None:
        """Tell the credential helpers that the credentials worked (once)."""
        if self.cred is not None and self.cred_from_helper and not self.approved:
            credential.approve(self.ctx.git, self.cred)
            self.approved = True

    # -- requests -------------------------------------------------------------------------------
    def send(self, method: str, url: str, headers: dict[str, str], body: bytes | Iterable[bytes] | None = None) -> Response:
        """Send one request; retry a 401 once with credentials when the body can be replayed.

        A GET follows redirects (git's ``http.followRedirects``: ``initial``, the default, and
        ``true`` follow the discovery request, ``false`` nothing), to schemes git allows for URLs
        the user did not give; the reply's ``url`` is where it ended up. A POST is never redirected
        or retried: its body is a stream.
        """
        replayable = body is None or isinstance(body, bytes)
        label = f"remote end ({redact(self.base)})"
        waits = 0
        attempt = 0
        while attempt < 2:
            auth = self._auth()
            self.ctx.trace(f"http: {method} {redact(url)}")
            try:
                resp = self.client.request(method, url, headers, body, auth)
                for _ in range(MAX_REDIRECTS if method == "GET" and self.follow != "false" else 0):
                    location = resp.headers.get("location")
                    if resp.status not in (301, 302, 303, 307, 308) or not location:
                        break
                    target = urljoin(resp.url, location)
                    # like curl under git: only to a scheme git allows for URLs the user did not give
                    check_allowed(urlsplit(target).scheme, self.ctx.env, self.ctx.config.values, from_user=False)
                    resp.drain()
                    resp.release()
                    self.ctx.trace(f"http: {resp.status} -> {redact(target)}")
                    resp = self.client.request(method, target, headers, body, auth)
            except HttpTimeout as exc:
                raise stalled(label, self.ctx.timeout or 0) from exc
            except TransportError as exc:
                raise self._unreachable(exc) from exc
            self.ctx.trace(f"http: {resp.status}")
            if resp.status in (429, 503) and replayable and waits < MAX_WAITS:
                delay = _retry_after(resp.headers.get("retry-after"))
                if delay is not None:
                    resp.close()
                    waits += 1
                    who = redact(self.base)
                    self.ctx.say(f"relay: {who} asks to wait {delay:g} s (HTTP {resp.status}); retrying ({waits}/{MAX_WAITS})")
                    self.ctx.throttled.add(urlsplit(url).hostname or "")
                    time.sleep(delay)
                    continue
            if resp.status == 407:  # a plain-HTTP proxy's refusal (an https one answers CONNECT)
                self._check_scheme(resp, method, "proxy-authenticate", "the proxy")
            if resp.status != 401:
                return resp
            attempt += 1
            resp.drain()
            resp.release()
            self._check_scheme(resp, method)
            if method == "GET" and resp.url != url and url.startswith(self.base):
                # A redirect ended in the 401: like git, ask for (and send) credentials for the
                # place we were sent to, and retry there.
                suffix = url[len(self.base):]
                if resp.url.endswith(suffix):
                    self.base = resp.url[: len(resp.url) - len(suffix)]
                    url = resp.url
            need = self.cred is None or self.cred.password is None
            if attempt == 1 and replayable and need and not self.cred_from_helper:
                if self._ask_credentials():
                    continue
                raise AuthError(
                    f"Authentication failed for '{redact(self.base)}/': no credentials",
                    "configure a credential helper (git config credential.helper ...) or set GIT_ASKPASS",
                )
            raise self._refused()
        raise AssertionError("unreachable")

    def _unreachable(self, exc: TransportError) -> TransportError:
        """remote-curl's words for a request that got no answer."""
        if isinstance(exc, PinMismatch):
            return TransportError(f"unable to access '{redact(self.base)}/' with http.pinnedPubkey configuration: {exc.message}", exc.hint)
        return TransportError(f"unable to access '{redact(self.base)}/': {exc.message}", exc.hint)

    def _check_scheme(self, resp: Response, method: str, header: str = "www-authenticate", who: str = "") -> None:
        """A 401 (or a proxy's 407) that offers no Basic challenge (Negotiate, NTLM, Digest): at a
        discovery, before anything was answered to git, git's own curl can take the session;
        else say so."""
        offered = resp.headers.get(header)
        if offered is None or offers_basic(offered):
            return
        scheme = offered.split(None, 1)[0].rstrip(",") if offered.strip() else "another"
        why = f"{who or repr(redact(self.base) + '/')} asks for {scheme} authentication, which relay:: does not speak (only Basic)"
        if method == "GET":
            raise AuthSchemeError(why, "use the URL without relay:: (git's own HTTP code speaks it)")
        raise AuthError(why, "use the URL without relay:: (git's own HTTP code speaks it)")

    def language(self) -> dict[str, str]:
        """The Accept-Language header git sends (from ``LANGUAGE`` / the locale), if any."""
        value = self.client.options.accept_language
        return {"Accept-Language": value} if value else {}

    def check_status(self, resp: Response, url: str, big_body: bool = False) -> None:
        if resp.status == 200:
            return
        resp.close()  # an error page: not worth reading to keep the connection
        where = redact(url)
        if resp.status == 404:
            raise TransportError(f"repository '{redact(self.base)}/' not found", NOT_FOUND_HINT)
        if resp.status == 403:  # git's (remote-curl's) words, which scripts look for
            raise AuthError(f"unable to access '{redact(self.base)}/': The requested URL returned error: 403",
                            f"the server refused '{where}': check that your account may read (or push to) this repository")
        if resp.status in (429, 503):
            raise TransportError(f"'{where}' is refusing requests for now (HTTP {resp.status})",
                                 "the server is rate-limiting or busy: try again later")
        if resp.status == 413 or (big_body and resp.status in (408, 504)):
            raise TooLargeError(f"the server refused the request for its size (HTTP {resp.status}) at '{where}'")
        raise TransportError(f"unexpected HTTP status {resp.status} from '{where}'")

    def open(self, service: str, want_v2: bool) -> "HttpService":
        if (self.ctx.env.get("GIT_SMART_HTTP") or "1").strip().lower() in ("0", "false", "no", "off"):
            raise DumbHttpError("smart HTTP is turned off (GIT_SMART_HTTP=0) and relay:: speaks only smart HTTP",
                                   "unset GIT_SMART_HTTP, or use the URL without relay:: for dumb HTTP")
        url = f"{self.base}/info/refs?service=git-{service}"
        headers = self.language()
        headers["Pragma"] = "no-cache"
        if want_v2 or self.ctx.v1:
            headers["Git-Protocol"] = "version=2" if want_v2 else "version=1"
        resp = self.send("GET", url, headers)
        self.check_status(resp, url)
        final = resp.url
        suffix = f"/info/refs?service=git-{service}"
        if final != url and final.endswith(suffix):
            self.base = final[: -len(suffix)]
            self.ctx.say(f"warning: redirecting to {redact(self.base)}/")  # remote-curl's line (not under -q)
        ctype = (resp.headers.get("content-type") or "").split(";")[0].strip()
        if ctype != f"application/x-git-{service}-advertisement":
            resp.close()
            raise DumbHttpError(
                f"repository '{redact(self.base)}/' not valid: is this a git repository? It did not answer as a smart HTTP "
                f"server (Content-Type '{ctype}')",
                "relay:: needs smart HTTP; for a dumb HTTP server use the same URL without relay:: (plain git reads those)",
            )
        self.settled()
        return HttpService(self, service, resp, want_v2)


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP date), capped; None if absent."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(min(int(value), MAX_WAIT))
    try:
        from email.utils import parsedate_to_datetime

        when = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, min(when - time.time(), float(MAX_WAIT)))


def _safe_read(resp: Response, label: str, timeout: float | None) -> Callable[[int], bytes]:
    """``resp.read`` with a stall as ``StalledError`` and a broken reply as ``TransportError``."""

    def read(n: int) -> bytes:
        try:
            return resp.read(n)
        except HttpTimeout as exc:
            raise stalled(label, timeout or 0) from exc
        except TooSlow as exc:  # remote-curl's words for curl's error 28 in the middle of a reply
            raise TransportError(f"RPC failed; curl 28 {exc.message}", exc.hint) from exc
        except TransportError as exc:
            raise TransportError(f"the {label} hung up unexpectedly ({exc.message})") from exc

    return read


def _finish(resp: Response) -> None:
    """Read the last bytes of a reply the protocol is done with, so its connection is reused."""
    try:
        for _ in range(4):
            if not resp.read(_TAIL):
                return
    except TransportError:
        pass
    resp.close()


def _peek(chunks: Iterator[bytes], limit: int) -> tuple[bytes, Iterator[bytes] | None]:
    """Read up to ``limit`` bytes; (all of it, None) if the body ended, else (head, the rest)."""
    parts, size = [], 0
    for chunk in chunks:
        parts.append(chunk)
        size += len(chunk)
        if size > limit:
            return b"".join(parts), chunks
    return b"".join(parts), None


def _chain(head: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    yield head
    yield from rest


def _chunks(body: Iterable[bytes]) -> Iterator[bytes]:
    for chunk in body:
        if chunk:
            yield chunk


class HttpService(Service):
    """A service over smart HTTP: ``reader`` starts after the ``# service=`` header."""

    stateless = True

    def __init__(self, transport: HttpTransport, service: str, resp: Response, want_v2: bool) -> None:
        self.transport = transport
        self.service = service
        self.want_v2 = want_v2
        self._responses = [resp]
        self.label = f"remote end ({redact(transport.base)})"
        self.reader = PktReader(_safe_read(resp, self.label, transport.ctx.timeout), self.label)
        if transport.ctx.packets is not None:
            self.traced(transport.ctx.packets)  # remote-curl traces the service header too
        first = self.reader.read_pkt()
        if first == f"# service=git-{service}\n".encode():
            if self.reader.read_pkt() is not FLUSH:
                raise ProtocolError("protocol error: no flush after the service header")
        elif isinstance(first, bytes) and first.startswith(b"# service="):
            raise ProtocolError(f"protocol error: the server answered for another service: {first!r}")
        else:
            self.reader.unread(first)

    def request(self, body: Iterable[bytes]) -> PktReader:
        url = f"{self.transport.base}/git-{self.service}"
        headers = {
            "Content-Type": f"application/x-git-{self.service}-request",
            "Accept": f"application/x-git-{self.service}-result",
            **self.transport.language(),
        }
        if self.want_v2 or self.transport.ctx.v1:
            headers["Git-Protocol"] = "version=2" if self.want_v2 else "version=1"
        limit = self.transport.post_buffer - _LARGE_PACKET
        for previous in self._responses:
            _finish(previous)
        self._responses.clear()
        if self.packets is not None:
            body = list(self.packets.body(body)) if isinstance(body, (bytes, list, tuple)) else self.packets.body(body)
        data: bytes | Iterable[bytes]
        if isinstance(body, (bytes, list, tuple)):
            data = b"".join(body) if not isinstance(body, bytes) else body
            big = len(data) > limit
            if big:
                data = [data]
        else:
            # Like git's remote-curl: a body that fits in http.postBuffer goes whole (it can be
            # sent again after a 401); a longer one is streamed, so authentication is settled first.
            head, rest = _peek(_chunks(body), limit)
            big = rest is not None
            if not big:
                data = head
            else:
                if self.transport.cred is None or self.transport.cred.password is None:
                    self.probe()
                assert rest is not None
                data = _chain(head, rest)
        if isinstance(data, bytes) and len(data) > 1024 and self.service == "upload-pack":
            import zlib  # remote-curl compresses fetch requests over 1 KiB (long lists of haves)

            packer = zlib.compressobj(9, zlib.DEFLATED, 31)
            plain = len(data)
            data = packer.compress(data) + packer.flush()
            headers["Content-Encoding"] = "gzip"
            said = f"gzip {plain} to {len(data)} bytes"
        else:
            said = "chunked" if big else f"{len(data) if isinstance(data, bytes) else 0} bytes"
        if self.transport.ctx.verbose is not None:  # git -v: remote-curl's account of each request
            self.transport.ctx.verbose(f"POST git-{self.service} ({said})\n")
        resp = self.transport.send("POST", url, headers, data)
        self.transport.check_status(resp, url, big_body=big)
        ctype = (resp.headers.get("content-type") or "").split(";")[0].strip()
        if ctype == "text/html":
            # git reads any answer as packets (and fails on the first); a web page (a proxy's or
            # a login portal's) is named as what it is
            resp.close()
            raise ProtocolError(f"protocol error: '{redact(url)}' answered with a web page (Content-Type '{ctype}'), not git's reply",
                                "a proxy or login page may stand between you and the server")
        self._responses.append(resp)
        self.raw_read = _safe_read(resp, self.label, self.transport.ctx.timeout)  # for stateless-connect: relayed undecoded
        self.reader = PktReader(self.raw_read, self.label)
        self.reader.trace = self.packets.read if self.packets is not None else None
        return self.reader

    def probe(self) -> None:
        """An empty request (a flush) that settles authentication before a streamed upload."""
        url = f"{self.transport.base}/git-{self.service}"
        headers = {"Content-Type": f"application/x-git-{self.service}-request", "Accept": f"application/x-git-{self.service}-result",
                   **self.transport.language()}
        resp = self.transport.send("POST", url, headers, b"0000")
        self.transport.check_status(resp, url)
        resp.drain()
        resp.release()
        self.transport.settled()

    def abort(self) -> None:
        """Close, dropping the connections of replies we stopped reading (they cannot be reused)."""
        for resp in self._responses:
            resp.close()
        self._responses.clear()

    def close(self) -> None:
        for resp in self._responses:
            _finish(resp)
        self._responses.clear()
