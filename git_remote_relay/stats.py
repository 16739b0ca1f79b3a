"""One summary line on stderr and one JSON record per run, measured once, at the very end."""

from __future__ import annotations

import os
import time

from .ui import peak_rss

TYPE_CHECKING = False  # typing costs ~10 ms of start-up; mypy reads this as typing.TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any

    from .settings import Settings
    from .ui import Reporter

__all__ = ["record", "human"]


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{int(n)} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def record(reporter: "Reporter", settings: "Settings", remote: str, command: str, refs: list[dict[str, Any]], nbytes: int,
           objects: int | None, started: float) -> None:
    """Say what moved (at ``-v`` or with tracing) and append a JSON line to ``relay.statsFile``.

    ``remote`` must already be redacted (``InnerUrl.redacted``).
    """
    elapsed = time.monotonic() - started
    own, children = peak_rss()
    rate = nbytes / elapsed / 2**20 if elapsed > 0 else 0.0
    if nbytes:
        verb = "sent" if command == "push" else "received"
        what = f"{objects} objects, " if objects is not None else ""
        reporter.info(f"relay: {verb} {what}{human(nbytes)} in {elapsed:.1f}s ({rate:.1f} MiB/s); "
                      f"peak RSS {human(own)} helper, {human(children)} largest child")
    path = settings.stats_file
    if not path:
        return
    import json

    entry = {
        "command": command,
        "remote": remote,
        "refs": refs,
        "bytes": nbytes,
        "objects": objects,
        "elapsed": round(elapsed, 3),
        "peak_rss_helper": own,
        "peak_rss_children": children,
    }
    try:
        with open(os.path.expanduser(path), "a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry) + "\n")
    except OSError as exc:
        reporter.warn(f"could not write relay.statsFile '{path}': {exc.strerror}")
