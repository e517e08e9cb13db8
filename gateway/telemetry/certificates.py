"""When a PEM certificate expires: for the `scangw.tls.cert_days_left` gauge and `scangw status`."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path


def not_after(path: Path) -> datetime | None:
    """The first certificate's expiry in a PEM file, or None when the file is missing or unreadable."""
    try:
        from cryptography import x509

        return x509.load_pem_x509_certificate(Path(path).read_bytes()).not_valid_after_utc
    except (OSError, ValueError):
        return None


def days_left(path: Path, now: float | None = None) -> float | None:
    expiry = not_after(path)
    return None if expiry is None else days_until(expiry, now)


def days_until(expiry: datetime, now: float | None = None) -> float:
    moment = time.time() if now is None else now
    return round((expiry - datetime.fromtimestamp(moment, UTC)).total_seconds() / 86400, 2)
