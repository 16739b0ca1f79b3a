"""git's ssh argv: ``[options] [user@]host [command...]``. Pure.

git runs ``<ssh> [-o SendEnv=GIT_PROTOCOL] [-4|-6] [-p port] <dest> '<remote command>'``, and
tools like git-lfs add ``-oControlMaster=...``; ``GIT_SSH_COMMAND`` may put the user's own
options first. The option letters that take a value are OpenSSH's (ssh.c getopt string).
"""

from __future__ import annotations

__all__ = ["SshArgs", "parse", "ArgvError", "OPTS_WITH_VALUE"]

# OpenSSH 9.x: "1246ab:c:e:fgi:kl:m:no:p:qstvxAB:CD:E:F:GI:J:KL:MNO:P:Q:R:S:TVw:W:XYy"
OPTS_WITH_VALUE = frozenset("bceilmopBDEFIJLOPQRSWw")
OPTS_FLAG = frozenset("1246afgknqstvxyACGKMNTVXY")


class ArgvError(ValueError):
    """The arguments are not a plain connection we can safely add options to."""


class SshArgs:
    """``options`` (as given, in order), ``dest`` and the remote ``command`` words."""

    __slots__ = ("options", "dest", "command", "flags")

    def __init__(self, options: list[str], dest: str, command: list[str], flags: set[str]) -> None:
        self.options = options
        self.dest = dest
        self.command = command
        self.flags = flags

    def option_values(self, letter: str) -> list[str]:
        """Values given with ``-<letter>`` (both ``-p 22`` and ``-p22`` forms)."""
        out, it = [], iter(self.options)
        for word in it:
            if word.startswith("-") and len(word) >= 2 and word[1] == letter and word[1] in OPTS_WITH_VALUE:
                out.append(word[2:] if len(word) > 2 else next(it, ""))
        return out

    @property
    def user(self) -> str | None:
        if "@" in self.dest:
            return self.dest.rsplit("@", 1)[0]
        users = self.option_values("l")
        return users[-1] if users else None

    @property
    def host(self) -> str:
        return self.dest.rsplit("@", 1)[-1]


def parse(argv: list[str]) -> SshArgs:
    """Split ssh's argv (without argv[0]); raise ``ArgvError`` for anything unusual."""
    options: list[str] = []
    flags: set[str] = set()
    i = 0
    while i < len(argv):
        word = argv[i]
        if word == "--":
            i += 1
            break
        if not word.startswith("-") or word == "-":
            break
        letters = word[1:]
        j = 0
        while j < len(letters):
            ch = letters[j]
            if ch in OPTS_WITH_VALUE:
                if j + 1 < len(letters):
                    options.append(word)
                else:
                    if i + 1 >= len(argv):
                        raise ArgvError(f"option -{ch} needs a value")
                    options += [word, argv[i + 1]]
                    i += 1
                flags.add(ch)
                break
            if ch not in OPTS_FLAG:
                raise ArgvError(f"unknown ssh option -{ch}")
            flags.add(ch)
            j += 1
        else:
            options.append(word)
        i += 1
    if i >= len(argv):
        raise ArgvError("no destination")
    dest = argv[i]
    if not dest or dest.startswith("-"):
        # CVE-2017-1000117: a destination that ssh would read as an option
        raise ArgvError(f"strange destination '{dest}' blocked")
    user, _, host = dest.rpartition("@")
    if host.startswith("-") or (user and user.startswith("-")):
        raise ArgvError(f"strange destination '{dest}' blocked")
    for port in SshArgs(options, dest, [], flags).option_values("p"):
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ArgvError(f"strange port '{port}' blocked")
    return SshArgs(options, dest, argv[i + 1:], flags)
