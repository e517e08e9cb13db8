"""`scangw jobs retry`: put a failed job back in the queue, resuming from its recorded progress."""

from __future__ import annotations

from gateway.core.errors import MalformedInput
from gateway.core.jobs import Job, JobState, encode_queue_message
from gateway.services import Services


async def retry_job(services: Services, job_id: str) -> Job:
    found = await services.jobs.get_record(job_id)
    if found is None:
        raise MalformedInput(f"No job {job_id}. See: scangw jobs list")
    job, etag = found
    if job.state != JobState.FAILED:
        raise MalformedInput(f"Job {job_id} is {job.state.value}; only failed jobs can be retried.")
    for ref in job.files:
        if not await services.spool.blobs.list(ref.blob):
            raise MalformedInput(f"Job {job_id}'s scan is no longer stored (SCANGW_KEEP_FAILED_DAYS passed).")
    # Keep the transport's progress (an existing draft is reused); forget the failure and its notice.
    progress = {k: v for k, v in job.progress.items() if k in ("delivery", "parsed")}
    job, _ = await services.jobs.save(job, etag, state=JobState.QUEUED, attempts=0, error=None, progress=progress)
    await services.spool.queue.put(encode_queue_message(job))
    return job
