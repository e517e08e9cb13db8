"""TLS for the SMTP door: one server context for STARTTLS and implicit TLS, reloadable in place.

Modern profile (default): TLS 1.2+ with forward-secret ciphers only. Legacy profile (SCANGW_SMTP_LEGACY_TLS=1)
for old scanners: TLS 1.0/1.1 and RSA key exchange. OpenSSL 3 refuses both at its default security level, so
the legacy cipher string names the non-forward-secret ciphers explicitly and sets `@SECLEVEL=0`; the
certificate must then be RSA (RSA key exchange cannot work with an ECDSA key).
"""

from __future__ import annotations

import ssl
import warnings
from pathlib import Path
from typing import Any

#: Forward secrecy only, AEAD first (TLS 1.3 suites are configured separately by OpenSSL).
MODERN_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:ECDHE+AES:!aNULL:!eNULL:!SHA1:!AESCCM"
#: Modern first, then what TLS 1.0-era devices offer; no RC4, 3DES, export or anonymous suites.
LEGACY_CIPHERS = (
    "ECDHE+AESGCM:ECDHE+CHACHA20:ECDHE+AES:AES256-GCM-SHA384:AES128-GCM-SHA256:AES256-SHA256:AES128-SHA256:"
    "AES256-SHA:AES128-SHA:!aNULL:!eNULL:!RC4:!3DES:!MD5:!EXPORT:@SECLEVEL=0"
)


def server_context(cert: Path, key: Path, legacy: bool) -> ssl.SSLContext:
    """A server context for the chosen profile; raises OSError/ssl.SSLError for unusable PEM files."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_COMPRESSION
    if legacy:
        with warnings.catch_warnings():
            # Deliberate: the admin turned on the legacy profile for devices that speak nothing newer.
            warnings.simplefilter("ignore", DeprecationWarning)
            context.minimum_version = ssl.TLSVersion.TLSv1
        context.set_ciphers(LEGACY_CIPHERS)
    else:
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.set_ciphers(MODERN_CIPHERS)
    context.load_cert_chain(str(cert), str(key))
    return context


class TlsConfig:
    """Holds the live context; `reload()` swaps the certificate for new handshakes, sessions stay up."""

    def __init__(self, cert: Path, key: Path, legacy: bool) -> None:
        self.cert = cert
        self.key = key
        self.legacy = legacy
        self.context = server_context(cert, key, legacy)

    @property
    def profile(self) -> str:
        return "legacy" if self.legacy else "modern"

    def reload(self) -> None:
        """Check the new files in a scratch context first, so a bad renewal leaves the old certificate serving."""
        server_context(self.cert, self.key, self.legacy)
        self.context.load_cert_chain(str(self.cert), str(self.key))


def describe(ssl_object: Any) -> dict[str, str]:
    """Protocol and cipher of an established session, for the per-session log line."""
    if ssl_object is None:
        return {"protocol": "none", "cipher": "none"}
    cipher = ssl_object.cipher() or ("unknown", "", 0)
    return {"protocol": str(ssl_object.version()), "cipher": str(cipher[0]), "bits": str(cipher[2])}


def is_legacy(details: dict[str, str]) -> bool:
    """Old protocol or no forward secrecy: what admins want listed so they can retire the device."""
    kex_fs = details["cipher"].startswith(("ECDHE", "DHE", "TLS_"))
    return details["protocol"] in ("TLSv1", "TLSv1.1") or not kex_fs
