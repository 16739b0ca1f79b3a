"""``git credential fill|approve|reject`` over pipes (never the helper's stdout)."""

from __future__ import annotations

from ..errors import AuthError
from ..gitcmd import Git, run_command

__all__ = ["Credential", "fill", "approve", "reject"]


class Credential:
    """What ``git credential`` knows about one login (a plain class: no dataclasses at start-up)."""

    def __init__(self, protocol: str, host: str, path: str = "", username: str | None = None, password: str | None = None) -> None:
        self.protocol = protocol
        self.host = host
        self.path = path
        self.username = username
        self.password = password

    def _describe(self) -> bytes:
        lines = [f"protocol={self.protocol}", f"host={self.host}"]
        if self.path:
            lines.append(f"path={self.path}")
        if self.username is not None:
            lines.append(f"username={self.username}")
        if self.password is not None:
            lines.append(f"password={self.password}")
        return ("\n".join(lines) + "\n\n").encode()

    def __repr__(self) -> str:  # never show the password, even in a traceback
        return f"Credential(protocol={self.protocol!r}, host={self.host!r}, username={self.username!r})"


def _run(git: Git, action: str, cred: Credential) -> bytes:
    # prompts and helper errors are the user's: stderr is passed through
    proc = run_command(["git", "credential", action], env=git.env, cwd=git.cwd, input=cred._describe(), stderr=None)
    if proc.returncode != 0 and action == "fill":
        # git credential died, saying why ("could not read Username ...: terminal prompts
        # disabled"): native git stops right there with that line, and so do we
        raise AuthError("", "")
    return proc.stdout


def fill(git: Git, cred: Credential) -> Credential | None:
    """Ask git's credential helpers (and, if allowed, the terminal); None when none is had."""
    out = _run(git, "fill", cred)
    got = Credential(cred.protocol, cred.host, cred.path, cred.username, None)
    for line in out.decode("utf-8", "replace").splitlines():
        key, _, value = line.partition("=")
        if key == "username":
            got.username = value
        elif key == "password":
            got.password = value
    if got.username is None or got.password is None:
        return None
    return got


def approve(git: Git, cred: Credential) -> None:
    _run(git, "approve", cred)


def reject(git: Git, cred: Credential) -> None:
    _run(git, "reject", cred)
