"""git's ``http.cookieFile`` / ``http.saveCookies``: a cookie jar in curl's (Netscape) file format.

Read when the file is configured; cookies the server sets are kept for the rest of the session,
and written back (atomically) only with ``http.saveCookies``, as git does. Lines are
``domain  include-subdomains  path  secure  expires  name  value`` separated by tabs;
``#HttpOnly_`` before the domain marks an HttpOnly cookie; expires 0 is a session cookie. Like
curl, ``Set-Cookie:`` header lines are read too (a cookie with no domain is sent to every host).
"""

from __future__ import annotations

import os
import time

__all__ = ["CookieJar"]


class _Cookie:
    def __init__(self, domain: str, subdomains: bool, path: str, secure: bool, expires: int, name: str, value: str,
                 httponly: bool = False) -> None:
        self.domain = domain.lower()
        self.subdomains = subdomains
        self.path = path or "/"
        self.secure = secure
        self.expires = expires
        self.name = name
        self.value = value
        self.httponly = httponly

    def key(self) -> tuple[str, str, str]:
        return self.domain, self.path, self.name

    def matches(self, scheme: str, host: str, path: str, now: float) -> bool:
        if self.expires and self.expires < now:
            return False
        if self.secure and scheme != "https":
            return False
        host = host.lower()
        if self.domain and host != self.domain and not (self.subdomains and host.endswith("." + self.domain.lstrip("."))):
            return False
        return path == self.path or path.startswith(self.path if self.path.endswith("/") else self.path + "/")

    def line(self) -> str:
        prefix = "#HttpOnly_" if self.httponly else ""
        fields = [prefix + self.domain, "TRUE" if self.subdomains else "FALSE", self.path, "TRUE" if self.secure else "FALSE",
                  str(self.expires), self.name, self.value]
        return "\t".join(fields)


class CookieJar:
    def __init__(self, path: str, save: bool) -> None:
        self.path = os.path.expanduser(path)
        self.save = save
        self.cookies: dict[tuple[str, str, str], _Cookie] = {}
        try:
            with open(self.path, encoding="utf-8", errors="replace") as fh:
                for raw in fh:
                    self._load_line(raw.rstrip("\r\n"))
        except FileNotFoundError:
            pass

    def _load_line(self, line: str) -> None:
        if line[:11].lower() == "set-cookie:":
            # curl also reads HTTP header lines from a cookie file; with no domain they go to every host
            c = _parse_set_cookie(line[11:].strip(), "", "/")
            if c is not None:
                self.cookies[c.key()] = c
            return
        httponly = line.startswith("#HttpOnly_")
        if httponly:
            line = line[len("#HttpOnly_"):]
        elif not line.strip() or line.startswith("#"):
            return
        fields = line.split("\t")
        if len(fields) != 7:
            return
        domain, sub, path, secure, expires, name, value = fields
        try:
            when = int(expires or 0)
        except ValueError:
            return
        c = _Cookie(domain.lstrip("."), sub.upper() == "TRUE" or domain.startswith("."), path, secure.upper() == "TRUE", when, name,
                    value, httponly)
        self.cookies[c.key()] = c

    def header(self, scheme: str, host: str, path: str) -> str | None:
        """The Cookie header for a request (longest paths first, as browsers and curl send them)."""
        now = time.time()
        found = [c for c in self.cookies.values() if c.matches(scheme, host, path, now)]
        if not found:
            return None
        found.sort(key=lambda c: -len(c.path))
        return "; ".join(f"{c.name}={c.value}" for c in found)

    def receive(self, host: str, path: str, set_cookies: list[str]) -> None:
        """Take the response's Set-Cookie headers; write the file back when asked to."""
        changed = False
        for header in set_cookies:
            c = _parse_set_cookie(header, host, path)
            if c is None:
                continue
            if c.expires and c.expires < time.time():
                changed = self.cookies.pop(c.key(), None) is not None or changed
            else:
                self.cookies[c.key()] = c
                changed = True
        if changed and self.save:
            self._write()

    def _write(self) -> None:
        tmp = f"{self.path}.{os.getpid()}.tmp"
        text = "# Netscape HTTP Cookie File\n# written by git-remote-relay (http.saveCookies)\n\n"
        text += "".join(c.line() + "\n" for c in self.cookies.values())
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            os.replace(tmp, self.path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise


def _parse_set_cookie(header: str, host: str, request_path: str) -> _Cookie | None:
    parts = [p.strip() for p in header.split(";")]
    name, sep, value = parts[0].partition("=")
    if not sep or not name.strip():
        return None
    # curl's default path: the request path up to and including its last "/"
    path = request_path[: request_path.rfind("/") + 1] or "/"
    domain, subdomains, secure, httponly, expires = host, False, False, False, 0
    for attr in parts[1:]:
        key, _, val = attr.partition("=")
        key = key.strip().lower()
        val = val.strip()
        if key == "path" and val.startswith("/"):
            path = val
        elif key == "domain" and val:
            wanted = val.lstrip(".").lower()
            if host and host.lower() != wanted and not host.lower().endswith("." + wanted):
                return None  # a cookie for another site: refused, as every client does
            domain, subdomains = wanted, True
        elif key == "secure":
            secure = True
        elif key == "httponly":
            httponly = True
        elif key == "max-age":
            try:
                expires = int(time.time()) + int(val) if int(val) > 0 else 1
            except ValueError:
                pass
        elif key == "expires" and not expires:
            expires = _http_date(val)
    return _Cookie(domain, subdomains, path, secure, expires, name.strip(), value.strip(), httponly)


def _http_date(text: str) -> int:
    """Seconds since the epoch for an HTTP date (RFC 1123 and the usual variants); 0 if unreadable."""
    import calendar

    months = {m: i for i, m in enumerate(("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1)}
    words = text.replace("-", " ").replace(",", " ").split()
    day = month = year = None
    clock = (0, 0, 0)
    for w in words:
        if ":" in w:
            try:
                h, m, s = (int(x) for x in w.split(":"))
                clock = (h, m, s)
            except ValueError:
                return 0
        elif w[:3].lower() in months:
            month = months[w[:3].lower()]
        elif w.isdigit():
            if day is None and len(w) <= 2:
                day = int(w)
            else:
                year = int(w) + (1900 if len(w) == 2 and int(w) >= 70 else 2000 if len(w) == 2 else 0)
    if day is None or month is None or year is None:
        return 0
    return calendar.timegm((year, month, day, *clock, 0, 0, 0))
