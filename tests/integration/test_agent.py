"""The delivery agent's job lifecycle on the embedded spool: retries with delay, permanent failure with a
notice, give-up limits, duplicate queue messages, poison messages, and `jobs retry`.

The transport here is a hand-written scripted fake of the Transport port (the Graph transport has its own
tests against the strict fake Graph)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from gateway.core.accept import Envelope, IncomingFile
from gateway.core.errors import Deferred, PermanentDeliveryError, TransientDeliveryError
from gateway.core.jobs import Job, JobState
from gateway.core.message import OutgoingMessage
from gateway.delivery.agent import DeliveryAgent, Done, Retry
from gateway.delivery.requeue import retry_job
from gateway.delivery.retention import sweep
from gateway.delivery.transport import Checkpoint, Delivered
from gateway.delivery.worker import Worker
from gateway.services import Services
from tests.support import services_for


class ScriptedTransport:
    """Raises the scripted errors in order, then delivers; records every message it delivered."""

    def __init__(self, *script: Exception) -> None:
        self.script = list(script)
        self.sent: list[OutgoingMessage] = []

    async def deliver(self, message: OutgoingMessage, checkpoint: Checkpoint) -> Delivered:
        is_notice = dict(message.headers).get("X-Scangw-Notice") is not None
        if self.script and not is_notice:
            await checkpoint.save(tried=checkpoint.progress.get("tried", 0) + 1)
            raise self.script.pop(0)
        self.sent.append(message)
        return Delivered(request_id="req-1")

    async def close(self) -> None:
        return None


async def one(data: bytes) -> AsyncIterator[IncomingFile]:
    async def chunks() -> AsyncIterator[bytes]:
        yield data

    yield IncomingFile("scan.pdf", "application/pdf", chunks())


async def setup(tmp: Path, **env: str) -> tuple[Services, Job]:
    svc = await services_for(tmp, SCANGW_SENDER="scanner@contoso.com", SCANGW_ADMIN_EMAIL="admin@contoso.com", **env)
    device, _ = await svc.registry.add("mfp1", reply_to="alice@contoso.com", default_to="alice@contoso.com")
    job = await svc.intake().accept_files(device, one(b"%PDF data"), lambda: Envelope(("alice@contoso.com",)))
    return svc, job


async def next_text(svc: Services, timeout: float = 10.0) -> str:
    """The next due queue message (a re-queued job is due a couple of seconds later), polled with a deadline."""
    deadline = time.monotonic() + timeout
    while not (leases := await svc.spool.queue.receive(30)):
        assert time.monotonic() < deadline, "no queue message became due"
        await asyncio.sleep(0.05)
    await svc.spool.queue.delete(leases[0])
    return leases[0].text


def test_transient_error_requeues_with_the_servers_delay_then_sends(tmp_path: Path) -> None:
    async def scenario() -> None:
        svc, job = await setup(tmp_path)
        transport = ScriptedTransport(TransientDeliveryError("Graph throttled (429)", retry_after=120))
        agent = DeliveryAgent(svc, transport)
        text = await next_text(svc)
        outcome = await agent.handle(text)
        assert isinstance(outcome, Retry) and outcome.delay >= 120
        queued = await svc.jobs.get(job.id)
        assert queued is not None
        assert (queued.state, queued.attempts, queued.error) == (JobState.QUEUED, 1, "Graph throttled (429)")
        assert queued.progress["delivery"]["tried"] == 1  # transport progress survives the retry
        assert isinstance(await agent.handle(text), Retry)  # too early: the job waits out its delay
        later = DeliveryAgent(svc, transport, clock=lambda: time.time() + 10**6)
        assert isinstance(await later.handle(text), Done)
        sent = await svc.jobs.get(job.id)
        assert sent is not None and (sent.state, sent.attempts, sent.error) == (JobState.SENT, 2, None)
        assert [m.subject for m in transport.sent] == ["Scan from mfp1"]
        assert await svc.spool.blobs.list(f"{job.id}/") == []  # SCANGW_KEEP_SENT_HOURS=0: bytes gone
        await svc.close()

    asyncio.run(scenario())


def test_waiting_for_the_mailboxs_budget_spends_no_attempt(tmp_path: Path) -> None:
    """SCANGW_MAX_ATTEMPTS=2, yet five waits for the mailbox's send pace never fail the job."""

    async def scenario() -> None:
        svc, job = await setup(tmp_path, SCANGW_MAX_ATTEMPTS="2")
        transport = ScriptedTransport(
            *(Deferred("Pacing sends from scanner@contoso.com.", retry_after=40) for _ in range(5))
        )
        text = await next_text(svc)
        now = [time.time()]
        agent = DeliveryAgent(svc, transport, clock=lambda: now[0])
        delays = []
        for _ in range(5):
            outcome = await agent.handle(text)
            assert isinstance(outcome, Retry)
            delays.append(outcome.delay)
            now[0] += outcome.delay
            waiting = await svc.jobs.get(job.id)
            assert waiting is not None and (waiting.state, waiting.attempts) == (JobState.QUEUED, 0)
        assert all(40 <= d <= 50 for d in delays)  # the wait asked for, spread by up to a quarter
        assert isinstance(await agent.handle(text), Done)
        sent = await svc.jobs.get(job.id)
        assert sent is not None and (sent.state, sent.attempts) == (JobState.SENT, 1)
        await svc.close()

    asyncio.run(scenario())


def test_permanent_error_fails_the_job_and_mails_a_notice(tmp_path: Path) -> None:
    async def scenario() -> None:
        svc, job = await setup(tmp_path)
        denied = PermanentDeliveryError("Access denied to mailbox scanner@contoso.com.", "Grant Application Mail.Send.")
        transport = ScriptedTransport(denied)
        outcome = await DeliveryAgent(svc, transport).handle(await next_text(svc))
        assert isinstance(outcome, Done)
        failed = await svc.jobs.get(job.id)
        assert failed is not None and failed.state == JobState.FAILED
        assert failed.error == "Access denied to mailbox scanner@contoso.com. Grant Application Mail.Send."
        [notice] = transport.sent
        assert [a.address for a in notice.to] == ["alice@contoso.com", "admin@contoso.com"]
        assert notice.from_.address == "scanner@contoso.com"
        assert job.id in notice.body and "Grant Application Mail.Send." in notice.body and "mfp1" in notice.body
        assert await svc.spool.blobs.list(f"{job.id}/")  # bytes kept for `jobs retry`
        await retry_job(svc, job.id)
        again = DeliveryAgent(svc, transport)
        assert isinstance(await again.handle(await next_text(svc)), Done)
        sent = await svc.jobs.get(job.id)
        assert sent is not None and sent.state == JobState.SENT and sent.error is None
        await svc.close()

    asyncio.run(scenario())


def test_gives_up_after_max_attempts(tmp_path: Path) -> None:
    async def scenario() -> None:
        svc, job = await setup(tmp_path, SCANGW_MAX_ATTEMPTS="2")
        transport = ScriptedTransport(*[TransientDeliveryError("503 from Graph")] * 5)
        clock = [time.time()]
        agent = DeliveryAgent(svc, transport, clock=lambda: clock[0])
        text = await next_text(svc)
        assert isinstance(await agent.handle(text), Retry)
        clock[0] += 3600
        assert isinstance(await agent.handle(text), Done)
        failed = await svc.jobs.get(job.id)
        assert failed is not None and failed.state == JobState.FAILED
        assert failed.error is not None and failed.error.startswith("Gave up after 2 attempts")
        await svc.close()

    asyncio.run(scenario())


def test_duplicate_and_poison_messages_are_harmless(tmp_path: Path) -> None:
    async def scenario() -> None:
        svc, job = await setup(tmp_path)
        transport = ScriptedTransport()
        agent = DeliveryAgent(svc, transport)
        text = await next_text(svc)
        assert isinstance(await agent.handle(text), Done)
        assert isinstance(await agent.handle(text), Done)  # replayed message: the record says sent
        assert len(transport.sent) == 1
        assert isinstance(await agent.handle("not json"), Done)
        assert isinstance(await agent.handle('{"v": 1, "id": "ffffffffffff00000000"}'), Done)
        poison = await svc.spool.queue.__class__(svc.spool.queue._db, "scan-jobs-poison").receive(30)  # type: ignore[attr-defined]
        assert [p.text for p in poison] == ["not json"]
        await svc.close()

    asyncio.run(scenario())


def test_worker_drains_the_queue(tmp_path: Path) -> None:
    async def scenario() -> None:
        svc, first = await setup(tmp_path)
        device = await svc.registry.get("mfp1")
        assert device is not None
        second = await svc.intake().accept_files(device, one(b"two"), lambda: Envelope(("alice@contoso.com",)))
        transport = ScriptedTransport()
        await Worker(DeliveryAgent(svc, transport), concurrency=2).drain()
        states = {j.id: j.state for j in await svc.jobs.list()}
        assert states == {first.id: JobState.SENT, second.id: JobState.SENT}
        assert await svc.spool.queue.count() == 0  # type: ignore[attr-defined]
        await svc.close()

    asyncio.run(scenario())


def test_retention_keeps_failed_bytes_then_drops_them(tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    async def scenario() -> None:
        svc, job = await setup(tmp_path, SCANGW_KEEP_FAILED_DAYS="7", SCANGW_KEEP_JOBS_DAYS="30")
        await DeliveryAgent(svc, ScriptedTransport(PermanentDeliveryError("nope"))).handle(await next_text(svc))
        now = datetime.now(UTC)
        report: Any = await sweep(svc, now + timedelta(days=1))
        assert report.bytes_deleted == 0 and await svc.spool.blobs.list(f"{job.id}/")
        report = await sweep(svc, now + timedelta(days=8))
        assert report.bytes_deleted == 1 and not await svc.spool.blobs.list(f"{job.id}/")
        report = await sweep(svc, now + timedelta(days=31))
        assert report.records_deleted == 1 and await svc.jobs.get(job.id) is None
        await svc.close()

    asyncio.run(scenario())


def test_retention_keeps_bytes_behind_live_download_links(tmp_path: Path) -> None:
    """Sent with links and SCANGW_KEEP_SENT_HOURS=0: the bytes stay until the links expire, then go."""
    from datetime import UTC, datetime, timedelta

    async def scenario() -> None:
        svc, job = await setup(tmp_path)
        until = time.time() + 48 * 3600
        found = await svc.jobs.get_record(job.id)
        assert found is not None
        await svc.jobs.save(found[0], found[1], state=JobState.SENT, progress={"links_until": until})
        now = datetime.now(UTC)
        await sweep(svc, now + timedelta(hours=1))
        assert await svc.spool.blobs.list(f"{job.id}/")  # links still valid: bytes kept
        await sweep(svc, now + timedelta(hours=50))
        assert not await svc.spool.blobs.list(f"{job.id}/")  # links expired: bytes gone
        await svc.close()

    asyncio.run(scenario())


def test_retention_keeps_linked_bytes_for_the_margin_after_the_links_expire(tmp_path: Path) -> None:
    """A download started a minute before a link expires must still find its bytes: retention keeps them
    KEEP_MARGIN_SECONDS past the expiry the link promises, and drops them right after."""
    from datetime import UTC, datetime, timedelta

    from gateway.core.links import KEEP_MARGIN_SECONDS

    async def scenario() -> None:
        svc, job = await setup(tmp_path)
        until = float(int(time.time()) + 48 * 3600)
        found = await svc.jobs.get_record(job.id)
        assert found is not None
        await svc.jobs.save(found[0], found[1], state=JobState.SENT, progress={"links_until": until})
        expiry = datetime.fromtimestamp(until, UTC)
        await sweep(svc, expiry + timedelta(seconds=1))
        assert await svc.spool.blobs.list(f"{job.id}/")  # the links just expired: a download may be running
        await sweep(svc, expiry + timedelta(seconds=KEEP_MARGIN_SECONDS - 60))
        assert await svc.spool.blobs.list(f"{job.id}/")
        assert await svc.jobs.get(job.id) is not None
        await sweep(svc, expiry + timedelta(seconds=KEEP_MARGIN_SECONDS + 1))
        assert not await svc.spool.blobs.list(f"{job.id}/")
        await svc.close()

    assert KEEP_MARGIN_SECONDS >= 15 * 60  # a margin shorter than a slow download is no margin
    asyncio.run(scenario())
