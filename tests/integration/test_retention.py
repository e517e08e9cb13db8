"""Retention on the embedded spool, at its boundaries: what is kept one second before its time and gone at
it, for several jobs in one pass, and the blobs of intakes that never finished (found by mutation testing:
docs/mutation.md)."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.config import BLOB_CONTAINER
from gateway.core.accept import Envelope, IncomingFile
from gateway.core.jobs import Job, JobState, parse_iso
from gateway.core.jobstore import JobStore
from gateway.delivery.mailbox_sweep import MailboxReport
from gateway.delivery.reconcile import RECONCILE_MINUTES
from gateway.delivery.retention import ORPHAN_HOURS, sweep
from gateway.services import Services
from tests.fakes.faulty_spool import Faults, faulty
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
        now = datetime.now(UTC).replace(microsecond=0)  # whole milliseconds: the first orphan is due exactly now
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


def test_a_temporary_file_untouched_for_an_hour_is_removed_and_a_live_upload_is_kept(tmp_path: Path) -> None:
    """A killed process's half-written file must not fill the disk; an upload still arriving (its file renewed
    with every chunk, here 59 minutes since the last) must not lose its bytes. The cut is the sweep's own
    wall clock, like the files' modification times."""

    async def scenario() -> None:
        svc = await services_for(tmp_path)
        incoming = tmp_path / "spool" / BLOB_CONTAINER / ".incoming"
        left, live = incoming / "0123456789abcdef.part", incoming / "fedcba9876543210.part"
        left.write_bytes(b"half a scan from a killed process")
        live.write_bytes(b"an upload still arriving")
        now = time.time()
        os.utime(left, (now - 3600 - 60, now - 3600 - 60))
        os.utime(live, (now - 3600 + 60, now - 3600 + 60))
        report = await sweep(svc)
        assert report.temporary_deleted == 1
        assert not left.exists() and live.read_bytes() == b"an upload still arriving"
        await svc.close()

    asyncio.run(scenario())


async def _partial_set(svc: Services, name: str, created: datetime) -> None:
    """The bookkeeping of a `message/partial` set (gateway.delivery.partial): one parked fragment's marker."""
    job_id = f"{int(created.timestamp() * 1000):012x}{'cd' * 6}"

    async def empty() -> AsyncIterator[bytes]:
        yield b""

    await svc.spool.blobs.write(f"partial/{name}/00001-00002-{job_id}-{int(created.timestamp() * 1000)}", empty())


@pytest.mark.parametrize(("wait_minutes", "keep_hours"), [("30", 24), ("720", 48)])
def test_a_partial_sets_bookkeeping_is_kept_a_day_or_four_waits_and_then_goes(
    tmp_path: Path, wait_minutes: str, keep_hours: int
) -> None:
    """At least 24 hours, and four times SCANGW_PARTIAL_WAIT_MINUTES when that is longer: a fragment arriving
    late must still find its set; after that the markers must not pile up."""

    async def scenario() -> None:
        svc = await services_for(tmp_path, SCANGW_PARTIAL_WAIT_MINUTES=wait_minutes)
        created = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
        await _partial_set(svc, "older", created)
        await _partial_set(svc, "newer", created + timedelta(hours=1))
        await sweep(svc, created + timedelta(hours=keep_hours) - timedelta(minutes=1))
        assert len(await svc.spool.blobs.list("partial/")) == 2
        await sweep(svc, created + timedelta(hours=keep_hours, seconds=1))
        assert [n.split("/")[1] for n in await svc.spool.blobs.list("partial/")] == ["newer"]
        await svc.close()

    asyncio.run(scenario())


def test_a_queued_job_no_message_brought_back_is_queued_again_or_removed_without_its_bytes(tmp_path: Path) -> None:
    """The sweep hands its job list to the reconcile (gateway.delivery.reconcile) and reports what it did: a
    `queued` record whose message was lost is queued again with its bytes, removed without them."""

    async def scenario() -> None:
        svc = await services_for(tmp_path)
        with_bytes, without = await _jobs(svc, 2, JobState.QUEUED)
        await svc.spool.blobs.delete_prefix(f"{without.id}/")
        assert len(await svc.spool.queue.receive(3600, max_messages=32)) == 2  # the messages are lost (leased)
        later = max(parse_iso(j.updated) for j in (with_bytes, without)) + timedelta(minutes=RECONCILE_MINUTES)
        report = await sweep(svc, later)
        assert (report.requeued, report.stale_removed) == (1, 1)
        (left,) = await svc.jobs.list()
        assert left.id == with_bytes.id and left.state == JobState.QUEUED and left.updated > with_bytes.updated
        assert await _has_bytes(svc, left)
        await svc.close()

    asyncio.run(scenario())


def test_the_sweeps_closing_line_counts_each_kind_of_deletion(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """What an admin reads in the log (and App Insights) after each sweep."""

    async def scenario() -> None:
        svc = await services_for(tmp_path, SCANGW_KEEP_FAILED_DAYS="2", SCANGW_KEEP_JOBS_DAYS="10")
        await _jobs(svc, 2, JobState.FAILED)  # their bytes are due after two days, their records after ten
        (queued,) = await _jobs(svc, 1, JobState.QUEUED)
        await svc.spool.blobs.delete_prefix(f"{queued.id}/")  # queued, lost its message and its bytes
        now = datetime.now(UTC)
        born = int((now - timedelta(hours=ORPHAN_HOURS + 1)).timestamp() * 1000)

        async def data() -> AsyncIterator[bytes]:
            yield b"half a scan"

        for i in range(3):
            await svc.spool.blobs.write(f"{born - i:012x}{'ab' * 6}/scan.pdf", data())
        incoming = tmp_path / "spool" / BLOB_CONTAINER / ".incoming"
        for i in range(4):
            part = incoming / f"{i:016x}.part"
            part.write_bytes(b"x")
            os.utime(part, (time.time() - 7200, time.time() - 7200))
        caplog.set_level(logging.INFO, logger="scangw.retention")
        report = await sweep(svc, now + timedelta(days=2, minutes=RECONCILE_MINUTES))
        assert (report.bytes_deleted, report.orphans_deleted, report.temporary_deleted) == (2, 3, 4)
        assert (report.records_deleted, report.requeued, report.stale_removed) == (0, 0, 1)
        lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("retention ")]
        assert lines == [
            "retention bytes_deleted=2 records_deleted=0 orphans_deleted=3 temporary_deleted=4 requeued=0"
            " stale_removed=1"
        ]
        await svc.close()

    asyncio.run(scenario())


def test_storage_without_temporary_files_is_swept_all_the_same(tmp_path: Path) -> None:
    """Azure Blob Storage has no `.incoming` folder (its blob store offers only the port's methods, as the
    fault-injecting wrapper here does): the sweep must still delete what is due and finish its pass."""

    async def scenario() -> None:
        local = await services_for(tmp_path, SCANGW_KEEP_FAILED_DAYS="1")
        (job,) = await _jobs(local, 1, JobState.FAILED)
        spool = faulty(local.spool, Faults())
        assert not hasattr(spool.blobs, "sweep_incoming")
        svc = Services(local.settings, spool, local.registry, JobStore(spool.jobs))
        report = await sweep(svc, parse_iso(job.updated) + timedelta(days=1))
        assert (report.bytes_deleted, report.temporary_deleted) == (1, 0) and not await _has_bytes(local, job)
        await local.close()

    asyncio.run(scenario())
