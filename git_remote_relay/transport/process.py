"""Services reached through a child process: ssh (any ssh command git would use) and local paths.

ssh follows git's ``connect.c``: the command is ``GIT_SSH_COMMAND`` (run by the shell), else
``core.sshCommand`` (shell), else ``GIT_SSH`` (no shell), else ``ssh``; its variant (ssh, simple,
plink, putty, tortoiseplink) decides how the port, ``-4``/``-6`` and ``SendEnv=GIT_PROTOCOL`` are
passed. The remote command is ``git-upload-pack '<path>'`` quoted like git's ``sq_quote``. The
child's stderr is the user's (ssh prompts and server errors show as with native git).
"""

from __future__ import annotations

import os
import shlex

from ..errors import UnsupportedError, UrlError
from ..gitcmd import run_command, scrubbed_env
from ..url import InnerUrl
from .base import Context, StreamService, child_stream

__all__ = ["ProcessTransport", "open_process_service", "service_command", "sq_quote", "ssh_command"]



def sq_quote(text: str) -> str:
    """git's ``sq_quote_buf``: single quotes, with ``'`` and ``!`` escaped outside them."""
    out = ["'"]
    for ch in text:
        if ch in "'!":
            out.append(f"'\\{ch}'")
        else:
            out.append(ch)
    out.append("'")
    return "".join(out)


def _program(ctx: Context, service: str) -> str | None:
    if service in ctx.programs:
        return ctx.programs[service]
    if ctx.remote_name and not ctx.remote_name.startswith("relay::"):
        key = "uploadpack" if service == "upload-pack" else "receivepack"
        return ctx.config.get(f"remote.{ctx.remote_name}.{key}")
    return None


def ssh_command(ctx: Context) -> tuple[list[str], bool]:
    """(command words, run through the shell) as git chooses them."""
    env = ctx.env
    if env.get("GIT_SSH_COMMAND"):
        return [env["GIT_SSH_COMMAND"]], True
    configured = ctx.config.get("core.sshcommand")
    if configured:
        return [configured], True
    if env.get("GIT_SSH"):
        return [env["GIT_SSH"]], False
    # Nothing configured: ride mama-ssh's shared masters when it is installed (relay.sshMultiplex=false opts out).
    if ctx.config.get_bool("relay.sshmultiplex", True):
        import shutil

        mama = shutil.which("mama-ssh", path=env.get("PATH", ""))
        if mama:
            return [mama], False
    return ["ssh"], False


def _variant(ctx: Context, cmd: list[str], shell: bool, url: InnerUrl) -> str:
    chosen = ctx.env.get("GIT_SSH_VARIANT") or ctx.config.get("ssh.variant")
    if chosen:
        chosen = chosen.lower()
        if chosen not in ("auto", "ssh", "simple", "plink", "putty", "tortoiseplink"):
            raise UnsupportedError(f"unknown ssh variant '{chosen}'", "set ssh.variant to ssh, simple, plink, putty or tortoiseplink")
        if chosen != "auto":
            return chosen
    # like git's determine_ssh_variant(): "auto", or nothing set, looks at the command's basename
    first = cmd[0]
    if shell:
        try:
            words = shlex.split(first)
        except ValueError:
            words = first.split()
        first = words[0] if words else first
    base = os.path.basename(first).lower()
    if base.endswith(".exe"):
        base = base[:-4]
    if base in ("ssh", "plink", "tortoiseplink"):  # not "putty": git knows that one only by name
        return base
    if base == "mama-ssh":
        return "ssh"  # takes OpenSSH's options; no `-G` probe needed
    # git probes with `-G`; an OpenSSH-compatible command exits 0.
    probe = _wrap(cmd, shell, ["-G", *_port_args("ssh", url.port, ctx.family), _dest(url)])
    rc = run_command(probe, env=ctx.env, cwd=ctx.git.cwd, capture=False).returncode
    return "ssh" if rc == 0 else "simple"


def _port_args(variant: str, port: int | None, family: str | None) -> list[str]:
    args: list[str] = []
    if family and variant != "simple":
        args.append("-4" if family == "ipv4" else "-6")
    if port is not None:
        args += ["-p" if variant == "ssh" else "-P", str(port)]
    return args


def _dest(url: InnerUrl) -> str:
    return f"{url.user}@{url.host}" if url.user else url.host


def _wrap(cmd: list[str], shell: bool, args: list[str]) -> list[str]:
    if shell:
        # Like git's prepare_shell_cmd: the user's command may use shell syntax; our words are
        # passed as positional parameters, never interpolated into the script.
        return ["/bin/sh", "-c", cmd[0] + ' "$@"', cmd[0], *args]
    return [*cmd, *args]


def ssh_argv(ctx: Context, url: InnerUrl, remote_command: str, want_v2: bool) -> list[str]:
    cmd, shell = ssh_command(ctx)
    variant = _variant(ctx, cmd, shell, url)
    args: list[str] = []
    if variant == "simple":
        if url.port is not None:
            raise UnsupportedError(
                f"ssh variant 'simple' does not support setting port (URL {url.redacted})",
                "set ssh.variant=ssh if your ssh command accepts OpenSSH options",
            )
        if ctx.family:
            raise UnsupportedError(
                "ssh variant 'simple' does not support -4/-6", "set ssh.variant=ssh if your ssh command accepts OpenSSH options"
            )
    if variant == "ssh" and (want_v2 or ctx.v1):
        args += ["-o", "SendEnv=GIT_PROTOCOL"]
    if variant == "tortoiseplink":
        args.append("-batch")
    args += _port_args(variant, url.port, ctx.family)
    dest = _dest(url)
    if dest.startswith("-"):  # parse() refuses these already; keep the argv boundary safe anyway
        raise UrlError(f"strange hostname '{dest}' blocked")
    args += [dest, remote_command]
    return _wrap(cmd, shell, args)


def service_command(url: InnerUrl, service: str, ctx: Context, want_v2: bool) -> tuple[list[str], dict[str, str], str]:
    """(argv, environment, label) of the child that speaks ``service`` for ``url``."""
    program = _program(ctx, service)
    env = scrubbed_env(ctx.env) if url.is_local else dict(ctx.env)
    env.pop("GIT_PROTOCOL", None)
    if want_v2:
        env["GIT_PROTOCOL"] = "version=2"
    elif ctx.v1:
        env["GIT_PROTOCOL"] = "version=1"
    if url.is_local:
        path = url.path
        if program:
            argv = ["/bin/sh", "-c", f"{program} {sq_quote(path)}"]
        else:
            argv = ["git", service, path]
        return argv, env, f"local repository '{path}'"
    remote = f"{program or 'git-' + service} {sq_quote(url.path)}"
    return ssh_argv(ctx, url, remote, want_v2), env, f"remote end ({url.redacted})"


def open_process_service(url: InnerUrl, service: str, ctx: Context, want_v2: bool) -> StreamService:
    """Start the child that speaks ``service`` for ``url`` and return its stream."""
    argv, env, label = service_command(url, service, ctx, want_v2)
    ctx.trace(f"run: {' '.join(shlex.quote(a) for a in argv)}")
    return child_stream(argv, env, ctx, label)


class ProcessTransport:
    """ssh (``ssh://``, scp-like) and local paths: one child process per service."""

    def __init__(self, url: InnerUrl, ctx: Context) -> None:
        self.url = url
        self.ctx = ctx

    def open(self, service: str, want_v2: bool) -> StreamService:
        return open_process_service(self.url, service, self.ctx, want_v2)
