"""Reconcile job records that no queue message will ever bring back (part of the hourly sweep).

accept() writes the record before the queue message and takes the record back if the message fails; if taking
it back fails too (the table unreachable a moment later, a process killed in between), a `queued` record is left
with no message: never delivered, never retried, and never removed by retention, which waits for a final state.

Azure queues cannot be searched for a message, so the sign is time: a queued job is picked up within seconds
(the agent marks it `sending` first), and a waiting one carries the time it is due (`not_before`). A job still
`queued` RECONCILE_MINUTES after it was due has lost its message. With its bytes it is queued again (a message
too many is harmless: the record, not the message, is the truth); without them it can never be delivered and
its record is removed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from gateway.core.jobs import Job, JobState, parse_iso
from gateway.core.ports import Conflict
from gateway.delivery.requeue import requeue
from gateway.services import Services

log = logging.getLogger("scangw.retention")

#: How long after it was due a queued job may go unclaimed before the sweep takes it for lost.
RECONCILE_MINUTES = 15.0


@dataclass
class Reconciled:
    requeued: int = 0
    removed: int = 0


def overdue(job: Job, now: datetime) -> bool:
    due = max(parse_iso(job.updated).timestamp(), float(job.progress.get("not_before") or 0))
    return job.state == JobState.QUEUED and now.timestamp() - due >= RECONCILE_MINUTES * 60


async def reconcile(services: Services, jobs: list[Job], now: datetime) -> Reconciled:
    done = Reconciled()
    for job in jobs:
        if not overdue(job, now):
            continue
        found = await services.jobs.get_record(job.id)  # read again: a worker may have claimed it meanwhile
        if found is None or not overdue(found[0], now):
            continue
        job, etag = found
        if await services.spool.blobs.list(f"{job.id}/"):
            try:
                await requeue(services, job, etag)
            except Conflict:
                continue  # claimed between the read and the write: it is moving again
            done.requeued += 1
            log.warning("event=sweep.requeued job=%s queued with no queue message since %s", job.id, job.updated)
        else:
            await services.jobs.delete(job.id)
            done.removed += 1
            log.warning("event=sweep.removed job=%s queued with no queue message and no bytes", job.id)
    return done
