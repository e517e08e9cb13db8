"""Which MIME parts are the message text and which are attachments, and what each attachment is called.

Scanners mark the PDF `inline` with a file name, send a lone PDF as the whole message, or leave parts
unnamed; the rules here decide once, as pure functions, so the streaming explode only moves bytes.
"""

from __future__ import annotations

import mimetypes
from enum import Enum

from gateway.core.mime.headers import PartInfo

_TEXT = ("text/plain", "text/html")


class Role(Enum):
    BODY = "body"  # becomes the message text (replaces a plain alternative when it is HTML)
    ATTACHMENT = "attachment"
    SKIP = "skip"  # another rendering of text we already have


def part_role(info: PartInfo, parent: str | None, body_type: str | None, body_parent: str | None) -> Role:
    """`body_type` is the type of the text taken so far (None if none); `body_parent` its enclosing type."""
    named = info.filename is not None or info.disposition == "attachment"
    if info.content_type not in _TEXT or named:
        return Role.ATTACHMENT
    if body_type is None:
        return Role.BODY
    if parent == "multipart/alternative" and body_parent == parent:
        if info.content_type == "text/html" and body_type == "text/plain":
            return Role.BODY
        return Role.SKIP
    return Role.ATTACHMENT


def attachment_name(info: PartInfo, index: int, single: bool) -> str:
    """The device's file name when it gave one; otherwise a name whose extension matches the type."""
    if info.filename:
        return info.filename
    ext = {"application/pdf": ".pdf", "message/rfc822": ".eml", "text/plain": ".txt", "image/jpeg": ".jpg"}.get(
        info.content_type
    ) or (mimetypes.guess_extension(info.content_type, strict=False) or ".bin")
    stem = "scan" if single and info.content_type != "text/plain" else f"attachment-{index}"
    return stem + ext


def attachment_type(info: PartInfo, name: str) -> str:
    """Declared type, unless it is the uninformative octet-stream and the name says better."""
    if info.content_type in ("application/octet-stream", "application/x-octet-stream", ""):
        return mimetypes.guess_type(name, strict=False)[0] or "application/octet-stream"
    return info.content_type
