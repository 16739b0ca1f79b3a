"""giftless, a real Git LFS server, for the tests and the benchmarks: ``lfs_server.py PORT STORE``.

It serves ``/<prefix>/<repo>.git/info/lfs/...`` (the endpoint git-lfs derives from a remote URL)
with local storage under STORE and anonymous read/write, on 127.0.0.1:PORT, one thread per
request. A web server in front (``servers.lfs_host``) sends it those paths and everything else to
``git http-backend``, as hosts do. See ../shared/reference/lfs-test-server.md for what it needs.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

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

    run_simple("127.0.0.1", port, app, threaded=True)


if __name__ == "__main__":
    main()
