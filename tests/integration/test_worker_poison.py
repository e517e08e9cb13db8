"""Poison messages must not kill `scangw worker` (issue 9, item 12): a message the agent cannot handle goes to
`scan-jobs-poison` with one `event=queue.poison` line after a bounded number of tries (the Function host's
`maxDequeueCount`), on the embedded spool and on Azure Storage (Azurite); the other jobs are delivered
meanwhile, and a message naming a missing job is logged and dropped.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.config import POISON_QUEUE_NAME, Settings
from gateway.core.accept import Envelope, IncomingFile, Intake
from gateway.core.devices import Device
from gateway.core.jobs import JobState
from gateway.core.jobstore import JobStore
from gateway.core.ports import Spool
from gateway.delivery.agent import DeliveryAgent
from gateway.delivery.outbox import OutboxTransport
from gateway.delivery.worker import MAX_DEQUEUE_COUNT, Worker
from gateway.devices import DeviceRegistry
from gateway.services import Services
from tests.integration.test_spool_contract import Opener, open_spool, with_spool
from tests.support import ROOT, gateway_process, local_env, poll, scangw, services_for

__all__ = ["open_spool"]

LONG_ID = json.dumps({"v": 1, "id": "a" * 600})
BROKEN_ID = "0193abcd0000000000000001"  # a record with no `device` and no `created`
MISSING_ID = "0193abcd0000000000000002"  # no record at all


async def take_poison(spool: Spool) -> list[str]:
    """Take every message now in scan-jobs-poison (received and deleted, so a later look sees only new ones)."""
    queue = spool.queue
    if hasattr(queue, "_db"):  # the embedded spool: the poison queue is a name in the same database
        poison = type(queue)(queue._db, POISON_QUEUE_NAME)
    else:  # Azure: the adapter's own poison client, read as a queue
        poison = type(queue)(queue._poison, queue._poison)  # type: ignore[attr-defined]
    leases = await poison.receive(30, max_messages=32)
    for lease in leases:
        await poison.delete(lease)
    return [lease.text for lease in leases]


async def files() -> AsyncIterator[IncomingFile]:
    async def chunks() -> AsyncIterator[bytes]:
        yield b"%PDF-1.7 good scan"

    yield IncomingFile("scan.pdf", "application/pdf", chunks())


async def eventually(probe, timeout: float = 60.0, what: str = "condition"):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not (value := await probe()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.1)
    return value


def test_poison_messages_are_set_aside_and_the_worker_keeps_delivering(
    open_spool: Opener, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)

    async def body(spool: Spool) -> None:
        settings = Settings(outbox=tmp_path / "outbox")
        svc = Services(settings, spool, DeviceRegistry(spool.devices), JobStore(spool.jobs))
        await spool.jobs.insert(BROKEN_ID, {"id": BROKEN_ID, "to": ["a@example.com"], "state": "queued"})
        for text in (LONG_ID, json.dumps({"v": 1, "id": BROKEN_ID}), json.dumps({"v": 1, "id": MISSING_ID})):
            await spool.queue.put(text)
        device = Device(name="mfp1", password_hash="", sender="scanner@contoso.com")
        good = await Intake(spool, 1_000_000, None).accept_files(device, files(), lambda: Envelope(("a@example.com",)))
        agent = DeliveryAgent(svc, OutboxTransport(settings.outbox, spool.blobs))  # type: ignore[arg-type]
        worker = Worker(agent, concurrency=2, poll_seconds=0.1, lease_seconds=1, max_dequeue_count=3)
        stop = asyncio.Event()
        running = asyncio.create_task(worker.run(stop))
        try:
            expected = sorted([LONG_ID, json.dumps({"v": 1, "id": BROKEN_ID})])
            poisoned: list[str] = []

            async def settled() -> bool:
                if running.done():
                    running.result()  # the worker died: show why
                poisoned.extend(await take_poison(spool))
                job = await svc.jobs.get(good.id)
                return sorted(poisoned) == expected and job is not None and job.state == JobState.SENT

            await eventually(settled, what="the poison messages set aside and the good scan sent")
            assert await spool.queue.receive(30, max_messages=32) == []  # nothing left to kill the next worker
        finally:
            stop.set()
            await running
        poison_lines = [r.getMessage() for r in caplog.records if "event=queue.poison" in r.getMessage()]
        assert len(poison_lines) == 2, poison_lines
        assert any(MISSING_ID in r.getMessage() and "dropped" in r.getMessage() for r in caplog.records)

    with_spool(open_spool, body)


def test_the_worker_gives_a_message_as_many_tries_as_the_function_host() -> None:
    host = json.loads((ROOT / "host.json").read_text())
    assert host["extensions"]["queues"]["maxDequeueCount"] == MAX_DEQUEUE_COUNT


@pytest.mark.slow
def test_scangw_worker_survives_poison_messages(tmp_path: Path) -> None:
    """The real process: before the fix the first poison message made it exit 1, and the next worker after it."""
    env = local_env(tmp_path)
    added = scangw("devices", "add", "mfp1", "--default-to", "me@example.com", "--json", env=env)
    assert added.returncode == 0, added.stderr

    async def seed() -> None:
        svc = await services_for(tmp_path)
        try:
            await svc.spool.jobs.insert(BROKEN_ID, {"id": BROKEN_ID, "state": "queued"})
            await svc.spool.queue.put(LONG_ID)
            await svc.spool.queue.put(json.dumps({"v": 1, "id": BROKEN_ID}))
        finally:
            await svc.close()

    asyncio.run(seed())
    poisoned: list[str] = []
    with gateway_process("worker", "--lease-seconds", "1", env=env) as worker:

        def take() -> list[str]:
            assert worker.poll() is None, f"scangw worker exited {worker.returncode}"

            async def read() -> list[str]:
                svc = await services_for(tmp_path)
                try:
                    return await take_poison(svc.spool)
                finally:
                    await svc.close()

            poisoned.extend(asyncio.run(read()))
            return poisoned

        poll(lambda: len(take()) == 2, timeout=90, interval=0.5, what="both messages in scan-jobs-poison")
        worker.terminate()
        assert worker.wait(timeout=30) == 0
        stderr = worker.stderr.read() if worker.stderr else ""
    assert stderr.count("event=queue.poison") == 2, stderr[-3000:]
