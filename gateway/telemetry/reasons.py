"""A failed scan's reason as a short stable class (`scangw.scans.failed` dimension `reason`) and what the admin
does about it. The delivery agent writes full sentences; dashboards and alerts need a handful of words that
never change. The workbook shows the remedy next to each class (infra/app/kql/failures-by-reason.kql carries
the same table; tests keep the two equal)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: class → remedy, in the order the classes are tried.
REMEDIES: dict[str, str] = {
    "bounced": "Exchange accepted the scan, then returned a non-delivery report: check the recipient address.",
    "gave_up": "Delivery kept failing for SCANGW_MAX_ATTEMPTS / SCANGW_MAX_AGE_HOURS: see the job's last error (scangw jobs show ID), fix it, then scangw jobs retry ID.",
    "too_large": "Raise the sender mailbox's MaxSendSize (Set-Mailbox -MaxSendSize 150MB) or set SCANGW_LINK_HOURS to send large scans as links.",
    "permission": "Grant Application Mail.Send and Mail.ReadWrite for the sender mailbox: infra/scripts/grant-mailbox-access.ps1 -Mailbox <mailbox>.",
    "mailbox": "The sender mailbox does not exist or cannot be used through Graph: check the device's --sender or SCANGW_SENDER.",
    "quota": "The sender mailbox is over its quota: empty Sent Items and Deleted Items or raise the quota.",
    "recipients": "Exchange rejected the recipients: check the addresses the device sends to.",
    "identity": "The managed identity could not get or use a Graph token: check AZURE_CLIENT_ID and SCANGW_CLOUD (scangw doctor).",
    "setup": "No sender mailbox: set SCANGW_SENDER or the device's --sender.",
    "storage": "The scan's bytes were missing or damaged in storage: send the scan again.",
    "rejected": "Graph rejected the message itself: report it with the request-id (scangw jobs show ID).",
    "other": "See the job's error: scangw jobs show ID.",
}

_PHRASES: list[tuple[str, tuple[str, ...]]] = [
    ("gave_up", ("gave up after",)),
    ("too_large", ("too large for mailbox", "maxsendsize", "cannot be attached")),
    ("permission", ("denied the gateway access", "lacks the graph permission", "may not send as")),
    ("quota", ("over its storage quota",)),
    ("mailbox", ("does not exist", "cannot be used through graph")),
    ("recipients", ("rejected the recipients",)),
    ("identity", ("token", "identity")),
    ("setup", ("no sender mailbox",)),
    ("storage", ("missing from storage", "shorter than its recorded size", "bytes, not")),
    ("rejected", ("graph rejected the message",)),
]


def failure_class(reason: str, progress: Mapping[str, Any] | None = None) -> str:
    """One of REMEDIES' keys for a failed job's reason sentence (and its progress, which records a bounce)."""
    if progress and progress.get("bounced"):
        return "bounced"
    text = reason.lower()
    for name, phrases in _PHRASES:
        if any(p in text for p in phrases):
            return name
    return "other"
