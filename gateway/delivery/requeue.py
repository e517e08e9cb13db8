"""`scangw jobs retry`: put a failed job back in the queue, resuming from its recorded progress."""

from __future__ import annotations

from typing import Any

from gateway.core.errors import MalformedInput
from gateway.core.jobs import Job, JobState, encode_queue_message
from gateway.services import Services

#: Seconds before the re-queued message is due: time for the job record to say `queued` first.
REQUEUE_DELAY = 2.0


async def retry_job(services: Services, job_id: str, now: bool = False) -> Job:
    """A failed job goes back in the queue; with `now`, so does a queued job waiting out its backoff (say
    after the admin fixed the identity), and neither waits for a delay of its own."""
    found = await services.jobs.get_record(job_id)
    if found is None:
        raise MalformedInput(f"No job {job_id}. See: scangw jobs list")
    job, etag = found
    if now and job.state == JobState.QUEUED:
        progress = {k: v for k, v in job.progress.items() if k != "not_before"}
        updated, _ = await services.jobs.save(job, etag, progress=progress)
        await services.spool.queue.put(encode_queue_message(updated))  # the record says queued already
        return updated
    if job.state != JobState.FAILED:
        hint = " (add --now to skip its wait)" if job.state == JobState.QUEUED else ""
        raise MalformedInput(f"Job {job_id} is {job.state.value}; only failed jobs can be retried{hint}.")
    for ref in job.files:
        if not await services.spool.blobs.list(ref.blob):
            raise MalformedInput(f"Job {job_id}'s scan is no longer stored (SCANGW_KEEP_FAILED_DAYS passed).")
    # Keep the transport's progress (an existing draft is reused); forget the failure and its notice.
    progress = {k: v for k, v in job.progress.items() if k in ("delivery", "parsed")}
    return await requeue(services, job, etag, attempts=0, error=None, progress=progress)


async def requeue(services: Services, job: Job, etag: str, **changes: Any) -> Job:
    """Queue the job's message, due shortly, then write it `queued` with `changes` (etag-checked).

    In this order a failure between the two leaves the job as it was (the agent drops a message for a
    finished job) and the caller can simply try again, never a queued job that no message will bring back.
    """
    await services.spool.queue.put(encode_queue_message(job), delay=REQUEUE_DELAY)
    updated, _ = await services.jobs.save(job, etag, state=JobState.QUEUED, **changes)
    return updated
