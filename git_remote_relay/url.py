"""The inner URL of ``relay::<inner>``: git's grammar, git's policy, and redaction. Pure.

The grammar follows git's ``connect.c`` (``parse_connect_url``, ``host_end``,
``get_host_and_port``) and ``transport.c`` (``url_is_local_not_ssh``, ``is_transport_allowed``):

* ``scheme://[user[:password]@]host[:port]/path`` for ssh (also ``git+ssh``/``ssh+git``), git,
  http, https and file;
* scp-like ``[user@]host:path`` whenever a colon comes before the first slash, with the bracket
  forms ``[host:port]:path``, ``user@[::1]:path`` and ``[user@::1]:path``;
* anything else is a local path.

Security: a host, user, port or path that starts with ``-`` would be read by ssh as an option
(CVE-2017-1000117), so it is refused here, before any argv is built. ``<helper>::<address>``
inner URLs (``ext::`` runs arbitrary commands, ``fd::`` reads arbitrary descriptors) are refused.
"""

from __future__ import annotations

from collections.abc import Mapping

from .errors import PolicyError, UrlError

__all__ = ["InnerUrl", "parse", "redact", "check_allowed", "credentials_in_url", "split_relay_address"]

_SCHEMES = {
    "ssh": "ssh",
    "git+ssh": "ssh",
    "ssh+git": "ssh",
    "git": "git",
    "http": "http",
    "https": "https",
    "file": "file",
}
# Protocols git itself treats as safe by default (transport.c: get_protocol_config).
_ALWAYS_ALLOWED = frozenset({"http", "https", "git", "ssh", "file"})
_NEVER_ALLOWED = frozenset({"ext"})
_SCHEME_REST = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+.-")
_HEX = frozenset("0123456789abcdefABCDEF")
# (no re, no urllib.parse: they cost ~12 ms of start-up, and the helper starts on every git operation)


def _scheme_length(text: str, start: int = 0) -> int:
    """Length of the URL scheme (``[A-Za-z][A-Za-z0-9+.-]*``) at ``start``; 0 if there is none."""
    if start >= len(text) or not text[start].isascii() or not text[start].isalpha():
        return 0
    end = start + 1
    while end < len(text) and text[end] in _SCHEME_REST:
        end += 1
    return end - start


def unquote(text: str) -> str:
    """Percent-decoding as ``urllib.parse.unquote`` does it (UTF-8, bad bytes replaced)."""
    if "%" not in text:
        return text
    out = bytearray()
    i = 0
    while i < len(text):
        if text[i] == "%" and i + 2 < len(text) and text[i + 1] in _HEX and text[i + 2] in _HEX:
            out.append(int(text[i + 1:i + 3], 16))
            i += 3
        else:
            out += text[i].encode()
            i += 1
    return out.decode("utf-8", "replace")


def _strip_userinfo(text: str, count: int = -1) -> str:
    """Remove ``user[:password]@`` after each ``scheme://`` in ``text`` (at most ``count`` times)."""
    out: list[str] = []
    pos = 0
    while count:
        mark = text.find("://", pos)
        if mark < 0:
            break
        begin = mark
        while begin > 0 and text[begin - 1] in _SCHEME_REST:
            begin -= 1
        while begin < mark and not (text[begin].isascii() and text[begin].isalpha()):
            begin += 1  # a scheme starts with a letter
        authority = mark + 3
        end = authority
        while end < len(text) and text[end] not in "/@?#":
            end += 1
        if text.endswith(REDACTED, authority, end):
            out.append(text[pos:end])  # git's own form, user:<redacted>@, holds no secret
            pos = end
        elif begin < mark and _scheme_length(text, begin) and end < len(text) and text[end] == "@":
            out.append(text[pos:authority])
            pos = end + 1
            count -= 1
        else:
            out.append(text[pos:authority])
            pos = authority
    out.append(text[pos:])
    return "".join(out)


class InnerUrl:
    """A parsed inner URL. ``scheme`` is the transport: ssh, git, http, https or file.

    ``raw`` is the address as the user wrote it; it may hold a password, so only ``redacted``
    ever reaches a message. ``scp_like`` records the ``host:path`` form. (A plain class, not a
    dataclass: the helper starts on every git operation and ``dataclasses`` costs ~7 ms to import.)
    """

    __slots__ = ("raw", "scheme", "path", "host", "port", "user", "password", "scp_like")

    def __init__(self, raw: str, scheme: str, path: str, host: str = "", port: int | None = None,
                 user: str | None = None, password: str | None = None, scp_like: bool = False) -> None:
        self.raw, self.scheme, self.path, self.host = raw, scheme, path, host
        self.port, self.user, self.password, self.scp_like = port, user, password, scp_like

    def __repr__(self) -> str:  # never the raw address: it may carry a password
        return f"InnerUrl({self.redacted!r}, scheme={self.scheme!r}, host={self.host!r}, port={self.port!r}, path={self.path!r})"

    @property
    def redacted(self) -> str:
        """The address with any user and password removed, safe for messages and traces."""
        return redact(self.raw)

    @property
    def is_local(self) -> bool:
        return self.scheme == "file"

    @property
    def http_base(self) -> str:
        """For http(s): the repository URL without credentials and without a trailing slash."""
        if self.scheme not in ("http", "https"):
            raise ValueError("not an http URL")
        without = _strip_userinfo(self.raw, count=1)
        return without.rstrip("/")


def redact(text: str) -> str:
    """Remove ``user:password@`` from every URL in ``text`` (like git's anonymized URLs)."""
    return _strip_userinfo(text)


def split_relay_address(argv1: str, argv2: str | None) -> str:
    """The inner address from the helper's argv (git passes it as argv[2]; see protocol A.1)."""
    if argv2:
        return argv2
    if argv1.startswith("relay::"):
        return argv1[len("relay::"):]
    raise UrlError(
        f"no URL for remote '{argv1}'",
        "set one with: git remote set-url <name> relay::<url>",
    )


def _check_text(address: str) -> None:
    if not address:
        raise UrlError("empty URL after 'relay::'", "write it as relay::<url>, e.g. relay::https://host/repo.git")
    if address.startswith("git://") and "\n" in address:
        raise UrlError("newline is forbidden in git:// hosts and repo paths")  # git's words (connect.c)
    if any(ord(c) < 0x20 or c == "\x7f" for c in address):
        # git refuses these too: a newline could forge a credential-helper or protocol line.
        raise UrlError(f"URL contains a control character: {redact(address)!r}")


def _dash(what: str, value: str | None, address: str) -> None:
    if value and value.startswith("-"):
        raise UrlError(
            f"strange {what} '{value}' blocked in URL '{redact(address)}'",
            "a value starting with '-' would be read as an ssh option (CVE-2017-1000117)",
        )


def _split_port(hostport: str, address: str) -> tuple[str, int | None]:
    """``host[:port]`` or ``[v6]:port`` -> (host, port)."""
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0:
            raise UrlError(f"unbalanced '[' in host of '{redact(address)}'")
        host, rest = hostport[1:end], hostport[end + 1:]
        if rest and not rest.startswith(":"):
            raise UrlError(f"junk after ']' in host of '{redact(address)}'")
        port_text = rest[1:] if rest else ""
    elif hostport.count(":") == 1:
        host, port_text = hostport.split(":")
    else:
        host, port_text = hostport, ""
    if not port_text:
        return host, None
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise UrlError(f"strange port '{port_text}' blocked in URL '{redact(address)}'")
    return host, int(port_text)


def _parse_url_form(address: str, scheme_text: str, rest: str) -> InnerUrl:
    scheme = _SCHEMES.get(scheme_text.lower())
    if scheme is None:
        raise UrlError(
            f"unsupported transport '{scheme_text}' in '{redact(address)}'",
            "relay:: works with ssh://, git://, http://, https://, file://, host:path and local paths",
        )
    if scheme == "file":
        path = unquote(rest)
        if path.startswith("localhost/"):
            path = path[len("localhost"):]
        if not path.startswith("/"):
            raise UrlError(f"file URL must be absolute: '{redact(address)}'")
        return InnerUrl(raw=address, scheme="file", path=path)
    slash = rest.find("/")
    authority, path = (rest, "/") if slash < 0 else (rest[:slash], rest[slash:])
    close = authority.find("]")
    if scheme != "http" and scheme != "https" and authority.startswith("[") and "@" in authority[:close]:
        # git's host_end(): "[user@::1]" and "[user@::1]:22" bracket the user too
        userinfo, host_text = authority[1:close].rsplit("@", 1)
        authority = f"{userinfo}@[{host_text}]{authority[close + 1:]}"
    user = password = None
    if "@" in authority:
        userinfo, authority = authority.rsplit("@", 1)
        user, sep, pw = userinfo.partition(":")
        user = unquote(user)
        password = unquote(pw) if sep else None
    host, port = _split_port(authority, address)
    if not host:
        raise UrlError(f"no host in URL '{redact(address)}'")
    if scheme in ("http", "https"):
        return InnerUrl(raw=address, scheme=scheme, path=path, host=host, port=port, user=user, password=password)
    path = unquote(path)
    if path.startswith("/~"):
        path = path[1:]  # git: "ssh://host/~user/repo" names "~user/repo"
    if password is not None and scheme == "ssh":
        raise UrlError(
            f"a password in an ssh URL is not supported: '{redact(address)}'",
            "use an ssh key or agent; ssh asks for passwords itself",
        )
    _dash("hostname", host, address)
    _dash("user", user, address)
    _dash("pathname", path, address)
    return InnerUrl(raw=address, scheme=scheme, path=path, host=host, port=port, user=user)


def _parse_scp_form(address: str) -> InnerUrl:
    # host_end(): brackets may wrap the host ("[host:port]:path", "user@[::1]:path", "[user@::1]:path").
    at_bracket = address.find("@[")
    start = at_bracket + 1 if at_bracket >= 0 else 0
    if address[start:start + 1] == "[":
        close = address.find("]", start)
        if close < 0:
            raise UrlError(f"unbalanced '[' in '{redact(address)}'")
        inside = address[start + 1:close]
        after = address[close + 1:]
        if not after.startswith(":"):
            raise UrlError(f"expected ':' after ']' in '{redact(address)}'")
        userhost = address[:start] + inside
        path = after[1:]
    else:
        userhost, _, path = address.partition(":")
    if path.startswith("/~"):
        path = path[1:]  # git: "host:/~user/repo" names "~user/repo", as in ssh:// URLs
    user = None
    if "@" in userhost:
        user, userhost = userhost.rsplit("@", 1)
    host, port = userhost, None
    if address[start:start + 1] == "[" and host.count(":") == 1:
        # "[host:port]:path": get_host_and_port() takes a trailing numeric port.
        h, _, p = host.partition(":")
        if h and p.isdigit():
            host, port = h, int(p)
            if not 0 < port < 65536:
                raise UrlError(f"strange port '{p}' blocked in '{redact(address)}'")
    if not host:
        raise UrlError(f"no host in '{redact(address)}'")
    if not path:
        raise UrlError(f"no repository path in '{redact(address)}'", "write it as host:path/to/repo.git")
    _dash("hostname", host, address)
    _dash("user", user, address)
    _dash("pathname", path, address)
    return InnerUrl(raw=address, scheme="ssh", path=path, host=host, port=port, user=user, scp_like=True)


def parse(address: str) -> InnerUrl:
    """Parse an inner address the way git would, refusing what git would refuse."""
    _check_text(address)
    n = _scheme_length(address)
    if n and address[n:].startswith("::"):
        helper = address[:n]
        raise PolicyError(
            f"relay cannot wrap another remote helper ('{helper}::'): '{redact(address)}'",
            "ext:: and fd:: run commands or read descriptors; use a URL git connects to directly",
        )
    if n and address[n:].startswith("://"):
        return _parse_url_form(address, address[:n], address[n + 3:])
    colon = address.find(":")
    slash = address.find("/")
    if colon < 0 or (0 <= slash < colon):
        if address.startswith("-"):
            raise UrlError(f"strange pathname '{address}' blocked")
        return InnerUrl(raw=address, scheme="file", path=address)
    return _parse_scp_form(address)


def _truthy(value: str | None) -> bool:
    return value is not None and value.strip().lower() in ("", "1", "true", "yes", "on")


REDACTED = ":<redacted>"


def credentials_in_url(address: str, config: Mapping[str, list[str]], shown_by_git: bool = False) -> str | None:
    """git's ``transfer.credentialsInUrl`` for the inner URL, which git cannot check behind
    ``relay::`` (its URL parser does not take the prefix): the warning to print for ``warn``,
    None for ``allow`` or no password; raises for ``die``, in git's words. The URL is shown as
    git's url_normalize() shows it, the password replaced by ``<redacted>``.

    ``shown_by_git``: git prints a ``relay::`` URL in its ``From``/``To`` lines as it is written
    (its anonymizer does not take the prefix either), password included, where the same URL
    without ``relay::`` shows none. Unset, the setting then still warns, and says so."""
    values = config.get("transfer.credentialsinurl")
    mode = values[-1] if values else None
    if mode == "allow" or (mode is None and not shown_by_git):
        return None
    if mode not in (None, "warn", "die"):
        raise PolicyError(f"unrecognized value transfer.credentialsInUrl: '{mode}'")
    shown = _with_password_redacted(address)
    if shown is None:
        return None
    said = f"URL '{shown}' uses plaintext credentials"
    if mode == "die":
        raise PolicyError(said)
    if mode is None:
        said += (", which git prints in full for a relay:: URL (its From and To lines)\n"
                 "hint: let a credential helper give the password instead, or set transfer.credentialsInUrl=allow to accept that")
    return said


def _with_password_redacted(address: str) -> str | None:
    """``scheme://user:<redacted>@host[:port]/path`` as url_normalize() shows it (scheme and
    host lower-cased, a default port dropped), or None where there is no password."""
    scheme, sep, rest = address.partition("://")
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    authority, path = rest[:end], rest[end:].removeprefix("/")
    userinfo, at, hostport = authority.rpartition("@")
    if not sep or not at or ":" not in userinfo or _scheme_length(address) != len(scheme):
        return None
    user = userinfo.partition(":")[0]
    host, colon, port = hostport.rpartition(":")
    if not colon or not port.isdigit() or host.endswith(":") or (host.startswith("[") and not host.endswith("]")):
        host, port = hostport, ""
    port = port.lstrip("0")
    scheme = scheme.lower()
    shown_port = "" if not port or (scheme, port) in (("http", "80"), ("https", "443")) else ":" + port
    return f"{scheme}://{user}{REDACTED}@{host.lower()}{shown_port}/{path}"


def check_allowed(scheme: str, env: Mapping[str, str], config: Mapping[str, list[str]], from_user: bool | None = None) -> None:
    """Apply git's transport policy to the inner scheme (git itself checks only ``relay``).

    ``config`` maps lower-cased git config keys to their values (last one wins). ``from_user``:
    False for a URL the user did not give (a redirect's target), as git's is_transport_allowed;
    None reads ``GIT_PROTOCOL_FROM_USER``.
    """
    allow_list = env.get("GIT_ALLOW_PROTOCOL")
    if allow_list is not None:
        if scheme in allow_list.split(":"):
            return
        raise PolicyError(
            f"transport '{scheme}' not allowed by GIT_ALLOW_PROTOCOL",
            "add it to GIT_ALLOW_PROTOCOL if you trust this URL",
        )
    values = config.get(f"protocol.{scheme}.allow") or config.get("protocol.allow")
    policy = values[-1].lower() if values else None
    if policy is None:
        policy = "always" if scheme in _ALWAYS_ALLOWED else "never" if scheme in _NEVER_ALLOWED else "user"
    if policy == "always":
        return
    if policy == "user" and (_truthy(env.get("GIT_PROTOCOL_FROM_USER", "1")) if from_user is None else from_user):
        return
    if from_user is False:
        raise PolicyError(
            f"redirect to a '{scheme}' URL not allowed (protocol.{scheme}.allow={policy}: only URLs you give)",
            f"use the URL it redirects to, or set protocol.{scheme}.allow=always if you trust it",
        )
    raise PolicyError(
        f"transport '{scheme}' not allowed (protocol.{scheme}.allow={policy})",
        f"set protocol.{scheme}.allow=always if you trust this URL",
    )
