"""The failure notice: what the scanning user and the admin read when a scan can never be delivered."""

from __future__ import annotations

from gateway.core.addresses import is_deliverable
from gateway.core.jobs import Job
from gateway.core.message import Address, OutgoingMessage


def notice_recipients(scanning_user: str | None, admin: str | None) -> tuple[Address, ...]:
    seen: list[str] = []
    for addr in (scanning_user, admin):
        if addr and is_deliverable(addr) and addr.lower() not in {s.lower() for s in seen}:
            seen.append(addr)
    return tuple(Address(a) for a in seen)


def failure_notice(
    job: Job, reason: str, sender: str, recipients: tuple[Address, ...], kept: bool = True
) -> OutgoingMessage:
    """Names the scan, the device, the reason and the fix; carries no attachment (the bytes stay for retry).

    `kept` is False when the scan's files are already gone (a bounce after retention deleted a sent scan's
    bytes): then only scanning again helps, and the notice says so instead of offering a retry.
    """
    if kept:
        after = (
            "The scan is kept for a few days. After fixing the cause, an admin can send it again with:\n"
            f"    scangw jobs retry {job.id}\n"
        )
    else:
        after = "The scan's files were deleted after sending, so it cannot be re-sent: please scan it again.\n"
    names = ", ".join(f.name for f in job.files) or "(no file)"
    body = (
        "A scan could not be delivered.\n\n"
        f"Scan:      {job.subject or names}\n"
        f"Files:     {names}\n"
        f"Device:    {job.device}\n"
        f"To:        {', '.join(job.to)}\n"
        f"Received:  {job.created}\n"
        f"Job:       {job.id}\n\n"
        f"Reason:    {reason}\n\n"
        f"{after}"
    )
    domain = sender.rpartition("@")[2]
    return OutgoingMessage(
        mailbox=sender,
        internet_message_id=f"<notice.{job.id}@{domain}>",
        from_=Address(sender, "Scan gateway"),
        to=recipients,
        cc=(),
        bcc=(),
        reply_to=(),
        subject=f"Scan not delivered: {job.subject or names}",
        body=body,
        body_type="text",
        attachments=(),
        headers=(("X-Scangw-Job", job.id), ("X-Scangw-Notice", "failure")),
    )
