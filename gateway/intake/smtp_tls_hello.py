"""What a TLS client offered, read from the first bytes it sent (its ClientHello), for the one log line that
lets an admin find the devices that need the legacy TLS profile.

Python's ssl module says nothing about a handshake that failed except OpenSSL's reason, so the door keeps the
first bytes of every TLS connection and this module reads the protocol versions and cipher suites from them.
Pure and bounded: it looks at no more than the bytes given, and anything it cannot read is reported as such.
`failure_fields()` turns that and the handshake's error into the fields of the `event=smtp.tls_failed` line.
"""

from __future__ import annotations

import ssl
import struct
from dataclasses import dataclass
from functools import cache

from gateway.intake.smtp_tls_gate import NoClientHello

#: TLS protocol numbers as OpenSSL names them in its own logs (and `ssl.SSLSocket.version()` returns).
VERSIONS = {0x0002: "SSLv2", 0x0300: "SSLv3", 0x0301: "TLSv1", 0x0302: "TLSv1.1", 0x0303: "TLSv1.2", 0x0304: "TLSv1.3"}
#: Signalling values that are not ciphers: renegotiation info SCSV and fallback SCSV.
_SIGNALS = {0x00FF, 0x5600}
_SUPPORTED_VERSIONS = 43
_SERVER_NAME = 0
#: Cipher names listed in one log line at most; the rest are counted.
SHOWN = 24


@dataclass(frozen=True)
class Hello:
    """What the client offered; `note` says why something is missing (not TLS, truncated...)."""

    versions: tuple[str, ...] = ()
    ciphers: tuple[str, ...] = ()
    server_name: str = ""
    note: str = ""

    def fields(self) -> str:
        """`offered=<versions> ciphers=<names>` for the log line."""
        if self.note and not self.versions:
            return f"offered=unknown ({self.note})"
        names = list(self.ciphers[:SHOWN])
        if len(self.ciphers) > SHOWN:
            names.append(f"+{len(self.ciphers) - SHOWN} more")
        sni = f" sni={self.server_name}" if self.server_name else ""
        return f"offered={','.join(self.versions)} ciphers={':'.join(names) or '-'}{sni}"

    @property
    def old(self) -> bool:
        """Offers nothing newer than TLS 1.1, or no forward-secret cipher: what the legacy profile is for."""
        modern = any(v in ("TLSv1.2", "TLSv1.3") for v in self.versions)
        forward_secret = any(c.startswith(("ECDHE", "DHE", "TLS_")) for c in self.ciphers)
        return bool(self.versions) and (not modern or not forward_secret)


@cache
def _cipher_names() -> dict[int, str]:
    """IANA cipher-suite number -> OpenSSL name, from what the local OpenSSL knows."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    names: dict[int, str] = {}
    for spec in ("ALL:COMPLEMENTOFALL:@SECLEVEL=0", "ALL"):
        try:
            context.set_ciphers(spec)
        except ssl.SSLError:
            continue
        for cipher in context.get_ciphers():
            names.setdefault(int(cipher["id"]) & 0xFFFF, str(cipher["name"]))
    return names


def _grease(value: int) -> bool:
    """RFC 8701 GREASE values (0x0A0A, 0x1A1A, ...): clients offer them to keep servers honest; not real."""
    return value & 0x0F0F == 0x0A0A and value >> 8 == value & 0xFF


def _cipher(value: int) -> str:
    return _cipher_names().get(value, f"0x{value:04X}")


def read_hello(data: bytes) -> Hello:
    """Parse a ClientHello from the first bytes of a connection (TLS record layer or an SSLv2-format hello)."""
    if not data:
        return Hello(note="nothing")
    if data[0] & 0x80 and len(data) >= 11 and data[2] == 1:  # SSLv2-compatible hello from very old stacks
        version = struct.unpack("!H", data[3:5])[0]
        return Hello(versions=(VERSIONS.get(version, f"0x{version:04X}"),), note="SSLv2-format hello")
    if data[0] != 0x16 or len(data) < 9:
        shown = data[:16].decode("ascii", errors="replace")
        printable = "".join(c if c.isprintable() else "." for c in shown)
        return Hello(note=f"not TLS: the client spoke plain text first ({printable!r})")
    try:
        return _read_client_hello(data)
    except (struct.error, IndexError):
        return Hello(note="truncated ClientHello")


def _read_client_hello(data: bytes) -> Hello:
    record_length = struct.unpack("!H", data[3:5])[0]
    body = data[5 : 5 + record_length]
    if body[0] != 1:
        return Hello(note="not a ClientHello")
    pos = 4  # handshake type (1) and length (3)
    legacy_version = struct.unpack("!H", body[pos : pos + 2])[0]
    pos += 2 + 32  # version, random
    pos += 1 + body[pos]  # session id
    (cipher_bytes,) = struct.unpack("!H", body[pos : pos + 2])
    pos += 2
    suites = [struct.unpack("!H", body[i : i + 2])[0] for i in range(pos, pos + cipher_bytes - 1, 2)]
    pos += cipher_bytes
    ciphers = tuple(_cipher(s) for s in suites if s not in _SIGNALS and not _grease(s))
    versions: tuple[str, ...] = (VERSIONS.get(legacy_version, f"0x{legacy_version:04X}"),)
    server_name = ""
    pos += 1 + body[pos]  # compression methods
    if pos + 2 <= len(body):
        (extensions_length,) = struct.unpack("!H", body[pos : pos + 2])
        pos += 2
        end = min(len(body), pos + extensions_length)
        while pos + 4 <= end:
            kind, length = struct.unpack("!HH", body[pos : pos + 4])
            value = body[pos + 4 : pos + 4 + length]
            pos += 4 + length
            if kind == _SUPPORTED_VERSIONS and value:
                listed = [struct.unpack("!H", value[i : i + 2])[0] for i in range(1, 1 + value[0] - 1, 2)]
                real = sorted((v for v in listed if not _grease(v)), reverse=True)
                if real:
                    versions = tuple(VERSIONS.get(v, f"0x{v:04X}") for v in real)
            elif kind == _SERVER_NAME and len(value) > 5:
                (name_length,) = struct.unpack("!H", value[3:5])
                name = value[5 : 5 + name_length].decode("ascii", errors="replace")[:100]
                server_name = "".join(c if c.isprintable() and not c.isspace() else "?" for c in name)
    return Hello(versions=versions, ciphers=ciphers, server_name=server_name)


def failure_fields(first: bytes, error: BaseException, legacy_enabled: bool, implicit: bool = True) -> str | None:
    """`offered=... ciphers=... error=... hint=...` for a failed handshake, from the client's first bytes and
    the error; None for a client that closed before sending anything (a TCP health probe)."""
    if isinstance(error, NoClientHello):
        if error.closed:
            return None
        if implicit:
            why = f"{error} (the client expects plain SMTP: STARTTLS or none)"
            hint = "set the device to SSL/TLS for this port, or to STARTTLS on the STARTTLS port (587)"
        else:
            why = f"{error} after STARTTLS"
            hint = "the device asked for STARTTLS but never started TLS: update its firmware or turn TLS off"
        return f"offered=nothing error={why!r} hint={hint!r}"
    hello = read_hello(first)
    reason = _reason(error)
    if "ALERT" in reason and ("CA" in reason or "CERTIFICATE" in reason):
        hint = "the device does not trust the certificate: load it (or its CA) on the device"
    elif legacy_enabled:
        hint = "the device offers nothing even SCANGW_SMTP_LEGACY_TLS=1 accepts, or does not trust the certificate"
    elif hello.old:
        hint = "an old device: set SCANGW_SMTP_LEGACY_TLS=1"
    else:
        hint = "if the device is old, SCANGW_SMTP_LEGACY_TLS=1; else it may not trust the certificate"
    return f"{hello.fields()} error={reason!r} hint={hint!r}"


def _reason(error: BaseException) -> str:
    """OpenSSL's short reason (`UNSUPPORTED_PROTOCOL`, `TLSV1_ALERT_UNKNOWN_CA`) rather than the long message."""
    reason = getattr(error, "reason", None)
    return str(reason) if reason else (str(error) or type(error).__name__)
