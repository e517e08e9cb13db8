"""RFC 2046 `message/partial`: recognise a fragment and rebuild the header block of the reassembled message.

Canon and Fuji Xerox split big scans into fragments that no mail reader joins; the delivery side collects
them and feeds the joined bytes to the normal parser. This module is the pure part: no storage, no clock.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gateway.core.errors import MalformedInput
from gateway.core.mime.headers import HeaderBlock
from gateway.core.mime.params import parse_structured

#: Most fragments one scan may claim. Devices split a scan into a handful (a 150 MB message in 2 MB pieces is
#: 75); a fragment claiming a trillion made the worker build a set of a trillion numbers (issue 9 item 1).
MAX_TOTAL = 100
MAX_ID = 256
_DIGITS = re.compile(r"^[0-9]{1,3}$")  # ASCII only: str.isdigit() takes '²' and '١' too

#: Fields of the enclosed message that replace the first fragment's own (RFC 2046 section 5.2.2.1).
_ENCLOSED = ("subject", "message-id", "encrypted", "mime-version")
_COUNTER = re.compile(rb"^\s*[\[(]\s*\d+\s*/\s*\d+\s*[\])]\s*")


@dataclass(frozen=True)
class PartialInfo:
    id: str
    number: int
    total: int | None  # required only on the last fragment


class BadFragment(MalformedInput):
    """A `message/partial` whose id, number or total cannot be honoured: refused at the door (554), and a job
    that carries one anyway (accepted before the clamp) fails with this reason instead of being reassembled."""


def partial_info(headers: HeaderBlock) -> PartialInfo | None:
    """The fragment's identity; None when the message is not a `message/partial`; BadFragment when it is one
    that claims what no device sends (total over MAX_TOTAL, non-ASCII digits, number outside 1..total)."""
    ctype, params = parse_structured(headers.get("content-type"))
    if ctype != "message/partial":
        return None
    ident = params.get("id", "").strip()
    number = params.get("number", "").strip()
    total = params.get("total", "").strip()
    if not ident or len(ident) > MAX_ID or not ident.isprintable():
        raise BadFragment(f"This message/partial fragment has no usable id (at most {MAX_ID} printable characters).")
    if not _DIGITS.match(number) or not 1 <= int(number) <= MAX_TOTAL:
        raise BadFragment(
            f"This message/partial fragment's number must be 1 to {MAX_TOTAL} in ASCII digits; "
            "send the scan unsplit or in fewer parts."
        )
    if total and (not _DIGITS.match(total) or not 1 <= int(total) <= MAX_TOTAL):
        raise BadFragment(
            f"This message/partial fragment claims a total of parts that is not 1 to {MAX_TOTAL}; "
            "send the scan unsplit or in fewer parts."
        )
    if total and int(number) > int(total):
        raise BadFragment(f"This message/partial fragment is number {number} of only {total}.")
    return PartialInfo(ident, int(number), int(total) if total else None)


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
