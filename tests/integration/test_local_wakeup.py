"""An idle worker on the embedded spool starts a scan as soon as it is queued, not at its next poll: a scan's
latency on a quiet system is Graph's, not the poll interval's."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from gateway.core.accept import Envelope
from gateway.core.jobs import JobState
from gateway.delivery.agent import DeliveryAgent
from gateway.delivery.worker import Worker
from tests.integration.test_agent import ScriptedTransport, one, setup
from tests.support import services_for


def test_an_idle_worker_delivers_a_scan_queued_by_another_process_long_before_its_next_poll(tmp_path: Path) -> None:
    async def scenario() -> float:
        svc, first = await setup(tmp_path)  # one scan queued already: the worker takes it, then idles
        door = await services_for(tmp_path)  # the SMTP door's own connection to the spool, as another process
        transport = ScriptedTransport()
        stop = asyncio.Event()
        worker = asyncio.create_task(Worker(DeliveryAgent(svc, transport), concurrency=2, poll_seconds=30).run(stop))
        try:
            deadline = time.monotonic() + 10
            while (await svc.jobs.get(first.id)).state != JobState.SENT:  # type: ignore[union-attr]
                assert time.monotonic() < deadline, "the first scan was not delivered"
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.2)  # both slots are now idle, in their 30 s wait
            device = await door.registry.get("mfp1")
            assert device is not None
            queued_at = time.monotonic()
            second = await door.intake().accept_files(device, one(b"two"), lambda: Envelope(("alice@contoso.com",)))
            while (await svc.jobs.get(second.id)).state != JobState.SENT:  # type: ignore[union-attr]
                assert time.monotonic() < queued_at + 10, "the second scan waited for the poll"
                await asyncio.sleep(0.01)
            return time.monotonic() - queued_at
        finally:
            stop.set()
            await worker
            await door.close()
            await svc.close()

    assert asyncio.run(scenario()) < 5.0  # the poll would have taken 30 s
