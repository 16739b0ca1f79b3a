"""``git push --signed`` over ssh, git:// and local paths: git's own ``git send-pack`` does it.

A push certificate is signed with the user's key by git's signing code (``gpg.format``,
``user.signingKey``, ``gpg.program``, ssh-keygen for ssh keys) against the nonce the server
advertises; none of that is ours to write again. The helper runs ``git send-pack --signed``
on the inner URL with the batch git gave it (force, ``--force-with-lease`` expectations,
``--atomic``, push options, dry run), lets its progress and errors through to the user, and
replies with its ``--helper-status`` report, as git's remote-http does. (Over HTTP git's
own ``remote-http`` takes the whole session instead: ``helper._hand_over``.)
"""

from __future__ import annotations

from .gitcmd import Git, run_command
from .push import PushOptions, parse_push_lines
from .quoting import c_quote
from .transport.session import Session
from .ui import Reporter

__all__ = ["push_signed"]

def push_signed(git: Git, session: Session, lines: list[str], opts: PushOptions, reporter: Reporter) -> tuple[str, bool]:
    """Push one batch with git's ``send-pack --signed``; (the reply for git, whether it succeeded)."""
    updates = parse_push_lines(lines)
    # --helper-status: send-pack reports each ref in the helper protocol's own words (as it does
    # for git's remote-http), so its report is our reply as it stands
    argv = ["git", "send-pack", "--helper-status", "--signed" if opts.signed == "true" else "--signed=if-asked"]
    argv.append("--progress" if reporter.progress else "--quiet")
    if opts.dry_run:
        argv.append("--dry-run")
    if opts.atomic:
        argv.append("--atomic")
    argv += [f"--push-option={o}" for o in opts.push_options]
    argv += [f"--force-with-lease={ref}:{oid}" for ref, oid in opts.cas.items()]
    program = session.ctx.programs.get("receive-pack")
    if program:
        argv.append(f"--receive-pack={program}")
    argv.append(session.url.raw)
    argv += [("+" if u.force else "") + f"{u.src}:{u.dst}" for u in updates]
    reporter.trace(f"signed push: git send-pack on {session.url.redacted}")
    proc = run_command(argv, env=git.env, cwd=git.cwd, stderr=None)  # its messages are git's: straight to the user
    report = proc.stdout.decode("utf-8", "surrogateescape")
    told = {line.split(" ")[1] for line in report.splitlines() if line.startswith(("ok ", "error "))}
    missing = [f"error {u.dst} {c_quote('the push failed before the server reported on this ref')}\n" for u in updates if u.dst not in told]
    return report + "".join(missing) + "\n", proc.returncode == 0
