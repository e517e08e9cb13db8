"""The per-recipient fields of an RFC 3464 `message/delivery-status` part, wherever in a report it sits.

Exchange Online and Outlook.com put it inside `multipart/report`; OpenSMTPD and others put it inside
`multipart/mixed`. Either way the part's body is one block of per-message fields, then one block per
recipient (Final-Recipient, Action, Status, Diagnostic-Code). The fields are authoritative: a report with
delivery-status blocks is read from them alone, so a `delayed` or `delivered` recipient is never a refusal.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.message import Message
from email.parser import HeaderParser

#: An enhanced status code (RFC 3463): class 2, 4 or 5, then subject and detail.
STATUS_CODE = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")

#: A mailbox we would accept as a recipient's address: no spaces, pipes, routes or quotes; a dotted domain.
_ADDRESS = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{}~-]+@(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z]{2,63}")

#: Shown for a refused recipient whose report does not name a usable address (a pipe, a bare `@mx` route).
UNNAMED = "a recipient"


@dataclass(frozen=True)
class Entry:
    """One recipient's block: what the reporting server did with the message for it."""

    recipient: str
    action: str
    status: str
    diagnostic: str

    @property
    def refused(self) -> bool:
        """Failed for good: `Action: failed`, or (no Action at all) a permanent 5.x.x status."""
        if self.action:
            return self.action == "failed"
        return self.status.startswith("5.")


def address(value: str) -> str | None:
    """The address `value` is, lower-cased, or None when it is not a plain mailbox address.

    A report may name a recipient as `rfc822;|/usr/bin/procmail`, `@mx1.example:user@example` or
    `"user"@`; passing such text on as an address would put it in a failure notice and the job record.
    """
    text = value.strip().strip("<>").strip().strip("'\"`")  # Exchange 2003 writes 'user@example'
    match = _ADDRESS.fullmatch(text)
    return text.lower() if match else None


def typed_value(field: str | None) -> str:
    """The value of an RFC 3464 typed field (`rfc822; user@example`, `smtp; 550 ...`), unfolded."""
    value = " ".join(str(field or "").split())
    return value.split(";", 1)[1].strip() if ";" in value else value


def split_status(raw: str | None) -> tuple[str, str]:
    """`5.0.0 (permanent failure)` -> ("5.0.0", "permanent failure"): the code alone, the words aside."""
    text = " ".join(str(raw or "").split())
    match = STATUS_CODE.match(text)
    if not match:
        return "", text
    words = text[match.end() :].strip().strip("()").strip()
    return match.group(0), words


def _blocks(part: Message) -> list[Message]:
    """The field blocks of a delivery-status part (Python parses each block as a header-only message)."""
    payload = part.get_payload()
    if not isinstance(payload, list):
        return _split(payload if isinstance(payload, str) else "")
    found: list[Message] = []
    for sub in payload:
        if isinstance(sub, Message):
            found.append(sub)
            rest = sub.get_payload()  # message/global-delivery-status parses as one message: the rest is its body
            if isinstance(rest, str):
                found.extend(_split(rest))
    return found


def _split(text: str) -> list[Message]:
    return [
        HeaderParser().parsestr(block.strip() + "\n") for block in re.split(r"\r?\n\s*\r?\n", text) if block.strip()
    ]


def _entry(block: Message) -> Entry | None:
    final, original = block.get("Final-Recipient"), block.get("Original-Recipient")
    if final is None and original is None:
        return None  # the per-message block (Reporting-MTA, Arrival-Date, ...)
    named = address(typed_value(final)) or address(typed_value(original))
    status, words = split_status(block.get("Status"))
    diagnostic = typed_value(block.get("Diagnostic-Code"))
    if words and words.lower() not in diagnostic.lower():
        diagnostic = f"{diagnostic} ({words})" if diagnostic else words
    action = typed_value(block.get("Action")).lower().split(" ", 1)[0]
    return Entry(named or UNNAMED, action, status, diagnostic[:300])


def entries(parts: list[Message]) -> list[Entry]:
    """Every recipient block of every delivery-status part in `parts` (the report's own parts)."""
    found: list[Entry] = []
    for part in parts:
        if part.get_content_type() not in ("message/delivery-status", "message/global-delivery-status"):
            continue
        found.extend(e for e in map(_entry, _blocks(part)) if e is not None)
    return found
