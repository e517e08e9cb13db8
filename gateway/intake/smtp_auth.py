"""SMTP AUTH helpers: SASL decoding. The failed-login limiter both doors share is gateway.core.login_limiter."""

from __future__ import annotations

import base64
import binascii


def decode_base64(text: str) -> bytes | None:
    """RFC 4954: '=' is an empty initial response."""
    if text == "=":
        return b""
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        return None


def split_plain(blob: bytes) -> tuple[str, str] | None:
    """SASL PLAIN is `authzid NUL authcid NUL password`; the authorisation identity is ignored."""
    parts = blob.split(b"\0")
    if len(parts) != 3:
        return None
    return parts[1].decode("utf-8", errors="replace"), parts[2].decode("utf-8", errors="replace")
