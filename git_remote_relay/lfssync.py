"""Git LFS objects for ``git relay``: given the pointers in what moves (``lfsfind``), ask the
target which objects it lacks, and stream each from the source's LFS storage into the target's.

* **Servers** are found as git-lfs finds them: ``<url>.git/info/lfs`` for http(s) (git:// as
  https), ``git-lfs-authenticate`` over ssh. The batch API says what the target lacks and where
  to get and put each object; a per-object refusal (too large for the target, say) is reported
  before anything moves.
* **Transfers** stream: the download's body is the upload's body, in 1 MiB pieces, with the
  SHA-256 checked on the way; the last piece is held back until the hash is right, so a corrupt
  source can never complete an upload. ``lfs.concurrentTransfers`` objects at a time (8),
  each retried on 429 and 5xx; a re-run asks the target again and sends only what is missing.
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

from .errors import RelayError, TransportError
from .gitcmd import PIPE, run_command
from .lfs import Pointer, http_endpoint
from .lfslocal import LocalLfs, LocalUpload, is_local, open_object
from .transport.base import Context
from .transport.http import HttpTransport, cert_passphrase
from .transport.httpclient import Client, HttpOptions, Response
from .transport.process import sq_quote, ssh_argv
from .transport.session import Session
from .ui import Reporter
from .url import parse, redact

__all__ = ["LfsServer", "LfsReport", "copy_objects", "lfs_location", "BATCH_SIZE"]

BATCH_SIZE = 100  # objects per batch request, as git-lfs sends them
MEDIA = "application/vnd.git-lfs+json"
TRIES = 4
MAX_REDIRECTS = 5
_PIECE = 1 << 18


class LfsReport:
    """What the LFS part of a relay found and did (the ``lfs`` object of ``--json``)."""

    def __init__(self) -> None:
        self.pointers = 0  # distinct LFS objects named by the blobs that move
        self.bytes_named = 0
        self.missing = 0  # of those, what the target lacks
        self.missing_bytes = 0
        self.copied = 0
        self.copied_bytes = 0
        self.absent_on_source: list[str] = []

    def as_json(self) -> dict[str, object]:
        return {"objects": self.pointers, "bytes": self.bytes_named, "missing_on_target": self.missing,
                "missing_bytes": self.missing_bytes, "copied": self.copied, "copied_bytes": self.copied_bytes,
                "absent_on_source": self.absent_on_source}


# -- the servers ------------------------------------------------------------------------------
class LfsServer:
    """One side's LFS API, found from its git URL as git-lfs finds it."""

    def __init__(self, session: Session, operation: str, side: str, api: str | None = None) -> None:
        self.session = session
        self.side = side
        ctx = session.ctx
        self.headers: dict[str, str] = {}
        # given (--source-lfs-url / --target-lfs-url, or the source's .lfsconfig), derived, or over ssh
        self.api = api or _derived_api(session) or self._authenticate(ctx, operation)
        self.http = HttpTransport(parse(self.api), ctx)

    def _authenticate(self, ctx: Context, operation: str) -> str:
        """git-lfs's ssh discovery: ``git-lfs-authenticate <path> <operation>`` gives the API's
        href and the headers to send it."""
        url = self.session.url
        argv = ssh_argv(ctx, url, f"git-lfs-authenticate {sq_quote(url.path)} {operation}", want_v2=False)
        proc = run_command(argv, env=ctx.env, cwd=None, stderr=PIPE)
        if proc.returncode != 0:
            said = proc.stderr.decode("utf-8", "replace").strip().splitlines()
            raise TransportError(f"the {self.side}'s LFS server could not be found over ssh: git-lfs-authenticate failed"
                                 + (f" ({said[-1]})" if said else f" (exit code {proc.returncode})"),
                                 "run with --no-lfs if the repository does not use Git LFS")
        try:
            answer = json.loads(proc.stdout)
            href = answer.get("href") or ""
            headers = answer.get("header") or {}
            if not isinstance(headers, dict):
                raise ValueError("header is not an object")
        except (ValueError, AttributeError):
            raise TransportError(f"the {self.side}'s git-lfs-authenticate did not answer in JSON") from None
        if not href:
            href = http_endpoint("https://" + url.host + "/" + url.path.lstrip("/"))
        self.headers = {str(k): str(v) for k, v in headers.items()}
        return str(href)

    def batch(self, operation: str, objects: list[Pointer]) -> dict[str, dict[str, object]]:
        """The batch API's answer per oid (``actions`` and/or ``error``), in requests of BATCH_SIZE."""
        answers: dict[str, dict[str, object]] = {}
        url = self.api + "/objects/batch"
        for start in range(0, len(objects), BATCH_SIZE):
            part = objects[start:start + BATCH_SIZE]
            body = json.dumps({"operation": operation, "transfers": ["basic"], "hash_algo": "sha256",
                               "objects": [{"oid": p.oid, "size": p.size} for p in part]}).encode()
            headers = dict(self.headers, Accept=MEDIA)
            headers["Content-Type"] = MEDIA
            resp = self.http.send("POST", url, headers, body)
            data = _read_all(resp, 16 << 20)
            if resp.status != 200:
                raise TransportError(f"the {self.side}'s LFS server refused the batch request (HTTP {resp.status}) at '{redact(url)}'"
                                     + _message(data), "check the LFS server's URL and your access to it, or run with --no-lfs")
            self.http.settled()
            try:
                for item in json.loads(data).get("objects") or []:
                    answers[str(item["oid"])] = item
            except (ValueError, KeyError, TypeError, AttributeError):
                raise TransportError(f"the {self.side}'s LFS server answered the batch request with something that is not "
                                     "its JSON") from None
        return answers


def _derived_api(session: Session) -> str | None:
    """The LFS API git-lfs derives from an http(s) or git:// URL (git:// as ``lfs.gitProtocol``);
    None for the others (ssh asks the host, a local path has its own store)."""
    url = session.url
    if url.scheme in ("http", "https"):
        return http_endpoint(url.raw)
    if url.scheme == "git":
        return http_endpoint((session.ctx.config.get("lfs.gitprotocol") or "https") + url.raw[len("git"):])
    return None


def lfs_location(session: Session) -> str:
    """Where ``git relay`` looks for this remote's LFS objects (without asking anything over ssh)."""
    url = session.url
    if url.scheme == "file":
        return LocalLfs(url.path, "remote").api
    derived = _derived_api(session)
    return redact(derived) if derived else f"where git-lfs-authenticate on {url.host} says"


def _server(session: Session, operation: str, side: str, api: str | None) -> LfsServer | LocalLfs:
    """Where one side keeps its LFS objects: the LFS API ``api`` when one is given, else its LFS
    server as git-lfs finds it, or its own store for a local path."""
    if api and not api.startswith(("http://", "https://")):
        raise RelayError(f"the {side}'s LFS URL must be http(s): '{redact(api)}'")
    if session.url.scheme == "file" and not api:
        return LocalLfs(session.url.path, side)
    return LfsServer(session, operation, side, api)


def _read_all(resp: Response, limit: int) -> bytes:
    out = bytearray()
    while len(out) <= limit:
        data = resp.read(1 << 16)
        if not data:
            resp.release()
            return bytes(out)
        out += data
    resp.close()
    raise TransportError(f"an LFS server's answer from {redact(resp.url)} is larger than {limit} bytes")


def _message(data: bytes) -> str:
    try:
        text = json.loads(data).get("message")
    except (ValueError, AttributeError):
        return ""
    return f": {text}" if text else ""


# -- transfers --------------------------------------------------------------------------------
class _Retry(Exception):
    def __init__(self, why: str, delay: float | None, throttled: str = "") -> None:
        super().__init__(why)
        self.why, self.delay, self.throttled = why, delay, throttled  # throttled: the host that answered 429


class _Clients(threading.local):
    """Each transfer thread's own HTTP connections, per origin (never shared across threads)."""

    def __init__(self) -> None:
        self.by_origin: dict[str, Client] = {}


class Copier:
    """Streams objects from the source's download actions to the target's upload actions."""

    def __init__(self, ctx: Context, reporter: Reporter) -> None:
        self.ctx = ctx
        self.reporter = reporter
        self.local = _Clients()
        self.clients: list[Client] = []
        self.lock = threading.Lock()
        self.done = 0
        self.done_bytes = 0
        self.passphrases: dict[str, str | None] = {}

    def client(self, url: str) -> Client:
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        client = self.local.by_origin.get(origin)
        if client is None:
            wait = self.ctx.timeout if self.ctx.timeout and self.ctx.timeout > 0 else None
            options = HttpOptions(self.ctx.config, self.ctx.env, url)
            options.cert_password = self._cert_passphrase
            client = Client(options, connect_timeout=min(30.0, wait or 30.0), read_timeout=wait, trace=self.ctx.curl)
            self.local.by_origin[origin] = client
            with self.lock:
                self.clients.append(client)
        return client

    def close(self) -> None:
        for client in self.clients:
            client.close()

    def _cert_passphrase(self, cert: str) -> str | None:
        """Asked once for all transfer threads (a terminal prompt, too, comes once)."""
        with self.lock:
            if cert not in self.passphrases:
                self.passphrases[cert] = cert_passphrase(self.ctx.git, cert)
            return self.passphrases[cert]

    def copy(self, pointer: Pointer, down: dict[str, object], up: dict[str, object], verify: dict[str, object] | None) -> None:
        delay = 1.0
        for attempt in range(1, TRIES + 1):
            try:
                self._once(pointer, down, up, verify)
                return
            except _Retry as exc:
                if attempt == TRIES:
                    raise TransportError(f"LFS object {pointer.oid[:12]}: {exc.why}, {TRIES} times",
                                         "run the sync again later: it sends only what the target still lacks") from None
                if exc.throttled:
                    self.ctx.throttled.add(exc.throttled)
                wait = exc.delay if exc.delay is not None else delay
                self.reporter.trace(f"lfs: {pointer.oid[:12]}: {exc.why}; again in {wait:g} s")
                time.sleep(wait)
                delay *= 2

    def _request(self, method: str, action: dict[str, object], what: str, body: object = None, length: int | None = None,
                 extra: dict[str, str] | None = None) -> Response:
        href = str(action.get("href") or "")
        if not href.startswith(("http://", "https://")):
            raise TransportError(f"an LFS server gave a {what} address that is not http(s): '{redact(href)}'")
        given = action.get("header")
        headers = {str(k): str(v) for k, v in given.items()} if isinstance(given, dict) else {}
        headers.update(extra or {})
        try:
            return self.client(href).request(method, href, headers, body, length=length)  # type: ignore[arg-type]
        except TransportError as exc:
            raise _Retry(f"{what}: {exc.message}", None) from None

    def _download(self, action: dict[str, object]) -> Response:
        """GET a download action, following redirects (object stores answer 302/307 with where
        the object is); the action's headers go only to its own host."""
        from urllib.parse import urljoin, urlsplit

        resp = self._request("GET", action, "download")
        host = urlsplit(str(action["href"])).netloc
        for _ in range(MAX_REDIRECTS):
            location = resp.headers.get("location")
            if resp.status not in (301, 302, 303, 307, 308) or not location:
                break
            resp.drain()
            resp.release()
            target = urljoin(resp.url, location)
            headers = action.get("header") if urlsplit(target).netloc == host else None
            resp = self._request("GET", {"href": target, "header": headers}, "download")
        return resp

    def _once(self, pointer: Pointer, down: dict[str, object], up: dict[str, object], verify: dict[str, object] | None) -> None:
        local_down, local_up = is_local(str(down.get("href") or "")), is_local(str(up.get("href") or ""))
        get: Response | io.BufferedReader = open_object(str(down["href"])) if local_down else self._download(down)
        try:
            if isinstance(get, Response):
                _check(get, "the source's download")
            if local_up:
                LocalUpload(str(up["href"])).write_all(_verified(get, pointer))
            else:
                put = self._request("PUT", up, "upload", body=_verified(get, pointer), length=pointer.size,
                                    extra={"Content-Type": "application/octet-stream"})
                try:
                    _check(put, "the target's upload")
                    put.drain()
                finally:
                    put.release()
        finally:
            get.close()
        if verify:
            body = json.dumps({"oid": pointer.oid, "size": pointer.size}).encode()
            resp = self._request("POST", verify, "verify", body=body, extra={"Content-Type": MEDIA, "Accept": MEDIA})
            try:
                _check(resp, "the target's verify")
                resp.drain()
            finally:
                resp.release()
        with self.lock:
            self.done += 1
            self.done_bytes += pointer.size


def _check(resp: Response, what: str) -> None:
    if 200 <= resp.status < 300:
        return
    retry_after = resp.headers.get("retry-after", "")
    resp.close()
    why = f"{what} answered HTTP {resp.status}"
    if resp.status == 429 or resp.status >= 500:
        from urllib.parse import urlsplit

        raise _Retry(why, float(retry_after) if retry_after.isdigit() else None,
                     (urlsplit(resp.url).hostname or "") if resp.status == 429 else "")
    raise TransportError(f"{why} for {redact(resp.url)}")


def _verified(resp: Response | io.BufferedReader, pointer: Pointer) -> Iterator[memoryview]:
    """The download's body, with its size and SHA-256 checked: the last piece is held back until
    both are right, so a wrong object never completes the upload (the target sees a cut-off body).
    Two buffers take turns (the one given out is sent before the next read), so memory does not
    grow with the object or the number of reads."""
    digest = hashlib.sha256()
    size = 0
    buffers = (memoryview(bytearray(_PIECE)), memoryview(bytearray(_PIECE)))
    turn = 0
    held: memoryview | None = None
    while True:
        got = resp.readinto(buffers[turn])
        if not got:
            break
        piece = buffers[turn][:got]
        digest.update(piece)
        size += got
        if size > pointer.size:
            break
        if held is not None:
            yield held
        held, turn = piece, 1 - turn
    if size != pointer.size or digest.hexdigest() != pointer.oid:
        raise RelayError(f"LFS object {pointer.oid[:12]} from the source is not what its pointer says "
                         f"({size} bytes, sha256 {digest.hexdigest()[:12]})",
                         "the source's LFS storage holds a damaged object: fix it there, then run the sync again")
    if held is not None:
        yield held


def copy_objects(source: Session, target: Session, pointers: list[Pointer], report: LfsReport, reporter: Reporter,
                 dry_run: bool = False, apis: tuple[str | None, str | None] = (None, None)) -> None:
    """Ask the target what it lacks; unless ``dry_run``, stream each such object from the source.
    ``apis``: the (source, target) LFS API URLs where they are not to be found from the git URLs."""
    report.pointers = len(pointers)
    report.bytes_named = sum(p.size for p in pointers)
    if not pointers:
        return
    upstream = _server(target, "upload", "target", apis[1])
    wanted = upstream.batch("upload", pointers)
    refused = [(p, wanted[p.oid]["error"]) for p in pointers if p.oid in wanted and wanted[p.oid].get("error")]
    if refused:
        lines = [f"{p.oid[:12]} ({p.size} bytes): {(e or {}).get('message', e) if isinstance(e, dict) else e}" for p, e in refused[:5]]
        raise RelayError(f"the target's LFS server refuses {len(refused)} object(s), before anything was sent: " + "; ".join(lines),
                         "raise the target's LFS size limit, or run with --no-lfs to relay the commits without LFS content")
    todo = [p for p in pointers if (wanted.get(p.oid) or {}).get("actions")]
    report.missing = len(todo)
    report.missing_bytes = sum(p.size for p in todo)
    if dry_run or not todo:
        return
    downstream = _server(source, "download", "source", apis[0])
    copier = Copier(target.ctx, reporter)
    workers = _concurrency(source.ctx)
    started = time.monotonic()
    try:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lfs") as pool:
            for first in range(0, len(todo), BATCH_SIZE):
                # Actions expire (presigned URLs): each window of objects gets its own, asked for
                # just before it moves; the first window uses the answer the check above got.
                window = todo[first:first + BATCH_SIZE]
                fresh = wanted if first == 0 else upstream.batch("upload", window)
                jobs = _jobs(window, downstream.batch("download", window), fresh, report)
                for future in [pool.submit(copier.copy, *job) for job in jobs]:
                    future.result()
                    _progress(reporter, copier, len(todo), started)
    finally:
        copier.close()
        report.copied, report.copied_bytes = copier.done, copier.done_bytes
    if report.absent_on_source:
        reporter.warn(f"the source's LFS server does not have {len(report.absent_on_source)} object(s) its commits name "
                      f"({', '.join(o[:12] for o in report.absent_on_source[:3])}): the target gets their pointers only, as the source has")
    _progress(reporter, copier, len(todo), started, final=True)


def _jobs(window: list[Pointer], offered: dict[str, dict[str, object]], wanted: dict[str, dict[str, object]],
          report: LfsReport) -> list[tuple[Pointer, dict[str, object], dict[str, object], dict[str, object] | None]]:
    """(pointer, download action, upload action, verify action) for each object of ``window``
    that the source has and the target still wants; the others are noted in ``report``."""
    jobs = []
    for p in window:
        down = (offered.get(p.oid) or {}).get("actions") or {}
        up = (wanted.get(p.oid) or {}).get("actions") or {}
        if not isinstance(down, dict) or not isinstance(down.get("download"), dict):
            report.absent_on_source.append(p.oid)
        elif isinstance(up, dict) and isinstance(up.get("upload"), dict):
            jobs.append((p, down["download"], up["upload"], up.get("verify") if isinstance(up.get("verify"), dict) else None))
    return jobs


def _concurrency(ctx: Context) -> int:
    value = ctx.config.get("lfs.concurrenttransfers")
    try:
        return max(1, int(value)) if value else 8
    except ValueError:
        return 8


def _progress(reporter: Reporter, copier: Copier, total: int, started: float, final: bool = False) -> None:
    if not reporter.progress and not final:
        return
    mib = copier.done_bytes / (1 << 20)
    line = f"Copying LFS objects: {100 * copier.done // max(total, 1)}% ({copier.done}/{total}), {mib:.2f} MiB"
    if final:
        reporter.say(line + f", done in {time.monotonic() - started:.1f} s.")
    else:
        reporter.raw(line + "\r")
