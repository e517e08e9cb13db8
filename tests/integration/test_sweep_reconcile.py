"""The sweep reconciles a `queued` job record that no queue message will bring back (issue 9, item 12): the
queue write failed and the table was unreachable for the rollback, so accept() answered 451/503 but the record
stayed. On the embedded spool and on Azure Storage (Azurite), faults injected in front of the real storage.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.config import Settings
from gateway.core.accept import Intake
from gateway.core.devices import Device
from gateway.core.errors import StorageUnavailable
from gateway.core.jobs import JobState, decode_queue_message, iso, new_job_id
from gateway.core.jobstore import JobStore
from gateway.core.ports import Spool
from gateway.delivery.agent import DeliveryAgent
from gateway.delivery.outbox import OutboxTransport
from gateway.delivery.reconcile import reconcile
from gateway.delivery.retention import sweep
from gateway.delivery.worker import Worker
from gateway.devices import DeviceRegistry
from gateway.services import Services
from tests.fakes.faulty_spool import Faults, faulty
from tests.integration.test_spool_contract import Opener, eventually, open_spool, with_spool
from tests.support import local_env, run, scangw, services_for

__all__ = ["open_spool"]

DEVICE = Device(name="mfp1", password_hash="", sender="scanner@contoso.com")


async def message(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def stranded(spool: Spool, keep_bytes: bool) -> str:
    """accept() with the queue down and the table unreachable for the rollback (and, with `keep_bytes`, the
    blob store too): the device hears 451, and a `queued` record is left with no message."""
    faults = Faults()
    faults.fail("queue.put", StorageUnavailable("injected: queue unavailable"))
    faults.fail("jobs.delete", StorageUnavailable("injected: table unreachable"))
    if keep_bytes:
        faults.fail("blobs.delete_prefix", StorageUnavailable("injected: blob store unreachable"))
    intake = Intake(faulty(spool, faults), 1_000_000, None)
    before = {record.data["id"] for record in await spool.jobs.list()}
    with pytest.raises(StorageUnavailable):
        await intake.accept_mime(DEVICE, ("a@example.com",), message(b"Subject: lost\r\n\r\nscan\r\n"))
    (record,) = [record for record in await spool.jobs.list() if record.data["id"] not in before]
    assert record.data["state"] == "queued" and await spool.queue.receive(1, max_messages=32) == []
    return str(record.data["id"])


def services(spool: Spool, tmp: Path) -> Services:
    settings = Settings(outbox=tmp / "outbox")
    return Services(settings, spool, DeviceRegistry(spool.devices), JobStore(spool.jobs))


def test_a_queued_record_with_no_message_and_no_bytes_is_removed(open_spool: Opener, tmp_path: Path) -> None:
    async def body(spool: Spool) -> None:
        job_id = await stranded(spool, keep_bytes=False)
        svc = services(spool, tmp_path)
        soon = await sweep(svc, datetime.now(UTC) + timedelta(minutes=1))
        assert (soon.requeued, soon.stale_removed) == (0, 0)  # too fresh to tell from a job about to be picked up
        later = await sweep(svc, datetime.now(UTC) + timedelta(minutes=20))
        assert (later.requeued, later.stale_removed) == (0, 1)
        assert await spool.jobs.get(job_id) is None

    with_spool(open_spool, body)


def test_a_queued_record_with_no_message_but_its_bytes_is_queued_again_and_delivered(
    open_spool: Opener, tmp_path: Path
) -> None:
    async def body(spool: Spool) -> None:
        job_id = await stranded(spool, keep_bytes=True)
        svc = services(spool, tmp_path)
        report = await sweep(svc, datetime.now(UTC) + timedelta(minutes=20))
        assert (report.requeued, report.stale_removed) == (1, 0)
        agent = DeliveryAgent(svc, OutboxTransport(tmp_path / "outbox", spool.blobs))  # type: ignore[arg-type]
        (lease,) = await eventually(lambda: spool.queue.receive(30), what="the re-queued message")
        await Worker(agent, lease_seconds=30).process(lease)
        job = await svc.jobs.get(job_id)
        assert job is not None and job.state == JobState.SENT
        assert len(list((tmp_path / "outbox").glob("*.eml"))) == 1
        again = await sweep(svc, datetime.now(UTC) + timedelta(minutes=20))
        assert (again.requeued, again.stale_removed) == (0, 0)

    with_spool(open_spool, body)


def test_queued_jobs_that_are_moving_or_waiting_are_left_alone(open_spool: Opener, tmp_path: Path) -> None:
    async def body(spool: Spool) -> None:
        intake = Intake(spool, 1_000_000, None)
        fresh = await intake.accept_mime(DEVICE, ("a@example.com",), message(b"Subject: ok\r\n\r\nscan\r\n"))
        svc = services(spool, tmp_path)
        found = await svc.jobs.get_record(fresh.id)
        assert found is not None
        later = datetime.now(UTC) + timedelta(minutes=20)
        # Waiting out a backoff until after the sweep: its message is hidden, not lost.
        await svc.jobs.save(found[0], found[1], progress={"not_before": (later + timedelta(hours=1)).timestamp()})
        report = await sweep(svc, later)
        assert (report.requeued, report.stale_removed) == (0, 0)
        assert len(await spool.queue.receive(30, max_messages=32)) == 1

    with_spool(open_spool, body)


def test_scangw_sweep_reports_what_it_reconciled(tmp_path: Path) -> None:
    env = local_env(tmp_path)
    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    job_id = new_job_id(an_hour_ago.timestamp())

    async def seed() -> None:
        svc = await services_for(tmp_path)
        try:
            record = {
                "id": job_id,
                "device": "mfp1",
                "sender": None,
                "to": ["a@example.com"],
                "size": 5,
                "kind": "mime",
                "created": iso(an_hour_ago),
                "updated": iso(an_hour_ago),
                "state": "queued",
                "files": [
                    {
                        "blob": f"{job_id}/message.eml",
                        "name": "message.eml",
                        "content_type": "message/rfc822",
                        "size": 5,
                    }
                ],
            }
            await svc.spool.jobs.insert(job_id, record)
        finally:
            await svc.close()

    run(seed())
    swept = scangw("sweep", env=env)
    assert swept.returncode == 0, swept.stderr
    assert "0 re-queued, 1 removed" in swept.stdout, swept.stdout
    listed = scangw("jobs", "list", "--json", env=env)
    assert json.loads(listed.stdout) == []


def test_a_sending_job_whose_message_went_to_the_poison_queue_is_queued_again_and_delivered_once(
    open_spool: Opener, tmp_path: Path
) -> None:
    """The Function host moves a message to `scan-jobs-poison` after `maxDequeueCount` failed runs; if the
    claim (`sending`) was written first, no message will ever bring the job back and retention keeps waiting
    for a final state: the device heard 250 and the scan is never delivered. Here the claim's reply is lost
    with an error the agent does not expect, and the worker, counting as the host does, sets the message aside."""

    async def body(spool: Spool) -> None:
        intake = Intake(spool, 1_000_000, None)
        accepted = await intake.accept_mime(DEVICE, ("a@example.com",), message(b"Subject: kept\r\n\r\nscan\r\n"))
        faults = Faults()
        faults.fail("jobs.replace", RuntimeError("injected: reply lost after the claim was written"), after=True)
        broken = services(faulty(spool, faults), tmp_path)
        agent = DeliveryAgent(broken, OutboxTransport(tmp_path / "outbox", spool.blobs))  # type: ignore[arg-type]
        (lease,) = await eventually(lambda: spool.queue.receive(30), what="the accepted job's message")
        await Worker(agent, lease_seconds=30, max_dequeue_count=1).process(lease)
        svc = services(spool, tmp_path)
        stuck = await svc.jobs.get(accepted.id)
        assert stuck is not None and stuck.state == JobState.SENDING
        assert await spool.queue.receive(30, max_messages=32) == []

        live = await sweep(svc, datetime.now(UTC) + timedelta(minutes=59))
        assert live.requeued == 0  # a send this recent may still be running: leave it
        report = await sweep(svc, datetime.now(UTC) + timedelta(minutes=60, seconds=5))
        assert report.requeued == 1
        agent = DeliveryAgent(svc, OutboxTransport(tmp_path / "outbox", spool.blobs))  # type: ignore[arg-type]
        (lease,) = await eventually(lambda: spool.queue.receive(30), what="the re-queued message")
        await Worker(agent, lease_seconds=30).process(lease)
        job = await svc.jobs.get(accepted.id)
        assert job is not None and job.state == JobState.SENT
        assert len(list((tmp_path / "outbox").glob("*.eml"))) == 1
        again = await sweep(svc, datetime.now(UTC) + timedelta(minutes=61))
        assert again.requeued == 0

    with_spool(open_spool, body)


def test_a_sending_job_set_aside_past_its_attempts_ends_failed_with_a_notice(
    open_spool: Opener, tmp_path: Path
) -> None:
    """The hourly re-queue is bounded: a job that breaks every run would otherwise cycle through the poison
    queue forever; past SCANGW_MAX_ATTEMPTS it goes back marked failing and the agent tells the sender."""

    async def body(spool: Spool) -> None:
        intake = Intake(spool, 1_000_000, None)
        accepted = await intake.accept_mime(DEVICE, ("a@example.com",), message(b"Subject: doomed\r\n\r\nscan\r\n"))
        svc = services(spool, tmp_path)
        (lease,) = await eventually(lambda: spool.queue.receive(30), what="the accepted job's message")
        await spool.queue.delete(lease)  # set aside by the host
        found = await svc.jobs.get_record(accepted.id)
        assert found is not None
        await svc.jobs.save(found[0], found[1], state=JobState.SENDING, attempts=svc.settings.max_attempts)
        report = await sweep(svc, datetime.now(UTC) + timedelta(minutes=61))
        assert report.requeued == 1
        agent = DeliveryAgent(svc, OutboxTransport(tmp_path / "outbox", spool.blobs))  # type: ignore[arg-type]
        (lease,) = await eventually(lambda: spool.queue.receive(30), what="the re-queued message")
        await Worker(agent, lease_seconds=30).process(lease)
        job = await svc.jobs.get(accepted.id)
        assert job is not None and job.state == JobState.FAILED
        assert job.error is not None and "scan-jobs-poison" in job.error
        assert job.error.endswith("Last error: none") and f"after {svc.settings.max_attempts} attempts" in job.error
        again = await sweep(svc, datetime.now(UTC) + timedelta(minutes=61))
        assert again.requeued == 0

    with_spool(open_spool, body)


def test_every_lost_job_of_a_pass_is_reconciled_counted_and_logged(
    open_spool: Opener, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A job still moving ahead of the lost ones in the list must not end the pass (the storage decides the
    order the sweep lists jobs in, so the list is given here in the order that would expose it)."""

    async def body(spool: Spool) -> None:
        svc = services(spool, tmp_path)
        intake = Intake(spool, 1_000_000, None)
        moving = await intake.accept_mime(DEVICE, ("a@example.com",), message(b"Subject: moves\r\n\r\nscan\r\n"))
        (lease,) = await eventually(lambda: spool.queue.receive(30), what="its message")
        await spool.queue.delete(lease)
        found = await svc.jobs.get_record(moving.id)
        assert found is not None
        await svc.jobs.save(found[0], found[1], state=JobState.SENDING)  # a worker is sending it: not lost
        with_bytes = [await stranded(spool, keep_bytes=True) for _ in range(2)]
        without = [await stranded(spool, keep_bytes=False) for _ in range(2)]
        listed = {job.id: job for job in await svc.jobs.list()}
        caplog.set_level(logging.WARNING, "scangw.retention")
        order = [moving.id, *with_bytes, *without]
        done = await reconcile(svc, [listed[job_id] for job_id in order], datetime.now(UTC) + timedelta(minutes=20))
        assert (done.requeued, done.removed) == (2, 2)
        for job_id in with_bytes:
            job = await svc.jobs.get(job_id)
            assert job is not None and job.state == JobState.QUEUED
        assert [await spool.jobs.get(job_id) for job_id in without] == [None, None]
        lines = [r.getMessage() for r in caplog.records]
        for job_id in with_bytes:
            wanted = f"event=sweep.requeued job={job_id} queued with no queue message since {listed[job_id].updated}"
            assert wanted in lines, lines
        for job_id in without:
            assert f"event=sweep.removed job={job_id} queued with no queue message and no bytes" in lines

    with_spool(open_spool, body)


def test_a_job_that_moved_or_went_since_the_sweep_listed_it_is_left_alone(open_spool: Opener, tmp_path: Path) -> None:
    """The sweep reads each record again before acting: a worker may have claimed it, or retention removed it;
    the lost job after them is still reconciled."""

    async def body(spool: Spool) -> None:
        svc = services(spool, tmp_path)
        claimed, gone, lost = [await stranded(spool, keep_bytes=True) for _ in range(3)]
        listed = {job.id: job for job in await svc.jobs.list()}
        found = await svc.jobs.get_record(claimed)
        assert found is not None
        await svc.jobs.save(found[0], found[1], state=JobState.SENDING)  # a worker took it, just now
        await svc.jobs.delete(gone)
        later = datetime.now(UTC) + timedelta(minutes=20)
        done = await reconcile(svc, [listed[claimed], listed[gone], listed[lost]], later)
        assert (done.requeued, done.removed) == (1, 0)
        job = await svc.jobs.get(claimed)
        assert job is not None and job.state == JobState.SENDING
        messages = await eventually(lambda: spool.queue.receive(30, max_messages=32), what="the lost job's message")
        assert [decode_queue_message(m.text) for m in messages] == [lost]

    with_spool(open_spool, body)


def test_a_job_claimed_while_the_sweep_requeues_it_is_left_to_its_worker(open_spool: Opener, tmp_path: Path) -> None:
    """The write that marks the job queued again loses to a worker's claim (etag): the sweep moves on to the
    next lost job instead of ending the pass."""

    async def body(spool: Spool) -> None:
        raced, lost = [await stranded(spool, keep_bytes=True) for _ in range(2)]
        listed = {job.id: job for job in await services(spool, tmp_path).jobs.list()}
        faults = Faults()
        faults.hold("queue.put")
        svc = services(faulty(spool, faults), tmp_path)
        later = datetime.now(UTC) + timedelta(minutes=20)
        task = asyncio.create_task(reconcile(svc, [listed[raced], listed[lost]], later))
        await asyncio.wait_for(faults.held.wait(), 10)  # its message is on the way; then a worker claims it
        found = await spool.jobs.get(raced)
        assert found is not None
        await spool.jobs.replace(raced, {**found.data, "state": "sending"}, found.etag)
        faults.release.set()
        done = await asyncio.wait_for(task, 10)
        assert (done.requeued, done.removed) == (1, 0)
        raced_now, lost_now = await spool.jobs.get(raced), await spool.jobs.get(lost)
        assert raced_now is not None and raced_now.data["state"] == "sending"
        assert lost_now is not None and lost_now.data["state"] == "queued"

    with_spool(open_spool, body)
