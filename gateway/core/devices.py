"""Devices and the recipient policy that keeps the gateway from ever being an open relay."""

from __future__ import annotations

import ipaddress
import re
import secrets
import string
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from gateway.core.addresses import ascii_domain, recipient_address
from gateway.core.errors import MalformedInput, RecipientNotAllowed, UsageError

#: Fits device password fields (Epson allows 20 characters) and survives being pasted: `!`, `$`, `#`, backtick
#: and quotes break a shell, `+`, `=`, `*` and `#` break web forms or URL-style settings (smtp://user:pass@host).
#: Letters, digits and `-_.` are unreserved everywhere; 20 of 65 symbols still give about 120 bits.
PASSWORD_LENGTH = 20
PASSWORD_ALPHABET = string.ascii_letters + string.digits + "-_."

#: Matched whole (`fullmatch`): `$` would also match before a final newline, taking "mfp1\n" as a name.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def generate_password() -> str:
    while True:
        pw = "".join(secrets.choice(PASSWORD_ALPHABET) for _ in range(PASSWORD_LENGTH))
        # Ensure letters and digits both appear: some device UIs reject one-class passwords.
        if any(c.isdigit() for c in pw) and any(c.isalpha() for c in pw):
            return pw


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise UsageError(
            f"'{name}' is not a valid device name: use letters, digits, '.', '_' or '-' (at most 64 characters)."
        )
    return name


def normalise_address(text: str) -> str:
    """The address as delivered (see gateway.core.addresses); the local part keeps its case, the domain is
    lower case and ASCII. Raises MalformedInput naming the address."""
    return recipient_address(text)


def check_from_ip(cidr: str, allow_public: bool = False) -> str:
    """A `--from-ip` range, normalised; one that is not private would turn AUTH off for the internet."""
    try:
        network = ipaddress.ip_network(cidr.strip(), strict=False)
    except ValueError:
        raise UsageError(f"--from-ip '{cidr}' is not an address or CIDR like 192.168.1.0/24.") from None
    if not network.is_private and not allow_public:
        raise UsageError(
            f"--from-ip {cidr} is not a private range: every client in it could send through the gateway without "
            "a password, an open relay for the internet. Use your LAN's private range (10.0.0.0/8, 172.16.0.0/12, "
            "192.168.0.0/16, fc00::/7), or add --i-understand-open-relay-risk if the range really is yours alone."
        )
    return str(network)


def edited(
    current: tuple[str, ...], add: list[str], remove: list[str], same: Callable[[str, str], bool], option: str
) -> tuple[str, ...]:
    """One list entry added or removed, the rest kept in order (`--add-allow-to`, `--remove-from-ip`...)."""
    result = list(current)
    for entry in remove:
        kept = [e for e in result if not same(e, entry)]
        if len(kept) == len(result):
            held = ", ".join(result) or "nothing"
            raise UsageError(f"--remove-{option} {entry}: the device has no such entry (it holds {held}).")
        result = kept
    for entry in add:
        if not any(same(e, entry) for e in result):
            result.append(entry)
    return tuple(result)


def same_pattern(a: str, b: str) -> bool:
    return a.lower() == b.lower()


def same_network(a: str, b: str) -> bool:
    return ipaddress.ip_network(a, strict=False) == ipaddress.ip_network(b, strict=False)


def check_pattern(pattern: str) -> str:
    p = pattern.strip()
    if p.startswith("*@"):
        try:
            return "*@" + ascii_domain(p[2:])
        except ValueError:
            raise MalformedInput(
                f"'{pattern}' is not an allowed-recipient pattern: use name@domain or *@domain."
            ) from None
    return normalise_address(p)


@dataclass(frozen=True)
class Device:
    name: str
    password_hash: str
    sender: str | None = None
    sender_name: str | None = None
    reply_to: str | None = None
    default_to: str | None = None
    allow_to: tuple[str, ...] = ()
    from_ip: tuple[str, ...] = ()
    revoked: bool = False
    created: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def username(self) -> str:
        return self.name

    def to_record(self) -> dict[str, Any]:
        data = asdict(self)
        data["allow_to"] = list(self.allow_to)
        data["from_ip"] = list(self.from_ip)
        return data

    @classmethod
    def from_record(cls, data: dict[str, Any]) -> Device:
        known = {f for f in cls.__dataclass_fields__}
        values = {k: v for k, v in data.items() if k in known}
        values["allow_to"] = tuple(values.get("allow_to") or ())
        values["from_ip"] = tuple(values.get("from_ip") or ())
        return cls(**values)

    def public(self) -> dict[str, Any]:
        """What `devices list/show` print: everything but the hash."""
        data = self.to_record()
        data.pop("password_hash")
        data.pop("extra")
        data["username"] = self.username
        return data


def sender_mailbox(device: Device, default_sender: str | None) -> str | None:
    return device.sender or default_sender


def recipient_allowed(device: Device, address: str, default_sender: str | None) -> bool:
    """A device sends only to its allow-list; with none, to its default recipient and its sender's domain."""
    addr = address.lower()
    domain = addr.rpartition("@")[2]
    if device.default_to and addr == device.default_to.lower():
        return True
    if device.allow_to:
        return any(addr == p.lower() or (p.startswith("*@") and domain == p[2:]) for p in device.allow_to)
    sender = sender_mailbox(device, default_sender)
    return bool(sender) and domain == sender.rpartition("@")[2].lower()  # type: ignore[union-attr]


def allowed_domains(device: Device, default_sender: str | None) -> set[str]:
    """Domains whose addresses the device may send to (used to decide if a From names the scanning user)."""
    if device.allow_to:
        domains = {p.rpartition("@")[2] for p in device.allow_to}
    else:
        sender = sender_mailbox(device, default_sender)
        domains = {sender.rpartition("@")[2].lower()} if sender else set()
    if device.default_to:
        domains.add(device.default_to.rpartition("@")[2].lower())
    return domains


def check_recipients(device: Device, recipients: list[str], default_sender: str | None) -> tuple[str, ...]:
    """Validate and normalise every recipient; fall back to the device's default recipient."""
    if not recipients:
        if not device.default_to:
            raise MalformedInput("No recipient: add ?to=name@example.com, or give the device a default recipient.")
        recipients = [device.default_to]
    result: list[str] = []
    seen: set[str] = set()  # a set, not a scan of `result`: 30,000 recipients must not take quadratic time
    for raw in recipients:
        address = normalise_address(raw)
        if not recipient_allowed(device, address, default_sender):
            raise RecipientNotAllowed(
                f"Recipient {address} is not allowed for device {device.name}; ask the admin to allow it "
                f"(scangw devices update {device.name} --add-allow-to {address}).",
                recipient=address,
            )
        if address.lower() not in seen:
            seen.add(address.lower())
            result.append(address)
    return tuple(result)
