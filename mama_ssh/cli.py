"""``mama-ssh``: the entry point. probe -> decide (``plan``) -> run (``session``); the admin verbs
are ``report``'s. Fails open: any error of ours runs plain ssh.

git runs ``mama-ssh [options] [user@]host '<command>'`` (as GIT_SSH_COMMAND, core.sshCommand or
GIT_SSH). Admin commands: ``--status``, ``--explain [user@]host``, ``--cleanup``.
"""

from __future__ import annotations

import os
import sys

from .plan import Plan, plan
from .session import leave, run
from .setting import debug

TYPE_CHECKING = False  # no `typing` at run time: mama-ssh starts for every ssh connection git makes
if TYPE_CHECKING:
    from typing import NoReturn, Sequence

__all__ = ["main"]


USAGE = """usage: mama-ssh [ssh options] [user@]host [command]   (what git runs)
       mama-ssh --status [--json] | --cleanup | --explain [--json] [user@]host | --version

Use it as git's ssh command:  git config --global core.sshCommand mama-ssh
Environment: MAMA_SSH_MAX_SESSIONS (10 per master), MAMA_SSH_MAX_MASTERS (4 per host), MAMA_SSH_SLOT_WAIT (10 s),
MAMA_SSH_RETRIES (4), MAMA_SSH_PREWARM_TIMEOUT (30 s), MAMA_SSH_MULTIPLEX=0 (keepalives only),
MAMA_SSH_SSH (the ssh to run), MAMA_SSH_DEBUG=1.
"""


def main(argv: Sequence[str] | None = None) -> NoReturn:
    args = list(sys.argv[1:] if argv is None else argv)
    env = os.environ
    ssh = env.get("MAMA_SSH_SSH") or "ssh"
    if args and args[0] in ("--status", "--cleanup", "--explain", "--help", "-h", "--version"):
        if args[0] in ("--help", "-h"):
            sys.stdout.write(USAGE)
            sys.exit(0)
        if args[0] == "--version":
            from . import __version__

            print(f"mama-ssh {__version__}")
            sys.exit(0)
        from .report import admin

        sys.exit(admin(args[0], args[1:], env, ssh))
    try:
        p = plan(args, env, ssh)
    except KeyboardInterrupt:
        leave(255)  # ^C while waiting for a master or a slot: gone quietly, as ssh is
    except Exception as exc:  # noqa: BLE001 - fail open: an optimisation must never break a fetch
        debug(env, f"internal error, running plain ssh: {type(exc).__name__}: {exc}")
        p = Plan([ssh, *args], why="internal error")
    debug(env, f"{p.why}: " + (f"a session over {p.session.socket}" if p.session else f"{' '.join(p.argv[:-1])} ..."))
    try:
        run(p, env)
    except OSError as exc:
        sys.stderr.write(f"mama-ssh: cannot run {p.argv[0]}: {exc.strerror}\n")
        sys.exit(255)
