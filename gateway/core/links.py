"""Download links for scans Graph cannot carry: expiry maths, the message text, and the embedded token format.

Pure functions over plain data with the clock passed in, so the rules are unit-tested without storage.
The token is what lets `GET /api/links/{token}` serve a blob without any credential: it names the blob and
the file and its expiry, sealed with HMAC-SHA256 under a 256-bit key only the spool folder holds, so a
recipient can neither guess a link nor stretch or retarget one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import html
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

TOKEN_VERSION = "v1"
#: Links survive a little past what they promise, so a download started at the last minute still finishes.
KEEP_MARGIN_SECONDS = 3600.0


class LinkRefused(Exception):
    """Base of the token errors: the link cannot be honoured (the edge chooses the status)."""


class LinkInvalid(LinkRefused):
    """Malformed or tampered: indistinguishable from a link that never existed."""


class LinkExpired(LinkRefused):
    """Genuine, but its time is up."""


@dataclass(frozen=True)
class DownloadLink:
    """One replaced attachment as the recipient sees it in the body."""

    name: str
    size: int
    url: str
    expires: float


@dataclass(frozen=True)
class LinkClaim:
    """What a verified token grants: one blob, served under one file name, until `expires` (epoch seconds)."""

    blob: str
    filename: str
    expires: float


#: Keys in the job's progress (outside the transport's checkpoint, so they outlive a fresh start).
LINKS_UNTIL = "links_until"  # epoch seconds: every link of this job expires then; bytes are kept until then
LINKS_ALL = "links_all"  # True once Exchange refused the message as too large: every file goes as a link
SUPERSEDED_DRAFTS = "superseded_drafts"  # ids of refused drafts that must never be sent (deleted, or swept)


def kept_after_send(progress: Mapping[str, Any]) -> dict[str, Any]:
    """What a sent job's record still needs: how long its links live (retention reads it)."""
    return {k: progress[k] for k in (LINKS_UNTIL, SUPERSEDED_DRAFTS) if progress.get(k)}


def links_pending(progress: Mapping[str, Any], now: float) -> bool:
    """True while a link handed out for this job may still be used: retention must keep its bytes."""
    until = progress.get(LINKS_UNTIL)
    return until is not None and now < keep_bytes_until(float(until))


def links_until(now: float, hours: float) -> float:
    """Whole seconds, so the expiry recorded in the job and the one inside every link are the same number."""
    return float(math.ceil(now + hours * 3600))


def keep_bytes_until(expires: float) -> float:
    """Retention keeps the bytes this long: the link's expiry plus a margin for downloads in progress."""
    return expires + KEEP_MARGIN_SECONDS


def links_message_id(internet_message_id: str) -> str:
    """A distinct Message-ID for the link version of a message, so the refused draft is never mistaken for it."""
    left, at, right = internet_message_id.strip("<>").partition("@")
    return f"<{left}.links{at}{right}>"


def utc_text(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%d %H:%M UTC")


def human_size(size: int) -> str:
    if size >= 1024 * 1024:
        return f"{size / (1024 * 1024):.1f} MiB"
    if size >= 1024:
        return f"{size / 1024:.0f} KiB"
    return f"{size} bytes"


def content_disposition(filename: str) -> str:
    """RFC 6266 with an ASCII fallback and the exact UTF-8 name, so browsers save the scan under its own name."""
    fallback = "".join(c if 32 <= ord(c) < 127 and c not in '"\\%' else "_" for c in filename) or "scan"
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


def body_with_links(body: str, body_type: str, links: Sequence[DownloadLink]) -> str:
    """The device's body, then one line per file: name, size, link and expiry, in the body's own format."""
    if not links:
        return body
    expires = utc_text(min(link.expires for link in links))
    intro = f"These files were too large to attach. Download them before {expires}:"
    if body_type.lower() == "html":
        items = "".join(
            f'<li><a href="{html.escape(link.url)}">{html.escape(link.name)}</a> ({human_size(link.size)})</li>'
            for link in links
        )
        section = f"<hr><p>{html.escape(intro)}</p><ul>{items}</ul>"
        closing = body.lower().rfind("</body>")
        return body[:closing] + section + body[closing:] if closing >= 0 else body + section
    lines = [f"- {link.name} ({human_size(link.size)}): {link.url}" for link in links]
    separator = "\n\n" if body.strip() else ""
    return body.rstrip("\n") + separator + intro + "\n" + "\n".join(lines) + "\n"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, payload: str) -> str:
    return _b64(hmac.new(key, f"{TOKEN_VERSION}.{payload}".encode("ascii"), hashlib.sha256).digest())


def sign_token(key: bytes, claim: LinkClaim) -> str:
    """`v1.<payload>.<mac>`, URL-safe; the payload is readable, the MAC is what makes it trustworthy."""
    data = {"b": claim.blob, "n": claim.filename, "e": int(claim.expires)}
    payload = _b64(json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
    return f"{TOKEN_VERSION}.{payload}.{_mac(key, payload)}"


def verify_token(key: bytes, token: str, now: float) -> LinkClaim:
    """Check the MAC before reading anything, in constant time; then the expiry."""
    if not token.isascii():  # a token is base64url and dots: anything else is not one (not a 500)
        raise LinkInvalid("malformed link")
    version, _, rest = token.partition(".")
    payload, _, mac = rest.partition(".")
    if version != TOKEN_VERSION or not payload or not mac:
        raise LinkInvalid("malformed link")
    if not hmac.compare_digest(mac.encode("ascii", "replace"), _mac(key, payload).encode("ascii")):
        raise LinkInvalid("bad signature")
    try:
        data = json.loads(_unb64(payload))
        claim = LinkClaim(str(data["b"]), str(data["n"]), float(data["e"]))
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise LinkInvalid("unreadable link") from exc
    if now >= claim.expires:
        raise LinkExpired(f"expired at {utc_text(claim.expires)}")
    return claim
