"""What gets delivered: one outgoing message per job, built by pure rules (contract section 6).

`ParsedMessage` is what the device said (headers and parts of the spooled MIME, or the HTTP upload);
`compose()` turns it plus the device and the envelope into the `OutgoingMessage` a transport sends.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from gateway.core.addresses import AddressRefused, is_deliverable, recipient_address
from gateway.core.devices import Device, allowed_domains
from gateway.core.errors import PermanentDeliveryError
from gateway.core.jobs import FileRef, Job, JobKind, internet_message_id
from gateway.core.sanitise import content_type, display_name, field_name, file_name, header_text, message_id

#: A header line's longest value we write for our own X- headers (RFC 5322's line limit).
MAX_HEADER_VALUE = 998


@dataclass(frozen=True)
class Address:
    address: str
    name: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"address": self.address, "name": self.name}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Address:
        return cls(data["address"], data.get("name"))


@dataclass(frozen=True)
class ParsedMessage:
    """The device's own headers and content; everything optional, because devices omit a lot."""

    subject: str | None = None
    from_: Address | None = None
    reply_to: Address | None = None
    to: tuple[str, ...] = ()
    cc: tuple[str, ...] = ()
    message_id: str | None = None
    date: str | None = None
    body: str = ""
    body_type: str = "text"
    attachments: tuple[FileRef, ...] = ()
    notes: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class OutgoingMessage:
    mailbox: str
    internet_message_id: str
    from_: Address
    to: tuple[Address, ...]
    cc: tuple[Address, ...]
    bcc: tuple[Address, ...]
    reply_to: tuple[Address, ...]
    subject: str
    body: str
    body_type: str
    attachments: tuple[FileRef, ...]
    #: Extra internet headers; Graph accepts only names starting with X-.
    headers: tuple[tuple[str, str], ...] = ()
    date: str | None = None
    #: When set, download links replacing attachments expire then (epoch seconds, recorded in the job first).
    links_until: float | None = None

    def __post_init__(self) -> None:
        """Every header value is cleaned here, in the core, so no transport (Graph, the outbox) ever sees a raw
        one: whoever builds a message (compose, the failure notice, download links, doctor) gets the same rules.
        An address that cannot be delivered makes the message permanently undeliverable, with the reason."""

        def put(name: str, value: object) -> None:
            object.__setattr__(self, name, value)

        put("mailbox", _plain(self.mailbox, "sender mailbox"))  # the admin's; `scangw@localhost` in dev outbox mode
        put("from_", Address(_plain(self.from_.address, "From"), display_name(self.from_.name)))
        for key in ("to", "cc", "bcc", "reply_to"):
            put(key, tuple(_person(a, key.replace("_", "-").capitalize()) for a in getattr(self, key)))
        put("subject", header_text(self.subject))
        clean_id = message_id(self.internet_message_id)
        if clean_id is None or clean_id != self.internet_message_id:
            raise PermanentDeliveryError(f"The Message-ID {self.internet_message_id[:80]!r} is not valid.")
        put("date", header_text(self.date) or None if self.date is not None else None)
        put(
            "attachments",
            tuple(
                replace(f, name=file_name(f.name, "attachment.bin"), content_type=content_type(f.content_type, f.name))
                for f in self.attachments
            ),
        )
        put(
            "headers",
            tuple(
                (name, header_text(value, MAX_HEADER_VALUE))
                for name, value in self.headers
                if field_name(name) and header_text(value, MAX_HEADER_VALUE)
            ),
        )

    @property
    def recipients(self) -> tuple[Address, ...]:
        return self.to + self.cc + self.bcc


def _deliverable(address: str, role: str) -> str:
    try:
        return recipient_address(address)
    except AddressRefused as exc:
        raise PermanentDeliveryError(
            f"The {role} address {address[:80]!r} cannot be delivered: {exc.why}.",
            "Correct the address (device policy or settings), then: scangw jobs retry <job id>.",
        ) from None


def _plain(address: str, role: str) -> str:
    """A sender address only needs to be safe in a header: one printable ASCII word with an @."""
    if "@" not in address or not address.isascii() or not address.isprintable() or any(c in address for c in " <>,;"):
        raise PermanentDeliveryError(
            f"The {role} address {address[:80]!r} cannot be written into a message.",
            "Set a plain mailbox address (SCANGW_SENDER, or: scangw devices update NAME --sender ADDR).",
        )
    return address


def _person(person: Address, role: str) -> Address:
    return Address(_deliverable(person.address, role), display_name(person.name))


def place_recipients(
    envelope: tuple[str, ...], header_to: tuple[str, ...], header_cc: tuple[str, ...]
) -> tuple[tuple[Address, ...], tuple[Address, ...], tuple[Address, ...]]:
    """The envelope is the truth; headers only decide where each envelope recipient shows."""
    if not header_to and not header_cc:
        return tuple(Address(a) for a in envelope), (), ()
    to_set = {a.lower() for a in header_to}
    cc_set = {a.lower() for a in header_cc}
    to: list[Address] = []
    cc: list[Address] = []
    bcc: list[Address] = []
    for addr in envelope:
        key = addr.lower()
        (to if key in to_set else cc if key in cc_set else bcc).append(Address(addr))
    return tuple(to), tuple(cc), tuple(bcc)


def compose(job: Job, parsed: ParsedMessage, device: Device, default_sender: str | None) -> OutgoingMessage:
    """Apply contract section 6: sender mailbox as From, the scanning user's name and Reply-To when the
    device may send to their domain, exact envelope recipients, a job-derived Message-ID."""
    mailbox = job.sender or device.sender or default_sender
    if not mailbox:
        raise ValueError("no sender mailbox")
    domains = allowed_domains(device, mailbox)
    original = parsed.reply_to or parsed.from_
    user = original if original and original.address.rpartition("@")[2].lower() in domains else None
    if user is not None and not is_deliverable(user.address):
        user = None  # the device's From/Reply-To is not an address Exchange could reply to
    if user is not None and user.address.lower() == mailbox.lower():
        user = None  # the device wrote the sender mailbox itself as From: nobody to reply to
    if user is not None and user.name:
        display = user.name
    else:
        display = job.sender_name or device.sender_name or device.name
    if user is not None:
        reply_to: tuple[Address, ...] = (Address(user.address),)
    elif job.reply_to or device.reply_to:
        reply_to = (Address(job.reply_to or device.reply_to or ""),)
    else:
        reply_to = ()
    to, cc, bcc = place_recipients(job.to, parsed.to, parsed.cc)
    headers: list[tuple[str, str]] = [("X-Scangw-Job", job.id), ("X-Scangw-Device", device.name)]
    if parsed.message_id:
        headers.append(("X-Original-Message-ID", parsed.message_id))
    return OutgoingMessage(
        mailbox=mailbox,
        internet_message_id=internet_message_id(job.id, mailbox),
        from_=Address(mailbox, display),
        to=to,
        cc=cc,
        bcc=bcc,
        reply_to=reply_to,
        subject=job.subject if job.subject is not None else (parsed.subject or f"Scan from {device.name}"),
        body=job.body if job.body is not None else parsed.body,
        body_type=parsed.body_type if job.body is None else "text",
        # SMTP jobs carry only what the MIME held; HTTP jobs carry their uploaded files.
        attachments=parsed.attachments if job.kind == JobKind.MIME else job.files,
        headers=tuple(headers),
        date=parsed.date,
    )


def parsed_to_json(parsed: ParsedMessage) -> dict[str, Any]:
    """Recorded in the job's progress so the message is exploded once, not on every retry."""
    from dataclasses import asdict

    data = asdict(parsed)
    data["attachments"] = [asdict(a) for a in parsed.attachments]
    return data


def parsed_from_json(data: dict[str, Any]) -> ParsedMessage:
    values = dict(data)
    for key in ("from_", "reply_to"):
        values[key] = Address(**values[key]) if values.get(key) else None
    values["to"] = tuple(values.get("to") or ())
    values["cc"] = tuple(values.get("cc") or ())
    values["notes"] = tuple(values.get("notes") or ())
    values["attachments"] = tuple(FileRef(**a) for a in values.get("attachments") or ())
    return ParsedMessage(**values)
