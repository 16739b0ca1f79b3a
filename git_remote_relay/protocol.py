"""Ref advertisements (v0 and v2 ``ls-refs``) and fetch requests. Pure: works on a ``PktReader``.

Only what the relay needs of gitprotocol-pack / gitprotocol-v2: refs with HEAD's symref and peeled
tags, capabilities, the object format (sha1 only), and the request lines of a one-round fetch
(all haves, then ``done``), which every upload-pack answers with a single pack.
"""

from __future__ import annotations

from . import __version__
from .errors import ObjectFormatError, ProtocolError, UnsupportedError
from .pktline import DELIM, FLUSH, PktReader, Special, pkt_text

__all__ = ["Advertisement", "read_advertisement", "ls_refs_request", "read_ls_refs", "fetch_request", "ZERO_OID", "AGENT"]

ZERO_OID = "0" * 40
AGENT = f"git-remote-relay/{__version__}"


class Advertisement:
    """What a server said about itself. ``refs`` keeps the server's order."""

    def __init__(self, version: int, caps: dict[str, str | None] | None = None) -> None:
        self.version = version
        self.caps: dict[str, str | None] = caps if caps is not None else {}
        self.refs: dict[str, str] = {}
        self.peeled: dict[str, str] = {}
        self.symrefs: dict[str, str] = {}
        self.extra_haves: list[str] = []  # receive-pack's ".have" lines
        self.shallow: list[str] = []  # the server's own shallow boundary (a shallow repository)
        self.unborn_head: str | None = None  # v2 ls-refs: HEAD names a branch with no commit yet
        self.listed = version == 0  # v0 advertises its refs at once; v2 needs an ls-refs round

    def has(self, cap: str) -> bool:
        return cap in self.caps

    def check_object_format(self) -> None:
        fmt = self.caps.get("object-format") or "sha1"
        if fmt != "sha1":
            raise ObjectFormatError(
                f"the remote repository uses the {fmt} object format",
                "git-remote-relay speaks sha1 only: use the same URL without 'relay::' (plain git handles sha256 repositories)",
            )


def _parse_caps(text: str) -> dict[str, str | None]:
    caps: dict[str, str | None] = {}
    for word in text.split():
        key, sep, value = word.partition("=")
        if key == "symref" and sep:
            # several symref= entries may appear; keep them all in one string
            caps[key] = f"{caps[key]} {value}" if caps.get(key) else value
        else:
            caps[key] = value if sep else None
    return caps


def _check_oid(oid: str, line: str) -> str:
    if len(oid) != 40 or any(c not in "0123456789abcdef" for c in oid):
        raise ProtocolError(f"protocol error: bad object id in '{line[:120]}'")
    return oid


def read_advertisement(reader: PktReader) -> Advertisement:
    """Read a v0 ref advertisement or a v2 capability advertisement, up to its flush."""
    first = reader.read_line()
    if first is FLUSH:
        return Advertisement(version=0)  # an empty v0 advertisement (nothing at all)
    if isinstance(first, Special):
        raise ProtocolError(f"protocol error: unexpected {first.name} packet at the start of the advertisement")
    if first == "version 2":
        adv = Advertisement(version=2)
        for line in reader.read_lines_until_flush():
            key, sep, value = line.partition("=")
            adv.caps[key] = value if sep else None
        adv.check_object_format()
        return adv
    if first == "version 1":
        first = reader.read_line()
        if first is FLUSH:
            return Advertisement(version=0)
        if isinstance(first, Special):
            raise ProtocolError("protocol error: bad v1 advertisement")
    adv = Advertisement(version=0)
    refline, nul, capstext = first.partition("\0")
    if not nul:
        raise ProtocolError(f"protocol error: expected capabilities in the first line, got '{first[:120]}'")
    adv.caps = _parse_caps(capstext)
    adv.check_object_format()  # before the refs: their object ids are in that format
    for line in [refline, *reader.read_lines_until_flush()]:
        _v0_line(adv, line)
    for pair in (adv.caps.get("symref") or "").split():
        src, _, dst = pair.partition(":")
        if src and dst:
            adv.symrefs[src] = dst
    return adv


def _v0_line(adv: Advertisement, line: str) -> None:
    """One ``<oid> <name>`` line of a v0 advertisement (or ``shallow <oid>``)."""
    oid, _, name = line.partition(" ")
    if name == "capabilities^{}":
        return
    if oid == "shallow":  # "shallow <oid>": the server's repository is itself shallow
        adv.shallow.append(_check_oid(name, line))
        return
    _check_oid(oid, line)
    if name == ".have":
        adv.extra_haves.append(oid)
    elif name.endswith("^{}"):
        adv.peeled[name[:-3]] = oid
    else:
        adv.refs[name] = oid


def _common_args(adv: Advertisement) -> list[str]:
    args = []
    if adv.has("agent"):
        args.append(f"agent={AGENT}")
    if adv.has("object-format"):
        args.append("object-format=sha1")
    return args


def ls_refs_request(adv: Advertisement) -> bytes:
    if "ls-refs" not in adv.caps:
        raise ProtocolError("protocol error: the server speaks v2 but offers no ls-refs")
    lines = ["command=ls-refs", *_common_args(adv)]
    args = ["peel", "symrefs"]
    if "unborn" in (adv.caps.get("ls-refs") or "").split(" "):
        args.append("unborn")
    return b"".join(pkt_text(x) for x in lines) + DELIM.wire + b"".join(pkt_text(x) for x in args) + FLUSH.wire


def read_ls_refs(reader: PktReader, adv: Advertisement) -> None:
    """Fill ``adv.refs``/``peeled``/``symrefs`` (and ``unborn_head``) from an ls-refs reply."""
    adv.listed = True
    for line in reader.read_lines_until_flush():
        words = line.split(" ")
        if len(words) < 2:
            raise ProtocolError(f"protocol error: bad ls-refs line '{line[:120]}'")
        oid, name = words[0], words[1]
        if oid == "unborn":
            for attr in words[2:]:
                if name == "HEAD" and attr.startswith("symref-target:"):
                    adv.unborn_head = attr[len("symref-target:"):]
            continue
        _check_oid(oid, line)
        adv.refs[name] = oid
        for attr in words[2:]:
            key, _, value = attr.partition(":")
            if key == "symref-target":
                adv.symrefs[name] = value
            elif key == "peeled":
                adv.peeled[name] = _check_oid(value, line)


def fetch_request(adv: Advertisement, wants: list[str], haves: list[str], *, progress: bool, include_tag: bool,
                  thin: bool = True, ofs_delta: bool = True, filter_spec: str | None = None, depth: int | None = None) -> bytes:
    """A complete one-round fetch request (v2 ``command=fetch`` or v0 wants/haves/done);
    ``depth`` (v2 only): only that many commits of each want (``deepen``)."""
    if not wants:
        raise ValueError("nothing to fetch")
    if depth is not None and adv.version != 2:
        raise UnsupportedError("a shallow look at the source needs protocol v2")
    if filter_spec and not supports_filter(adv):
        raise UnsupportedError("the source does not allow filtered fetches (uploadpack.allowFilter)")
    if adv.version == 2:
        opts = [name for name, on in (("thin-pack", thin), ("ofs-delta", ofs_delta), (f"filter {filter_spec}", bool(filter_spec)),
                                      ("no-progress", not progress), ("include-tag", include_tag)) if on]
        return _v2_fetch(adv, opts, wants, haves, depth)
    out: list[bytes] = []
    if not adv.has("side-band-64k"):
        raise UnsupportedError("the remote does not offer side-band-64k", "this server is too old for relay::; use plain git")
    caps = ["side-band-64k"]
    for cap, wanted in (("thin-pack", thin), ("ofs-delta", ofs_delta), ("filter", bool(filter_spec))):
        if wanted and adv.has(cap):
            caps.append(cap)
    if not progress and adv.has("no-progress"):
        caps.append("no-progress")
    if include_tag and adv.has("include-tag"):
        caps.append("include-tag")
    if adv.has("agent"):
        caps.append(f"agent={AGENT}")
    if adv.has("object-format"):
        caps.append("object-format=sha1")
    out.append(pkt_text(f"want {wants[0]} {' '.join(caps)}"))
    out += [pkt_text(f"want {w}") for w in wants[1:]]
    if filter_spec:
        out.append(pkt_text(f"filter {filter_spec}"))
    out.append(FLUSH.wire)
    out += [pkt_text(f"have {h}") for h in haves]
    out.append(pkt_text("done"))
    return b"".join(out)


def _v2_fetch(adv: Advertisement, opts: list[str], wants: list[str], haves: list[str], depth: int | None) -> bytes:
    out = [pkt_text(x) for x in ["command=fetch", *_common_args(adv)]]
    out.append(DELIM.wire)
    out += [pkt_text(x) for x in opts]
    out += [pkt_text(f"want {w}") for w in wants]
    out += [pkt_text(f"have {h}") for h in haves]
    if depth is not None:
        out.append(pkt_text(f"deepen {depth}"))
    out.append(pkt_text("done"))
    out.append(FLUSH.wire)
    return b"".join(out)


def supports_filter(adv: Advertisement) -> bool:
    if adv.version == 2:
        return "filter" in (adv.caps.get("fetch") or "").split()
    return adv.has("filter")


def read_fetch_preamble(reader: PktReader, adv: Advertisement) -> list[str]:
    """Consume the reply up to the start of the side-band pack data.

    Returns the ``shallow`` lines of a v2 ``shallow-info`` section: a server whose repository is
    itself shallow says where its history stops (the caller decides whether that is acceptable).
    """
    shallow: list[str] = []
    if adv.version == 2:
        while True:
            header = reader.read_line()
            if header == "packfile":
                return shallow
            if header == "shallow-info":
                lines = []
                while True:
                    item = reader.read_line()
                    if item is DELIM:
                        break
                    if isinstance(item, Special):
                        raise ProtocolError("protocol error: shallow-info not followed by a pack")
                    lines.append(item)
                shallow += [_check_oid(x[len("shallow "):], x) for x in lines if x.startswith("shallow ")]
                continue
            if header in ("acknowledgments", "wanted-refs", "packfile-uris"):
                raise ProtocolError(f"protocol error: unexpected '{header}' section in the fetch reply")
            raise ProtocolError(f"protocol error: expected 'packfile', got {header!r}")
    line = reader.read_line()
    if isinstance(line, str) and line.startswith(("shallow ", "unshallow ")):
        # v0 sends these only to a client that asked for depth, which the engine never does
        raise ProtocolError(f"protocol error: unexpected '{line[:60]}' in the fetch reply")
    if not isinstance(line, str) or not (line == "NAK" or line.startswith("ACK ")):
        raise ProtocolError(f"protocol error: expected ACK/NAK, got {line!r}")
    return shallow
