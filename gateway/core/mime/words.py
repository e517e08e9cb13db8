"""RFC 2047 encoded-words, decoded the way real mail readers do rather than the way the RFC allows.

Devices put encoded-words inside quoted parameters, split one multibyte character across two words, and mix
raw 8-bit bytes with encoded-words; adjacent words of one charset are therefore joined as bytes before decoding.
"""

from __future__ import annotations

import binascii
import re

from gateway.core.mime.charsets import decode_bytes, sniff

_WORD = re.compile(r"=\?([^?\s]+)\?([BbQq])\?([^?]*)\?=")
_HEX = re.compile(rb"=([0-9A-Fa-f]{2})")
_BASE64 = re.compile(r"[A-Za-z0-9+/]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]+")
_SPACES = re.compile(r"\s{2,}")


def _q(payload: str) -> bytes:
    raw = payload.replace("_", " ").encode("latin-1", errors="replace")
    return _HEX.sub(lambda m: bytes([int(m.group(1), 16)]), raw)


def _b(payload: str) -> bytes | None:
    data = "".join(payload.split()).rstrip("=")
    if not _BASE64.fullmatch(data):
        return None
    data += "=" * (-len(data) % 4)
    if len(data) % 4 == 1:
        data = data[:-1]
    try:
        return binascii.a2b_base64(data.encode("ascii"))
    except (binascii.Error, UnicodeEncodeError):
        return None


def decode_words(text: str) -> str:
    """Replace encoded-words with their text; whitespace between two encoded-words is dropped (RFC 2047 §6.2)."""
    if "=?" not in text:
        return text
    out: list[str] = []
    pending: bytearray = bytearray()
    pending_charset: str | None = None
    position = 0

    def flush() -> None:
        nonlocal pending_charset
        if pending_charset is not None:
            out.append(decode_bytes(bytes(pending), pending_charset))
            pending.clear()
            pending_charset = None

    for match in _WORD.finditer(text):
        between = text[position : match.start()]
        charset, kind, payload = match.group(1), match.group(2).upper(), match.group(3)
        data = _q(payload) if kind == "Q" else _b(payload)
        if data is None:  # not decodable: keep it as the device wrote it
            flush()
            out.append(between + match.group(0))
            position = match.end()
            continue
        if between and not (between.isspace() and pending_charset is not None):
            flush()
            out.append(between)
        label = charset.lower()
        if pending_charset is not None and pending_charset != label:
            flush()
        pending_charset = label
        pending.extend(data)
        position = match.end()
    flush()
    out.append(text[position:])
    return "".join(out)


def clean_text(text: str) -> str:
    """No control characters, no line breaks, single spaces: what a subject or file name may carry onward."""
    return _SPACES.sub(" ", _CONTROL.sub(" ", text)).strip()


def decode_text(raw: bytes) -> str:
    """A header value as a person reads it: raw 8-bit bytes sniffed, encoded-words decoded, controls removed."""
    return clean_text(decode_words(sniff(raw)))
