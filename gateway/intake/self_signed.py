"""A self-signed certificate for the SMTP door, so a door with no CA-issued certificate still encrypts.

Scanners rarely check certificates, but they do send the SMTP password: with TLS it is at least not readable
on the wire. Used by the SMTP door when `SCANGW_SMTP_TLS_SELF_SIGNED` names the door's host names, and by
`scangw dev --lan`. RSA 2048, not ECDSA: scanners from before about 2015 often have no ECDSA and the legacy
TLS profile's RSA key exchange needs an RSA key. Valid for about a year; `ensure()` reuses the files while they
name the same hosts and have more than `renew_days` left, and makes new ones otherwise.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import ipaddress
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALID_DAYS = 365
#: Renew this long before expiry: a door that runs for months renews while running (see SmtpServer).
RENEW_DAYS = 30
CERT_NAME = "self-signed.pem"
KEY_NAME = "self-signed.key"
_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


@dataclass(frozen=True)
class SelfSigned:
    """Where the PEM files are and what a person may need to check them (the setup sheet prints these)."""

    cert: Path
    key: Path
    hosts: tuple[str, ...]
    not_after: dt.datetime
    #: SHA-256 of the DER certificate as colon-separated hex, as browsers and `openssl x509 -fingerprint` show it.
    fingerprint: str

    def expires_within(self, days: float, now: dt.datetime | None = None) -> bool:
        return self.not_after - (now or dt.datetime.now(dt.UTC)) < dt.timedelta(days=days)


def parse_hosts(text: str) -> tuple[str, ...]:
    """Comma-separated host names and IP addresses, as `SCANGW_SMTP_TLS_SELF_SIGNED` holds them.

    Raises ValueError naming the first entry that is neither a DNS name (a leading `*.` is allowed) nor an IP
    address; duplicates are dropped, order kept (the first is the certificate's common name).
    """
    hosts: list[str] = []
    for item in text.replace(";", ",").split(","):
        host = item.strip().rstrip(".").lower()
        if not host:
            continue
        if not _is_ip(host) and not _is_dns_name(host):
            raise ValueError(f"'{item.strip()}' is not a host name or IP address")
        if host not in hosts:
            hosts.append(host)
    if not hosts:
        raise ValueError("names no host; give the door's host name, like smtp.contoso.com")
    return tuple(hosts)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _is_dns_name(host: str) -> bool:
    labels = host.split(".")
    if labels[0] == "*" and len(labels) > 2:
        labels = labels[1:]
    return len(host) <= 253 and all(_LABEL.match(label) for label in labels)


def generate(hosts: Sequence[str], days: int = VALID_DAYS) -> tuple[bytes, bytes]:
    """A new key and a certificate for `hosts` (SANs; the first is also the CN): (cert PEM, key PEM)."""
    if not hosts:
        raise ValueError("a certificate needs at least one host name")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = dt.datetime.now(dt.UTC)
    names: list[x509.GeneralName] = [
        x509.IPAddress(ipaddress.ip_address(h)) if _is_ip(h) else x509.DNSName(h) for h in hosts
    ]
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, hosts[0][:64]),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "scangw self-signed"),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))  # devices with a slightly slow clock
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_encipherment=True,  # RSA key exchange (legacy profile)
                content_commitment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def load(folder: Path) -> SelfSigned | None:
    """The certificate kept in `folder`, or None when there is none or it cannot be read."""
    cert_path, key_path = folder / CERT_NAME, folder / KEY_NAME
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        if not key_path.is_file():
            return None
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, x509.ExtensionNotFound):
        return None
    hosts = tuple(str(name.value).lower() for name in sans)
    fingerprint = cert.fingerprint(hashes.SHA256()).hex(":").upper()
    return SelfSigned(cert_path, key_path, hosts, cert.not_valid_after_utc, fingerprint)


def ensure(hosts: Sequence[str], folder: Path, renew_days: float = RENEW_DAYS, days: int = VALID_DAYS) -> SelfSigned:
    """The certificate for `hosts` in `folder`: the one kept there while it names the same hosts and has more
    than `renew_days` left, else a new one. Safe when several processes share the folder (a file lock)."""
    wanted = tuple(h.lower() for h in hosts)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    with _locked(folder / ".lock"):
        kept = load(folder)
        if kept is not None and set(kept.hosts) == set(wanted) and not kept.expires_within(renew_days):
            return kept
        cert_pem, key_pem = generate(wanted, days)
        _write(folder / KEY_NAME, key_pem, 0o600)
        _write(folder / CERT_NAME, cert_pem, 0o644)
        made = load(folder)
    if made is None:  # pragma: no cover - the files were just written
        raise OSError(f"cannot read back the certificate written to {folder}")
    return made


def install(folder: Path, key_pem: bytes, cert_pem: bytes) -> None:
    """Put a pair made elsewhere (another replica, see gateway.intake.shared_certificate) in `folder`, under
    the same lock as `ensure()`, key first: a reader loads the pair only once the certificate is there."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    with _locked(folder / ".lock"):
        _write(folder / KEY_NAME, key_pem, 0o600)
        _write(folder / CERT_NAME, cert_pem, 0o644)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write beside, then rename: a reader sees the old file or the new one, never half of one."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise
