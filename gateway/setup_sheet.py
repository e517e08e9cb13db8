"""A device's setup sheet: what to type into the scanner's SMTP (or upload) settings, on one page.

`scangw dev --lan` prints it with the password (shown once); `scangw devices show NAME --sheet` prints it again
later without. The per-vendor notes are the README's ("Configure your scanner"), kept short enough to print.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from gateway.config import Settings
from gateway.core.devices import Device

VENDOR_NOTES = (
    "Xerox: AUTH LOGIN challenges are exactly Username:/Password: as it expects; raise the device's own 10 MB "
    "message limit for big colour scans.",
    "Epson: the password field takes at most 20 characters (the generated one fits).",
    "Canon, Fuji Xerox: big scans may arrive split (message/partial); the gateway joins them.",
    "Devices that send HELO instead of EHLO: AUTH works after HELO too.",
    "Old devices (TLS 1.0/1.1 only): set SCANGW_SMTP_LEGACY_TLS=1 on the gateway.",
    "Devices that check certificates: load the certificate below into the device, or turn checking off.",
)


@dataclass(frozen=True)
class Endpoints:
    """Where devices reach this gateway: SMTP host and ports, and the HTTP(S) upload base URL if any."""

    host: str
    starttls_port: int | None = 2525
    implicit_tls_port: int | None = None
    plain_only: bool = False
    upload_url: str | None = None
    fingerprint: str | None = None
    note: str = ""


def default_host() -> str:
    """This machine's name as the LAN knows it, best effort (the admin may have a DNS name to use instead)."""
    name = socket.getfqdn()
    return name if name and name != "localhost" else socket.gethostname()


def sheet(device: Device, where: Endpoints, password: str | None = None) -> str:
    rows: list[tuple[str, str]] = [("Device", device.name), ("SMTP server", where.host)]
    if where.plain_only:
        rows.append(("Port / security", f"{where.starttls_port} / none (no certificate: loopback or trials only)"))
    else:
        if where.starttls_port:
            rows.append(("Port / security", f"{where.starttls_port} / STARTTLS (preferred)"))
        if where.implicit_tls_port:
            rows.append(("  or", f"{where.implicit_tls_port} / SSL/TLS (implicit)"))
    rows += [
        ("Authentication", "on, LOGIN or PLAIN"),
        ("Username", device.username),
        (
            "Password",
            password
            if password
            else f"(shown once when made; a new one: scangw devices rotate {device.name} - the old one stops working)",
        ),
        ("From address", "anything; the gateway sends from " + (device.sender or "its sender mailbox (SCANGW_SENDER)")),
        ("Default recipient", device.default_to or "(none: the device must name one)"),
        ("May send to", ", ".join(device.allow_to) or "its default recipient and the sender mailbox's domain"),
    ]
    if device.from_ip:
        rows.append(("No login needed from", ", ".join(device.from_ip)))
    if where.upload_url:
        rows.append(("HTTPS upload", f"{where.upload_url}/api/scans/NAME.pdf?to=ADDR (HTTP Basic, same login)"))
    if where.fingerprint:
        rows.append(("Certificate SHA-256", where.fingerprint))
    width = max(len(label) for label, _ in rows)
    lines = [f"Setup sheet for {device.name}", ""]
    lines += [f"  {label.ljust(width)}  {value}" for label, value in rows]
    if device.revoked:
        lines.insert(1, f"  REVOKED: this device cannot log in (scangw devices rotate {device.name} re-activates it)")
    if where.note:
        lines += ["", f"  {where.note}"]
    lines += ["", "  Per-vendor notes:"] + [f"  - {note}" for note in VENDOR_NOTES]
    return "\n".join(lines)


def endpoints_from_settings(settings: Settings) -> Endpoints:
    """For `devices show --sheet`, away from the running door: its host names and certificate as the settings
    (and a certificate the door made earlier) say; the ports are the `scangw smtp` defaults."""
    from gateway.intake.smtp import self_signed_folder

    fingerprint = None
    host = settings.smtp_tls_self_signed[0] if settings.smtp_tls_self_signed else None
    has_tls = bool(settings.smtp_tls_cert or settings.smtp_tls_self_signed)
    kept_folder = self_signed_folder(settings)
    if (kept_folder / "self-signed.pem").is_file():
        from gateway.intake.self_signed import load

        kept = load(kept_folder)
        if kept is not None and not settings.smtp_tls_cert:
            fingerprint, host, has_tls = kept.fingerprint, host or kept.hosts[0], True
    return Endpoints(
        host=host or default_host(),
        starttls_port=2525,
        plain_only=not has_tls,
        upload_url=settings.public_url,
        fingerprint=fingerprint,
        note="Ports are those of `scangw smtp` (default 2525); in Azure the SMTP app takes 587 (STARTTLS), "
        "465 (SSL/TLS) and 25.",
    )
