"""Header sanitising: every value the gateway writes into a delivered message passes through here.

Subjects, display names, file names, content types and message ids come from devices (decoded from RFC 2047
words, RFC 2231 parameters, URL escapes or form fields), so after decoding they may hold CR LF, NUL, ESC, line
separators or bidi overrides. CPython's email package before the CVE-2024-6923 fix folds a decoded CR LF into a
real header line (a `Bcc:` the device wrote), and the interpreter this runs on may not have that fix; so the
values are cleaned here, in the core, before any transport sees them, and the outbox also checks the header
block it wrote (`check_header_block`). Nothing depends on the interpreter's patch level.
"""

from __future__ import annotations

import mimetypes
import re
import unicodedata

from gateway.core.mime.words import decode_words

#: C0 controls, DEL, C1 controls (NEL U+0085 included), and the Unicode line and paragraph separators.
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
#: Controls that end or break a line become one space, so `a\r\nb` does not read as `ab`.
_BREAKS = re.compile(r"[\t\n\v\f\r\x85\u2028\u2029]+")
#: Bidi embeddings, overrides and isolates, and the invisible direction marks: in a file name they make
#: `invoice\u202efdp.exe` read as `invoiceexe.pdf`.
_BIDI = re.compile(r"[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
#: What cannot be in a file name on some system, or would escape a folder.
_NAME_UNSAFE = re.compile(r"[/\\:*?\"<>|]")
_TOKEN = r"[A-Za-z0-9!#$&^_.+-]{1,127}"
_MEDIA_TYPE = re.compile(rf"^\s*({_TOKEN}/{_TOKEN})\s*(?:;.*)?$", re.DOTALL)
_MESSAGE_ID = re.compile(r"^<[!-;=?-~]{1,248}>$")
#: A header field name (RFC 5322 ftext).
_FIELD_NAME = re.compile(r"^[!-9;-~]{1,76}$")

#: Longest subject kept: a human-readable line, not a payload (folded into several lines when written).
MAX_SUBJECT = 900
MAX_DISPLAY_NAME = 200
#: Longest file name kept, in characters; its extension survives the cut.
MAX_FILE_NAME = 200
MAX_EXTENSION = 16


def decoded(value: str) -> str:
    """RFC 2047 encoded-words decoded until none is left (a word may encode another word), at most 4 rounds."""
    for _ in range(4):
        unwrapped = decode_words(value)
        if unwrapped == value:
            break
        value = unwrapped
    return value


def header_text(value: str, limit: int | None = MAX_SUBJECT) -> str:
    """One line of text as a person reads it: encoded-words decoded, line breaks made a space, other control
    characters removed, ends trimmed. A `=?` left over is broken up (`= ?`), so no email package can decode
    a word of ours into something else when it writes the header."""
    text = _BREAKS.sub(" ", decoded(value))
    text = CONTROL.sub("", text).replace("=?", "= ?").strip()
    return text[:limit].rstrip() if limit is not None else text


def display_name(value: str | None) -> str | None:
    if value is None:
        return None
    return header_text(_BIDI.sub("", value), MAX_DISPLAY_NAME) or None


def file_name(raw: str, fallback: str = "scan.pdf") -> str:
    """Keep what a person would recognise, drop what could escape a folder, break a header or disguise the
    extension; a name cut to MAX_FILE_NAME keeps its extension (`....pdf` still opens as a PDF)."""
    name = unicodedata.normalize("NFC", header_text(raw or "", None))
    name = _BIDI.sub("", name).replace("\\", "/").rsplit("/", 1)[-1]
    name = _NAME_UNSAFE.sub("_", name).strip(" .")
    if not name or set(name) <= {"_", "."}:
        return fallback
    if len(name) <= MAX_FILE_NAME:
        return name
    stem, dot, extension = name.rpartition(".")
    if dot and stem and 0 < len(extension) <= MAX_EXTENSION and extension.isalnum():
        return stem[: MAX_FILE_NAME - len(extension) - 1].rstrip(" .") + "." + extension
    return name[:MAX_FILE_NAME].rstrip(" .")


def content_type(value: str | None, name: str = "") -> str:
    """`type/subtype` in lower case when `value` is one, else what the file name suggests: a device's
    Content-Type never carries parameters, line breaks or anything else into the delivered part header."""
    match = _MEDIA_TYPE.match(value or "")
    if match and not CONTROL.search(match.group(1)):
        return match.group(1).lower()
    return mimetypes.guess_type(name, strict=False)[0] or "application/octet-stream"


def message_id(value: str | None) -> str | None:
    """A device's own Message-ID kept for reference: `<...>` of printable ASCII (no spaces, no `=?`), or none."""
    if not value:
        return None
    cleaned = "".join(c for c in decoded(value) if "!" <= c <= "~").replace("=?", "")
    if not _MESSAGE_ID.match(cleaned):
        return None
    return cleaned


def field_name(name: str) -> bool:
    return bool(_FIELD_NAME.match(name))


class UnsafeHeaderBlock(ValueError):
    """The written header block has a line that is neither a field nor its continuation."""


def check_header_block(block: bytes, fields: int) -> None:
    """Verify a serialised header block holds exactly `fields` fields, each continuation line starting with
    white space, only CRLF line ends, and one blank line at the end: proof that no value became a header."""
    if not block.endswith(b"\r\n\r\n"):
        raise UnsafeHeaderBlock("the header block does not end with an empty line")
    lines = block[:-4].split(b"\r\n")
    starts = 0
    for line in lines:
        if b"\r" in line or b"\n" in line or b"\0" in line:
            raise UnsafeHeaderBlock("a header line holds a bare CR, LF or NUL")
        if line[:1] in (b" ", b"\t"):
            if not line.strip():
                raise UnsafeHeaderBlock("a header continuation line is empty")
            continue
        name, colon, _ = line.partition(b":")
        if not colon or not _FIELD_NAME.match(name.decode("latin-1")):
            raise UnsafeHeaderBlock("a header line is not a field")
        starts += 1
    if starts != fields:
        raise UnsafeHeaderBlock(f"{starts} header fields were written instead of {fields}")
