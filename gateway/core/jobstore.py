"""Job records over a Table: typed reads, and etag-checked writes so two workers never both advance a job."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from gateway.core.jobs import Job, JobState
from gateway.core.ports import Record, Table


class JobStore:
    def __init__(self, table: Table, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.table = table
        self.clock = clock

    async def get(self, job_id: str) -> Job | None:
        record = await self.table.get(job_id)
        return Job.from_record(record.data) if record else None

    async def get_record(self, job_id: str) -> tuple[Job, str] | None:
        record = await self.table.get(job_id)
        return (Job.from_record(record.data), record.etag) if record else None

    async def save(self, job: Job, etag: str, **changes: Any) -> tuple[Job, str]:
        """Write `changes` only if nobody else wrote since `etag` (raises Conflict otherwise)."""
        updated = job.evolve(self.clock(), **changes)
        new_etag = await self.table.replace(job.id, updated.to_record(), etag)
        return updated, new_etag

    async def list(self, state: JobState | None = None) -> list[Job]:
        """Newest first: job ids sort by creation time."""
        records: list[Record] = await self.table.list()
        jobs = [Job.from_record(r.data) for r in records]
        if state is not None:
            jobs = [j for j in jobs if j.state == state]
        return sorted(jobs, key=lambda j: j.id, reverse=True)

    async def delete(self, job_id: str) -> None:
        await self.table.delete(job_id)
