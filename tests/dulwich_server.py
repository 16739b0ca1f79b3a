"""A git server git did not write: dulwich's, on loopback, for the tests (``servers.dulwich_server``).

    python tests/dulwich_server.py http ROOT PORT [--limit BYTES]
    python tests/dulwich_server.py git ROOT PORT

``http``: dulwich's smart-HTTP WSGI application (``dulwich.web.make_wsgi_chain``) over
``FileSystemBackend(ROOT)``, in a threading wsgiref server. ``--limit`` puts a front end before
it that answers 413 to a receive-pack POST whose body is larger, the way a proxy's body limit
does, so the tests can make a push too big for the target. ``git``: dulwich's TCP git server
(``TCPGitServer``), threaded. Each serves until SIGTERM.
"""

from __future__ import annotations

import io
import os
import signal
import socketserver
import sys
from collections.abc import Callable, Iterable
from typing import Any

from dulwich.server import FileSystemBackend, TCPGitServer


class _Repos(FileSystemBackend):
    """The repositories under ``root``, by URL path (dulwich's own backend takes ``/r.git`` as absolute)."""

    def open_repository(self, path: Any) -> Any:
        text = os.fsdecode(path)  # the services pass bytes, the web layer a str
        return super().open_repository(text.lstrip("/"))


def _limited(app: Callable[..., Iterable[bytes]], limit: int) -> Callable[..., Iterable[bytes]]:
    from dulwich.web import ChunkReader

    def front(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") == "POST" and environ.get("PATH_INFO", "").endswith("/git-receive-pack"):
            if environ.get("HTTP_TRANSFER_ENCODING", "").lower() == "chunked":
                body = ChunkReader(environ["wsgi.input"]).read(1 << 40)
                del environ["HTTP_TRANSFER_ENCODING"]
            else:
                body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
            if len(body) > limit:
                start_response("413 Request Entity Too Large", [("Content-Type", "text/plain")])
                return [b"request body too large\n"]
            environ["wsgi.input"] = io.BytesIO(body)
            environ["CONTENT_LENGTH"] = str(len(body))
        return app(environ, start_response)

    return front


def main(argv: list[str]) -> None:
    import logging

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    kind, root, port = argv[0], argv[1], int(argv[2])
    limit = int(argv[argv.index("--limit") + 1]) if "--limit" in argv else None
    backend = _Repos(root)
    server: socketserver.BaseServer
    if kind == "git":
        class ThreadedGit(socketserver.ThreadingMixIn, TCPGitServer):
            daemon_threads = True

        server = ThreadedGit(backend, "127.0.0.1", port)
    else:
        from wsgiref.simple_server import WSGIServer, make_server

        from dulwich.web import WSGIRequestHandlerLogger, make_wsgi_chain

        class ThreadedWSGI(socketserver.ThreadingMixIn, WSGIServer):
            daemon_threads = True

        app = make_wsgi_chain(backend)
        if limit is not None:
            app = _limited(app, limit)
        server = make_server("127.0.0.1", port, app, server_class=ThreadedWSGI, handler_class=WSGIRequestHandlerLogger)

    def stop(_signum: int, _frame: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    try:
        server.serve_forever()
    finally:
        server.server_close()


if __name__ == "__main__":
    main(sys.argv[1:])
