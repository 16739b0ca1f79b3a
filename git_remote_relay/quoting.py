"""git's C-style quoting (``quote_c_style``), as option values and status reasons use it. Pure."""

from __future__ import annotations

__all__ = ["c_quote", "c_unquote"]

_ESCAPES = {"a": 7, "b": 8, "f": 12, "n": 10, "r": 13, "t": 9, "v": 11, "\\": 92, '"': 34}


def c_unquote(value: str) -> str:
    """Undo git's ``quote_c_style`` (used for option values with special characters)."""
    if len(value) < 2 or not (value.startswith('"') and value.endswith('"')):
        return value
    body = value[1:-1].encode("utf-8", "surrogateescape")
    out = bytearray()
    i = 0
    while i < len(body):
        ch = body[i]
        if ch == 92 and i + 1 < len(body):
            nxt = chr(body[i + 1])
            if nxt in _ESCAPES:
                out.append(_ESCAPES[nxt])
                i += 2
                continue
            if nxt in "0123":
                out.append(int(body[i + 1:i + 4], 8))
                i += 4
                continue
        out.append(ch)
        i += 1
    return out.decode("utf-8", "replace")


def c_quote(text: str) -> str:
    """git's ``quote_c_style`` when needed (status reasons with newlines or quotes)."""
    if not any(c in text for c in '"\\\n\t\r') and all(0x20 <= ord(c) < 0x7F for c in text):
        return text
    out = ['"']
    for b in text.encode():
        c = chr(b)
        if c in '"\\':
            out.append("\\" + c)
        elif c == "\n":
            out.append("\\n")
        elif c == "\t":
            out.append("\\t")
        elif 0x20 <= b < 0x7F:
            out.append(c)
        else:
            out.append("\\%03o" % b)
    out.append('"')
    return "".join(out)
