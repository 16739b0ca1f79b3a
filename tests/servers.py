"""Real git servers on loopback for the tests and the benchmarks, as context managers.

Each yields what a client needs and stops, by PID, only the process it started. A server that
cannot start raises ``ServerUnavailable`` with the reason (its log's tail).
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

HTTP_USER, HTTP_PASSWORD = "alice", "s3cr3t-Pa55word"


class ServerUnavailable(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop(proc: "subprocess.Popen[bytes]") -> None:
    """End a process we started, by its PID only."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_port(port: int, proc: "subprocess.Popen[bytes]", what: str, log: Path | None = None, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    text = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
    stop(proc)
    raise ServerUnavailable(f"{what} did not start on port {port}: {text}")


def _sbin(name: str) -> str | None:
    return shutil.which(name) or next((p for p in (f"/usr/sbin/{name}", f"/sbin/{name}") if os.path.exists(p)), None)


@contextlib.contextmanager
def git_daemon(root: Path, base: Path) -> Iterator[int]:
    """``git daemon`` exporting every repository under ``root``, receive-pack enabled."""
    port = free_port()
    log = base / "daemon.log"
    proc = subprocess.Popen(
        ["git", "daemon", "--export-all", "--enable=receive-pack", "--informative-errors", "--reuseaddr",
         f"--base-path={root}", "--listen=127.0.0.1", f"--port={port}", str(root)],
        stdout=subprocess.DEVNULL, stderr=log.open("wb"),
    )
    try:
        wait_port(port, proc, "git daemon", log)
        yield port
    finally:
        stop(proc)


@contextlib.contextmanager
def dulwich_server(kind: str, root: Path, base: Path, limit: int | None = None) -> Iterator[int]:
    """dulwich's own server (``kind``: "http" for its smart-HTTP WSGI app, "git" for its TCP git
    server) over the repositories under ``root``; ``limit``: receive-pack bodies over it get 413."""
    import sys

    port = free_port()
    log = base / f"dulwich-{kind}-{port}.log"
    argv = [sys.executable, str(Path(__file__).with_name("dulwich_server.py")), kind, str(root), str(port)]
    if limit is not None:
        argv += ["--limit", str(limit)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log.open("wb"))
    try:
        wait_port(port, proc, f"dulwich {kind} server", log)
        yield port
    finally:
        stop(proc)


# lighttpd on loopback, as every test web server starts
_LIGHTTPD_BASE = """
server.document-root = "{root}"
server.bind = "127.0.0.1"
server.port = {port}
server.pid-file = "{base}/lighttpd.pid"
server.errorlog = "{base}/lighttpd.log"
server.max-request-size = 0
"""

LIGHTTPD_CONF = _LIGHTTPD_BASE + """
# static files (the dumb HTTP tests) are read afresh: git replaces info/refs by a rename
server.stat-cache-engine = "disable"
server.modules = ("mod_alias", "mod_setenv", "mod_cgi", "mod_auth", "mod_authn_file", "mod_redirect")
auth.backend = "plain"
auth.backend.plain.userfile = "{base}/htpasswd"
alias.url = ("/git/" => "{backend}/", "/auth/" => "{backend}/", "/postauth/" => "{backend}/", "/small/" => "{backend}/",
             "/cookies/" => "{backend}/")
url.redirect = ("^/moved/(.*)$" => "/git/$1", "^/moved-auth/(.*)$" => "/auth/$1")
$HTTP["url"] =~ "^/small/" {{
  # a front end with a body limit (like a proxy's client_max_body_size): 413 over 300 KiB
  server.max-request-size = {small_kb}
}}
$HTTP["url"] =~ "^/(git|auth|postauth|small|cookies)/" {{
  cgi.assign = ("" => "")
  setenv.set-environment = ("GIT_PROJECT_ROOT" => "{root}", "GIT_HTTP_EXPORT_ALL" => "1",
                            "GIT_CONFIG_GLOBAL" => "{gitconfig}", "GIT_CONFIG_NOSYSTEM" => "1", "HOME" => "{home}")
}}
$HTTP["url"] =~ "^/cookies/" {{
  # every answer sets a session cookie (no Path: the client's default path applies)
  setenv.add-response-header = ("Set-Cookie" => "name=value")
}}
$HTTP["url"] =~ "^/auth/" {{
  auth.require = ("" => ("method" => "basic", "realm" => "relay", "require" => "valid-user"))
}}
$HTTP["url"] =~ "^/postauth/" {{
  $HTTP["request-method"] == "POST" {{
    auth.require = ("" => ("method" => "basic", "realm" => "relay", "require" => "valid-user"))
  }}
}}
"""


@contextlib.contextmanager
def http_server(root: Path, base: Path, gitconfig: str, home: str, small_kb: int = 300) -> Iterator[int]:
    """lighttpd running ``git http-backend`` (chunked request bodies accepted): /git/ open,
    /auth/ basic auth everywhere, /postauth/ basic auth for POSTs only, /moved/ redirects to /git/ and /moved-auth/ to /auth/,
    /small/ answers 413 to request bodies over ``small_kb`` KiB (a front end's body limit), /cookies/
    sets a cookie on every answer."""
    lighttpd = _sbin("lighttpd")
    if not lighttpd:
        raise ServerUnavailable("lighttpd is not installed (run ./install.sh --dev)")
    backend = subprocess.run(["git", "--exec-path"], capture_output=True, text=True, check=True).stdout.strip() + "/git-http-backend"
    port = free_port()
    base.mkdir(parents=True, exist_ok=True)
    (base / "htpasswd").write_text(f"{HTTP_USER}:{HTTP_PASSWORD}\n")
    conf = base / "lighttpd.conf"
    conf.write_text(LIGHTTPD_CONF.format(
        root=root, port=port, base=base, backend=backend, gitconfig=gitconfig, home=home, small_kb=small_kb))
    proc = subprocess.Popen([lighttpd, "-D", "-f", str(conf)], stdout=subprocess.DEVNULL, stderr=(base / "stderr.log").open("wb"))
    try:
        wait_port(port, proc, "lighttpd", base / "stderr.log")
        yield port
    finally:
        stop(proc)


LFS_LIGHTTPD_CONF = _LIGHTTPD_BASE + """
server.stream-request-body = 2
server.stream-response-body = 2
server.modules = ("mod_alias", "mod_setenv", "mod_cgi", "mod_auth", "mod_authn_file", "mod_proxy")
auth.backend = "plain"
auth.backend.plain.userfile = "{base}/htpasswd"
$HTTP["url"] =~ "^/auth/" {{
  # git and the LFS batch API need a password; the storage actions carry giftless's own token
  $HTTP["url"] !~ "/info/lfs/objects/storage/" {{
    auth.require = ("" => ("method" => "basic", "realm" => "relay", "require" => "valid-user"))
  }}
}}
$HTTP["url"] =~ "^/(git|auth)/.+\\.git/info/lfs/" {{
  proxy.server = ("" => (("host" => "127.0.0.1", "port" => {lfs_port})))
}}
else $HTTP["url"] =~ "^/(git|auth)/" {{
  alias.url = ("/git/" => "{backend}/", "/auth/" => "{backend}/")
  cgi.assign = ("" => "")
  setenv.set-environment = ("GIT_PROJECT_ROOT" => "{root}", "GIT_HTTP_EXPORT_ALL" => "1",
                            "GIT_CONFIG_GLOBAL" => "{gitconfig}", "GIT_CONFIG_NOSYSTEM" => "1", "HOME" => "{home}")
}}
"""


@dataclass
class LfsHost:
    """A git host that also serves Git LFS where git-lfs looks for it: ``url(repo)`` is
    ``http://127.0.0.1:PORT/git/<repo>.git``; its LFS objects are stored under ``store``."""

    port: int
    root: Path
    store: Path

    def url(self, name: str, auth: bool = False) -> str:
        """``auth``: the same repository where git and the LFS batch API need HTTP_USER's password."""
        return f"http://127.0.0.1:{self.port}/{'auth' if auth else 'git'}/{name}.git"

    def object_dir(self, name: str, auth: bool = False) -> Path:
        """Where giftless keeps the LFS objects of repository ``name`` (one file per oid)."""
        return self.store / ("auth" if auth else "git") / name

    def stored(self, name: str, auth: bool = False) -> dict[str, int]:
        """The LFS objects the host has for repository ``name``: oid -> size."""
        where = self.object_dir(name, auth)
        return {p.name: p.stat().st_size for p in where.iterdir() if len(p.name) == 64} if where.is_dir() else {}


@contextlib.contextmanager
def lfs_host(root: Path, base: Path, gitconfig: str, home: str) -> Iterator[LfsHost]:
    """lighttpd in front of ``git http-backend`` (repositories under ``root``) and of giftless, a
    real LFS server, at ``/git/<repo>.git/info/lfs/``: one URL for git and LFS, as hosts have.
    ``/auth/`` serves the same with basic auth (HTTP_USER) for git and the batch API."""
    import sys

    lighttpd = _sbin("lighttpd")
    if not lighttpd:
        raise ServerUnavailable("lighttpd is not installed (run ./install.sh --dev)")
    backend = subprocess.run(["git", "--exec-path"], capture_output=True, text=True, check=True).stdout.strip() + "/git-http-backend"
    base.mkdir(parents=True, exist_ok=True)
    root.mkdir(parents=True, exist_ok=True)
    lfs_port, port = free_port(), free_port()
    (base / "htpasswd").write_text(f"{HTTP_USER}:{HTTP_PASSWORD}\n")
    store = base / "lfs-store"
    log = base / "giftless.log"
    giftless = subprocess.Popen([sys.executable, str(Path(__file__).with_name("lfs_server.py")), str(lfs_port), str(store)],
                                stdout=subprocess.DEVNULL, stderr=log.open("wb"))
    try:
        wait_port(lfs_port, giftless, "giftless", log, timeout=30)
        conf = base / "lighttpd.conf"
        conf.write_text(LFS_LIGHTTPD_CONF.format(root=root, port=port, base=base, backend=backend, gitconfig=gitconfig,
                                                 home=home, lfs_port=lfs_port))
        proc = subprocess.Popen([lighttpd, "-D", "-f", str(conf)], stdout=subprocess.DEVNULL,
                                stderr=(base / "stderr.log").open("wb"))
        try:
            wait_port(port, proc, "lighttpd", base / "stderr.log")
            yield LfsHost(port=port, root=root, store=store)
        finally:
            stop(proc)
    finally:
        stop(giftless)


@dataclass
class Sshd:
    port: int
    user: str
    log: Path
    ssh_command: str
    key: Path
    known_hosts: Path
    config: Path

    def auth_count(self) -> int:
        return self.log.read_text(errors="replace").count("Accepted publickey")


@contextlib.contextmanager
def sshd(base: Path, gitconfig: str, extra_config: str = "", max_startups: str = "100:30:200",
         path_first: Path | None = None) -> Iterator[Sshd]:
    """OpenSSH sshd with its own host key and authorized_keys; never the machine's ~/.ssh."""
    sshd_bin = _sbin("sshd")
    if not sshd_bin or not shutil.which("ssh-keygen") or not shutil.which("ssh"):
        raise ServerUnavailable("OpenSSH server/client is not installed (run ./install.sh --dev)")
    base.mkdir(parents=True, exist_ok=True)
    base.chmod(0o700)
    for name in ("host_key", "client_key"):
        if not (base / name).exists():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(base / name)], check=True)
    (base / "authorized_keys").write_text((base / "client_key.pub").read_text())
    (base / "authorized_keys").chmod(0o600)
    port = free_port()
    user = getpass.getuser()
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privilege separation directory
    config = base / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {base / 'host_key'}\nPidFile {base / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {base / 'authorized_keys'}\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "PubkeyAuthentication yes\nPermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\nLogLevel VERBOSE\n"
        f"AcceptEnv GIT_PROTOCOL\nPrintMotd no\nMaxStartups {max_startups}\n"
        # HOME: the server user's own shell start-up files (here root's .bashrc, which bash reads
        # for every ssh session and which takes ~120 ms of CPU) are not what a git host runs
        f"SetEnv GIT_CONFIG_GLOBAL={gitconfig} GIT_CONFIG_NOSYSTEM=1 HOME={base}"
        # path_first: commands a host offers beside git's (a git-lfs-authenticate, say)
        + (f" PATH={path_first}:/usr/local/bin:/usr/bin:/bin" if path_first else "") + "\n" + extra_config
    )
    log = base / "sshd.log"
    proc = subprocess.Popen([sshd_bin, "-D", "-e", "-f", str(config)], stdout=subprocess.DEVNULL, stderr=log.open("wb"))
    try:
        wait_port(port, proc, "sshd", log)
        keytype, key = (base / "host_key.pub").read_text().split(" ", 2)[:2]
        known = base / "known_hosts"
        known.write_text(f"[127.0.0.1]:{port} {keytype} {key}\n")
        command = (f"ssh -F /dev/null -i {base / 'client_key'} -o IdentitiesOnly=yes -o BatchMode=yes "
                   f"-o UserKnownHostsFile={known} -o StrictHostKeyChecking=yes -o LogLevel=ERROR")
        yield Sshd(port=port, user=user, log=log, ssh_command=command, key=base / "client_key", known_hosts=known, config=config)
    finally:
        stop(proc)


class Proxy:
    """What a test proxy saw: connections accepted."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.connections = 0
        self.requests: list[str] = []
        self.up_bytes = 0  # bytes passed from clients to upstream (a proxy that relays)


def _reset(*socks: socket.socket) -> None:
    """Close with a TCP reset (SO_LINGER 0), as a process that dies with unread data does."""
    import struct

    for sock in socks:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()


def _pipe(src: socket.socket, dst: socket.socket, stall: int | None, cut: int | None, was_reset: threading.Event,
          done: threading.Event, count: Callable[[int], None] | None = None, trickle: int | None = None) -> None:
    """Copy ``src`` to ``dst``, stalling after ``stall`` bytes or resetting both after ``cut``;
    after ``trickle`` bytes, only 50 bytes every quarter second (200 bytes/s)."""
    moved = 0
    try:
        while not done.is_set():
            try:
                data = src.recv(65536)
            except socket.timeout:
                continue
            if was_reset.is_set():
                return
            if not data:
                with contextlib.suppress(OSError):
                    dst.shutdown(socket.SHUT_WR)
                return
            if cut is not None and moved + len(data) > cut:
                was_reset.set()  # the other direction must not send a FIN first
                _reset(src, dst)
                return
            if stall is not None:
                data = data[: max(0, stall - moved)]
            if data and trickle is not None and moved + len(data) > trickle:
                head = max(0, trickle - moved)
                dst.sendall(data[:head])
                for at in range(head, len(data), 50):
                    if done.wait(0.25):
                        return
                    dst.sendall(data[at:at + 50])
            elif data:
                dst.sendall(data)
                if count is not None:
                    count(len(data))
            moved += len(data)
            if stall is not None and moved >= stall:
                done.wait()  # keep both ends open, move nothing
                return
    except OSError:
        return


class _Server:
    """A loopback listener that hands each accepted connection, with its number, to ``handle``
    on a thread of its own. ``close()`` ends it and closes every socket put in ``held``."""

    def __init__(self, handle: Callable[[socket.socket, int], None]) -> None:
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.listener.settimeout(0.2)
        self.done = threading.Event()
        self.held: list[socket.socket] = []
        self.proxy = Proxy(int(self.listener.getsockname()[1]))
        self.handle = handle
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.done.is_set():
            try:
                client, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.proxy.connections += 1
            self.held.append(client)
            threading.Thread(target=self.handle, args=(client, self.proxy.connections), daemon=True).start()

    def relay(self, client: socket.socket, up: socket.socket, stall_after: int | None = None, reset_after: int | None = None,
              trickle_after: int | None = None) -> None:
        """Copy both ways until either side ends (misbehaving as asked)."""
        self.held.append(up)
        client.settimeout(0.2)
        up.settimeout(0.2)
        was_reset = threading.Event()
        threading.Thread(target=_pipe, args=(up, client, stall_after, None, was_reset, self.done, None, trickle_after),
                         daemon=True).start()
        _pipe(client, up, None, reset_after, was_reset, self.done, self._count_up)

    def _count_up(self, n: int) -> None:
        self.proxy.up_bytes += n

    def __enter__(self) -> "_Server":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.done.set()
        self.thread.join(timeout=5)
        self.listener.close()
        for sock in self.held:
            with contextlib.suppress(OSError):
                sock.close()


@contextlib.contextmanager
def tcp_proxy(upstream_port: int | None, *, stall_after: int | None = None, reset_after: int | None = None,
              busy_first: int = 0, redirect_storage_to: int | None = None, trickle_after: int | None = None) -> Iterator[Proxy]:
    """A loopback TCP proxy that misbehaves on purpose, per connection:

    * ``stall_after``: after that many bytes came back from upstream, pass nothing more back but
      keep the connection open (a server that hung, a link that died without a reset);
    * ``reset_after``: after that many bytes from the client, close both ends with a TCP reset
      (what git daemon does when receive.maxInputSize stops a pack, or a proxy's body limit);
    * ``trickle_after``: after that many bytes from upstream, pass on 200 bytes a second (a
      link that has not died, only crawls);
    * ``busy_first``: answer the first that many connections ``HTTP 429`` with ``Retry-After: 1``
      (a rate-limiting front end);
    * ``redirect_storage_to``: a connection whose first request is a GET of an LFS object
      (``/objects/storage/``) is answered ``307`` to the same path on that port (an object store
      behind a redirect);
    * no upstream: accept and never say a word.

    Yields a ``Proxy`` (its port, and how many connections it took); closes everything on exit."""

    def handle(client: socket.socket, number: int) -> None:
        if upstream_port is None:
            return  # held open, never answered
        if redirect_storage_to is not None and _redirected(client, redirect_storage_to):
            return
        if number <= busy_first:
            with contextlib.suppress(OSError):
                client.recv(65536)
                client.sendall(b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                client.close()
            return
        try:
            up = socket.create_connection(("127.0.0.1", upstream_port))
        except OSError:
            return
        server.relay(client, up, stall_after=stall_after, reset_after=reset_after, trickle_after=trickle_after)

    with _Server(handle) as server:
        yield server.proxy


def _redirected(client: socket.socket, port: int) -> bool:
    """Answer a GET of an LFS object with a redirect to ``port``; False for anything else."""
    with contextlib.suppress(OSError):
        head = client.recv(65536, socket.MSG_PEEK)
        line = head.split(b"\r\n", 1)[0]
        if line.startswith(b"GET ") and b"/objects/storage/" in line:
            while b"\r\n\r\n" not in head:
                more = client.recv(65536, socket.MSG_PEEK)
                if len(more) == len(head):
                    break
                head = more
            client.recv(len(head))
            path = line.split(b" ")[1].decode()
            client.sendall(f"HTTP/1.1 307 Temporary Redirect\r\nLocation: http://127.0.0.1:{port}{path}\r\n"
                           "Content-Length: 0\r\nConnection: close\r\n\r\n".encode())
            client.close()
            return True
    return False


@contextlib.contextmanager
def forward_proxy(login: str | None = None) -> Iterator[Proxy]:
    """An HTTP forward proxy on loopback (like a corporate one): takes absolute-URI requests,
    connects to the origin they name (loopback only) and relays both ways. ``connections`` counts
    what it accepted; ``requests`` keeps the first request line of each connection. ``login``
    ("user:password"): a connection whose first request lacks it as Basic Proxy-Authorization
    gets 407 and is closed."""
    import base64

    def handle(client: socket.socket, _number: int) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            data = client.recv(65536)
            if not data:
                return
            head += data
        line = head.split(b"\r\n", 1)[0].decode("latin-1")
        server.proxy.requests.append(line)
        if login is not None:
            given = [h.split(b":", 1)[1].strip() for h in head.split(b"\r\n") if h.lower().startswith(b"proxy-authorization:")]
            if given != [b"Basic " + base64.b64encode(login.encode())]:
                with contextlib.suppress(OSError):
                    client.sendall(b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"proxy\"\r\n"
                                   b"Content-Length: 0\r\nConnection: close\r\n\r\n")
                    client.close()
                return
        hostport = line.split(" ")[1].split("://", 1)[1].split("/", 1)[0]
        host, _, port = hostport.rpartition(":")
        if host != "127.0.0.1":
            client.close()  # never anywhere but loopback
            return
        up = socket.create_connection((host, int(port)))
        up.sendall(head)  # absolute-form request lines are valid HTTP/1.1 for the origin too
        server.relay(client, up)

    with _Server(handle) as server:
        yield server.proxy


@contextlib.contextmanager
def tls_proxy(upstream_port: int, base: Path, client_ca: Path | None = None, tls_1_2_only: bool = False) -> Iterator[tuple[int, Path]]:
    """HTTPS in front of a plain HTTP server: a self-signed certificate for 127.0.0.1 (made with
    the openssl command), TLS terminated here, bytes relayed both ways. Yields (port, CA file).
    ``client_ca``: clients must show a certificate signed by it (TLS client authentication).
    ``tls_1_2_only``: a server that has not learnt TLS 1.3."""
    import ssl

    base.mkdir(parents=True, exist_ok=True)
    cert, key = base / "cert.pem", base / "key.pem"
    if not cert.exists():
        made = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                               "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                              capture_output=True, text=True)
        if made.returncode != 0:
            raise ServerUnavailable(f"openssl could not make a test certificate: {made.stderr[-500:]}")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(cert), str(key))
    if tls_1_2_only:
        context.maximum_version = ssl.TLSVersion.TLSv1_2
    if client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(str(client_ca))
    def handle(raw: socket.socket, _number: int) -> None:
        try:
            raw.settimeout(10)
            client = context.wrap_socket(raw, server_side=True)
        except (OSError, ssl.SSLError):
            raw.close()  # a client that refused our certificate: that is its right
            return
        server.held.append(client)
        server.relay(client, socket.create_connection(("127.0.0.1", upstream_port)))

    with _Server(handle) as server:
        yield server.proxy.port, cert
