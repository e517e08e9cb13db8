"""Read a non-delivery report that came back to the sender mailbox, and tell which of our messages
bounced, for which recipients, and why.

Graph's 202 only means Exchange accepted the send; a recipient refused later comes back as a report. Real
reports come in several shapes, all read here:

- RFC 3464 `multipart/report` (Exchange Online, Outlook.com, Postfix, Gmail, ...): the original's
  Message-ID in the returned message or its headers part, each recipient in a `message/delivery-status`
  block. Office 365 sometimes returns neither: the original's headers are then prose ("Original message
  headers:") in the text part.
- `message/delivery-status` inside `multipart/mixed` (OpenSMTPD and others): read the same way.
- Exchange 2003's `multipart/mixed` with the original attached as `message/rfc822`.
- Plain text (qmail, some Office 365 relays): the address and the 5.x.x code where those write them.

Only a report that says a recipient failed is a bounce: a failed Action (or, without Actions, a 5.x.x
Status), a 5.x.x code in the report's words, or the wording only a failure report uses. A delay notice
(`Action: delayed`, a 4.x.x code) and an auto-reply (out of office; it names our Message-ID in
In-Reply-To) are not. Reports are read from the head of their MIME, so a returned 100 MB original is never
read whole.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import Message
from email.parser import HeaderParser

from gateway.core.bounce_fields import UNNAMED, entries
from gateway.core.bounce_prose import (
    first_code,
    is_auto_reply,
    refusals,
    says_failed,
    split_at_original,
    text_of,
)

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


def _parts(report: Message) -> tuple[list[Message], list[Message]]:
    """(the report's own leaf and delivery-status parts, the returned originals), never descending into a
    returned original: a bounce of a bounce must not be read as its own report."""
    own: list[Message] = []
    originals: list[Message] = []

    def visit(part: Message) -> None:
        kind = part.get_content_type()
        if kind in ("message/rfc822", "message/global"):
            originals.append(part)
        elif kind.startswith("message/") and "delivery-status" in kind:
            own.append(part)
        elif part.is_multipart():
            for sub in part.get_payload():
                if isinstance(sub, Message):
                    visit(sub)
        else:
            own.append(part)

    visit(report)
    return own, originals


_MESSAGE_ID_LINE = re.compile(r"^[ \t>]*Message-ID:[ \t]*\n?[ \t]*(<[^<>\s]+>)", re.I | re.M)


def _original_job(report: Message, own: list[Message], originals: list[Message], prose: str) -> str | None:
    """Our job the report is about: the returned original's Message-ID, its headers part, the headers
    quoted in the prose, then the report's own In-Reply-To/References."""
    for part in originals:
        inner = part.get_payload()
        if isinstance(inner, list) and inner and isinstance(inner[0], Message):
            found = job_id_of(str(inner[0].get("Message-ID", "")))
            if found:
                return found
    for part in own:
        if part.get_content_type() in ("text/rfc822-headers", "message/rfc822-headers"):
            found = job_id_of(str(HeaderParser().parsestr(text_of(part)).get("Message-ID", "")))
            if found:
                return found
    for match in _MESSAGE_ID_LINE.finditer(prose):
        found = job_id_of(match.group(1))
        if found:
            return found
    for name in ("In-Reply-To", "References"):
        found = job_id_of(str(report.get(name, "")))
        if found:
            return found
    return None


def _from_prose(report: Message, words: str) -> list[Refusal]:
    """Refusals a report without delivery-status fields states in its words (before the quoted original)."""
    paired, listed = refusals(words)
    if paired:
        return list({r.recipient: Refusal(r.recipient, r.status, r.diagnostic) for r in paired}.values())
    if is_auto_reply(report):
        return []  # an auto-reply counts only when it pairs an address with a 5.x.x code, as a relay's NDR does
    code = first_code(words, "5")
    if code is None and not says_failed(str(report.get("Subject", "")), words):
        return []
    if code is None and first_code(words, "4") is not None:
        return []  # wording aside, the only code it gives says "try again later"
    status = code.group(0) if code else ""
    line = words[words.rfind("\n", 0, code.start()) + 1 : words.find("\n", code.end())] if code else ""
    diagnostic = " ".join(line.split()).strip("'\"")[:300]
    return [Refusal(r, status, diagnostic) for r in listed or [UNNAMED]]


def read_bounce(head: bytes) -> Bounce | None:
    """The bounce `head` (the start of a message's MIME) describes, or None if it is not a failure report
    about one of ours. Any message class may be passed: what decides is what the message says."""
    report = message_from_bytes(head, policy=policy.compat32)
    own, originals = _parts(report)
    texts = [text_of(p) for p in own if p.get_content_maintype() == "text" and "headers" not in p.get_content_type()]
    prose = "\n\n".join(texts)
    job_id = _original_job(report, own, originals, prose)
    if job_id is None:
        return None
    fields = entries(own)
    if fields:  # the fields are authoritative: a delay or a delivery is never a refusal
        refused = [Refusal(e.recipient, e.status, e.diagnostic) for e in fields if e.refused]
    else:
        words = "\n\n".join(split_at_original(t)[0] for t in texts)
        refused = _from_prose(report, words)
    return Bounce(job_id, tuple(refused)) if refused else None
