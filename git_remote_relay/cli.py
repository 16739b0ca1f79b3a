"""Entry points: the only code that touches argv, the environment, real stdio and exit codes."""

from __future__ import annotations

import os
import sys
from typing import NoReturn

from .errors import RelayError
from .url import redact

__all__ = ["helper_main"]


def _fatal(stderr, message: str, hint: str = "") -> None:  # type: ignore[no-untyped-def]
    text = f"fatal: {redact(message)}\n"
    if hint:
        text += f"hint: {redact(hint)}\n"
    try:
        stderr.write(text.encode("utf-8", "replace"))
        stderr.flush()
    except (OSError, ValueError):
        pass


def helper_main(argv: list[str] | None = None) -> NoReturn:
    """``git-remote-relay <remote> [<url>]``, run by git for ``relay::<url>``."""
    from .helper import Helper
    from .url import split_relay_address

    args = sys.argv if argv is None else argv
    stdin, stdout, stderr = sys.stdin.buffer, sys.stdout.buffer, sys.stderr.buffer
    # stdout belongs to git's protocol: anything that prints by mistake lands on stderr instead.
    sys.stdout = sys.stderr
    if len(args) < 2 or args[1] in ("-h", "--help"):
        stderr.write(
            b"usage: git-remote-relay <remote> [<url>]\n"
            b"git runs this for relay::<url> remotes, e.g. git clone relay::https://host/repo.git\n"
        )
        sys.exit(129 if len(args) < 2 else 0)
    if args[1] == "--version":
        from . import __version__

        stderr.write(f"git-remote-relay {__version__}\n".encode())
        sys.exit(0)
    trace = os.environ.get("GIT_RELAY_TRACE", "") not in ("", "0", "false")
    try:
        address = split_relay_address(args[1], args[2] if len(args) > 2 else None)
        helper = Helper(args[1], address, os.environ, stdin, stdout, stderr)
        try:
            code = helper.run()
        finally:
            helper.close()
    except RelayError as exc:
        _fatal(stderr, exc.message, exc.hint)
        code = 128
    except BrokenPipeError:
        code = 128  # git went away; nobody is left to read a message on stdout
    except KeyboardInterrupt:
        code = 130
    except Exception as exc:  # noqa: BLE001 - the boundary: report, never leak a traceback by default
        if trace:
            import traceback

            traceback.print_exc()
        _fatal(stderr, f"internal error in git-remote-relay: {type(exc).__name__}: {exc}", "run again with GIT_RELAY_TRACE=1 and report the output")
        code = 128
    sys.stdout.flush()
    sys.exit(code)
