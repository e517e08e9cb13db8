"""Retention: delete scan bytes and job records once their time is up (timer trigger, `scangw sweep`, and
hourly in `scangw worker`), after the sender mailboxes' housekeeping (bounces, orphan drafts)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from gateway.config import Settings
from gateway.core.jobs import JobState, parse_iso
from gateway.core.links import links_pending
from gateway.core.ports import TemporaryFiles
from gateway.delivery.mailbox_sweep import MailboxReport
from gateway.delivery.partial import sweep_partials
from gateway.delivery.reconcile import reconcile
from gateway.services import Services
from gateway.status import record_queue_age

#: The Graph transport's mailbox housekeeping (absent for the .eml outbox).
Housekeeper = Callable[[Services, datetime], Awaitable[MailboxReport]]

log = logging.getLogger("scangw.retention")

#: Blobs with no job record are an intake that never finished; give it ample time before sweeping.
ORPHAN_HOURS = 24.0
#: A temporary file of the embedded spool untouched this long was left by a process killed mid-write.
STALE_TEMPORARY_HOURS = 1.0


@dataclass
class SweepReport:
    bytes_deleted: int = 0
    records_deleted: int = 0
    orphans_deleted: int = 0
    temporary_deleted: int = 0
    #: `queued` records no queue message would bring back (gateway.delivery.reconcile)
    requeued: int = 0
    stale_removed: int = 0
    mail: MailboxReport | None = None


def _job_created_ms(job_id: str) -> int | None:
    try:
        return int(job_id[:12], 16)
    except ValueError:
        return None


async def mailbox_housekeeper(transport: object, settings: Settings) -> tuple[Housekeeper | None, str | None]:
    """The transport's mailbox housekeeping (bounces, orphan drafts, stale upload sessions) and, when no identity
    gives a Graph token here, None with the one line that says what to fix: `scangw sweep`, the worker and the
    timer trigger ask this once per sweep, instead of one long credential report per Graph call. The outbox
    has no mailboxes: (None, None)."""
    housekeeper: Housekeeper | None = getattr(transport, "sweep_mailboxes", None)
    if housekeeper is None:
        return None, None
    from gateway.delivery.graph.identity import identity_problem  # Graph and azure-identity only in Graph mode

    problem = await identity_problem(settings)
    return (None, problem) if problem else (housekeeper, None)


async def sweep(services: Services, now: datetime | None = None, housekeeper: Housekeeper | None = None) -> SweepReport:
    now = now or datetime.now(UTC)
    settings = services.settings
    report = SweepReport()
    if housekeeper is not None:
        # First: a bounce moves its job back to the queue, so the records below see it as not finished.
        report.mail = await housekeeper(services, now)
    jobs = {job.id: job for job in await services.jobs.list()}
    for job in jobs.values():
        if links_pending(job.progress, now.timestamp()):
            continue  # recipients were sent download links to these bytes; keep them (and the record) until expiry
        age_h = (now - parse_iso(job.updated)).total_seconds() / 3600
        keep_bytes_h = {
            JobState.SENT: settings.keep_sent_hours,
            JobState.FAILED: settings.keep_failed_days * 24,
        }.get(job.state)
        if job.state.final and age_h >= settings.keep_jobs_days * 24:
            await services.spool.blobs.delete_prefix(f"{job.id}/")
            await services.jobs.delete(job.id)
            report.records_deleted += 1
        elif keep_bytes_h is not None and age_h >= keep_bytes_h:
            if await services.spool.blobs.delete_prefix(f"{job.id}/"):
                report.bytes_deleted += 1
    record_queue_age(list(jobs.values()), now.timestamp())
    lost = await reconcile(services, list(jobs.values()), now)
    report.requeued, report.stale_removed = lost.requeued, lost.removed
    await sweep_partials(services.spool.blobs, now.timestamp(), max(settings.partial_wait_minutes / 60 * 4, 24.0))
    prefixes = {name.split("/", 1)[0] for name in await services.spool.blobs.list("")}
    for prefix in prefixes - set(jobs):
        created = _job_created_ms(prefix)
        if created is not None and (now.timestamp() * 1000 - created) / 3_600_000 >= ORPHAN_HOURS:
            await services.spool.blobs.delete_prefix(f"{prefix}/")
            report.orphans_deleted += 1
    if isinstance(services.spool.blobs, TemporaryFiles):
        report.temporary_deleted = await services.spool.blobs.sweep_incoming(STALE_TEMPORARY_HOURS * 3600)
    log.info(
        "retention bytes_deleted=%d records_deleted=%d orphans_deleted=%d temporary_deleted=%d requeued=%d"
        " stale_removed=%d",
        report.bytes_deleted,
        report.records_deleted,
        report.orphans_deleted,
        report.temporary_deleted,
        report.requeued,
        report.stale_removed,
    )
    return report
