"""One MIME part's header block, read from raw bytes, and the few facts the gateway takes from it.

Kept as bytes until a value is needed, so 8-bit device headers survive for charset sniffing; every value
handed onward is decoded text without control characters (no header injection further down).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime, getaddresses, parsedate_to_datetime

from gateway.core.mime.charsets import sniff
from gateway.core.mime.params import parse_structured
from gateway.core.mime.words import clean_text, decode_text, decode_words

#: A header block larger than this is not a header block (the rest is treated as body).
MAX_HEADER_BYTES = 256 * 1024

_LINE = re.compile(rb"\r?\n")
_ADDRESS = re.compile(
    r"^[^@\s<>()\[\],;:\"\x00-\x1f\x7f]+@[^@\s<>()\[\],;:\"\x00-\x1f\x7f]+\.[^@\s<>()\[\],;:\"\x00-\x1f\x7f]+$"
)
_ANGLE = re.compile(r"^(?P<name>.*?)<(?P<addr>[^<>]*)>\s*$", re.S)
_MESSAGE_ID = re.compile(r"<[!-;=?-~]{1,250}>")


@dataclass(frozen=True)
class HeaderBlock:
    """Unfolded fields in order: (lower-case name, raw value bytes)."""

    fields: tuple[tuple[str, bytes], ...] = ()

    def get(self, name: str) -> bytes | None:
        key = name.lower()
        return next((value for n, value in self.fields if n == key), None)

    def get_all(self, name: str) -> list[bytes]:
        key = name.lower()
        return [value for n, value in self.fields if n == key]

    def text(self, name: str) -> str | None:
        raw = self.get(name)
        return decode_text(raw) if raw is not None else None


def header_end(buf: bytes | bytearray) -> tuple[int, int]:
    """(end of the header lines, start of the body), or (-1, -1) while the blank line has not arrived."""
    if buf.startswith(b"\r\n"):
        return 0, 2
    if buf.startswith(b"\n"):
        return 0, 1
    crlf = buf.find(b"\n\r\n")
    # A bare-LF blank line only counts before the first CRLF one: no need to search past it (CRLF messages,
    # the usual kind, would otherwise be scanned to their end for a "\n\n" they never contain).
    lf = buf.find(b"\n\n", 0, crlf + 1 if crlf >= 0 else len(buf))
    if lf >= 0:
        return lf + 1, lf + 2
    if crlf >= 0:
        return crlf + 1, crlf + 3
    return -1, -1


def parse_header_block(raw: bytes) -> HeaderBlock:
    """Unfold (a line starting with whitespace continues the previous field); skip lines that are not fields."""
    fields: list[tuple[str, bytearray]] = []
    for line in _LINE.split(raw):
        if not line:
            continue
        if line[:1] in (b" ", b"\t"):
            if fields:
                fields[-1][1].extend(line)
            continue
        name, colon, value = line.partition(b":")
        if not colon or not name.strip() or b" " in name.strip():
            continue  # an mbox "From " line or garbage
        fields.append((name.strip().decode("latin-1").lower(), bytearray(value.lstrip(b" \t"))))
    return HeaderBlock(tuple((name, bytes(value).rstrip()) for name, value in fields))


@dataclass(frozen=True)
class PartInfo:
    """What a part is: its type, how its body is encoded, and what the device called it."""

    content_type: str = "text/plain"
    params: dict[str, str] = field(default_factory=dict)
    disposition: str | None = None
    filename: str | None = None
    encoding: str = "7bit"
    content_id: str | None = None

    @property
    def maintype(self) -> str:
        return self.content_type.partition("/")[0]

    @property
    def is_multipart(self) -> bool:
        return self.maintype == "multipart" and bool(self.params.get("boundary"))

    @property
    def charset(self) -> str | None:
        return self.params.get("charset")


def part_info(headers: HeaderBlock, default_type: str = "text/plain") -> PartInfo:
    ctype, cparams = parse_structured(headers.get("content-type"))
    disposition, dparams = parse_structured(headers.get("content-disposition"))
    filename = dparams.get("filename") or cparams.get("name") or dparams.get("name")
    filename = clean_text(filename) if filename else None
    if "/" not in ctype or " " in ctype:
        ctype = default_type if headers.get("content-type") is None else "application/octet-stream"
    cte = (headers.text("content-transfer-encoding") or "7bit").lower().strip('"')
    cid = headers.text("content-id")
    return PartInfo(
        content_type=ctype,
        params=cparams,
        disposition=disposition or None,
        filename=filename or None,
        encoding=cte,
        content_id=cid.strip("<>") or None if cid else None,
    )


def _valid(address: str) -> bool:
    return len(address) <= 254 and bool(_ADDRESS.match(address))


def mailbox(raw: bytes | None) -> tuple[str | None, str] | None:
    """The first mailbox of From/Reply-To as (display name, address); `scanner@x <scanner@x>` included."""
    if raw is None:
        return None
    text = sniff(raw)
    angle = _ANGLE.match(text.strip())
    if angle and _valid(angle["addr"].strip()):
        name = clean_text(decode_words(angle["name"])).strip('"').strip()
        address = angle["addr"].strip()
        return (name if name and name.lower() != address.lower() else None), address
    for name, address in getaddresses([text]):
        if _valid(address):
            display = clean_text(decode_words(name))
            return (display if display and display.lower() != address.lower() else None), address
    return None


def address_list(values: list[bytes]) -> tuple[str, ...]:
    """Every valid address in To or Cc headers, de-duplicated case-insensitively, in order."""
    seen: dict[str, str] = {}
    for _name, address in getaddresses([sniff(v) for v in values]):
        if _valid(address) and address.lower() not in seen:
            seen[address.lower()] = address
    return tuple(seen.values())


def message_id(raw: bytes | None) -> str | None:
    """The device's own `<id>`, if it sent a usable one (kept as X-Original-Message-ID)."""
    if raw is None:
        return None
    found = _MESSAGE_ID.search(sniff(raw))
    return found.group(0) if found else None


def message_date(raw: bytes | None, received: datetime) -> str:
    """The device's Date in RFC 5322 form, or the time the gateway received it when missing or unreadable."""
    if raw is not None:
        try:
            parsed = parsedate_to_datetime(clean_text(sniff(raw)))
        except (TypeError, ValueError, IndexError):
            parsed = None
        if parsed is not None:
            return format_datetime(parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC))
    return format_datetime(received.astimezone(UTC))
