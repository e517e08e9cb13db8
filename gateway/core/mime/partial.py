"""RFC 2046 `message/partial`: recognise a fragment and rebuild the header block of the reassembled message.

Canon and Fuji Xerox split big scans into fragments that no mail reader joins; the delivery side collects
them and feeds the joined bytes to the normal parser. This module is the pure part: no storage, no clock.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gateway.core.mime.headers import HeaderBlock
from gateway.core.mime.params import parse_structured

#: Fields of the enclosed message that replace the first fragment's own (RFC 2046 section 5.2.2.1).
_ENCLOSED = ("subject", "message-id", "encrypted", "mime-version")
_COUNTER = re.compile(rb"^\s*[\[(]\s*\d+\s*/\s*\d+\s*[\])]\s*")


@dataclass(frozen=True)
class PartialInfo:
    id: str
    number: int
    total: int | None  # required only on the last fragment


def partial_info(headers: HeaderBlock) -> PartialInfo | None:
    """The fragment's identity, or None when the message is not a usable `message/partial`."""
    ctype, params = parse_structured(headers.get("content-type"))
    if ctype != "message/partial":
        return None
    ident = params.get("id", "").strip()
    number = params.get("number", "").strip()
    total = params.get("total", "").strip()
    if not ident or not number.isdigit() or int(number) < 1:
        return None
    return PartialInfo(ident, int(number), int(total) if total.isdigit() and int(total) >= 1 else None)


def _enclosed(name: str) -> bool:
    return name.startswith("content-") or name in _ENCLOSED


def merged_headers(outer: HeaderBlock, inner: HeaderBlock) -> bytes:
    """The reassembled message's header block: the first fragment's fields except Content-*, Subject,
    Message-ID, Encrypted and MIME-Version, then exactly those from the enclosed message. Written from the
    parsed fields (no line breaks inside values), so nothing a device sends can add a header."""
    fields = [(n, v) for n, v in outer.fields if not _enclosed(n)]
    fields += [(n, v) for n, v in inner.fields if _enclosed(n)]
    if inner.get("subject") is None and outer.get("subject") is not None:
        fields.append(("subject", _COUNTER.sub(b"", outer.get("subject") or b"")))
    return b"".join(name.encode("ascii", "replace") + b": " + value + b"\r\n" for name, value in fields) + b"\r\n"
