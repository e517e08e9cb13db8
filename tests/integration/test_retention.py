"""Retention on the embedded spool, at its boundaries: what is kept one second before its time and gone at
it, for several jobs in one pass, and the blobs of intakes that never finished (found by mutation testing:
docs/mutation.md)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from gateway.core.accept import Envelope, IncomingFile
from gateway.core.jobs import Job, JobState, parse_iso
from gateway.delivery.mailbox_sweep import MailboxReport
from gateway.delivery.retention import ORPHAN_HOURS, sweep
from gateway.services import Services
from tests.support import services_for


async def _one(data: bytes) -> AsyncIterator[IncomingFile]:
    async def chunks() -> AsyncIterator[bytes]:
        yield data

    yield IncomingFile("scan.pdf", "application/pdf", chunks())


async def _jobs(svc: Services, n: int, state: JobState) -> list[Job]:
    device = await svc.registry.get("mfp1") or (await svc.registry.add("mfp1", default_to="a@contoso.com"))[0]
    made = []
    for i in range(n):
        job = await svc.intake().accept_files(device, _one(b"%%PDF %d" % i), lambda: Envelope(("a@contoso.com",)))
        found = await svc.jobs.get_record(job.id)
        assert found is not None
        await svc.jobs.save(found[0], found[1], state=state)
        made.append(await svc.jobs.get(job.id) or job)
    return made


async def _has_bytes(svc: Services, job: Job) -> bool:
    return bool(await svc.spool.blobs.list(f"{job.id}/"))


def test_bytes_and_records_go_exactly_when_due_for_every_job(tmp_path: Path) -> None:
    async def scenario() -> None:
        svc = await services_for(tmp_path, SCANGW_KEEP_FAILED_DAYS="2", SCANGW_KEEP_JOBS_DAYS="10")
        jobs = await _jobs(svc, 3, JobState.FAILED)
        earliest, latest = min(parse_iso(j.updated) for j in jobs), max(parse_iso(j.updated) for j in jobs)
        report = await sweep(svc, earliest + timedelta(hours=48) - timedelta(seconds=1))
        assert report.bytes_deleted == 0 and all([await _has_bytes(svc, j) for j in jobs])
        report = await sweep(svc, latest + timedelta(hours=48))  # the newest is exactly 48 hours old: due
        assert report.bytes_deleted == 3 and not any([await _has_bytes(svc, j) for j in jobs])
        report = await sweep(svc, earliest + timedelta(days=10) - timedelta(seconds=1))
        assert report.records_deleted == 0 and len(await svc.jobs.list()) == 3
        report = await sweep(svc, latest + timedelta(days=10))
        assert report.records_deleted == 3 and await svc.jobs.list() == []
        await svc.close()

    asyncio.run(scenario())


def test_live_links_of_one_job_do_not_stop_retention_of_the_others(tmp_path: Path) -> None:
    async def scenario() -> None:
        svc = await services_for(tmp_path, SCANGW_KEEP_FAILED_DAYS="1")
        jobs = await _jobs(svc, 3, JobState.FAILED)
        later = max(parse_iso(j.updated) for j in jobs) + timedelta(days=2)
        listed = await svc.jobs.list()  # the order retention walks them in
        found = await svc.jobs.get_record(listed[0].id)
        assert found is not None  # the first job walked still has live links; the two after it do not
        until = (later + timedelta(hours=5)).timestamp()
        await svc.jobs.save(found[0], found[1], progress={**found[0].progress, "links_until": until})
        report = await sweep(svc, later)
        assert report.bytes_deleted == 2
        assert [await _has_bytes(svc, j) for j in listed] == [True, False, False]
        assert (await sweep(svc)).bytes_deleted == 0  # on its own clock: nothing else is due yet
        await svc.close()

    asyncio.run(scenario())


def test_an_intake_that_never_finished_is_swept_after_a_day_and_nothing_else_is(tmp_path: Path) -> None:
    """Blobs without a job record are an intake cut off before its record was written: gone after
    ORPHAN_HOURS, counted; a folder that is not named after a job id is never touched."""

    async def scenario() -> None:
        svc = await services_for(tmp_path)
        (kept,) = await _jobs(svc, 1, JobState.QUEUED)
        now = datetime.now(UTC)
        born = int((now - timedelta(hours=ORPHAN_HOURS)).timestamp() * 1000)
        orphans = [f"{born - i:012x}{'ab' * 6}" for i in range(2)]

        async def data() -> AsyncIterator[bytes]:
            yield b"half a scan"

        for name in [*orphans, "not-a-job-id"]:
            await svc.spool.blobs.write(f"{name}/scan.pdf", data())
        report = await sweep(svc, now - timedelta(seconds=1))
        assert report.orphans_deleted == 0
        report = await sweep(svc, now)
        assert report.orphans_deleted == 2
        assert [await svc.spool.blobs.list(f"{o}/") for o in orphans] == [[], []]
        assert await svc.spool.blobs.list("not-a-job-id/") and await _has_bytes(svc, kept)
        await svc.close()

    asyncio.run(scenario())


def test_the_mailbox_housekeeping_runs_first_with_the_services_and_the_sweeps_clock(tmp_path: Path) -> None:
    async def scenario() -> None:
        svc = await services_for(tmp_path)
        seen: list[tuple[Services, datetime]] = []

        async def housekeeper(services: Services, now: datetime) -> MailboxReport:
            seen.append((services, now))
            return MailboxReport(bounced=2)

        moment = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
        report = await sweep(svc, moment, housekeeper=housekeeper)
        assert seen == [(svc, moment)] and report.mail == MailboxReport(bounced=2)
        await svc.close()

    asyncio.run(scenario())
