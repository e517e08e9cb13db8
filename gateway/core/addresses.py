"""The one recipient-address validator both doors use: an address is accepted only if it can be delivered.

RFC 5321 limits (local part ≤ 64 octets, domain ≤ 255, path `<local@domain>` ≤ 256, so the address ≤ 254),
no control characters, a dot-atom local part, and a host name of letters, digits and hyphens with at least two
labels. Non-ASCII is decided for what Exchange Online and Graph deliver: an internationalised domain goes out as
its A-label (`bücher.example` → `xn--bcher-kva.example`, IDNA 2008 with UTS 46 mapping), which every mail
system routes; a non-ASCII local part (`jürgen@…`, RFC 6531) has no ASCII form and needs SMTPUTF8 on every hop,
which Graph gives no way to ask for, so it is refused at the door instead of being accepted and retried for a
day. Quoted local parts and address literals (`"a b"@x`, `a@[10.0.0.1]`) are refused for the same reason.

`recipient_address()` is what the doors call; its `AddressRefused` is a `MalformedInput`, which the SMTP door
answers with `553 5.1.3` and the HTTP door with `400`, naming the address (control characters shown escaped).
"""

from __future__ import annotations

import re

import idna

from gateway.core.errors import MalformedInput
from gateway.core.escape import escape
from gateway.core.sanitise import CONTROL  # never part of an address a person typed

#: RFC 5321 section 4.5.3.1.1-3, in octets.
MAX_LOCAL_PART = 64
MAX_DOMAIN = 255
MAX_PATH = 256
#: The path includes its angle brackets.
MAX_ADDRESS = MAX_PATH - 2
MAX_LABEL = 63

#: RFC 5322 atext; a dot-atom is atext runs joined by single dots.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_DOT_ATOM = re.compile(rf"^{_ATEXT}(?:\.{_ATEXT})*$")
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
#: What a message shows of an address: enough to recognise it, never enough to flood a reply line.
SHOWN = 80


class AddressRefused(MalformedInput):
    """A recipient the gateway could not deliver to; `address` is the input as received."""

    def __init__(self, address: str, why: str) -> None:
        super().__init__(f"Recipient {shown(address)} is not a deliverable email address: {why}.")
        self.address = address
        self.why = why


def shown(text: str) -> str:
    """The text for a reply or a log: control and bidi characters escaped (`\\x00`, `\\u202e`) by the rule every
    log line uses, cut at SHOWN."""
    escaped = escape(text)
    return f"'{escaped[:SHOWN]}{'...' if len(escaped) > SHOWN else ''}'"


def ascii_domain(domain: str) -> str:
    """A host name as the A-label form mail is routed by, lower case; raises ValueError with the reason."""
    name = domain.rstrip(".") if domain.endswith(".") and not domain.endswith("..") else domain
    if not name:
        raise ValueError("the domain after @ is empty")
    if name.startswith("[") or name.endswith("]"):
        raise ValueError("address literals like [10.0.0.1] are not delivered by Exchange Online")
    if name.isascii():
        lowered = name.lower()
    else:
        try:
            lowered = idna.encode(name, uts46=True, transitional=False).decode("ascii").lower()
        except (idna.IDNAError, UnicodeError) as exc:
            raise ValueError(f"the domain is not a valid internationalised domain name ({exc})") from None
    if len(lowered.encode("ascii")) > MAX_DOMAIN:
        raise ValueError(f"the domain is longer than {MAX_DOMAIN} characters")
    labels = lowered.split(".")
    if len(labels) < 2:
        raise ValueError("the domain needs a dot, like example.com")
    for label in labels:
        if not label:
            raise ValueError("the domain has an empty label (two dots, or a dot at the start)")
        if len(label) > MAX_LABEL:
            raise ValueError(f"a part of the domain is longer than {MAX_LABEL} characters")
        if not _LABEL.match(label):
            raise ValueError("the domain may hold only letters, digits, hyphens and dots")
    if labels[-1].isdigit():
        raise ValueError("the domain ends in a number, which is not a top-level domain")
    return lowered


def recipient_address(text: str) -> str:
    """The address as it will be delivered (domain lower case, A-label), or AddressRefused naming it.

    Surrounding spaces and one pair of angle brackets are forgiven (devices and forms add them); anything
    else is taken literally. The local part keeps its case: RFC 5321 lets the receiving server decide.
    """
    raw = text
    candidate = text.strip()
    if candidate.startswith("<") and candidate.endswith(">"):
        candidate = candidate[1:-1].strip()
    if not candidate:
        raise AddressRefused(raw, "it is empty")
    if CONTROL.search(candidate):
        raise AddressRefused(raw, "it contains control characters")
    if len(candidate) > 4 * MAX_PATH:  # nothing this long can pass; do not spend IDNA work on it
        raise AddressRefused(raw, f"it is longer than {MAX_ADDRESS} characters")
    local, at, domain = candidate.rpartition("@")
    if not at or not local:
        raise AddressRefused(raw, "it needs the form name@example.com")
    if local.startswith('"'):
        raise AddressRefused(raw, "quoted local parts are not accepted; use the recipient's plain address")
    if not local.isascii():
        raise AddressRefused(
            raw,
            "the part before @ has non-ASCII characters, which Exchange Online cannot be relied on to deliver "
            "through Microsoft Graph; use the recipient's ASCII address",
        )
    if len(local) > MAX_LOCAL_PART:
        raise AddressRefused(raw, f"the part before @ is longer than {MAX_LOCAL_PART} characters")
    if not _DOT_ATOM.match(local):
        raise AddressRefused(
            raw, "the part before @ has a space, a character such as @ < > ( ) , ; : \\ [ ] or a misplaced dot"
        )
    try:
        ascii_host = ascii_domain(domain)
    except ValueError as exc:
        raise AddressRefused(raw, str(exc)) from None
    address = f"{local}@{ascii_host}"
    if len(address) > MAX_ADDRESS:
        raise AddressRefused(raw, f"it is longer than {MAX_ADDRESS} characters")
    return address


def is_deliverable(text: str) -> bool:
    """True when `recipient_address` would accept `text` unchanged in meaning (for checks on stored data)."""
    try:
        recipient_address(text)
    except AddressRefused:
        return False
    return True
