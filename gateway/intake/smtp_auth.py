"""SMTP AUTH helpers: the failed-login limiter and SASL PLAIN decoding.

The limiter follows Postfix's smtpd_client_auth_rate_limit: after `failures` failed logins within `window`
seconds for one username, or from one client address, further attempts are answered 454 without checking the
password. Proxy addresses are never a key: behind a TCP proxy that would let one attacker lock out every scanner.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections import deque
from collections.abc import Callable

#: Keys tracked at most; a spray of random usernames cannot grow memory without bound.
MAX_KEYS = 100_000


class AuthLimiter:
    def __init__(self, failures: int = 5, window: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._failures = failures
        self._window = window
        self._clock = clock
        self._seen: dict[str, deque[float]] = {}

    def _keys(self, username: str, address: str | None) -> list[str]:
        keys = [f"user:{username.strip().lower()}"]
        if address:
            keys.append(f"addr:{address}")
        return keys

    def _recent(self, key: str, now: float) -> int:
        times = self._seen.get(key)
        if not times:
            return 0
        while times and times[0] <= now - self._window:
            times.popleft()
        if not times:
            del self._seen[key]
            return 0
        return len(times)

    def blocked(self, username: str, address: str | None) -> bool:
        """`address` is None when the client is a known proxy (then only the username counts)."""
        now = self._clock()
        return any(self._recent(key, now) >= self._failures for key in self._keys(username, address))

    def failed(self, username: str, address: str | None) -> None:
        now = self._clock()
        if len(self._seen) >= MAX_KEYS:
            for key in list(self._seen):
                self._recent(key, now)
        for key in self._keys(username, address):
            if len(self._seen) < MAX_KEYS or key in self._seen:
                self._seen.setdefault(key, deque()).append(now)


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
