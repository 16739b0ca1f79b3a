"""giftless, a real Git LFS server, for the tests and the benchmarks: ``lfs_server.py PORT STORE``.

It serves ``/<prefix>/<repo>.git/info/lfs/...`` (the endpoint git-lfs derives from a remote URL)
with local storage under STORE and anonymous read/write, on 127.0.0.1:PORT, one thread per
request. A web server in front (``servers.lfs_host``) sends it those paths and everything else to
``git http-backend``, as hosts do. See ../shared/reference/lfs-test-server.md for what it needs.
"""

from __future__ import annotations

import io
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

CONFIG = """\
LEGACY_ENDPOINTS: false
AUTH_PROVIDERS:
  - giftless.auth.allow_anon:read_write
TRANSFER_ADAPTERS:
  basic:
    factory: giftless.transfer.basic_streaming:factory
    options:
      storage_class: giftless.storage.local_storage:LocalStorage
      storage_options:
        path: {store}
"""


def main() -> None:
    port, store = int(sys.argv[1]), Path(sys.argv[2]).resolve()
    store.mkdir(parents=True, exist_ok=True)
    fd, config = tempfile.mkstemp(prefix="giftless-", suffix=".yaml", dir=store.parent)
    with os.fdopen(fd, "w") as f:
        f.write(CONFIG.format(store=store))
    os.environ["GIFTLESS_CONFIG_FILE"] = config  # read when the app is imported
    import importlib

    app = importlib.import_module("giftless.wsgi_entrypoint").app  # first: giftless's own import order
    from giftless.storage.local_storage import LocalStorage
    from werkzeug.serving import run_simple
    from werkzeug.wsgi import FileWrapper

    # giftless hands werkzeug the open file, which werkzeug iterates line by line: binary data
    # then goes out in writes of ~256 bytes (a newline byte in 256), at a few tens of MB/s for
    # every client, native git-lfs included. Object stores send large blocks; so does this one.
    opened = LocalStorage.get
    LocalStorage.get = lambda self, prefix, oid: FileWrapper(opened(self, prefix, oid), 1 << 20)  # type: ignore[method-assign]

    run_simple("127.0.0.1", port, _size_limited(app), threaded=True)


LIMIT_MARK = "limited-"  # repositories named limited-<N>-...: the host refuses LFS objects over N bytes
TOO_LARGE = "Size must be less than or equal to {limit}"


def _size_limited(app: Any) -> Any:
    """A host's per-file limit, as hosts state it in the batch API (GitHub: 422 with a message):
    for a repository named ``limited-<N>-…``, an upload batch answers each object over N bytes
    with an error instead of actions."""

    def wrapped(environ: dict[str, Any], start_response: Any) -> Any:
        path = environ.get("PATH_INFO", "")
        name = path.split("/")[2] if path.count("/") > 2 else ""
        if not (name.startswith(LIMIT_MARK) and path.endswith("/objects/batch")):
            return app(environ, start_response)
        limit = int(name[len(LIMIT_MARK):].split("-")[0])
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        request = json.loads(body)
        environ["wsgi.input"] = io.BytesIO(body)
        said: dict[str, Any] = {}

        def keep(status: str, headers: list[tuple[str, str]], *rest: Any) -> Any:
            said.update(status=status, headers=headers)
            return lambda data: None

        answer = json.loads(b"".join(app(environ, keep)))
        if request.get("operation") == "upload":
            for item in answer.get("objects", []):
                if item.get("size", 0) > limit:
                    item.pop("actions", None)
                    item["error"] = {"code": 422, "message": TOO_LARGE.format(limit=limit)}
        data = json.dumps(answer).encode()
        headers = [(k, v) for k, v in said["headers"] if k.lower() != "content-length"] + [("Content-Length", str(len(data)))]
        start_response(said["status"], headers)
        return [data]

    return wrapped


if __name__ == "__main__":
    main()
