"""http.pinnedPubkey, as curl checks it (CURLOPT_PINNEDPUBLICKEY): the public key of the server's
certificate must be the pinned one, named by its SHA-256 (``sha256//<base64>``, several joined by
``;``) or given as a PEM or DER public key file. Pure: bytes in, a verdict out.
"""

from __future__ import annotations

import base64
import hashlib
import os

from ..errors import TransportError

__all__ = ["pinned"]


def pinned(pin: str, certificate: bytes) -> bool:
    """Does the certificate's public key match ``pin`` (curl's CURLOPT_PINNEDPUBLICKEY):
    ``sha256//<base64>`` values joined by ``;``, or the path of a PEM or DER public key?"""
    spki = _public_key_info(certificate)
    if spki is None:
        return False
    if pin.startswith("sha256//"):
        ours = base64.b64encode(hashlib.sha256(spki).digest()).decode()
        return any(part.strip()[len("sha256//"):] == ours for part in pin.split(";") if part.strip().startswith("sha256//"))
    try:
        with open(os.path.expanduser(pin), "rb") as fh:
            data = fh.read(1 << 20)
    except OSError as exc:
        raise TransportError(f"cannot read http.pinnedPubkey '{pin}' ({exc.strerror})") from exc
    if b"-----BEGIN PUBLIC KEY-----" in data:
        body = data.split(b"-----BEGIN PUBLIC KEY-----", 1)[1].split(b"-----END PUBLIC KEY-----", 1)[0]
        data = base64.b64decode(b"".join(body.split()))
    return data == spki


def _public_key_info(der: bytes) -> bytes | None:
    """The SubjectPublicKeyInfo of an X.509 certificate, as DER: the 7th field of its
    tbsCertificate when that has an explicit version (tag [0]), else the 6th."""

    def item(at: int) -> tuple[int, int, int]:  # (tag, where the value starts, where it ends)
        tag, size = der[at], der[at + 1]
        at += 2
        if size & 0x80:
            count = size & 0x7F
            size = int.from_bytes(der[at:at + count], "big")
            at += count
        return tag, at, at + size

    try:
        _, cert, _ = item(0)
        _, tbs, tbs_end = item(cert)
        at, wanted = tbs, 6
        if der[at] == 0xA0:  # [0] version
            wanted = 7
        for _ in range(wanted - 1):
            at = item(at)[2]
        tag, start, end = item(at)
        if tag != 0x30 or end > tbs_end:
            return None
        return der[at:end]
    except IndexError:
        return None
