"""Reconcile job records that no queue message will ever bring back (part of the hourly sweep).

accept() writes the record before the queue message and takes the record back if the message fails; if taking
it back fails too (the table unreachable a moment later, a process killed in between), a `queued` record is left
with no message: never delivered, never retried, and never removed by retention, which waits for a final state.

Azure queues cannot be searched for a message, so the sign is time: a queued job is picked up within seconds
(the agent marks it `sending` first), and a waiting one carries the time it is due (`not_before`). A job still
`queued` RECONCILE_MINUTES after it was due has lost its message. With its bytes it is queued again (a message
too many is harmless: the record, not the message, is the truth); without them it can never be delivered and
its record is removed.

A `sending` job is the other case: the Function host moves a message to `scan-jobs-poison` after
`maxDequeueCount` failed runs (a storage outage, a crash), and if the claim was written first the record says
`sending` with no message to bring it back. A send in progress writes its progress at every step, and no Function
invocation outlives host.json's `functionTimeout`; a `sending` record untouched for STALLED_SENDING_MINUTES is
queued again, bytes or not (the device heard 250: the agent, not the sweep, decides it cannot be sent and tells
the sender). A live worker that was merely slow loses the next etag race and stops; the exactly-once path resumes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gateway.core.jobs import Job, JobState, parse_iso
from gateway.core.ports import Conflict
from gateway.delivery.requeue import requeue
from gateway.services import Services

log = logging.getLogger("scangw.retention")

#: How long after it was due a queued job may go unclaimed before the sweep takes it for lost.
RECONCILE_MINUTES = 15.0
#: How long a `sending` job may go without a write before the sweep takes it for abandoned: twice host.json's
#: functionTimeout (30 minutes), after which no invocation can still be running it.
STALLED_SENDING_MINUTES = 60.0


@dataclass
class Reconciled:
    requeued: int = 0
    removed: int = 0


def overdue(job: Job, now: datetime) -> bool:
    if job.state == JobState.SENDING:
        return now.timestamp() - parse_iso(job.updated).timestamp() >= STALLED_SENDING_MINUTES * 60
    due = max(parse_iso(job.updated).timestamp(), float(job.progress.get("not_before") or 0))
    return job.state == JobState.QUEUED and now.timestamp() - due >= RECONCILE_MINUTES * 60


def _give_up(services: Services, job: Job, now: datetime) -> dict[str, Any]:
    """A `sending` job past SCANGW_MAX_ATTEMPTS or SCANGW_MAX_AGE_HOURS goes back marked `failing`, so the agent
    sends the failure notice and ends it `failed` instead of running into the poison queue every hour."""
    settings = services.settings
    if job.state != JobState.SENDING or (
        job.attempts < settings.max_attempts and job.age_hours(now) < settings.max_age_hours
    ):
        return {}
    reason = (
        f"Gave up after {job.attempts} attempts over {job.age_hours(now):.1f} h: each delivery run stopped before"
        f" it finished, and its queue message was set aside to scan-jobs-poison. Last error: {job.error or 'none'}"
    )
    return {"progress": {**job.progress, "failing": reason}}


async def reconcile(services: Services, jobs: list[Job], now: datetime) -> Reconciled:
    done = Reconciled()
    for job in jobs:
        if not overdue(job, now):
            continue
        found = await services.jobs.get_record(job.id)  # read again: a worker may have claimed it meanwhile
        if found is None or not overdue(found[0], now):
            continue
        job, etag = found
        if job.state == JobState.SENDING or await services.spool.blobs.list(f"{job.id}/"):
            try:
                await requeue(services, job, etag, **_give_up(services, job, now))
            except Conflict:
                continue  # claimed between the read and the write: it is moving again
            done.requeued += 1
            log.warning(
                "event=sweep.requeued job=%s %s with no queue message since %s",
                job.id,
                job.state.value,
                job.updated,
            )
        else:
            await services.jobs.delete(job.id)
            done.removed += 1
            log.warning("event=sweep.removed job=%s queued with no queue message and no bytes", job.id)
    return done
