"""Reading the human-readable text of a report: plain-text bounces (qmail, some Office 365 relays), the
"Original message headers" Office 365 writes instead of returning the message, and auto-replies.

A plain-text report has no fields, but its wording is stable: the refused address sits on a line of its own
(`<user@example>:` for qmail, a bare address for Office 365) right before the line with the server's reply
(`Remote host said: 550 5.1.1 ...`, `Remote Server returned '550 5.7.515 ...'`), and the original's headers
follow a marker line. Everything after that marker is the original, never the report: its addresses and
words are not read as refusals.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from email.message import Message

from gateway.core.bounce_fields import STATUS_CODE, UNNAMED, address

#: The line after which a report quotes the original (Office 365, qmail, Exim, Postfix, Outlook quoting).
_ORIGINAL_FOLLOWS = re.compile(
    r"^[ \t>*-]*(?:original message headers|below this line is a copy of the message"
    r"|this is a copy of the message|original message|the original message was received"
    r"|undelivered message headers|returned message)\b.*$",
    re.I | re.M,
)
_ADDRESS_IN_TEXT = re.compile(r"<?(?:mailto:)?([A-Za-z0-9.!#$%&'*+/=?^_`{}~-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,63})>?")
#: qmail's `<user@example>:` line, and a line that is nothing but an address (Office 365's recipient list).
_ADDRESS_LINE = re.compile(r"^\s*<?([^\s<>@]+@[^\s<>@]+?)>?(?:\s*<mailto:[^>]*>)?\s*:?\s*$")

#: Wording only a failure report uses (in the subject or the text). A delay notice says "delayed" or
#: "not delivered yet", an auto-reply says nothing of the kind.
_FAILED_WORDING = re.compile(
    r"delivery has failed to these recipients|couldn't be delivered|could not be delivered|cannot be delivered"
    r"|wasn't able to deliver your message|was not delivered to|permanent error|permanent fatal error"
    r"|message not delivered|undeliverable:|delivery status notification \(failure\)|mail delivery failed"
    r"|undelivered mail returned to sender|failure notice|returned mail: see transcript",
    re.I,
)
_AUTO_REPLY_SUBJECT = re.compile(r"^\s*(?:automatic reply|auto(?:matic)?[- ]?(?:response|reply)|out of office)", re.I)


@dataclass(frozen=True)
class Said:
    """One refusal read from prose: the address (or UNNAMED), the status code, the line that gave it."""

    recipient: str
    status: str
    diagnostic: str


def text_of(part: Message) -> str:
    """A text part's words: decoded, an HTML body's tags dropped and entities resolved (Office 365 writes
    the original's Message-ID as `&lt;scan...&gt;`)."""
    payload = part.get_payload(decode=True)
    if isinstance(payload, bytes):
        charset = part.get_content_charset() or "utf-8"
        try:
            text = payload.decode(charset, "replace")
        except LookupError:
            text = payload.decode("utf-8", "replace")
    else:
        text = str(part.get_payload())
    if part.get_content_subtype() == "html":
        text = re.sub(r"(?is)<(script|style)\b.*?</\1\s*>", "", text)
        text = re.sub(r"(?i)<br\s*/?>|</(?:p|div|tr|pre|h\d|li)\s*>", "\n", text)
        text = html.unescape(re.sub(r"<[^>]*>", "", text))
    return text.replace("\r\n", "\n").replace("\r", "\n")


def split_at_original(text: str) -> tuple[str, str]:
    """(the report's own words, the quoted original's headers and body)."""
    marker = _ORIGINAL_FOLLOWS.search(text)
    return (text[: marker.start()], text[marker.end() :]) if marker else (text, "")


def is_auto_reply(report: Message) -> bool:
    """RFC 3834 and its common predecessors: an out-of-office or "thanks for your mail" answer."""
    submitted = str(report.get("Auto-Submitted", "")).strip().lower()
    precedence = str(report.get("Precedence", "")).strip().lower()
    return (
        submitted.startswith("auto-replied")
        or precedence == "auto_reply"
        or report.get("X-Autoreply") is not None
        or report.get("X-Autorespond") is not None
        or bool(_AUTO_REPLY_SUBJECT.match(str(report.get("Subject", ""))))
    )


def says_failed(subject: str, words: str) -> bool:
    return bool(_FAILED_WORDING.search(subject) or _FAILED_WORDING.search(words))


def _addresses(line: str) -> list[str]:
    found = (address(m.group(1)) for m in _ADDRESS_IN_TEXT.finditer(line))
    return list(dict.fromkeys(a for a in found if a))


def refusals(words: str) -> tuple[list[Said], list[str]]:
    """(refusals paired with a 5.x.x code, addresses listed on their own line without one).

    A code line refuses the addresses on it and those on the lines just above it (up to a blank line);
    a 4.x.x code line (a delay) settles its addresses as not refused. A code line naming nobody counts
    only when no line names anyone (then once, as UNNAMED): it repeats the code of the line above.
    """
    paired: list[Said] = []
    listed: list[str] = []
    pending: list[str] = []
    last: list[int] = []  # the refusals the current paragraph made: a later code line there says more
    for line in words.split("\n"):
        if not line.strip():
            pending, last = [], []
            continue
        code = next((m for m in STATUS_CODE.finditer(line)), None)
        here = _addresses(line)
        if code is None:
            alone = _ADDRESS_LINE.match(line)
            if alone and address(alone.group(1)):
                listed.append(str(address(alone.group(1))))
            pending.extend(here)
            continue
        named = list(dict.fromkeys([*pending, *here]))
        pending = []
        if code.group(1) != "5":
            continue
        diagnostic = " ".join(line.split()).strip("'\"")[:300]
        if not named and last:
            for i in last:  # `Status: 5.1.1` then `Diagnostic-Code: smtp;550 5.1.1 User unknown`
                if len(diagnostic) > len(paired[i].diagnostic):
                    paired[i] = Said(paired[i].recipient, paired[i].status, diagnostic)
            continue
        last = list(range(len(paired), len(paired) + len(named or [UNNAMED])))
        paired.extend(Said(a, code.group(0), diagnostic) for a in named or [UNNAMED])
    named_ones = [s for s in paired if s.recipient != UNNAMED]
    return named_ones or paired[:1], list(dict.fromkeys(listed))


def first_code(words: str, klass: str) -> re.Match[str] | None:
    return next((m for m in STATUS_CODE.finditer(words) if m.group(1) == klass), None)
