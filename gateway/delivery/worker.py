"""`scangw worker`: drain the job queue with a few concurrent slots until told to stop.

A received message stays leased while its job runs (heartbeat); if this process dies the message
reappears within VISIBILITY seconds and another worker resumes the job from its record.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from gateway.core.errors import StorageUnavailable
from gateway.core.ports import NotFound, QueueLease
from gateway.delivery.agent import DeliveryAgent, Done, Retry

log = logging.getLogger("scangw.worker")

#: How long a received message stays hidden; renewed every third of it while its job runs.
VISIBILITY = 45.0


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


class Worker:
    def __init__(
        self, agent: DeliveryAgent, concurrency: int = 4, poll_seconds: float = 1.0, lease_seconds: float = VISIBILITY
    ) -> None:
        self.agent = agent
        self.lease_seconds = lease_seconds
        self.queue = agent.services.spool.queue
        self.concurrency = concurrency
        self.poll_seconds = poll_seconds

    async def run(self, stop: asyncio.Event) -> None:
        """Finish the jobs in hand when `stop` is set; take no new ones."""
        await asyncio.gather(*(self._slot(stop) for _ in range(self.concurrency)))

    async def _slot(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                leases = await self.queue.receive(self.lease_seconds, 1)
            except StorageUnavailable as exc:
                log.error("queue unavailable: %s", exc)
                await _wait(stop, 5)
                continue
            if not leases:
                await self._idle(stop)
                continue
            await self.process(leases[0])

    async def _idle(self, stop: asyncio.Event) -> None:
        """Until the next look at the queue: the poll interval, cut short by a put where the queue can tell
        (the embedded spool wakes its workers, so a scan on an idle system does not wait for the poll)."""
        wait_for_put = getattr(self.queue, "wait_for_put", None)
        if wait_for_put is None:
            await _wait(stop, self.poll_seconds)
            return
        stopping = asyncio.ensure_future(stop.wait())
        woken = asyncio.ensure_future(wait_for_put(self.poll_seconds))
        try:
            await asyncio.wait({stopping, woken}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (stopping, woken):
                task.cancel()
            await asyncio.gather(stopping, woken, return_exceptions=True)

    async def process(self, lease: QueueLease) -> None:
        holder = [lease]
        beat = asyncio.create_task(self._heartbeat(holder))
        try:
            outcome = await self.agent.handle(lease.text)
        except StorageUnavailable as exc:
            log.error("storage unavailable while delivering; the message comes back: %s", exc)
            return
        finally:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat
        try:
            if isinstance(outcome, Done):
                await self.queue.delete(holder[0])
            elif isinstance(outcome, Retry):
                await self.queue.defer(holder[0], outcome.delay)
        except (NotFound, StorageUnavailable) as exc:
            log.warning("queue message %s: %s (it will come back and be recognised)", lease.message_id, exc)

    async def _heartbeat(self, holder: list[QueueLease]) -> None:
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            try:
                holder[0] = await self.queue.defer(holder[0], self.lease_seconds)
            except (NotFound, StorageUnavailable) as exc:
                log.warning("lease heartbeat failed: %s", exc)

    async def drain(self) -> None:
        """Deliver until no message is visible (for `scangw worker --once`, tests and cron-style runs)."""
        while True:
            leases = await self.queue.receive(self.lease_seconds, 1)
            if not leases:
                return
            await self.process(leases[0])
