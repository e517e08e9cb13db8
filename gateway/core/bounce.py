"""Read a non-delivery report (RFC 3464 `multipart/report; report-type=delivery-status`) that came back to
the sender mailbox, and tell which of our messages bounced, for which recipients, and why.

Graph's 202 only means Exchange accepted the send; a recipient refused later comes back as such a report.
It names the original by Message-ID (in the returned message or its headers), and each refused recipient
in a `message/delivery-status` block (Final-Recipient, Action: failed, Status, Diagnostic-Code). Reports
are read from the head of their MIME, so a returned 100 MB original never has to be read whole.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import Message
from email.parser import HeaderParser

#: Job progress keys: the mailbox a sent job went out from (where its bounces arrive), whom a failure notice
#: goes to once the parsed message is gone, and the recipients a bounce named.
SENT_FROM, NOTIFY, BOUNCED = "sent_from", "notify", "bounced"

#: Our Message-IDs: <scan.{job}@domain>, and <scan.{job}.links@domain> for the download-link version.
_OURS = re.compile(r"<scan\.([0-9a-f]{24})(?:\.links)?@[^<>\s]+>", re.IGNORECASE)


@dataclass(frozen=True)
class Refusal:
    recipient: str
    status: str
    diagnostic: str


@dataclass(frozen=True)
class Bounce:
    job_id: str
    refused: tuple[Refusal, ...]

    def reason(self) -> str:
        """The job's failure reason: who refused the scan and what the receiving server said, with a remedy."""
        parts = []
        for r in self.refused:
            said = f": {r.diagnostic}" if r.diagnostic else ""
            parts.append(f"{r.recipient} (status {r.status or 'unknown'}{said})")
        who = "; ".join(parts) or "a recipient"
        return (
            f"Bounced: Exchange accepted the message but it was not delivered to {who}. "
            "Fix: check the address for typos, or ask the recipient's mail administrator why it was refused, "
            "then scan again."
        )


def job_id_of(message_id: str) -> str | None:
    match = _OURS.search(message_id or "")
    return match.group(1).lower() if match else None


def _text(part: Message) -> str:
    payload = part.get_payload(decode=True)
    if isinstance(payload, bytes):
        return payload.decode("utf-8", "replace")
    return str(part.get_payload())


def _status_blocks(part: Message) -> list[Message]:
    """The header blocks of a message/delivery-status part (Python parses them as sub-messages)."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return [p for p in payload if isinstance(p, Message)]
    text = payload if isinstance(payload, str) else ""
    return [
        HeaderParser().parsestr(block.strip() + "\n") for block in re.split(r"\r?\n\s*\r?\n", text) if block.strip()
    ]


def _address(field: str | None) -> str:
    value = str(field or "")
    return value.split(";", 1)[1].strip() if ";" in value else value.strip()


def _original_id(report: Message) -> str | None:
    for part in report.walk():
        kind = part.get_content_type()
        if kind == "message/rfc822":
            inner = part.get_payload()
            if isinstance(inner, list) and inner and isinstance(inner[0], Message):
                found = job_id_of(str(inner[0].get("Message-ID", "")))
                if found:
                    return found
        elif kind in ("text/rfc822-headers", "message/rfc822-headers"):
            headers = HeaderParser().parsestr(_text(part))
            found = job_id_of(str(headers.get("Message-ID", "")))
            if found:
                return found
    for name in ("In-Reply-To", "References"):
        found = job_id_of(str(report.get(name, "")))
        if found:
            return found
    return None


_FINAL_RECIPIENT = re.compile(r"^Final-Recipient:\s*(?:rfc822\s*;)?\s*<?([^\s<>;]+@[^\s<>;]+)>?", re.I | re.M)
_STATUS = re.compile(r"^Status:\s*([245]\.\d{1,3}\.\d{1,3})", re.I | re.M)
_DIAGNOSTIC = re.compile(r"^Diagnostic-Code:\s*(?:smtp\s*;)?\s*(.+)$", re.I | re.M)


def _from_text(report: Message) -> Bounce | None:
    """A report Exchange says is a non-delivery report (message class REPORT.IPM.Note.NDR) whose MIME is not
    a well-formed multipart/report: look for our Message-ID and the delivery-status fields in its text."""
    texts = [_text(part) for part in report.walk() if not part.is_multipart()]
    texts.append("\n".join(f"{k}: {v}" for k, v in report.items()))
    whole = html.unescape("\n".join(texts))  # an HTML body writes the Message-ID as &lt;scan...&gt;
    job_id = job_id_of(whole)
    if job_id is None:
        return None
    actions = {a.lower() for a in re.findall(r"^Action:\s*(\w+)", whole, re.I | re.M)}
    if actions and "failed" not in actions:
        return None  # delayed or delivered: nothing failed yet
    recipients = list(dict.fromkeys(m.lower() for m in _FINAL_RECIPIENT.findall(whole)))
    status = next(iter(_STATUS.findall(whole)), "")
    diagnostic = " ".join(next(iter(_DIAGNOSTIC.findall(whole)), "").split())[:300]
    refused = [Refusal(r, status, diagnostic) for r in recipients] or [Refusal("a recipient", status, diagnostic)]
    return Bounce(job_id, tuple(refused))


def read_bounce(head: bytes, is_ndr: bool = False) -> Bounce | None:
    """The bounce `head` (the start of a report's MIME) describes, or None if it is not one of ours.

    Only recipients with `Action: failed` count: a `delayed` report is Exchange still trying. `is_ndr` says
    the mailbox classed the item as a non-delivery report: then a report that is not RFC 3464 in shape is
    still read, from its text.
    """
    report = message_from_bytes(head, policy=policy.compat32)
    if report.get_content_type() != "multipart/report":
        return _from_text(report) if is_ndr else None
    job_id = _original_id(report)
    if job_id is None:
        return None
    refused: list[Refusal] = []
    for part in report.walk():
        if part.get_content_type() != "message/delivery-status":
            continue
        for block in _status_blocks(part):
            recipient = _address(block.get("Final-Recipient") or block.get("Original-Recipient"))
            if not recipient or str(block.get("Action", "")).strip().lower() != "failed":
                continue
            diagnostic = " ".join(_address(block.get("Diagnostic-Code")).split())
            refused.append(Refusal(recipient, str(block.get("Status", "")).strip(), diagnostic[:300]))
    return Bounce(job_id, tuple(refused)) if refused else None
