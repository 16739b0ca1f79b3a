"""The settings of one HTTP repository URL, read as git's http.c reads them: ``http.<key>`` and
``http.<url>.<key>`` (the longest matching URL prefix wins), the variables that override them
(``GIT_SSL_*``, ``GIT_HTTP_*``, the proxy variables), and ``remote.<name>.proxy``. Pure: it reads
a config snapshot and an environment, and opens nothing.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from urllib.parse import urlsplit

from ..gitcmd import Config

__all__ = ["HttpOptions", "accept_language"]


def _config_for(config: Config, url: str, key: str) -> list[str]:
    """All values of ``http.<key>`` that apply to ``url``: ``http.<url>.<key>`` with the longest
    matching URL prefix wins over the plain ``http.<key>``."""
    best: tuple[int, list[str]] | None = None
    plain: list[str] = []
    for name, values in config.values.items():
        if not name.startswith("http.") or not name.endswith("." + key):
            continue
        middle = name[len("http."):-len(key) - 1]
        if not middle:
            plain = values
        elif url.lower().startswith(middle.lower().rstrip("/")) and (best is None or len(middle) > best[0]):
            best = (len(middle), values)
    return best[1] if best is not None else plain


class HttpOptions:
    """The connection settings for one repository URL."""

    def __init__(self, config: Config, env: Mapping[str, str], url: str, remote: str | None = None) -> None:
        def last(key: str) -> str | None:
            values = _config_for(config, url, key)
            return values[-1] if values else None

        verify = last("sslverify")
        self.verify = not (env.get("GIT_SSL_NO_VERIFY") or (verify is not None and verify.strip().lower() in ("false", "no", "off", "0")))
        self.ca_file = _path(env.get("GIT_SSL_CAINFO") or last("sslcainfo"))
        self.ca_path = _path(env.get("GIT_SSL_CAPATH") or last("sslcapath"))
        # a client certificate (TLS client authentication), its key, and whether to ask
        # `git credential` for the key's passphrase (git asks only when told the key has one)
        self.cert_file = _path(env.get("GIT_SSL_CERT") or last("sslcert"))
        self.key_file = _path(env.get("GIT_SSL_KEY") or last("sslkey"))
        protected = env.get("GIT_SSL_CERT_PASSWORD_PROTECTED") or last("sslcertpasswordprotected")
        self.cert_password_protected = (protected or "").strip().lower() in ("true", "yes", "on", "1")
        self.cert_password: Callable[[str], str | None] | None = None  # set by who can ask git credential
        self.proxy_password: Callable[[str, str, str], str | None] | None = None  # (scheme, host[:port], user): the same
        # the lowest TLS version (curl's CURLOPT_SSLVERSION is a minimum) and OpenSSL's cipher list
        self.ssl_version = env.get("GIT_SSL_VERSION") or last("sslversion") or None
        self.ssl_ciphers = env.get("GIT_SSL_CIPHER_LIST") or last("sslcipherlist") or None
        # http.pinnedPubkey, as curl takes it: "sha256//<base64>[;sha256//...]" or a public key file
        self.pinned_key = last("pinnedpubkey") or None
        self.user_agent = last("useragent") or env.get("GIT_USER_AGENT") or "git/2.39 git-remote-relay"
        # curl's low-speed limit as git sets it: both numbers, environment first, or none
        limit = _number(env.get("GIT_HTTP_LOW_SPEED_LIMIT") or last("lowspeedlimit"))
        seconds = _number(env.get("GIT_HTTP_LOW_SPEED_TIME") or last("lowspeedtime"))
        self.low_speed: tuple[int, int] | None = (limit, seconds) if limit > 0 and seconds > 0 else None
        self.extra_headers: list[tuple[str, str]] = []
        for value in _config_for(config, url, "extraheader"):
            if not value:
                self.extra_headers = []  # an empty value resets the list, as in git
                continue
            name, _, text = value.partition(":")
            self.extra_headers.append((name.strip(), text.strip()))
        # http.curloptResolve, as curl's CURLOPT_RESOLVE: "[+]HOST:PORT:ADDR[,ADDR...]", "-HOST:PORT" removes
        self.resolve: dict[tuple[str, int], str] = {}
        for entry in config.values.get("http.curloptresolve", []):
            entry = entry.strip()
            remove = entry.startswith("-")
            host, _, rest = entry.lstrip("+-").partition(":")
            port_text, _, addresses = rest.partition(":")
            if not port_text.isdigit():
                continue
            if remove:
                self.resolve.pop((host.lower(), int(port_text)), None)
            elif addresses:
                self.resolve[(host.lower(), int(port_text))] = addresses.split(",")[0].strip("[]")
        self.cookie_file = last("cookiefile")  # http.cookieFile, curl's format (the client reads it)
        self.save_cookies = (last("savecookies") or "").strip().lower() in ("true", "yes", "on", "1")
        # as http.c: remote.<name>.proxy, else http[.<url>].proxy, else the environment (lower
        # case first; http_proxy only in lower case, as curl); an empty value turns proxies off
        scheme = urlsplit(url).scheme
        proxy = config.get(f"remote.{remote}.proxy") if remote else None
        if proxy is None:
            proxy = last("proxy")
        if proxy is None:
            names = ("https_proxy", "HTTPS_PROXY") if scheme == "https" else ("http_proxy",)
            proxy = next((env[n] for n in (*names, "all_proxy", "ALL_PROXY") if env.get(n) is not None), None)
        self.proxy = proxy or None
        self.no_proxy = [h.strip().lower() for h in (env.get("no_proxy") or env.get("NO_PROXY") or "").split(",") if h.strip()]
        self.accept_language = accept_language(env)

    def proxy_for(self, host: str) -> str | None:
        if not self.proxy:
            return None
        host = host.lower()
        for entry in self.no_proxy:
            if entry == "*" or host == entry.lstrip(".") or host.endswith("." + entry.lstrip(".")):
                return None
        return self.proxy if "://" in self.proxy else "http://" + self.proxy


def _number(value: str | None) -> int:
    """An integer setting as strtol reads it (leading digits; 0 for none)."""
    text = (value or "").strip()
    digits = text[1:] if text[:1] in "+-" else text
    end = next((i for i, c in enumerate(digits) if not c.isdigit()), len(digits))
    return int(text[: len(text) - len(digits) + end]) if end else 0


def _path(value: str | None) -> str | None:
    """A path setting as git reads one (``~/`` and ``~user/`` expanded)."""
    return os.path.expanduser(value) if value else None


def accept_language(env: Mapping[str, str]) -> str | None:
    """git's Accept-Language value (http.c write_accept_language) from the user's languages:
    ``LANGUAGE``, else the messages locale; ``ko_KR.UTF-8:sr@latin`` -> ``ko-KR, sr;q=0.9, *;q=0.8``."""
    spec = env.get("LANGUAGE") or env.get("LC_ALL") or env.get("LC_MESSAGES") or env.get("LANG") or ""
    if not env.get("LANGUAGE") and spec in ("C", "POSIX"):
        return None
    tags: list[str] = []
    for part in spec.split(":"):
        tag = ""
        for ch in part:
            if not (ch.isascii() and (ch.isalnum() or ch == "_")):
                break
            tag += "-" if ch == "_" else ch
        if tag:
            tags.append(tag)
        if len(tags) >= 998:
            break
    if not tags:
        return None
    tags.append("*")
    max_q, places = 1, 0
    while max_q < len(tags) and places <= 3:
        max_q, places = max_q * 10, places + 1
    out = ""
    for i, tag in enumerate(tags):
        piece = (", " if i else "") + tag + (f";q=0.{max_q - i:0{places}d}" if i else "")
        if len("Accept-Language: ") + len(out) + len(piece) > 4000:
            break
        out += piece
    return out
