"""Housekeeping inside the sender mailboxes, run with retention: bounces back to their jobs, orphan drafts
and abandoned upload sessions away.

- Bounces. Graph's 202 is not delivery: a recipient refused later comes back as a non-delivery report in the
  sender mailbox's Inbox, classed REPORT.IPM.Note.NDR when it is RFC 3464 in shape, IPM.Note when it is not
  (see REPORT_CLASSES). Reports newer than the oldest recently sent job are read (only the head of their
  MIME), matched to a job by the original Message-ID, and the job is re-queued with `failing` set, so the
  delivery agent sends the failure notice through its usual resumable path and ends the job `failed`. A job
  is only ever moved from `sent`, so reading the same report twice changes nothing.
- Orphan drafts. A create whose reply was lost leaves a draft the job never recorded; a refused draft is
  superseded by the download-link version. A draft carrying one of our Message-IDs whose job is finished
  (or gone) and that is over an hour old is never going to be sent: delete it.
- Upload sessions. A failed job may still hold an upload URL; cancel it (DELETE, no token) so Exchange
  drops the half-uploaded attachment, and forget it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol

import httpx

from gateway.core.bounce import BOUNCED, SENT_FROM, job_id_of, read_bounce
from gateway.core.jobs import Job, JobState, parse_iso
from gateway.core.ports import Conflict
from gateway.delivery.graph.failures import GraphCallError
from gateway.delivery.graph.progress import UPLOAD
from gateway.delivery.requeue import requeue
from gateway.services import Services

if TYPE_CHECKING:  # graph_api pulls in msgraph; the embedded outbox setup never needs it
    from gateway.delivery.graph.api import Listed

log = logging.getLogger("scangw.mailbox")

#: Reports arrive within minutes; a receiving server may retry for up to two days before giving up.
BOUNCE_WINDOW_HOURS = 50.0
#: A draft younger than this may belong to a delivery in progress (or a send Exchange is still processing).
DRAFT_AGE_HOURS = 1.0
#: The per-recipient status sits near the top of a report; the returned original (maybe 100 MB) is not read.
REPORT_HEAD_BYTES = 256 * 1024
#: Message classes (PR_MESSAGE_CLASS, compared case-insensitively) whose items may be failure reports.
#: Exchange's MIME reader classes a top-level RFC 3464 report by its most severe Action ([MS-OXCMAIL]
#: 2.2.3.7.1): `failed` gives REPORT.IPM.Note.NDR, `delayed`/`delivered`/`relayed`/`expanded` give the
#: REPORT.IPM.Note.*DR classes, never read here. Any other shape (plain text, `multipart/mixed` with the
#: status or the original inside, auto-replies from outside) arrives as plain IPM.Note: read it too, and let
#: the reader decide from what it says. Exchange's own out-of-office replies (IPM.Note.Rules.OofTemplate.*)
#: and read receipts (REPORT.IPM.Note.IPNRN/IPNNRN) are never reports.
REPORT_CLASSES = frozenset({"report.ipm.note.ndr", "ipm.note"})


class MailboxApi(Protocol):
    async def folder_since(
        self, mailbox: str, folder: str, field: str, op: str, moment: float, with_class: bool = False
    ) -> list[Listed]: ...

    async def message_head(self, mailbox: str, message_id: str, limit: int) -> bytes: ...

    async def delete(self, mailbox: str, message_id: str) -> None: ...


@dataclass
class MailboxReport:
    bounced: int = 0
    drafts_deleted: int = 0
    uploads_cancelled: int = 0


def _last_change(job: Job) -> float:
    """When the job last changed: for a `sent` job, when it was sent; for a `failed` one, when it failed."""
    return parse_iso(job.updated).timestamp()


async def _bounce(services: Services, job: Job, reason: str, refused: list[str]) -> bool:
    """Move a sent job back to the queue to fail it with `reason`; False when it is no longer `sent`."""
    found = await services.jobs.get_record(job.id)
    if found is None or found[0].state != JobState.SENT:
        return False
    current, etag = found
    progress = {**current.progress, "failing": reason, BOUNCED: refused}
    try:  # a crash half-way leaves the job `sent`: the next sweep reads the report again
        await requeue(services, current, etag, error=reason, progress=progress)
    except Conflict:
        return False  # someone else moved it; the next sweep looks again
    log.warning("job=%s bounced: %s", job.id, reason)
    return True


async def read_bounces(services: Services, api: MailboxApi, jobs: list[Job], now: float) -> int:
    window_start = now - BOUNCE_WINDOW_HOURS * 3600
    sent = {
        j.id: j
        for j in jobs
        if j.state == JobState.SENT and j.progress.get(SENT_FROM) and _last_change(j) > window_start
    }
    oldest: dict[str, float] = {}
    for job in sent.values():
        mailbox = str(job.progress[SENT_FROM]).lower()
        oldest[mailbox] = min(oldest.get(mailbox, now), _last_change(job))
    count = 0
    for mailbox, since in sorted(oldest.items()):
        try:
            # A report cannot predate its message; the minute of slack covers clock skew with Exchange.
            inbox = await api.folder_since(mailbox, "inbox", "receivedDateTime", "ge", since - 60, with_class=True)
            for item in inbox:
                if item.message_class.lower() not in REPORT_CLASSES or job_id_of(item.internet_message_id):
                    continue  # our own message (a copy, a notice) is never a report about itself
                bounce = read_bounce(await api.message_head(mailbox, item.id, REPORT_HEAD_BYTES))
                target = sent.get(bounce.job_id) if bounce else None
                if bounce is None or target is None:
                    continue
                if await _bounce(services, target, bounce.reason(), [r.recipient for r in bounce.refused]):
                    count += 1
                    del sent[target.id]
        except GraphCallError as exc:
            log.warning("mailbox=%s bounces not read this time: %s", mailbox, exc)
    return count


async def delete_orphan_drafts(api: MailboxApi, jobs: list[Job], mailboxes: set[str], now: float) -> int:
    by_id = {j.id: j for j in jobs}
    cutoff = now - DRAFT_AGE_HOURS * 3600
    count = 0
    for mailbox in sorted(mailboxes):
        try:
            for draft in await api.folder_since(mailbox, "drafts", "createdDateTime", "lt", cutoff):
                job_id = job_id_of(draft.internet_message_id)
                if job_id is None:
                    continue  # not ours: a person's draft in a shared mailbox
                job = by_id.get(job_id)
                if job is not None and not (job.state.final and _last_change(job) < cutoff):
                    continue  # its delivery may still record, attach to or send it
                await api.delete(mailbox, draft.id)
                state = job.state.value if job else "gone"
                log.info("mailbox=%s deleted orphan draft of job=%s (%s)", mailbox, job_id, state)
                count += 1
        except GraphCallError as exc:
            log.warning("mailbox=%s drafts not swept this time: %s", mailbox, exc)
    return count


async def cancel_stale_uploads(services: Services, jobs: list[Job], http: httpx.AsyncClient, now: float) -> int:
    cutoff = now - DRAFT_AGE_HOURS * 3600
    count = 0
    for job in jobs:
        delivery = dict(job.progress.get("delivery") or {})
        url = (delivery.get(UPLOAD) or {}).get("url")
        if job.state != JobState.FAILED or not url or _last_change(job) > cutoff:
            continue
        try:
            await http.delete(url)  # the URL carries its own token; 404 means Exchange already dropped it
        except httpx.HTTPError as exc:
            log.warning("job=%s could not cancel its upload session yet: %s", job.id, exc)
            continue
        found = await services.jobs.get_record(job.id)
        if found is None:
            continue
        current, etag = found
        kept = {**dict(current.progress.get("delivery") or {}), UPLOAD: None}
        try:
            await services.jobs.save(current, etag, progress={**current.progress, "delivery": kept})
        except Conflict:
            continue
        count += 1
    return count


async def sweep_mailboxes(
    services: Services, api: MailboxApi, http: httpx.AsyncClient, now: datetime | None = None
) -> MailboxReport:
    """One pass; a mailbox Graph refuses (throttled, access removed) is logged and skipped until next time."""
    # The limits (4 concurrent, Retry-After) apply: these calls go through the same GraphApi as deliveries.
    moment = (now or datetime.now(UTC)).timestamp()
    jobs = await services.jobs.list()
    mailboxes = {
        m.lower() for m in [services.settings.sender, *(d.sender for d in await services.registry.list())] if m
    }
    mailboxes |= {str(j.progress[SENT_FROM]).lower() for j in jobs if j.progress.get(SENT_FROM)}
    report = MailboxReport()
    report.bounced = await read_bounces(services, api, jobs, moment)
    report.drafts_deleted = await delete_orphan_drafts(api, jobs, mailboxes, moment)
    report.uploads_cancelled = await cancel_stale_uploads(services, jobs, http, moment)
    log.info(
        "mailbox sweep bounced=%d drafts_deleted=%d uploads_cancelled=%d",
        report.bounced,
        report.drafts_deleted,
        report.uploads_cancelled,
    )
    return report
